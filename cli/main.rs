//! The `post` command line: the edge of the pipeline.
//!
//! `.post` source -> `post_compiler` (syntax -> check -> lower) -> `post_graph::Graph`
//! -> `post_runtime` (models, data, rollouts, objectives, kernels).
//! Each subcommand lives in its own module; this file only dispatches.
//! Exit codes: 0 success, 1 errors in the input or the run, 2 usage errors.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod check;
mod compare;
mod compile;
mod diagnostics;
mod fmt;
mod fs;
mod lsp;
mod run;

/// The binary's version and the graph format it reads and writes (a graph JSON of another
/// format is refused), so a bug report names both.
fn version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} (graph format {})",
            env!("CARGO_PKG_VERSION"),
            post_graph::GRAPH_VERSION
        )
    })
}

#[derive(Parser)]
#[command(
    name = "post",
    version = version(),
    about = "Declarative LLM post-training experiments: check, format, compile and run .post files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check .post files (directories are walked): exit 0 clean, 1 errors, 2 usage.
    Check(check::Args),
    /// Format .post files in canonical form (`--check` only reports).
    Fmt(fmt::Args),
    /// Compare finished runs: an eval metric vs steps, steps to a reference, expert tokens.
    Compare(compare::Args),
    /// Compile an experiment and print its runtime graph as JSON.
    Compile(compile::Args),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// The language server (LSP over stdio) for editors.
    Lsp(lsp::Args),
    /// Run an experiment (.post, or a graph .json): metrics, summary, plot, checkpoints.
    Run(run::Args),
    /// Print a shell completion script: `post completions bash > ~/.local/share/bash-completion/completions/post`.
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap: help and version are not errors.
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Check(a) => check::run(a),
        Command::Fmt(a) => fmt::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Compile(a) => compile::run(a),
        Command::Bench(b) => bench::run(b),
        Command::Lsp(a) => lsp::run(a),
        Command::Run(a) => run::run(a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "post", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}
