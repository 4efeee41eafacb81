//! `post run <file> --out <dir>`: compile an experiment (or read a graph JSON written by
//! `post compile --emit graph`) and execute it: metrics.jsonl, summary.json, curves.svg and
//! checkpoints in the output directory. `--resume <dir>` continues a stopped run exactly.
//! `--dry-run` does everything before the first step (validation, data, models, memory plan)
//! and stops. Prerequisite experiments (`trained(...)`) are built first when their output is
//! missing, into `<runs>/prereq/<experiment>-<graph hash>/` (`<runs>`: the parent of `--out`).

use std::collections::BTreeMap;
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
    /// Validate, load the data and models and plan memory, then stop before the first step
    /// (the checks of `post check --deep`). Nothing is written and no prerequisite is built.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace the run that `--out` already holds (without it, such a directory is refused).
    #[arg(long)]
    pub force: bool,
    /// Let the experiment read under this directory too (it reads under its own directory).
    #[arg(long = "allow-read", value_name = "DIR")]
    pub allow_read: Vec<String>,
}

pub(crate) fn load_graph(fs: &OsFs, file: &str) -> Result<post_graph::Graph, ExitCode> {
    if file.ends_with(".json") {
        let text = std::fs::read_to_string(file).map_err(|e| {
            eprintln!("error: cannot read {file}: {e}");
            ExitCode::from(1)
        })?;
        let graph = post_graph::Graph::from_json(&text).map_err(|e| {
            eprintln!("error: {file}: {e}");
            ExitCode::from(1)
        })?;
        return check_reads(fs, &graph, file).map(|()| graph);
    }
    let c = post_compiler::compile(fs, file);
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

/// A graph JSON's paths may be read only where a `.post` file's could (its own directory and
/// `--allow-read`): the checker's scope, applied to a graph that did not come through it.
fn check_reads(fs: &OsFs, graph: &post_graph::Graph, file: &str) -> Result<(), ExitCode> {
    let base = base_dir_of(file);
    let own = base.to_string_lossy();
    let mut bad = 0;
    for r in graph.reads() {
        let path = base.join(&r.path).to_string_lossy().into_owned();
        if let Err(target) = post_compiler::check::read_scope::permitted(fs, &path, &own) {
            eprintln!(
                "error: {file}: {} reads `{}` (resolves to `{target}`), outside the directories this graph may read",
                r.what, r.path
            );
            bad += 1;
        }
    }
    if bad > 0 {
        eprintln!(
            "  = help: a graph reads under its own directory; grant another with `--allow-read DIR`"
        );
        return Err(ExitCode::from(1));
    }
    Ok(())
}

/// The directory of the file's experiment (relative paths in it resolve against this).
pub(crate) fn base_dir_of(file: &str) -> PathBuf {
    Path::new(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cached run directory of each prerequisite of `graph` (compiled from `file`) that has
/// finished under `runs`. With `build`, a missing one is run first (resuming a cache that a
/// killed build left), recursively; without it, missing ones are left out.
pub(crate) fn prerequisites(
    fs: &OsFs,
    graph: &post_graph::Graph,
    file: &str,
    runs: &Path,
    build: bool,
    quiet: bool,
) -> Result<BTreeMap<String, PathBuf>, ExitCode> {
    let mut dirs = BTreeMap::new();
    for p in &graph.prerequisites {
        let pfile = base_dir_of(file).join(&p.file);
        let pfile = pfile.to_string_lossy().into_owned();
        let dir = runs.join("prereq").join(p.cache_dir_name());
        if dir.join("summary.json").is_file() {
            if !quiet {
                eprintln!(
                    "prerequisite `{}` ({pfile}): built, using {}",
                    p.experiment,
                    dir.display()
                );
            }
            dirs.insert(p.experiment.clone(), dir);
            continue;
        }
        if !build {
            continue;
        }
        let pgraph = load_graph(fs, &pfile)?;
        if pgraph.hash() != p.graph_hash {
            eprintln!(
                "error: prerequisite `{}` ({pfile}) changed since this graph was compiled (graph hash {} now, {} then); compile it again",
                p.experiment,
                pgraph.hash(),
                p.graph_hash
            );
            return Err(ExitCode::from(1));
        }
        let inner = prerequisites(fs, &pgraph, &pfile, runs, true, quiet)?;
        let resume = dir.join("checkpoints").join("latest").is_file();
        eprintln!(
            "building prerequisite `{}` ({pfile}) -> {}{}; `{}` runs after it",
            p.experiment,
            dir.display(),
            if resume {
                ", resuming its last checkpoint"
            } else {
                ""
            },
            graph.experiment
        );
        let opts = RunOptions {
            out_dir: dir.clone(),
            base_dir: base_dir_of(&pfile),
            resume: resume.then(|| dir.clone()),
            stop_after: None,
            quiet,
            memory_limit: None,
            dry_run: false,
            // A killed build with no checkpoint yet starts over; one with a checkpoint resumes.
            force: !resume,
            prerequisite_dirs: inner,
        };
        let mut log = |m: &str| {
            if !quiet {
                eprintln!("{m}");
            }
        };
        match run_with_log(&pgraph, &opts, &mut log) {
            Ok(RunOutcome::Finished(_)) => {
                eprintln!("prerequisite `{}` built", p.experiment);
            }
            Ok(_) => {
                eprintln!("error: prerequisite `{}` did not finish", p.experiment);
                return Err(ExitCode::from(1));
            }
            Err(e) => {
                eprintln!("error: prerequisite `{}` ({pfile}): {e}", p.experiment);
                return Err(ExitCode::from(1));
            }
        }
        dirs.insert(p.experiment.clone(), dir);
    }
    Ok(dirs)
}

pub fn run(args: Args) -> ExitCode {
    if !Path::new(&args.file).is_file() {
        eprintln!("error: no such file: {}", args.file);
        return ExitCode::from(2);
    }
    let fs = OsFs::new(&args.allow_read);
    let graph = match load_graph(&fs, &args.file) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&graph.experiment));
    let base_dir = base_dir_of(&args.file);
    let runs = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let prerequisite_dirs =
        match prerequisites(&fs, &graph, &args.file, &runs, !args.dry_run, args.quiet) {
            Ok(d) => d,
            Err(code) => return code,
        };
    let opts = RunOptions {
        out_dir: out.clone(),
        base_dir,
        resume: args.resume.clone(),
        stop_after: args.stop_after,
        quiet: args.quiet,
        memory_limit: args.memory_mib.map(|m| m * 1024 * 1024),
        dry_run: args.dry_run,
        force: args.force,
        prerequisite_dirs,
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
        Ok(RunOutcome::DryRun { .. }) => {
            eprintln!(
                "dry run: `{}` validated, its data and models load and its memory plan fits; nothing was trained or written",
                graph.experiment
            );
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
            if let RunError::NonFinite { .. } | RunError::NoLearning { .. } = e {
                eprintln!("(summary.json and curves.svg hold the steps before it)");
            }
            ExitCode::from(1)
        }
    }
}
