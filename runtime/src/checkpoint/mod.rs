//! Checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! Layout of `<out>/checkpoints/step-<global step>/`:
//! - `<model>/model.safetensors` for every trained model (Hugging Face parameter names, so the
//!   directory opens in other tools);
//! - `optimizer.safetensors`: the optimiser's moment buffers (`m.<param>`, `v.<param>`);
//! - `state.json`: [`CheckpointState`] (graph hash, step, stage, data order, RNG, ...);
//! - `metrics.jsonl`: the metrics written up to this step, so a resumed run's file is identical
//!   to an uninterrupted run's.
//!
//! A checkpoint is written into a temporary sibling directory, every file is fsynced, then the
//! directory is renamed into place and `<out>/checkpoints/latest` (the name of the newest one) is
//! replaced atomically. A crash at any moment leaves either the old or the new checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::BatcherState;
use crate::model::Transformer;
use crate::output::{StepRecord, sync_dir, write_atomic};
use crate::tokenizer::Tokenizer;

/// Bump when [`CheckpointState`] changes incompatibly.
pub const CHECKPOINT_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte seed, hex.
    pub seed: String,
    pub stream: u64,
    /// Position in the stream (u128 as decimal text: JSON numbers are f64 in many readers).
    pub word_pos: String,
}

impl RngState {
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        RngState {
            seed: rng.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    pub fn restore(&self) -> Result<ChaCha8Rng, String> {
        use rand::SeedableRng;
        if self.seed.len() != 64 {
            return Err("RNG seed must be 64 hex digits".into());
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&self.seed[2 * i..2 * i + 2], 16)
                .map_err(|e| format!("RNG seed: {e}"))?;
        }
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(
            self.word_pos
                .parse()
                .map_err(|e| format!("RNG position: {e}"))?,
        );
        Ok(rng)
    }
}

/// Everything besides tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format: u32,
    /// [`post_graph::Graph::hash`] of the experiment; a resume against another graph is refused.
    pub graph_hash: String,
    pub experiment: String,
    /// Global optimiser steps completed.
    pub global_step: u64,
    /// Index of the stage in progress (or the next one, when `stage_step == stage steps`).
    pub stage_index: usize,
    pub stage_name: String,
    /// Steps of that stage completed.
    pub stage_step: u64,
    pub optimizer_step: u64,
    pub batcher: BatcherState,
    pub rng: RngState,
    /// Models whose weights are in this checkpoint (subdirectories).
    pub models: Vec<String>,
    /// Wall time spent before this checkpoint (summed over resumed segments).
    pub wall_s: f64,
    /// State owned by rollout policies (e.g. BREAD's remembered prefix lengths), opaque here.
    #[serde(default)]
    pub rollout_state: serde_json::Value,
}

/// What [`save`] writes.
pub struct CheckpointData<'a> {
    pub state: &'a CheckpointState,
    /// Trained models by name, saved as Hugging Face directories.
    pub models: Vec<(String, &'a Transformer)>,
    pub tokenizer: Option<&'a Tokenizer>,
    pub optimizer: HashMap<String, Tensor>,
    pub metrics: &'a [StepRecord],
}

/// What [`load`] returns.
pub struct Loaded {
    pub dir: PathBuf,
    pub state: CheckpointState,
    /// Hugging Face directory of each saved model.
    pub model_dirs: HashMap<String, PathBuf>,
    pub optimizer: HashMap<String, Tensor>,
    pub metrics: Vec<StepRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The directory name of the checkpoint after `global_step` steps.
pub fn dir_name(global_step: u64) -> String {
    format!("step-{global_step:06}")
}

/// fsync every file of `dir` (the Hugging Face saver renames its files into place but the
/// checkpoint's promise is durability before the directory rename).
fn sync_tree(dir: &Path) -> Result<(), CheckpointError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let p = entry.map_err(|e| io_err(dir, e))?.path();
        if p.is_file() {
            let f = std::fs::File::open(&p).map_err(|e| io_err(&p, e))?;
            f.sync_all().map_err(|e| io_err(&p, e))?;
        }
    }
    sync_dir(dir);
    Ok(())
}

fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<(), CheckpointError> {
    candle_core::safetensors::save(tensors, path).map_err(|e| io_err(path, e))?;
    let f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

/// Write a checkpoint under `root` (`<out>/checkpoints`); returns its directory.
pub fn save(root: &Path, data: &CheckpointData<'_>) -> Result<PathBuf, CheckpointError> {
    let name = dir_name(data.state.global_step);
    let final_dir = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    for (name, model) in &data.models {
        let dir = tmp.join(name);
        crate::hf::save(&dir, model, data.tokenizer).map_err(|e| io_err(&dir, e))?;
        sync_tree(&dir)?;
    }
    save_tensors(&tmp.join("optimizer.safetensors"), &data.optimizer)?;
    let state = serde_json::to_string_pretty(data.state)
        .map_err(|e| CheckpointError::Invalid(e.to_string()))?;
    write_atomic(&tmp.join("state.json"), state.as_bytes()).map_err(|e| io_err(&tmp, e))?;
    let mut metrics = String::new();
    for r in data.metrics {
        metrics.push_str(
            &serde_json::to_string(r).map_err(|e| CheckpointError::Invalid(e.to_string()))?,
        );
        metrics.push('\n');
    }
    write_atomic(&tmp.join("metrics.jsonl"), metrics.as_bytes()).map_err(|e| io_err(&tmp, e))?;
    sync_dir(&tmp);
    if final_dir.exists() {
        // A previous (killed) run of the same out dir reached this step: replace it.
        std::fs::remove_dir_all(&final_dir).map_err(|e| io_err(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| io_err(&final_dir, e))?;
    sync_dir(root);
    write_atomic(&root.join("latest"), name.as_bytes()).map_err(|e| io_err(root, e))?;
    Ok(final_dir)
}

/// Resolve `path` to a checkpoint directory: a checkpoint itself (has `state.json`), a
/// `checkpoints` directory or a run output directory (then its `latest`).
pub fn resolve(path: &Path) -> Result<PathBuf, CheckpointError> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    for root in [path.to_path_buf(), path.join("checkpoints")] {
        let latest = root.join("latest");
        if latest.is_file() {
            let name = std::fs::read_to_string(&latest).map_err(|e| io_err(&latest, e))?;
            let dir = root.join(name.trim());
            if dir.join("state.json").is_file() {
                return Ok(dir);
            }
            return Err(CheckpointError::Invalid(format!(
                "{} names checkpoint `{}`, which has no state.json",
                latest.display(),
                name.trim()
            )));
        }
    }
    Err(CheckpointError::Invalid(format!(
        "{} is not a checkpoint (no state.json) nor a run directory with checkpoints/latest",
        path.display()
    )))
}

/// Load the checkpoint at (or named by) `path` onto `device`.
pub fn load(path: &Path, device: &Device) -> Result<Loaded, CheckpointError> {
    let dir = resolve(path)?;
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| io_err(&state_path, e))?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| io_err(&state_path, e))?;
    if state.format != CHECKPOINT_FORMAT {
        return Err(CheckpointError::Invalid(format!(
            "{}: checkpoint format {} is not supported (this build reads {CHECKPOINT_FORMAT})",
            state_path.display(),
            state.format
        )));
    }
    let mut model_dirs = HashMap::new();
    for m in &state.models {
        let p = dir.join(m);
        if !p.join("model.safetensors").is_file() {
            return Err(io_err(&p, "missing model.safetensors"));
        }
        model_dirs.insert(m.clone(), p);
    }
    let p = dir.join("optimizer.safetensors");
    let optimizer = candle_core::safetensors::load(&p, device).map_err(|e| io_err(&p, e))?;
    let p = dir.join("metrics.jsonl");
    let metrics = crate::output::read_metrics(&p).map_err(|e| io_err(&p, e))?;
    Ok(Loaded {
        dir,
        state,
        model_dirs,
        optimizer,
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn rng_state_round_trips() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        for _ in 0..37 {
            let _: u32 = rng.random();
        }
        let s = RngState::capture(&rng);
        let mut back = s.restore().unwrap();
        let a: Vec<u64> = (0..10).map(|_| rng.random()).collect();
        let b: Vec<u64> = (0..10).map(|_| back.random()).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn save_then_load() {
        let root = std::env::temp_dir().join(format!("post-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dev = Device::Cpu;
        let w = Tensor::new(&[1.0f32, 2.0], &dev).unwrap();
        let cfg = crate::model::presets::tiny();
        let (model, _vm) =
            Transformer::init_random(&cfg, Default::default(), 5, candle_core::DType::F32, &dev)
                .unwrap();
        let state = CheckpointState {
            format: CHECKPOINT_FORMAT,
            graph_hash: "h".into(),
            experiment: "e".into(),
            global_step: 3,
            stage_index: 0,
            stage_name: "s".into(),
            stage_step: 3,
            optimizer_step: 3,
            batcher: BatcherState {
                epoch: 1,
                position: 2,
            },
            rng: RngState::capture(&ChaCha8Rng::seed_from_u64(1)),
            models: vec!["policy".into()],
            wall_s: 1.5,
            rollout_state: serde_json::Value::Null,
        };
        let metrics = vec![StepRecord {
            step: 1,
            loss: Some(0.5),
            ..StepRecord::default()
        }];
        let dir = save(
            &root,
            &CheckpointData {
                state: &state,
                models: vec![("policy".into(), &model)],
                tokenizer: Some(&Tokenizer::builtin_char()),
                optimizer: HashMap::from([("m.w".to_string(), w.clone())]),
                metrics: &metrics,
            },
        )
        .unwrap();
        assert_eq!(dir, root.join("step-000003"));
        let loaded = load(&root, &dev).unwrap();
        assert_eq!(loaded.state, state);
        assert_eq!(loaded.metrics, metrics);
        let back =
            crate::hf::load(&loaded.model_dirs["policy"], candle_core::DType::F32, &dev).unwrap();
        let ids = Tensor::new(&[[1u32, 5, 9]], &dev).unwrap();
        let a: Vec<f32> = model
            .forward(&ids)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = back
            .model
            .forward(&ids)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b);
        let got: Vec<f32> = loaded.optimizer["m.w"].to_vec1().unwrap();
        assert_eq!(got, vec![1.0, 2.0]);
        assert!(load(&root.join("nothing"), &dev).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
