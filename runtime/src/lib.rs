//! The post runtime: executes a lowered graph on candle.

pub mod checkpoint;
pub mod data;
pub mod exec;
pub mod files;
pub mod fusion;
pub mod hash;
pub mod optim;
pub mod output;
pub mod record;
pub mod rundir;
pub mod tasks;

pub use fusion::{kernels_enabled, set_kernels_enabled};

pub mod objectives;
pub mod rewards;
pub mod rollouts;

pub mod generate;
pub mod hf;
pub mod logprob;
pub mod memory;
pub mod model;
pub mod tokenizer;
