//! `metrics.jsonl`: one JSON object per optimiser step (and one per evaluation that happens
//! before a stage's first step), appended and flushed as the run goes.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One line of `metrics.jsonl`. Timing fields (`tokens_per_s`, `step_s`) vary between runs;
/// everything else is a deterministic function of the graph and its seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Global optimiser step across stages, 1-based; 0 (or the previous stage's last step) for
    /// an evaluation made before a stage's first step.
    pub step: u64,
    pub stage: String,
    /// Step within the stage, 1-based (0 before the first step).
    pub stage_step: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Tokens through the trained model's forward pass in this step (padding excluded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_s: Option<f64>,
    /// Reward statistics and other per-step quantities (`reward_mean`, `reward_std`, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, f64>,
    /// Evaluation metrics by the names of the `eval` blocks (`accuracy`, ...), when evaluated.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub eval: BTreeMap<String, f64>,
}

pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Create (truncate) `path`, then write `prefix` lines (kept from a checkpoint on resume).
    pub fn create(path: &Path, prefix: &[StepRecord]) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::create(path)?;
        let mut w = MetricsWriter {
            path: path.to_path_buf(),
            file,
        };
        for r in prefix {
            w.append(r)?;
        }
        Ok(w)
    }

    /// Append one line and flush it to the OS (a killed run keeps every finished step).
    pub fn append(&mut self, record: &StepRecord) -> std::io::Result<()> {
        let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        writeln!(self.file, "{line}")?;
        self.file.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Read every record of a `metrics.jsonl`.
pub fn read_metrics(path: &Path) -> std::io::Result<Vec<StepRecord>> {
    let f = OpenOptions::new().read(true).open(path)?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let r: StepRecord = serde_json::from_str(&line)
            .map_err(|e| std::io::Error::other(format!("{}:{}: {e}", path.display(), i + 1)))?;
        out.push(r);
    }
    Ok(out)
}
