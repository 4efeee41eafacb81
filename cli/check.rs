//! `post check <file|dir>...`: parse and check every file, print all diagnostics.
//! Exit 0 when clean, 1 when any file has errors, 2 on usage errors (no such path).
//! `--deep` also does, for each clean experiment, everything `post run` does before its first
//! step (read every data record, load the models, plan memory): the refusals that only the
//! data's contents or this machine can tell (spec/language.md, "Known only at run time").

use std::process::ExitCode;

use crate::diagnostics::{render, use_color};
use crate::fs::{OsFs, expand};

#[derive(clap::Args)]
pub struct Args {
    /// Files or directories (walked for *.post).
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Also load each clean experiment's data and models and plan its memory, as `post run
    /// --dry-run` does (slower: reads everything).
    #[arg(long)]
    pub deep: bool,
    /// Where built prerequisites are looked for with `--deep` (`<runs>/prereq/...`).
    #[arg(long, default_value = "runs")]
    pub runs: std::path::PathBuf,
    /// Let the files read under this directory too (each reads under its own directory).
    #[arg(long = "allow-read", value_name = "DIR")]
    pub allow_read: Vec<String>,
}

pub fn run(args: Args) -> ExitCode {
    let (files, missing) = expand(&args.paths);
    for m in &missing {
        eprintln!("error: no such file or directory: {m}");
    }
    if !missing.is_empty() {
        return ExitCode::from(2);
    }
    let fs = OsFs::new(&args.allow_read);
    let color = use_color();
    let mut errors = 0usize;
    let mut warnings = 0usize;
    let mut bad_files = 0usize;
    for f in &files {
        let c = post_compiler::compile(&fs, f);
        let n = c.diagnostics.iter().filter(|d| d.is_error()).count();
        warnings += c.diagnostics.len() - n;
        for d in &c.diagnostics {
            eprint!("{}", render(d, f, &c.source, color));
        }
        if n > 0 {
            bad_files += 1;
            errors += n;
        } else if args.deep
            && let Some(graph) = &c.graph
            && let Err(e) = deep(graph, f, &args.runs)
        {
            eprintln!("error: {f}: {e}");
            if let Some(r) = e.refusal() {
                eprintln!(
                    "  = note: known only at run time ({}): see spec/language.md, \"Known only at run time\"",
                    r.id()
                );
            }
            bad_files += 1;
            errors += 1;
        }
    }
    if errors > 0 {
        eprintln!(
            "{errors} error(s) in {bad_files} of {} file(s)",
            files.len()
        );
        ExitCode::from(1)
    } else {
        let w = match warnings {
            0 => String::new(),
            1 => ", 1 warning".to_string(),
            n => format!(", {n} warnings"),
        };
        eprintln!("checked {} file(s): no errors{w}", files.len());
        ExitCode::SUCCESS
    }
}

/// Everything before the first step of `graph`, without training or writing.
fn deep(
    graph: &post_graph::Graph,
    file: &str,
    runs: &std::path::Path,
) -> Result<(), post_runtime::exec::RunError> {
    let prerequisite_dirs =
        crate::run::prerequisites(&OsFs::default(), graph, file, runs, false, true)
            .unwrap_or_default();
    let opts = post_runtime::exec::RunOptions {
        dry_run: true,
        base_dir: crate::run::base_dir_of(file),
        prerequisite_dirs,
        ..post_runtime::exec::RunOptions::new(std::env::temp_dir())
    };
    post_runtime::exec::run_with_log(graph, &opts, &mut |m: &str| eprintln!("{file}: {m}"))
        .map(|_| ())
}
