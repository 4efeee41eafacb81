//! `post compile <file> --emit graph`: print the lowered graph as versioned JSON on stdout and
//! the list of every default the compiler applied on stderr.

use std::process::ExitCode;

use crate::diagnostics::{render, use_color};
use crate::fs::OsFs;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Emit {
    /// The runtime graph as JSON.
    Graph,
    /// The fused kernels of every objective: simplified formulas, Cranelift IR, CUDA C.
    Kernels,
    /// Every path a run reads (resolved against the file's directory) and what it writes under
    /// its output directory, as JSON.
    Paths,
}

#[derive(clap::Args)]
pub struct Args {
    /// The experiment file.
    pub file: String,
    /// What to print.
    #[arg(long, value_enum, default_value = "graph")]
    pub emit: Emit,
    /// Write the output to this file (atomically) instead of stdout.
    #[arg(short, long)]
    pub output: Option<String>,
    /// Let the experiment read under this directory too (it reads under its own directory).
    #[arg(long = "allow-read", value_name = "DIR")]
    pub allow_read: Vec<String>,
}

pub fn run(args: Args) -> ExitCode {
    if !std::path::Path::new(&args.file).exists() {
        eprintln!("error: no such file: {}", args.file);
        return ExitCode::from(2);
    }
    let c = post_compiler::compile(&OsFs::new(&args.allow_read), &args.file);
    let color = use_color();
    for d in &c.diagnostics {
        eprint!("{}", render(d, &args.file, &c.source, color));
    }
    if c.has_errors() {
        eprintln!(
            "{} error(s); no graph written",
            c.diagnostics.iter().filter(|d| d.is_error()).count()
        );
        return ExitCode::from(1);
    }
    let Some(graph) = &c.graph else {
        eprintln!(
            "error: `{}` defines no experiment (it is a library of definitions)",
            args.file
        );
        return ExitCode::from(1);
    };
    let defaults = c.defaults_report();
    if !defaults.is_empty() {
        eprintln!("defaults applied ({}):", defaults.len());
        for d in &defaults {
            eprintln!("  {d}");
        }
    }
    let json = match args.emit {
        Emit::Graph => graph.to_json(),
        Emit::Kernels => post_kernels::formula::emit_kernels(graph),
        Emit::Paths => paths_json(graph, &args.file),
    };
    match &args.output {
        None => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Some(out) => match write_atomic(out, &json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write {out}: {e}");
                ExitCode::from(1)
            }
        },
    }
}

/// `--emit paths`: what a run of `graph` (compiled from `file`) reads and writes.
fn paths_json(graph: &post_graph::Graph, file: &str) -> String {
    let base = crate::run::base_dir_of(file);
    let reads: Vec<serde_json::Value> = graph
        .reads()
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "path": base.join(&r.path).to_string_lossy(),
                "what": r.what,
            })
        })
        .collect();
    let mut writes: Vec<String> = post_graph::paths::RUN_WRITES
        .iter()
        .map(|w| format!("<out>/{w}"))
        .collect();
    for p in &graph.prerequisites {
        writes.push(format!(
            "<runs>/prereq/{}/ (when not built yet)",
            p.cache_dir_name()
        ));
    }
    let v = serde_json::json!({
        "experiment": graph.experiment,
        "reads": reads,
        "writes": writes,
        "note": "<out> is `post run --out` (default runs/<experiment>); <runs> is its parent directory",
    });
    serde_json::to_string_pretty(&v).expect("JSON values serialize")
}

/// Write `text` to `path` atomically and durably (the runtime's one `write_atomic`).
pub fn write_atomic(path: &str, text: &str) -> std::io::Result<()> {
    post_runtime::files::write_atomic(std::path::Path::new(path), text.as_bytes())
}
