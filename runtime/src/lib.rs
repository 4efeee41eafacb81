//! The post runtime: executes a lowered graph on candle.

pub mod data;
pub mod tasks;
