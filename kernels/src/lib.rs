//! Fused kernels for post.
