//! `post compare RUN_DIR... [--out DIR]`: finished runs side by side, read back from their
//! `metrics.jsonl` and `summary.json`: an eval metric against steps, steps to reach a reference
//! run's final value, wall time, expert-trace tokens used. Prints the Markdown table; with
//! `--out`, also writes `comparison.md`, `comparison.json` and `comparison.svg` there.

use std::path::PathBuf;
use std::process::ExitCode;

use post_runtime::output::{RunData, compare};

#[derive(clap::Args)]
pub struct Args {
    /// Output directories of finished runs (`post run ... --out DIR`).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// The eval metric to compare (a name from the experiments' `eval` blocks).
    #[arg(long, default_value = "accuracy")]
    pub metric: String,
    /// A run (by directory name) whose final value the "steps to reach" column measures.
    #[arg(long)]
    pub reference: Option<String>,
    /// Where to write comparison.{md,json,svg}.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    let mut runs = Vec::with_capacity(args.runs.len());
    for dir in &args.runs {
        match RunData::load(dir) {
            Ok(r) => runs.push(r),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let c = match compare(&runs, &args.metric, args.reference.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    print!("{}", c.markdown());
    if let Some(out) = &args.out {
        if let Err(e) = c.write(out) {
            eprintln!("error: writing {}: {e}", out.display());
            return ExitCode::from(1);
        }
        println!(
            "\nwrote {}/{{comparison.md, comparison.json, comparison.svg}}",
            out.display()
        );
    }
    ExitCode::SUCCESS
}
