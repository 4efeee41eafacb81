//! Checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! Layout of `<out>/checkpoints/step-<global step>/`:
//! - `<model>/model.safetensors` for every trained model (Hugging Face parameter names, so the
//!   directory opens in other tools);
//! - `optimizer.safetensors`: the optimiser's moment buffers (`m.<param>`, `v.<param>`);
//! - `state.json`: [`CheckpointState`] (graph hash, step, stage, data order, RNG, ...);
//! - `metrics.jsonl`: the metrics written up to this step, so a resumed run's file is identical
//!   to an uninterrupted run's;
//! - `manifest.json`, written last: the SHA-256 and size of every other file ([`manifest`]).
//!
//! A checkpoint is written into a temporary sibling directory, every file is fsynced, the
//! manifest is written, then the directory is renamed into place and `<out>/checkpoints/latest`
//! (the name of the newest one) is replaced atomically. A crash at any moment leaves either the
//! old or the new checkpoint. [`load_dir`] verifies the manifest before reading anything, then
//! parses every file; what the files must mean for a given graph is checked by the executor
//! (`exec::resume`), which falls back to an earlier checkpoint ([`candidates`]) when one fails.
//! Old checkpoints are pruned by [`retention`].

pub mod manifest;
pub mod retention;

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
    let dir = write_dir(root, data)?;
    publish(root, &dir)
}

/// Write every file of the checkpoint into a temporary directory under `root`, manifest last;
/// returns that directory (not yet visible as a checkpoint).
fn write_dir(root: &Path, data: &CheckpointData<'_>) -> Result<PathBuf, CheckpointError> {
    let name = dir_name(data.state.global_step);
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
    // Last: it vouches for every file above, which are all durable by now.
    manifest::write(&tmp)?;
    sync_dir(&tmp);
    Ok(tmp)
}

/// Rename the finished temporary directory `tmp` into place and point `latest` at it.
fn publish(root: &Path, tmp: &Path) -> Result<PathBuf, CheckpointError> {
    let name = tmp
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.split_once(".tmp-"))
        .map(|(n, _)| n.to_string())
        .ok_or_else(|| {
            CheckpointError::Invalid(format!("{}: not a temporary checkpoint", tmp.display()))
        })?;
    let final_dir = root.join(&name);
    if final_dir.exists() {
        // A previous (killed or fallen-back) run of the same out dir reached this step: move
        // it aside first, so a crash between the two renames still leaves a whole checkpoint
        // (the aside copy is a temporary the next run removes).
        let aside = root.join(format!(".{name}.replaced.tmp-{}", std::process::id()));
        std::fs::rename(&final_dir, &aside).map_err(|e| io_err(&final_dir, e))?;
        std::fs::rename(tmp, &final_dir).map_err(|e| io_err(&final_dir, e))?;
        std::fs::remove_dir_all(&aside).map_err(|e| io_err(&aside, e))?;
    } else {
        std::fs::rename(tmp, &final_dir).map_err(|e| io_err(&final_dir, e))?;
    }
    sync_dir(root);
    set_latest(root, &name)?;
    Ok(final_dir)
}

/// Point `<root>/latest` at checkpoint `name` (atomically).
pub fn set_latest(root: &Path, name: &str) -> Result<(), CheckpointError> {
    write_atomic(&root.join("latest"), name.as_bytes()).map_err(|e| io_err(root, e))
}

/// Where resuming from `path` looks, in order of preference.
pub struct Candidates {
    /// Checkpoint directories, newest first.
    pub dirs: Vec<PathBuf>,
    /// Why the first choice is not simply what `latest` names, when it is not (shown to the
    /// user).
    pub note: Option<String>,
}

/// The checkpoints to try when resuming from `path`: a checkpoint directory itself (then
/// it, followed by its older siblings), or a run directory or its `checkpoints` directory
/// (then the checkpoint `latest` names, followed by every older one). Checkpoints numbered
/// past `latest` were never committed by it (a crash between the rename and `latest`, or an
/// abandoned continuation) and are not tried. When `latest` is missing or names nothing,
/// every checkpoint is a candidate, newest first.
pub fn candidates(path: &Path) -> Result<Candidates, CheckpointError> {
    let own_step = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(retention::step_of);
    if let (Some(step), Some(parent)) = (own_step, path.parent())
        && (path.is_dir() || parent.join("latest").is_file())
    {
        let mut dirs = vec![path.to_path_buf()];
        dirs.extend(
            retention::list(parent)?
                .into_iter()
                .filter(|(s, _)| *s < step)
                .map(|(_, d)| d),
        );
        return Ok(Candidates { dirs, note: None });
    }
    if path.join("state.json").is_file() {
        return Ok(Candidates {
            dirs: vec![path.to_path_buf()],
            note: None,
        });
    }
    for root in [path.to_path_buf(), path.join("checkpoints")] {
        let latest = root.join("latest");
        let all = retention::list(&root)?;
        if !latest.is_file() && all.is_empty() {
            continue;
        }
        let named = std::fs::read_to_string(&latest)
            .ok()
            .map(|n| n.trim().to_string());
        let named_step = named.as_deref().and_then(retention::step_of);
        let (dirs, note) = match named_step {
            Some(top) => {
                let mut dirs: Vec<PathBuf> = Vec::new();
                let name = named.clone().unwrap_or_default();
                let note = if root.join(&name).is_dir() {
                    dirs.push(root.join(&name));
                    None
                } else {
                    Some(format!(
                        "{} names `{name}`, which does not exist",
                        latest.display()
                    ))
                };
                dirs.extend(all.into_iter().filter(|(s, _)| *s < top).map(|(_, d)| d));
                (dirs, note)
            }
            None => {
                let why = match &named {
                    Some(n) => format!("{} names `{n}`, not a checkpoint", latest.display()),
                    None => format!("{} is missing or unreadable", latest.display()),
                };
                (all.into_iter().map(|(_, d)| d).collect(), Some(why))
            }
        };
        if dirs.is_empty() {
            return Err(CheckpointError::Invalid(format!(
                "{}: no checkpoint to resume from{}",
                root.display(),
                note.map(|n| format!(" ({n})")).unwrap_or_default()
            )));
        }
        return Ok(Candidates { dirs, note });
    }
    Err(CheckpointError::Invalid(format!(
        "{} is not a checkpoint (no state.json) nor a run directory with checkpoints",
        path.display()
    )))
}

/// Load checkpoint directory `dir` onto `device`: the manifest is verified first (every byte
/// as written), then every file is parsed. What the contents must mean for a graph is checked
/// by the caller.
pub fn load_dir(dir: &Path, device: &Device) -> Result<Loaded, CheckpointError> {
    if !dir.is_dir() {
        return Err(CheckpointError::Invalid(format!(
            "{} does not exist",
            dir.display()
        )));
    }
    manifest::verify(dir)?;
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
    state
        .rng
        .restore()
        .map_err(|e| io_err(&state_path, format!("rng: {e}")))?;
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
        dir: dir.to_path_buf(),
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
        let loaded = load_dir(&candidates(&root).unwrap().dirs[0], &dev).unwrap();
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
        assert!(candidates(&root.join("nothing")).is_err());
        assert!(load_dir(&root.join("nothing"), &dev).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
