//! `post run <file> --out <dir>`: compile an experiment (or read a graph JSON written by
//! `post compile --emit graph`) and execute it: metrics.jsonl, summary.json, curves.svg and
//! checkpoints in the output directory. `--resume <dir>` continues a stopped run exactly.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use post_runtime::exec::{RunError, RunOptions, RunOutcome, run_with_log};

use crate::diagnostics::{render, use_color};
use crate::fs::OsFs;

#[derive(clap::Args)]
pub struct Args {
    /// The experiment: a `.post` file, or a graph `.json` from `post compile --emit graph`.
    pub file: String,
    /// Output directory (default: runs/<experiment>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from a checkpoint directory, or from a run directory's latest checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Stop after this many steps, as if the run were killed (no final checkpoint or summary);
    /// `--resume` continues it.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Memory the run may use, in MiB (default: the machine's available memory).
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

fn load_graph(file: &str) -> Result<post_graph::Graph, ExitCode> {
    if file.ends_with(".json") {
        let text = std::fs::read_to_string(file).map_err(|e| {
            eprintln!("error: cannot read {file}: {e}");
            ExitCode::from(1)
        })?;
        return post_graph::Graph::from_json(&text).map_err(|e| {
            eprintln!("error: {file}: {e}");
            ExitCode::from(1)
        });
    }
    let c = post_compiler::compile(&OsFs, file);
    let color = use_color();
    for d in &c.diagnostics {
        eprint!("{}", render(d, file, &c.source, color));
    }
    if c.has_errors() {
        let n = c.diagnostics.iter().filter(|d| d.is_error()).count();
        eprintln!("{n} error(s); nothing was run");
        return Err(ExitCode::from(1));
    }
    let defaults = c.defaults_report();
    if !defaults.is_empty() {
        eprintln!("defaults applied ({}):", defaults.len());
        for d in &defaults {
            eprintln!("  {d}");
        }
    }
    c.graph.ok_or_else(|| {
        eprintln!("error: `{file}` defines no experiment (it is a library of definitions)");
        ExitCode::from(1)
    })
}

pub fn run(args: Args) -> ExitCode {
    if !Path::new(&args.file).is_file() {
        eprintln!("error: no such file: {}", args.file);
        return ExitCode::from(2);
    }
    let graph = match load_graph(&args.file) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&graph.experiment));
    let base_dir = Path::new(&args.file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let opts = RunOptions {
        out_dir: out.clone(),
        base_dir,
        resume: args.resume.clone(),
        stop_after: args.stop_after,
        quiet: args.quiet,
        memory_limit: args.memory_mib.map(|m| m * 1024 * 1024),
    };
    let quiet = args.quiet;
    let mut log = |m: &str| {
        if !quiet {
            eprintln!("{m}");
        }
    };
    log(&format!(
        "running `{}` ({} stage(s)) -> {}",
        graph.experiment,
        graph.stages.len(),
        out.display()
    ));
    match run_with_log(&graph, &opts, &mut log) {
        Ok(RunOutcome::Finished(summary)) => {
            if !quiet {
                for (name, after) in &summary.final_ {
                    if name == "loss" {
                        continue;
                    }
                    match summary.initial.get(name) {
                        Some(before) => {
                            eprintln!("{name}: {before:.3} before training -> {after:.3} after")
                        }
                        None => eprintln!("{name}: {after:.3}"),
                    }
                }
                if let Some(l) = summary.final_.get("loss") {
                    eprintln!("final loss {l:.4}");
                }
                eprintln!(
                    "done in {:.1}s; wrote {}/{{metrics.jsonl, summary.json, curves.svg, checkpoints/}}",
                    summary.wall_s,
                    out.display()
                );
            }
            ExitCode::SUCCESS
        }
        Ok(RunOutcome::Stopped { step }) => {
            log(&format!(
                "stopped after step {step} as asked; continue with `post run {} --out {} --resume {}`",
                args.file,
                out.display(),
                out.display()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            if let RunError::NonFinite { .. } = e {
                eprintln!("(summary.json and curves.svg hold the steps before it)");
            }
            ExitCode::from(1)
        }
    }
}
