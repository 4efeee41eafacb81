//! What a run writes: `metrics.jsonl` (one JSON object per step), `summary.json` (final and best
//! value of every metric, wall time, peak memory), `curves.svg` (training curves), and the
//! progress display (a bar with ETA on a terminal, plain log lines otherwise).
//!
//! Every file is written atomically (temp file, fsync, rename) except `metrics.jsonl`, which is
//! appended line by line and flushed after each step so a killed run keeps what it measured.

mod compare;
mod metrics;
mod plot;
mod progress;
mod summary;

pub use compare::{CompareError, Comparison, RunData, RunRow, compare};
pub use metrics::{MetricsWriter, StepRecord, read_metrics};
pub use plot::write_plot;
pub use progress::Progress;
pub use summary::{MetricGoal, Summary, summarize};

pub use crate::files::{sync_dir, write_atomic};
