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

use std::io::Write;
use std::path::Path;

pub use compare::{CompareError, Comparison, RunData, RunRow, compare};
pub use metrics::{MetricsWriter, StepRecord, read_metrics};
pub use plot::write_plot;
pub use progress::Progress;
pub use summary::{MetricGoal, Summary, summarize};

/// Write `bytes` to `path` atomically: a temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir);
    Ok(())
}

/// fsync a directory so a rename inside it is durable. Best effort: some file systems refuse
/// to open directories, and the data itself is already synced.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
