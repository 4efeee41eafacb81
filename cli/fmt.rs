//! `post fmt [--check] <file|dir>...`: rewrite files in canonical form (atomically), or with
//! `--check` list the files that are not formatted (exit 1).

use std::process::ExitCode;

use crate::diagnostics::{render, use_color};
use crate::fs::expand;

#[derive(clap::Args)]
pub struct Args {
    /// Report unformatted files instead of rewriting them.
    #[arg(long)]
    pub check: bool,
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
    let mut failed = false;
    for f in &files {
        let src = match std::fs::read(f).map(String::from_utf8) {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => {
                eprintln!("error: {f} is not valid UTF-8");
                failed = true;
                continue;
            }
            Err(e) => {
                eprintln!("error: cannot read {f}: {e}");
                failed = true;
                continue;
            }
        };
        match post_compiler::format(&src) {
            Err(diags) => {
                for d in &diags {
                    eprint!("{}", render(d, f, &src, color));
                }
                eprintln!("error: {f} has syntax errors; not formatted");
                failed = true;
            }
            Ok(out) if out == src => {}
            Ok(out) => {
                if args.check {
                    println!("{f}: not formatted");
                    failed = true;
                } else if let Err(e) = crate::compile::write_atomic(f, &out) {
                    eprintln!("error: cannot write {f}: {e}");
                    failed = true;
                } else {
                    println!("formatted {f}");
                }
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
