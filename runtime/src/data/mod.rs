//! Datasets: records of named text fields, loaded from JSONL files or built-in tasks, transformed
//! as the graph says (templates, QFFT's drop-prompt, indicators, shards, filters, take, shuffle),
//! and cut into batches in a deterministic, resumable order.
//!
//! Everything here runs before the first training step, so a malformed file, a missing field or
//! an unsupported transform stops the run before any work is done.

mod batch;
mod jsonl;
mod transform;

use std::path::{Path, PathBuf};

use post_graph::{DataNode, DataSource, RExpr};

pub use batch::{Batcher, BatcherState};
pub use jsonl::load_jsonl;
pub use transform::apply_transforms;

pub use crate::record::{MissingField, Record};

/// A loaded, transformed dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub name: String,
    pub records: Vec<Record>,
    /// The built-in task the records come from, when they do (answers are then checkable).
    pub task: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{file}:{line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
    #[error("cannot read {file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    MissingField(#[from] MissingField),
    #[error("dataset `{dataset}`: {message}")]
    Dataset { dataset: String, message: String },
    #[error(transparent)]
    Task(#[from] crate::tasks::TaskError),
}

/// Evaluates a predicate over a record's fields (booleans as 0/1); supplied by the caller so this
/// module does not depend on the reward evaluator.
pub type PredicateFn<'a> = dyn Fn(&RExpr, &Record) -> Result<f64, String> + 'a;

/// Load `node` and apply its transforms. Relative JSONL paths are resolved against `base_dir`
/// (the directory of the `.post` file).
pub fn load(
    node: &DataNode,
    base_dir: &Path,
    seed: u64,
    predicate: &PredicateFn<'_>,
) -> Result<Dataset, DataError> {
    let (records, task) = match &node.source {
        DataSource::Jsonl { path, fields } => {
            let p = PathBuf::from(path);
            let full = if p.is_absolute() { p } else { base_dir.join(p) };
            (load_jsonl(&full, fields)?, None)
        }
        DataSource::Task {
            task,
            split,
            size,
            difficulty,
            min_difficulty,
        } => (
            crate::tasks::generate_mixed(
                task,
                (*split).into(),
                *size,
                min_difficulty.unwrap_or(*difficulty)..=*difficulty,
                seed,
            )?,
            Some(task.clone()),
        ),
        DataSource::Selected { stage } => {
            return Err(DataError::Dataset {
                dataset: node.name.clone(),
                message: format!(
                    "data selected by stage `{stage}` (SmallToLarge selection) is not supported by this runtime yet"
                ),
            });
        }
    };
    let records = apply_transforms(&node.name, records, &node.transforms, seed, predicate)?;
    if records.is_empty() {
        return Err(DataError::Dataset {
            dataset: node.name.clone(),
            message: "no records left after loading and transforms".into(),
        });
    }
    Ok(Dataset {
        name: node.name.clone(),
        records,
        task,
    })
}
