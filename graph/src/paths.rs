//! Every path a run of a graph reads, as the graph holds it (relative to the experiment file's
//! directory unless absolute), and the files a run writes under its output directory. `post
//! compile --emit paths` prints both; `post run` of a graph JSON checks the reads against the
//! directories it may read, as the checker does for a `.post` file.

use serde::Serialize;

use crate::{DataSource, Graph, ModelSource, hf_files};

/// One path a run reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Read {
    pub path: String,
    /// What reads it: `dataset `train``, `model `policy` (config.json)`.
    pub what: String,
}

/// What a run writes, relative to its output directory (`--out`), in the order it writes them.
pub const RUN_WRITES: &[&str] = &[
    ".post.lock",
    "metrics.jsonl",
    "checkpoints/step-NNNNNN/",
    "checkpoints/latest",
    "summary.json",
    "curves.svg",
    "models/<model>/",
];

impl Graph {
    /// Every file or directory a run of this graph reads, dataset and model files first, then
    /// prerequisite experiment files (whose own reads are theirs).
    pub fn reads(&self) -> Vec<Read> {
        let mut out = Vec::new();
        for d in &self.datasets {
            if let DataSource::Jsonl { path, .. } = &d.source {
                out.push(Read {
                    path: path.clone(),
                    what: format!("dataset `{}`", d.name),
                });
            }
        }
        for m in &self.models {
            match &m.source {
                ModelSource::HuggingFace { path } => out.push(Read {
                    path: path.clone(),
                    what: format!(
                        "model `{}` ({}, {}, {})",
                        m.name,
                        hf_files::CONFIG,
                        hf_files::WEIGHTS[1],
                        hf_files::TOKENIZER
                    ),
                }),
                ModelSource::Preset {
                    init: Some(dir), ..
                } => out.push(Read {
                    path: dir.clone(),
                    what: format!("initial weights of model `{}`", m.name),
                }),
                _ => {}
            }
        }
        for p in &self.prerequisites {
            out.push(Read {
                path: p.file.clone(),
                what: format!("prerequisite experiment `{}`", p.experiment),
            });
        }
        out
    }
}
