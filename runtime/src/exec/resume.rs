//! Resuming: a checkpoint of this graph restores the trained weights and the snapshot and
//! lagged copies as they were; the optimiser, batch order, generator and rollout state are
//! restored by the runner from the same checkpoint.
//!
//! Nothing is read unverified. Each candidate checkpoint (`checkpoint::candidates`: the one
//! `latest` names, then older ones) must pass its manifest, parse, and agree with this graph
//! (`resume_check`); the first that does is used, and every one skipped is reported through
//! the run's log with the reason. A checkpoint of another graph is refused outright (every
//! checkpoint of the run would be). When none is usable the resume is refused.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device};
use post_graph::Graph;

use super::load::Models;
use super::plan::Plan;
use super::{Context, RunError, resume_check};
use crate::checkpoint;
use crate::data::Dataset;

/// Why a candidate checkpoint was not used.
enum Rejected {
    /// Unusable: try an older one.
    Bad(String),
    /// Refuse the resume (another experiment's checkpoint).
    Refuse(RunError),
}

/// Find the newest usable checkpoint at (or named by) `path` and load it into `models`.
pub fn restore(
    path: &Path,
    plan: &Plan,
    models: &mut Models,
    datasets: &BTreeMap<String, Dataset>,
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<checkpoint::Loaded, RunError> {
    let candidates = checkpoint::candidates(path)?;
    if let Some(note) = &candidates.note {
        log(&format!("resume: {note}"));
    }
    let mut skipped: Vec<String> = Vec::new();
    for dir in &candidates.dirs {
        match try_one(dir, plan, models, datasets, device) {
            Ok(loaded) => {
                if !skipped.is_empty() || candidates.note.is_some() {
                    let why = match skipped.len() {
                        0 => "`latest` names no usable checkpoint".to_string(),
                        1 => "a newer checkpoint could not be used".to_string(),
                        n => format!("{n} newer checkpoints could not be used"),
                    };
                    log(&format!(
                        "falling back to checkpoint {} (step {}): {why}",
                        loaded.dir.display(),
                        loaded.state.global_step,
                    ));
                }
                log(&format!(
                    "resuming from {} (step {}, stage `{}`)",
                    loaded.dir.display(),
                    loaded.state.global_step,
                    loaded.state.stage_name
                ));
                return Ok(loaded);
            }
            Err(Rejected::Refuse(e)) => return Err(e),
            Err(Rejected::Bad(why)) => {
                log(&format!(
                    "checkpoint {} is not usable: {why}",
                    dir.display()
                ));
                skipped.push(format!("{}: {why}", dir.display()));
            }
        }
    }
    Err(RunError::Resume(format!(
        "no usable checkpoint at {}: {}",
        path.display(),
        skipped.join("; ")
    )))
}

fn try_one(
    dir: &Path,
    plan: &Plan,
    models: &mut Models,
    datasets: &BTreeMap<String, Dataset>,
    device: &Device,
) -> Result<checkpoint::Loaded, Rejected> {
    let graph: &Graph = plan.graph;
    let loaded = checkpoint::load_dir(dir, device).map_err(|e| Rejected::Bad(e.to_string()))?;
    if loaded.state.graph_hash != graph.hash() {
        return Err(Rejected::Refuse(RunError::Resume(format!(
            "checkpoint {} was written by a different experiment graph (hash {}, this graph {})",
            loaded.dir.display(),
            loaded.state.graph_hash,
            graph.hash()
        ))));
    }
    resume_check::check(&loaded, plan, models, datasets).map_err(Rejected::Bad)?;
    // Every trained model is in the checkpoint (checked above), so a failure part-way through
    // is overwritten in full by the next candidate.
    for (name, dir) in &loaded.model_dirs {
        let model = models.models.get(name).ok_or_else(|| {
            Rejected::Bad(format!(
                "checkpoint holds model `{name}`, the graph has none"
            ))
        })?;
        match models.trainable.get(name) {
            Some(varmap) => {
                crate::hf::load_weights_into(dir, model.config(), varmap, DType::F32, device)
                    .map_err(|e| Rejected::Bad(format!("model `{name}`: {e}")))?
            }
            None => {
                // A snapshot or lagged copy: its weights as they were at the checkpoint.
                let copy = crate::hf::load(dir, DType::F32, device)
                    .map_err(|e| Rejected::Bad(format!("model `{name}`: {e}")))?
                    .model
                    .frozen_copy()
                    .ctx(|| format!("restoring copy `{name}`"))
                    .map_err(|e| Rejected::Bad(e.to_string()))?;
                models.models.insert(name.clone(), copy);
            }
        }
    }
    Ok(loaded)
}
