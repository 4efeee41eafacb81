//! Resuming: a checkpoint of this graph restores the trained weights and the snapshot and
//! lagged copies as they were; the optimiser, batch order, generator and rollout state are
//! restored by the runner from the same checkpoint.

use std::path::Path;

use candle_core::{DType, Device};
use post_graph::Graph;

use super::load::Models;
use super::{Context, RunError};
use crate::checkpoint;

/// Load the checkpoint at `path` (or a run directory's latest) into `models`.
pub fn restore(
    path: &Path,
    graph: &Graph,
    models: &mut Models,
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<checkpoint::Loaded, RunError> {
    let loaded = checkpoint::load(path, device)?;
    if loaded.state.graph_hash != graph.hash() {
        return Err(RunError::Resume(format!(
            "checkpoint {} was written by a different experiment graph (hash {}, this graph {})",
            loaded.dir.display(),
            loaded.state.graph_hash,
            graph.hash()
        )));
    }
    for (name, dir) in &loaded.model_dirs {
        let model = models.models.get(name).ok_or_else(|| {
            RunError::Resume(format!(
                "checkpoint holds model `{name}`, the graph has none"
            ))
        })?;
        match models.trainable.get(name) {
            Some(varmap) => {
                crate::hf::load_weights_into(dir, model.config(), varmap, DType::F32, device)
                    .map_err(|e| RunError::Resume(e.to_string()))?
            }
            None => {
                // A snapshot or lagged copy: its weights as they were at the checkpoint.
                let copy = crate::hf::load(dir, DType::F32, device)
                    .map_err(|e| RunError::Resume(e.to_string()))?
                    .model
                    .frozen_copy()
                    .ctx(|| format!("restoring copy `{name}`"))?;
                models.models.insert(name.clone(), copy);
            }
        }
    }
    log(&format!(
        "resuming from {} (step {}, stage `{}`)",
        loaded.dir.display(),
        loaded.state.global_step,
        loaded.state.stage_name
    ));
    Ok(loaded)
}
