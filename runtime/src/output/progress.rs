//! Progress display: an indicatif bar with ETA when stderr is a terminal, plain log lines
//! (every few steps and at every evaluation) otherwise, nothing when quiet.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    total: u64,
    start: Instant,
    every: u64,
}

impl Progress {
    /// `total` global steps; `quiet` prints nothing.
    pub fn new(total: u64, start_step: u64, quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let b = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            b.set_style(style);
            b.set_position(start_step);
            b
        });
        Progress {
            bar,
            lines: !quiet && !terminal,
            total,
            start: Instant::now(),
            every: (total / 20).max(1),
        }
    }

    /// A message printed above the bar (or as a log line).
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None if self.lines => eprintln!("{msg}"),
            None => {}
        }
    }

    /// An evaluation result. On a terminal it is kept above the bar (the bar's message is
    /// overwritten every step); plain output already prints it with the step's own line.
    pub fn eval(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.println(msg);
        }
    }

    /// After each step: `summary` is a short `loss 1.23 lr 3e-4` string.
    pub fn step(&self, step: u64, summary: &str, evaluated: bool) {
        if let Some(b) = &self.bar {
            b.set_position(step);
            b.set_message(summary.to_string());
        } else if self.lines && (evaluated || step.is_multiple_of(self.every) || step == self.total)
        {
            eprintln!(
                "step {step}/{} [{:.1}s] {summary}",
                self.total,
                self.start.elapsed().as_secs_f64()
            );
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
