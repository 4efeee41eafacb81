//! `post bench <what>`: benchmarks that print figures (never asserted).
//! Adding a benchmark: a module `cli/bench/<name>.rs` with `Args` and `run`, plus one variant
//! below.

use std::process::ExitCode;

mod check;
mod kernels;
mod lsp;
mod model;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// Whole-process `post check` time per example, and scaling with file size.
    Check(check::Args),
    /// Model SFT step time, sampling tokens/s and peak memory for the `tiny` and `20m` presets.
    Model(model::Args),
    /// Fused vs unfused kernels: time and peak memory (log-probs, norms, RoPE, GRPO/DPO formulas).
    Kernels(kernels::Args),
    /// Language server latency: diagnostics after a change, hover, completion.
    Lsp(lsp::Args),
}

pub fn run(b: Bench) -> ExitCode {
    match b {
        Bench::Check(a) => check::run(a),
        Bench::Model(a) => model::run(a),
        Bench::Lsp(a) => lsp::run(a),
        Bench::Kernels(a) => kernels::run(a),
    }
}
