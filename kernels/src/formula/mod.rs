//! Formula fusion.

pub mod ir;
pub mod jit;
pub mod region;
mod cuda;
