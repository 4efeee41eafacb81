//! The post compiler front end: syntax -> check -> lower -> graph.
