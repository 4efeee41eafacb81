//! `post check <file|dir>...`: parse and check every file, print all diagnostics.
//! Exit 0 when clean, 1 when any file has errors, 2 on usage errors (no such path).

use std::process::ExitCode;

use crate::diagnostics::{render, use_color};
use crate::fs::{OsFs, expand};

#[derive(clap::Args)]
pub struct Args {
    /// Files or directories (walked for *.post).
    #[arg(required = true)]
    pub paths: Vec<String>,
}

pub fn run(args: Args) -> ExitCode {
    let (files, missing) = expand(&args.paths);
    for m in &missing {
        eprintln!("error: no such file or directory: {m}");
    }
    if !missing.is_empty() {
        return ExitCode::from(2);
    }
    let color = use_color();
    let mut errors = 0usize;
    let mut bad_files = 0usize;
    for f in &files {
        let c = post_compiler::compile(&OsFs, f);
        let n = c.diagnostics.iter().filter(|d| d.is_error()).count();
        for d in &c.diagnostics {
            eprint!("{}", render(d, f, &c.source, color));
        }
        if n > 0 {
            bad_files += 1;
            errors += n;
        }
    }
    if errors > 0 {
        eprintln!(
            "{errors} error(s) in {bad_files} of {} file(s)",
            files.len()
        );
        ExitCode::from(1)
    } else {
        eprintln!("checked {} file(s): no errors", files.len());
        ExitCode::SUCCESS
    }
}
