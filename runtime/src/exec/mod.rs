//! The graph executor: runs a lowered [`Graph`] end to end.
//!
//! Order of work, so that every mistake surfaces before the first step:
//! 1. [`validate`]: every stage, model, dataset, slot, rollout and eval the graph names exists
//!    and is supported by this runtime;
//! 2. datasets are loaded and transformed (a malformed JSONL line stops here, with file:line),
//!    every sequence is tokenized and checked against the model's context;
//! 3. models are built (presets from the seed, Hugging Face directories, frozen copies), a
//!    checkpoint is restored when resuming, and the memory estimate is printed and checked;
//! 4. stages run in order, each with a fresh optimiser of its own settings. Each step: take the
//!    next records (deterministic order); sample every rollout slot once for the whole batch
//!    (`crate::rollouts`: groups of n, BREAD's branched groups, rewards); then for each of the
//!    objective's `updates_per_batch` updates and each gradient-accumulation micro-batch, fill
//!    every slot (policy log-probabilities with gradient, the frozen reference's, `old_logp`
//!    fixed at the first update, completion-only masks, rewards), evaluate the loss
//!    (`crate::objectives::evaluate_loss_fused` with fusion on, else `evaluate_loss`), backpropagate and accumulate; average, clip by
//!    global norm, and apply the optimiser with the scheduled learning rate. `eval` blocks run
//!    before a stage's first step, every `every` steps and after its last step. Checkpoints are
//!    written every `checkpoint_every` steps and at the end of each stage; at the end of the run
//!    the trained models are exported to `<out>/models/<name>/`.
//!
//! A non-finite loss or gradient norm stops the run at that step, before the update, naming it
//! and the last good checkpoint.

mod eval;
mod slots;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use post_graph::{
    BatchUnit, Graph, MetricKind, ModelSource, Quantity, SlotSource, StageKind, TrainStage,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{self, CHECKPOINT_FORMAT, CheckpointData, CheckpointState, RngState};
use crate::data::{self, Batcher, DataError, Dataset, Record};
use crate::memory;
use crate::model::Transformer;
use crate::objectives::{SlotMap, evaluate_loss, evaluate_loss_fused, plan_fused};
use crate::optim::{Grads, Optimizer, Params};
use crate::output::{self, MetricGoal, MetricsWriter, Progress, StepRecord, Summary};
use crate::rollouts::{RolloutBatch, RolloutState};
use crate::tokenizer::Tokenizer;

pub use eval::{pass_at_k, run_eval, sample_completions};
pub use slots::{SeqBatch, build_batch, encode_pair, encode_prompt};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where metrics, summary, plot and checkpoints go.
    pub out_dir: PathBuf,
    /// Relative data paths are resolved against this (the `.post` file's directory).
    pub base_dir: PathBuf,
    /// Continue from this checkpoint (or run directory).
    pub resume: Option<PathBuf>,
    /// Stop after this many global steps as if killed (no final checkpoint or summary): used
    /// to test resumption.
    pub stop_after: Option<u64>,
    /// No progress output.
    pub quiet: bool,
    /// Memory the plan may use, in bytes (default: what the machine has available).
    pub memory_limit: Option<u64>,
}

impl RunOptions {
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        RunOptions {
            out_dir: out_dir.into(),
            base_dir: PathBuf::from("."),
            resume: None,
            stop_after: None,
            quiet: true,
            memory_limit: None,
        }
    }
}

/// How a run ended without error.
#[derive(Debug, Clone)]
pub enum RunOutcome {
    Finished(Box<Summary>),
    /// Stopped by [`RunOptions::stop_after`] after this many global steps.
    Stopped {
        step: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}")]
    Memory(String),
    #[error(
        "{what} is not finite ({value}) at step {step} (stage `{stage}`); the run stopped before applying that update. {}",
        match checkpoint {
            Some(c) => format!("Last good checkpoint: {}", c.display()),
            None => "No checkpoint had been written yet.".to_string(),
        }
    )]
    NonFinite {
        step: u64,
        stage: String,
        what: String,
        value: f64,
        checkpoint: Option<PathBuf>,
    },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("{context}: {source}")]
    Candle {
        context: String,
        source: candle_core::Error,
    },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> RunError {
    RunError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, RunError>;
}

impl<T> Context<T> for candle_core::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, RunError> {
        self.map_err(|source| RunError::Candle {
            context: what(),
            source,
        })
    }
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn sub_seed(seed: u64, tag: &str) -> u64 {
    seed ^ fnv1a(tag.as_bytes()).rotate_left(29)
}

// ---------------------------------------------------------------------------------------------
// Validation

/// Check that this runtime can execute `graph`, before loading anything.
pub fn validate(graph: &Graph) -> Result<(), RunError> {
    let bad = |m: String| Err(RunError::Invalid(m));
    if graph.stages.is_empty() {
        return bad("the experiment has no stages".into());
    }
    for m in &graph.models {
        match &m.source {
            ModelSource::Preset { .. } | ModelSource::HuggingFace { .. } => {}
            ModelSource::Frozen { of }
            | ModelSource::Snapshot { of }
            | ModelSource::Lagged { of, .. } => {
                if graph.root_model(of).is_none() {
                    return bad(format!(
                        "model `{}` is a copy of unknown model `{of}`",
                        m.name
                    ));
                }
                if let ModelSource::Lagged { every_steps: 0, .. } = m.source {
                    return bad(format!(
                        "model `{}`: a lagged copy must be refreshed every 1 or more steps",
                        m.name
                    ));
                }
            }
        }
    }
    for stage in &graph.stages {
        let t = match &stage.kind {
            StageKind::Train(t) => t,
            StageKind::Select(_) => {
                return bad(format!(
                    "stage `{}`: data selection stages are not supported by this runtime yet",
                    stage.name
                ));
            }
            StageKind::Analyze(_) => {
                return bad(format!(
                    "stage `{}`: analysis stages are not supported by this runtime yet",
                    stage.name
                ));
            }
        };
        let here = |m: String| RunError::Invalid(format!("stage `{}`: {m}", stage.name));
        match graph.model(&t.model).map(|m| &m.source) {
            None => return Err(here(format!("unknown model `{}`", t.model))),
            Some(ModelSource::Frozen { .. }) => {
                return Err(here(format!(
                    "model `{}` is frozen and cannot be trained",
                    t.model
                )));
            }
            Some(_) => {}
        }
        if graph.dataset(&t.data).is_none() {
            return Err(here(format!("unknown dataset `{}`", t.data)));
        }
        if t.steps == 0 {
            return Err(here("steps must be positive".into()));
        }
        let records = records_per_step(graph, t);
        if t.grad_accum == 0 || records == 0 || !records.is_multiple_of(t.grad_accum) {
            return Err(here(format!(
                "a batch of {records} records does not split into {} gradient-accumulation micro-batches",
                t.grad_accum
            )));
        }
        if t.objective.updates_per_batch == 0 {
            return Err(here("updates_per_batch must be positive".into()));
        }
        let inputs = t.objective.loss.inputs();
        for slot in &t.objective.slots {
            match &slot.source {
                SlotSource::Data { .. } => {
                    if t.batch.unit == BatchUnit::Completions {
                        return Err(here(format!(
                            "slot `{}` reads data, so the batch counts sequences or prompts, not completions",
                            slot.name
                        )));
                    }
                    if inputs.contains(&(Quantity::Reward, slot.name.clone())) {
                        return Err(here(format!(
                            "slot `{}` reads data records, which have no reward",
                            slot.name
                        )));
                    }
                }
                SlotSource::Rollout { rollout } => {
                    let r = graph.rollout(rollout).ok_or_else(|| {
                        here(format!(
                            "slot `{}` uses unknown rollout `{rollout}`",
                            slot.name
                        ))
                    })?;
                    match &r.policy {
                        post_graph::Rollout::Sample(_) | post_graph::Rollout::Branched { .. } => {}
                        _ => {
                            return Err(here(format!(
                                "slot `{}`: rollout `{rollout}` (guided or verifier-stopped decoding) is not supported for training by this runtime yet",
                                slot.name
                            )));
                        }
                    }
                    let base = r.policy.base();
                    if graph.model(&base.model).is_none() {
                        return Err(here(format!(
                            "rollout `{rollout}` samples from unknown model `{}`",
                            base.model
                        )));
                    }
                    let n = base.n.max(1);
                    if t.batch.unit != BatchUnit::Prompts && t.batch.size % n != 0 {
                        return Err(here(format!(
                            "batch of {} completions does not split into groups of {n}",
                            t.batch.size
                        )));
                    }
                    if let Some(reward) = &slot.reward {
                        let node = graph.reward(reward).ok_or_else(|| {
                            here(format!(
                                "slot `{}` reads unknown reward `{reward}`",
                                slot.name
                            ))
                        })?;
                        crate::rewards::validate(&node.expr)
                            .map_err(|e| here(format!("reward `{reward}`: {e}")))?;
                    }
                }
                SlotSource::Replay { rollout, .. } => {
                    return Err(here(format!(
                        "slot `{}` samples from a replay buffer of rollout `{rollout}`: replay buffers are not supported by this runtime yet",
                        slot.name
                    )));
                }
            }
        }
        for (q, s) in &inputs {
            if !t.objective.slots.iter().any(|x| &x.name == s) {
                return Err(here(format!(
                    "the loss reads {} of unknown slot `{s}`",
                    q.name()
                )));
            }
            if *q == Quantity::RefLogp {
                match &t.objective.reference {
                    None => {
                        return Err(here(
                            "the loss reads ref_logp but the objective names no reference model"
                                .into(),
                        ));
                    }
                    Some(r) if graph.model(r).is_none() => {
                        return Err(here(format!("unknown reference model `{r}`")));
                    }
                    Some(_) => {}
                }
            }
        }
        for h in t.objective.loss.hypers() {
            if !t.hypers.contains_key(&h) {
                return Err(here(format!(
                    "the loss reads hyperparameter `{h}`, which has no value"
                )));
            }
        }
        for e in &t.evals {
            if graph.dataset(&e.data).is_none() {
                return Err(here(format!("eval on unknown dataset `{}`", e.data)));
            }
            if e.every == 0 {
                return Err(here("eval every 0 steps".into()));
            }
            for m in &e.metrics {
                let r = graph.rollout(&m.rollout).ok_or_else(|| {
                    here(format!(
                        "metric `{}` uses unknown rollout `{}`",
                        m.name, m.rollout
                    ))
                })?;
                if graph.model(&r.policy.base().model).is_none() {
                    return Err(here(format!(
                        "rollout `{}` samples from unknown model `{}`",
                        m.rollout,
                        r.policy.base().model
                    )));
                }
                // Evals decode with the rollout's base sampling (a branched rollout has no
                // expert at test time); guided and verifier-stopped decoding would need their
                // own decoders, so they are refused rather than silently replaced.
                if matches!(
                    r.policy,
                    post_graph::Rollout::Guided { .. }
                        | post_graph::Rollout::VerifierStopped { .. }
                ) {
                    return Err(here(format!(
                        "metric `{}`: rollout `{}` (guided or verifier-stopped decoding) is not supported by this runtime yet",
                        m.name, m.rollout
                    )));
                }
                let reward = match &m.kind {
                    MetricKind::MeanReward { reward } | MetricKind::PassAtK { reward, .. } => {
                        Some(reward)
                    }
                    MetricKind::MeanLength => None,
                };
                if let Some(reward) = reward {
                    let node = graph.reward(reward).ok_or_else(|| {
                        here(format!(
                            "metric `{}` uses unknown reward `{reward}`",
                            m.name
                        ))
                    })?;
                    crate::rewards::validate(&node.expr)
                        .map_err(|e| here(format!("reward `{reward}`: {e}")))?;
                }
                if let MetricKind::PassAtK { k, .. } = m.kind
                    && (k == 0 || k > r.policy.base().n)
                {
                    return Err(here(format!(
                        "metric `{}`: pass@{k} needs between 1 and n = {} samples per prompt",
                        m.name,
                        r.policy.base().n
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Records (prompts) drawn per step: the batch, or the batch over the group size when it
/// counts completions of a rollout.
fn records_per_step(graph: &Graph, t: &TrainStage) -> usize {
    let n = t
        .objective
        .slots
        .iter()
        .filter_map(|s| match &s.source {
            SlotSource::Rollout { rollout } | SlotSource::Replay { rollout, .. } => {
                graph.rollout(rollout).map(|r| r.policy.base().n.max(1))
            }
            SlotSource::Data { .. } => None,
        })
        .max()
        .unwrap_or(1);
    match t.batch.unit {
        BatchUnit::Prompts => t.batch.size,
        BatchUnit::Sequences | BatchUnit::Completions => t.batch.size / n,
    }
}

fn train_stages(graph: &Graph) -> Vec<(usize, &str, &TrainStage)> {
    graph
        .stages
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match &s.kind {
            StageKind::Train(t) => Some((i, s.name.as_str(), t)),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Models

struct ModelEntry {
    model: Transformer,
    /// The trainable variables; `None` for frozen copies.
    varmap: Option<VarMap>,
}

fn build_models(
    graph: &Graph,
    base_dir: &Path,
    device: &Device,
) -> Result<(BTreeMap<String, ModelEntry>, Tokenizer), RunError> {
    let mut models = BTreeMap::new();
    let mut tokenizer: Option<Tokenizer> = None;
    for m in &graph.models {
        let entry = match &m.source {
            ModelSource::Preset {
                preset,
                config,
                init,
            } => {
                let (model, varmap) = Transformer::init_random(
                    config,
                    Default::default(),
                    sub_seed(graph.seed, &format!("model/{}", m.name)),
                    DType::F32,
                    device,
                )
                .ctx(|| format!("model `{}` (preset {preset})", m.name))?;
                if let Some(dir) = init {
                    let dir = resolve_path(base_dir, dir);
                    crate::hf::load_weights_into(&dir, config, &varmap, DType::F32, device)
                        .map_err(|e| {
                            RunError::Invalid(format!("model `{}`: initial weights: {e}", m.name))
                        })?;
                }
                let char_tok = Tokenizer::builtin_char();
                if config.vocab_size < char_tok.vocab_size() {
                    return Err(RunError::Invalid(format!(
                        "model `{}`: vocabulary {} is smaller than the built-in tokenizer's {}",
                        m.name,
                        config.vocab_size,
                        char_tok.vocab_size()
                    )));
                }
                tokenizer.get_or_insert(char_tok);
                ModelEntry {
                    model,
                    varmap: Some(varmap),
                }
            }
            ModelSource::HuggingFace { path } => {
                let dir = resolve_path(base_dir, path);
                let hf = crate::hf::load(&dir, DType::F32, device)
                    .map_err(|e| RunError::Invalid(format!("model `{}`: {e}", m.name)))?;
                if let Some(t) = hf.tokenizer {
                    tokenizer.get_or_insert(t);
                }
                ModelEntry {
                    model: hf.model,
                    varmap: Some(hf.varmap),
                }
            }
            // Built below, once their source exists.
            _ => continue,
        };
        models.insert(m.name.clone(), entry);
    }
    for m in &graph.models {
        if let ModelSource::Frozen { .. }
        | ModelSource::Snapshot { .. }
        | ModelSource::Lagged { .. } = &m.source
        {
            let root = graph
                .root_model(&m.name)
                .ok_or_else(|| RunError::Invalid(format!("model `{}` has no source", m.name)))?;
            let src = models.get(&root.name).ok_or_else(|| {
                RunError::Invalid(format!(
                    "model `{}` copies `{}`, which was not built",
                    m.name, root.name
                ))
            })?;
            let model = src
                .model
                .frozen_copy()
                .ctx(|| format!("frozen copy `{}`", m.name))?;
            models.insert(
                m.name.clone(),
                ModelEntry {
                    model,
                    varmap: None,
                },
            );
        }
    }
    let tokenizer = tokenizer.ok_or_else(|| {
        RunError::Invalid(
            "no tokenizer: Hugging Face models need a tokenizer.json in their directory".into(),
        )
    })?;
    Ok((models, tokenizer))
}

fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() { p } else { base.join(p) }
}

// ---------------------------------------------------------------------------------------------
// Data

fn load_datasets(graph: &Graph, base_dir: &Path) -> Result<BTreeMap<String, Dataset>, RunError> {
    let predicate = |expr: &post_graph::RExpr, r: &Record| -> Result<f64, String> {
        crate::rewards::try_eval_reward(
            expr,
            &crate::rewards::Sample {
                completion: "",
                fields: r.fields(),
                completion_tokens: 0,
            },
        )
        .map_err(|e| e.to_string())
    };
    let mut out = BTreeMap::new();
    for node in &graph.datasets {
        // Selected datasets appear once their selection stage has run; no stage of this
        // runtime produces one, and validation refuses such stages, so skip unless used.
        let used = graph.stages.iter().any(|s| match &s.kind {
            StageKind::Train(t) => {
                t.data == node.name || t.evals.iter().any(|e| e.data == node.name)
            }
            _ => false,
        });
        if !used {
            continue;
        }
        let ds = data::load(node, base_dir, graph.seed, &predicate)?;
        out.insert(node.name.clone(), ds);
    }
    Ok(out)
}

/// Tokenize every training sequence and eval prompt once, refusing any that cannot fit the
/// context. Returns the longest training sequence and the longest generation (prompt + new).
fn check_lengths(
    graph: &Graph,
    datasets: &BTreeMap<String, Dataset>,
    tok: &Tokenizer,
    context: usize,
) -> Result<(usize, usize), RunError> {
    let mut max_seq = 2;
    let mut max_gen = 0;
    for (_, name, t) in train_stages(graph) {
        let ds = &datasets[&t.data];
        for slot in &t.objective.slots {
            if let SlotSource::Data { field } = &slot.source {
                for (i, r) in ds.records.iter().enumerate() {
                    let prompt = r.require("prompt").map_err(|e| {
                        RunError::Invalid(format!(
                            "stage `{name}`: dataset `{}` record {}: {e}",
                            t.data,
                            i + 1
                        ))
                    })?;
                    let completion = r.require(field).map_err(|e| {
                        RunError::Invalid(format!(
                            "stage `{name}`: slot `{}` reads field `{field}`: dataset `{}` record {}: {e}",
                            slot.name, t.data, i + 1
                        ))
                    })?;
                    let (ids, _) = encode_pair(tok, prompt, completion).map_err(|e| {
                        RunError::Invalid(format!("dataset `{}` record {}: {e}", t.data, i + 1))
                    })?;
                    if ids.len() > context {
                        return Err(RunError::Invalid(format!(
                            "dataset `{}` record {}: prompt + {field} is {} tokens, longer than the model's context of {context}",
                            t.data,
                            i + 1,
                            ids.len()
                        )));
                    }
                    max_seq = max_seq.max(ids.len());
                }
            }
        }
        for e in &t.evals {
            let ds = &datasets[&e.data];
            let limit = e.limit.unwrap_or(ds.records.len()).min(ds.records.len());
            for (i, r) in ds.records[..limit].iter().enumerate() {
                let prompt = r.require("prompt").map_err(|err| {
                    RunError::Invalid(format!("eval dataset `{}` record {}: {err}", e.data, i + 1))
                })?;
                let ids = encode_prompt(tok, prompt).map_err(RunError::Invalid)?;
                if ids.len() >= context {
                    return Err(RunError::Invalid(format!(
                        "eval dataset `{}` record {}: the prompt is {} tokens, the model's context is {context}",
                        e.data,
                        i + 1,
                        ids.len()
                    )));
                }
                for m in &e.metrics {
                    if let Some(r) = graph.rollout(&m.rollout) {
                        max_gen = max_gen.max(ids.len() + r.policy.base().max_tokens);
                    }
                }
            }
        }
    }
    Ok((max_seq, max_gen.min(context)))
}

// ---------------------------------------------------------------------------------------------
// Running

struct Runner<'g> {
    graph: &'g Graph,
    opts: &'g RunOptions,
    models: BTreeMap<String, ModelEntry>,
    tokenizer: Tokenizer,
    datasets: BTreeMap<String, Dataset>,
    device: Device,
    records: Vec<StepRecord>,
    metrics: MetricsWriter,
    rng: ChaCha8Rng,
    rollout_state: RolloutState,
    global_step: u64,
    last_checkpoint: Option<PathBuf>,
    wall_before: f64,
    start: Instant,
    progress: Progress,
    goals: BTreeMap<String, MetricGoal>,
}

/// Run `graph`. Errors before the first step leave nothing behind but the out directory.
pub fn run(graph: &Graph, opts: &RunOptions) -> Result<RunOutcome, RunError> {
    run_with_log(graph, opts, &mut |m: &str| {
        if !opts.quiet {
            eprintln!("{m}");
        }
    })
}

/// [`run`], sending the pre-run messages (memory estimate, resume point) to `log`.
pub fn run_with_log(
    graph: &Graph,
    opts: &RunOptions,
    log: &mut dyn FnMut(&str),
) -> Result<RunOutcome, RunError> {
    let start = Instant::now();
    validate(graph)?;
    let device = Device::Cpu;
    let datasets = load_datasets(graph, &opts.base_dir)?;
    let (mut models, tokenizer) = build_models(graph, &opts.base_dir, &device)?;
    let stages = train_stages(graph);
    let context = stages
        .iter()
        .map(|(_, _, t)| models[&t.model].model.config().max_position_embeddings)
        .min()
        .unwrap_or(0);
    let (max_seq, max_gen) = check_lengths(graph, &datasets, &tokenizer, context)?;

    // Memory: the largest stage's plan.
    let frozen = models.values().filter(|m| m.varmap.is_none()).count();
    let mut worst: Option<memory::MemoryEstimate> = None;
    for (_, _, t) in &stages {
        let m = &models[&t.model].model;
        let plan = memory::MemoryPlan {
            batch: t.batch.size / t.grad_accum * t.objective.slots.len().max(1),
            seq_len: max_seq,
            trainable: true,
            frozen_copies: frozen,
            gen_batch: if max_gen > 0 { 64 } else { 0 },
            gen_len: max_gen,
            dtype_bytes: 4,
        };
        let e = memory::estimate(m.config(), m.options().attention_bias, &plan);
        if worst.is_none_or(|w| e.total > w.total) {
            worst = Some(e);
        }
    }
    if let Some(e) = worst {
        log(&format!("memory estimate: {e}"));
        let available = opts.memory_limit.or_else(memory::available_memory_bytes);
        if let Some(avail) = available {
            e.check_fits(avail).map_err(RunError::Memory)?;
        }
    }

    std::fs::create_dir_all(&opts.out_dir).map_err(|e| io_err(&opts.out_dir, e))?;
    let mut resume_state = None;
    let mut prefix = Vec::new();
    let mut wall_before = 0.0;
    if let Some(path) = &opts.resume {
        let loaded = checkpoint::load(path, &device)?;
        if loaded.state.graph_hash != graph.hash() {
            return Err(RunError::Resume(format!(
                "checkpoint {} was written by a different experiment graph (hash {}, this graph {})",
                loaded.dir.display(),
                loaded.state.graph_hash,
                graph.hash()
            )));
        }
        for (name, dir) in &loaded.model_dirs {
            let entry = models.get(name).ok_or_else(|| {
                RunError::Resume(format!(
                    "checkpoint holds model `{name}`, the graph has none"
                ))
            })?;
            match &entry.varmap {
                Some(varmap) => crate::hf::load_weights_into(
                    dir,
                    entry.model.config(),
                    varmap,
                    DType::F32,
                    &device,
                )
                .map_err(|e| RunError::Resume(e.to_string()))?,
                None => {
                    // A snapshot or lagged copy: its weights as they were at the checkpoint.
                    let copy = crate::hf::load(dir, DType::F32, &device)
                        .map_err(|e| RunError::Resume(e.to_string()))?
                        .model
                        .frozen_copy()
                        .ctx(|| format!("restoring copy `{name}`"))?;
                    if let Some(e) = models.get_mut(name) {
                        e.model = copy;
                    }
                }
            }
        }
        log(&format!(
            "resuming from {} (step {}, stage `{}`)",
            loaded.dir.display(),
            loaded.state.global_step,
            loaded.state.stage_name
        ));
        prefix = loaded.metrics.clone();
        wall_before = loaded.state.wall_s;
        resume_state = Some(loaded);
    }
    let metrics_path = opts.out_dir.join("metrics.jsonl");
    let metrics =
        MetricsWriter::create(&metrics_path, &prefix).map_err(|e| io_err(&metrics_path, e))?;
    let total: u64 = stages.iter().map(|(_, _, t)| t.steps).sum();
    let mut goals = BTreeMap::new();
    for (_, _, t) in &stages {
        for e in &t.evals {
            for m in &e.metrics {
                if m.kind == MetricKind::MeanLength {
                    goals.insert(m.name.clone(), MetricGoal::Minimize);
                }
            }
        }
    }
    let rng = match &resume_state {
        Some(l) => l.state.rng.restore().map_err(RunError::Resume)?,
        None => ChaCha8Rng::seed_from_u64(sub_seed(graph.seed, "rollouts")),
    };
    let global_step = resume_state.as_ref().map_or(0, |l| l.state.global_step);
    let rollout_state = match &resume_state {
        Some(l) => RolloutState::from_json(&l.state.rollout_state).map_err(RunError::Resume)?,
        None => RolloutState::default(),
    };
    let mut runner = Runner {
        graph,
        opts,
        models,
        tokenizer,
        datasets,
        device,
        records: prefix,
        metrics,
        rng,
        rollout_state,
        global_step,
        last_checkpoint: resume_state.as_ref().map(|l| l.dir.clone()),
        wall_before,
        start,
        progress: Progress::new(total, global_step, opts.quiet),
        goals,
    };
    let result = runner.run_stages(&stages, resume_state);
    runner.progress.finish();
    match result {
        Ok(Some(step)) => Ok(RunOutcome::Stopped { step }),
        Ok(None) => {
            runner.export_models()?;
            let summary = runner.write_summary(None)?;
            Ok(RunOutcome::Finished(Box::new(summary)))
        }
        Err(e @ RunError::NonFinite { .. }) => {
            // Keep what was measured, and say why the run stopped.
            let _ = runner.write_summary(Some(e.to_string()));
            Err(e)
        }
        Err(e) => Err(e),
    }
}

impl Runner<'_> {
    fn wall_s(&self) -> f64 {
        self.wall_before + self.start.elapsed().as_secs_f64()
    }

    fn write_summary(&self, stopped: Option<String>) -> Result<Summary, RunError> {
        let mut summary = output::summarize(
            &self.records,
            &self.goals,
            self.wall_s(),
            memory::peak_rss_bytes().unwrap_or(0),
        );
        summary.stopped = stopped;
        let path = self.opts.out_dir.join("summary.json");
        let text = serde_json::to_string_pretty(&summary).map_err(|e| io_err(&path, e))?;
        output::write_atomic(&path, text.as_bytes()).map_err(|e| io_err(&path, e))?;
        let plot = self.opts.out_dir.join("curves.svg");
        output::write_plot(&plot, &self.graph.experiment, &self.records)
            .map_err(|e| io_err(&plot, e))?;
        Ok(summary)
    }

    /// Save every trained model to `<out>/models/<name>/` (a Hugging Face directory with the
    /// tokenizer): the stable path a later experiment starts from (`init = ...`).
    fn export_models(&self) -> Result<(), RunError> {
        for (name, entry) in &self.models {
            if entry.varmap.is_none() {
                continue;
            }
            let dir = self.opts.out_dir.join("models").join(name);
            let tmp = self
                .opts
                .out_dir
                .join("models")
                .join(format!(".{name}.tmp"));
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
            }
            crate::hf::save(&tmp, &entry.model, Some(&self.tokenizer))
                .map_err(|e| io_err(&tmp, e))?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
            }
            std::fs::rename(&tmp, &dir).map_err(|e| io_err(&dir, e))?;
        }
        Ok(())
    }

    fn append(&mut self, record: StepRecord) -> Result<(), RunError> {
        self.metrics
            .append(&record)
            .map_err(|e| io_err(self.metrics.path(), e))?;
        self.records.push(record);
        Ok(())
    }

    /// Runs the stages; `Ok(Some(step))` when stopped by `stop_after`.
    fn run_stages(
        &mut self,
        stages: &[(usize, &str, &TrainStage)],
        resume: Option<checkpoint::Loaded>,
    ) -> Result<Option<u64>, RunError> {
        let (start_index, mut resume) = match resume {
            Some(l) => (l.state.stage_index, Some(l)),
            None => (0, None),
        };
        for &(index, name, stage) in stages {
            if index < start_index {
                continue;
            }
            let r = resume.take().filter(|l| l.state.stage_index == index);
            if let Some(step) = self.run_stage(index, name, stage, r)? {
                return Ok(Some(step));
            }
        }
        Ok(None)
    }

    fn eval(
        &mut self,
        stage: &TrainStage,
        stage_name: &str,
        stage_step: u64,
    ) -> Result<BTreeMap<String, f64>, RunError> {
        let mut out = BTreeMap::new();
        for (i, e) in stage.evals.iter().enumerate() {
            let due =
                stage_step == 0 || stage_step == stage.steps || stage_step.is_multiple_of(e.every);
            if !due {
                continue;
            }
            let models = &self.models;
            let model_of = |name: &str| models.get(name).map(|m| &m.model);
            let seed = sub_seed(
                self.graph.seed,
                &format!("eval/{stage_name}/{i}/{}", self.global_step),
            );
            let values = run_eval(
                self.graph,
                e,
                &self.datasets[&e.data],
                &self.tokenizer,
                &model_of,
                seed,
            )
            .ctx(|| format!("stage `{stage_name}`: eval on `{}`", e.data))?;
            out.extend(values);
        }
        Ok(out)
    }

    fn run_stage(
        &mut self,
        index: usize,
        name: &str,
        stage: &TrainStage,
        resume: Option<checkpoint::Loaded>,
    ) -> Result<Option<u64>, RunError> {
        let entry = &self.models[&stage.model];
        let varmap = entry.varmap.clone().ok_or_else(|| {
            RunError::Invalid(format!(
                "stage `{name}`: model `{}` is not trainable",
                stage.model
            ))
        })?;
        let policy = entry.model.clone();
        let params = Params::from_varmap(&varmap);
        let mut optimizer = Optimizer::new(&stage.optimizer, params.clone())
            .ctx(|| format!("stage `{name}`: optimizer"))?;
        let ds_len = self.datasets[&stage.data].records.len();
        let batch_seed = sub_seed(self.graph.seed, &format!("batches/{name}"));
        let (mut batcher, mut stage_step) = match &resume {
            Some(l) => {
                optimizer
                    .load_state(&l.optimizer, l.state.optimizer_step)
                    .ctx(|| "restoring the optimizer".to_string())?;
                (
                    Batcher::restore(ds_len, batch_seed, l.state.batcher),
                    l.state.stage_step,
                )
            }
            None => (Batcher::new(ds_len, batch_seed), 0),
        };
        if stage_step >= stage.steps {
            return Ok(None);
        }
        // Planned (and JIT-compiled, or fetched from the kernel cache) once per stage.
        let fused = plan_fused(&stage.objective.loss);
        if stage_step == 0 {
            self.retake_snapshots(stage)?;
        }
        if stage_step == 0 && !stage.evals.is_empty() {
            let ev = self.eval(stage, name, 0)?;
            self.progress
                .println(&format!("[{name}] before training: {}", fmt_metrics(&ev)));
            self.append(StepRecord {
                step: self.global_step,
                stage: name.to_string(),
                stage_step: 0,
                eval: ev,
                ..StepRecord::default()
            })?;
        }
        let reads_ref = stage
            .objective
            .loss
            .inputs()
            .iter()
            .any(|(q, _)| *q == Quantity::RefLogp);
        let reference_name = stage.objective.reference.as_ref().filter(|_| reads_ref);
        let per_step = records_per_step(self.graph, stage);
        let micro = per_step / stage.grad_accum;
        while stage_step < stage.steps {
            let t0 = Instant::now();
            // Looked up every step: a lagged reference is replaced as the run goes.
            let reference = reference_name.map(|r| self.models[r].model.clone());
            let s = stage_step;
            let lr = optimizer.lr_at(s, stage.steps);
            let hypers: BTreeMap<String, f64> = stage
                .hypers
                .iter()
                .map(|(k, v)| (k.clone(), v.at(s, stage.steps)))
                .collect();
            let indices = batcher.next_batch(per_step);
            let mut tokens = 0usize;
            let mut first_loss = 0f64;
            let mut grad_norm = 0f64;
            let mut extra = BTreeMap::new();
            // Rollout slots sample once per step, for the whole batch, from the sampler's
            // current weights; every update and micro-batch then reads those samples.
            let mut sampled: BTreeMap<String, RolloutBatch> = BTreeMap::new();
            {
                let records: Vec<&Record> = indices
                    .iter()
                    .map(|&i| &self.datasets[&stage.data].records[i])
                    .collect();
                for slot in &stage.objective.slots {
                    if let SlotSource::Rollout { rollout } = &slot.source {
                        let node = self.graph.rollout(rollout).ok_or_else(|| {
                            RunError::Invalid(format!("unknown rollout `{rollout}`"))
                        })?;
                        let sampler = &self.models[&node.policy.base().model].model;
                        let batch = self
                            .rollout_state
                            .run(
                                self.graph,
                                &node.policy,
                                slot.reward.as_deref(),
                                sampler,
                                &self.tokenizer,
                                &records,
                                &mut self.rng,
                            )
                            .ctx(|| format!("stage `{name}`: rollout `{rollout}`"))?;
                        for (k, v) in self.rollout_state.metrics(&batch) {
                            extra.insert(k, v);
                        }
                        let rewards: Vec<f64> = batch
                            .seqs
                            .iter()
                            .map(|q| if q.reward.is_finite() { q.reward } else { 0.0 })
                            .collect();
                        let (mean, std) = mean_std(&rewards);
                        extra.insert(format!("{}/reward_mean", slot.name), mean);
                        extra.insert(format!("{}/reward_std", slot.name), std);
                        sampled.insert(slot.name.clone(), batch);
                    }
                }
            }
            let mut old: Vec<BTreeMap<String, (Tensor, Option<Tensor>)>> = Vec::new();
            for update in 0..stage.objective.updates_per_batch {
                let mut grads: Option<Grads> = None;
                let mut loss_sum = 0f64;
                for (mi, chunk) in indices.chunks(micro).enumerate() {
                    let records: Vec<&Record> = chunk
                        .iter()
                        .map(|&i| &self.datasets[&stage.data].records[i])
                        .collect();
                    let mut slot_map = SlotMap::new();
                    for slot in &stage.objective.slots {
                        let ref_model = if update == 0 {
                            reference.as_ref()
                        } else {
                            None
                        };
                        let mut st = match &slot.source {
                            SlotSource::Data { field } => {
                                let seqs = records
                                    .iter()
                                    .map(|r| {
                                        encode_pair(
                                            &self.tokenizer,
                                            r.get("prompt").unwrap_or(""),
                                            r.get(field).unwrap_or(""),
                                        )
                                    })
                                    .collect::<Result<Vec<_>, String>>()
                                    .map_err(RunError::Invalid)?;
                                let batch =
                                    build_batch(&seqs, self.tokenizer.pad_id(), &self.device)
                                        .ctx(|| format!("slot `{}`", slot.name))?;
                                if update == 0 {
                                    tokens += batch.tokens;
                                }
                                slots::slot_tensors(
                                    &policy,
                                    ref_model,
                                    &batch,
                                    batch.max_completion,
                                )
                            }
                            SlotSource::Rollout { .. } => {
                                let all = &sampled[&slot.name];
                                let g = all.group_size.max(1);
                                let start = (mi * micro * g).min(all.seqs.len());
                                let end = (start + chunk.len() * g).min(all.seqs.len());
                                let part = RolloutBatch {
                                    seqs: all.seqs[start..end].to_vec(),
                                    group_size: all.group_size,
                                    max_tokens: all.max_tokens,
                                    stats: Default::default(),
                                };
                                if update == 0 {
                                    tokens += part
                                        .seqs
                                        .iter()
                                        .map(|q| q.context.len() + q.completion.len())
                                        .sum::<usize>();
                                }
                                crate::rollouts::slot_tensors(
                                    &part,
                                    &policy,
                                    ref_model,
                                    &self.tokenizer,
                                    &self.device,
                                    stage.objective.mask_truncated,
                                )
                            }
                            SlotSource::Replay { .. } => {
                                // validate() refuses replay slots before the run.
                                return Err(RunError::Invalid(format!(
                                    "slot `{}`: replay buffers are not supported",
                                    slot.name
                                )));
                            }
                        }
                        .ctx(|| format!("stage `{name}`: slot `{}`", slot.name))?;
                        if update == 0 {
                            if old.len() <= mi {
                                old.push(BTreeMap::new());
                            }
                            old[mi]
                                .insert(slot.name.clone(), (st.logp.detach(), st.ref_logp.clone()));
                        } else {
                            // The sampler's log-probabilities stay those of the first update.
                            let (o, r) = &old[mi][&slot.name];
                            st.old_logp = Some(o.clone());
                            st.ref_logp = r.clone();
                        }
                        slot_map.insert(slot.name.clone(), st);
                    }
                    let loss = match &fused {
                        Some(f) => {
                            evaluate_loss_fused(f, &stage.objective.loss, &slot_map, &hypers)
                        }
                        None => evaluate_loss(&stage.objective.loss, &slot_map, &hypers),
                    }
                    .ctx(|| format!("stage `{name}`: objective `{}`", stage.objective.name))?;
                    let value = loss
                        .to_dtype(DType::F64)
                        .and_then(|l| l.to_scalar::<f64>())
                        .ctx(|| "reading the loss".to_string())?;
                    if !value.is_finite() {
                        return Err(self.non_finite(name, "the loss", value));
                    }
                    loss_sum += value;
                    let store = loss
                        .backward()
                        .ctx(|| format!("stage `{name}`: backward"))?;
                    let g = Grads::from_store(&params, &store);
                    match &mut grads {
                        None => grads = Some(g),
                        Some(acc) => acc.add(g).ctx(|| "accumulating gradients".to_string())?,
                    }
                }
                let n_micro = indices.len().div_ceil(micro).max(1);
                if update == 0 {
                    first_loss = loss_sum / n_micro as f64;
                }
                let mut grads = grads.unwrap_or(Grads(Vec::new()));
                if n_micro > 1 {
                    grads
                        .scale(1.0 / n_micro as f64)
                        .ctx(|| "averaging gradients".to_string())?;
                }
                grad_norm = match stage.grad_clip {
                    Some(c) => grads.clip_global_norm(c),
                    None => grads.global_norm(),
                }
                .ctx(|| "gradient norm".to_string())?;
                if !grad_norm.is_finite() {
                    return Err(self.non_finite(name, "the gradient norm", grad_norm));
                }
                optimizer
                    .step(&grads, lr)
                    .ctx(|| "optimizer step".to_string())?;
            }
            stage_step += 1;
            self.global_step += 1;
            self.refresh_lagged()?;
            let train_s = t0.elapsed().as_secs_f64();
            let ev = if stage.evals.is_empty() {
                BTreeMap::new()
            } else {
                self.eval(stage, name, stage_step)?
            };
            let record = StepRecord {
                step: self.global_step,
                stage: name.to_string(),
                stage_step,
                loss: Some(first_loss),
                lr: Some(lr),
                grad_norm: Some(grad_norm),
                tokens: Some(tokens as u64),
                tokens_per_s: Some(tokens as f64 / train_s.max(1e-9)),
                step_s: Some(train_s),
                extra,
                eval: ev,
            };
            let evaluated = !record.eval.is_empty();
            let mut msg = format!("[{name}] loss {first_loss:.4} lr {lr:.2e}");
            if evaluated {
                msg.push_str(&format!(" | {}", fmt_metrics(&record.eval)));
                self.progress
                    .eval(&format!("step {}: {msg}", self.global_step));
            }
            self.append(record)?;
            self.progress.step(self.global_step, &msg, evaluated);
            let due = stage_step == stage.steps
                || (stage.checkpoint_every > 0 && stage_step % stage.checkpoint_every == 0);
            if due {
                self.checkpoint(index, name, stage_step, &optimizer, batcher.state())?;
            }
            if self.opts.stop_after.is_some_and(|n| self.global_step >= n) {
                return Ok(Some(self.global_step));
            }
        }
        Ok(None)
    }

    /// Replace copy `name` by a fresh frozen copy of model `of`'s current weights.
    fn retake(&mut self, name: &str, of: &str) -> Result<(), RunError> {
        let copy = self
            .models
            .get(of)
            .ok_or_else(|| RunError::Invalid(format!("model `{name}` copies unknown `{of}`")))?
            .model
            .frozen_copy()
            .ctx(|| format!("copying `{of}` into `{name}`"))?;
        if let Some(e) = self.models.get_mut(name) {
            e.model = copy;
        }
        Ok(())
    }

    /// IRFT's per-stage snapshot: every snapshot model the stage reads (as the reference, as a
    /// sampler of a slot, or in an eval) is re-taken from its source when the stage starts.
    fn retake_snapshots(&mut self, stage: &TrainStage) -> Result<(), RunError> {
        let graph = self.graph;
        let mut named: Vec<&str> = stage
            .objective
            .reference
            .iter()
            .map(String::as_str)
            .collect();
        for slot in &stage.objective.slots {
            if let SlotSource::Rollout { rollout } | SlotSource::Replay { rollout, .. } =
                &slot.source
                && let Some(r) = graph.rollout(rollout)
            {
                named.push(&r.policy.base().model);
            }
        }
        for e in &stage.evals {
            for m in &e.metrics {
                if let Some(r) = graph.rollout(&m.rollout) {
                    named.push(&r.policy.base().model);
                }
            }
        }
        for m in &graph.models {
            if let ModelSource::Snapshot { of } = &m.source
                && named.contains(&m.name.as_str())
            {
                self.retake(&m.name, of)?;
            }
        }
        Ok(())
    }

    /// Lagged samplers: refreshed from their source every `every_steps` optimiser steps.
    fn refresh_lagged(&mut self) -> Result<(), RunError> {
        let graph = self.graph;
        for m in &graph.models {
            if let ModelSource::Lagged { of, every_steps } = &m.source
                && self.global_step.is_multiple_of(*every_steps)
            {
                self.retake(&m.name, of)?;
            }
        }
        Ok(())
    }

    fn non_finite(&self, stage: &str, what: &str, value: f64) -> RunError {
        RunError::NonFinite {
            step: self.global_step + 1,
            stage: stage.to_string(),
            what: what.to_string(),
            value,
            checkpoint: self.last_checkpoint.clone(),
        }
    }

    fn checkpoint(
        &mut self,
        index: usize,
        name: &str,
        stage_step: u64,
        optimizer: &Optimizer,
        batcher: data::BatcherState,
    ) -> Result<(), RunError> {
        let (opt_state, opt_step) = optimizer.state();
        // Trained models, and the copies that are not simply the initial weights (snapshots
        // and lagged samplers change during the run).
        let trained: Vec<(String, &Transformer)> = self
            .models
            .iter()
            .filter(|(n, m)| {
                m.varmap.is_some()
                    || matches!(
                        self.graph.model(n).map(|x| &x.source),
                        Some(ModelSource::Snapshot { .. } | ModelSource::Lagged { .. })
                    )
            })
            .map(|(n, m)| (n.clone(), &m.model))
            .collect();
        let state = CheckpointState {
            format: CHECKPOINT_FORMAT,
            graph_hash: self.graph.hash(),
            experiment: self.graph.experiment.clone(),
            global_step: self.global_step,
            stage_index: index,
            stage_name: name.to_string(),
            stage_step,
            optimizer_step: opt_step,
            batcher,
            rng: RngState::capture(&self.rng),
            models: trained.iter().map(|(n, _)| n.clone()).collect(),
            wall_s: self.wall_s(),
            rollout_state: self.rollout_state.to_json(),
        };
        let root = self.opts.out_dir.join("checkpoints");
        let dir = checkpoint::save(
            &root,
            &CheckpointData {
                state: &state,
                models: trained,
                tokenizer: Some(&self.tokenizer),
                optimizer: opt_state,
                metrics: &self.records,
            },
        )?;
        self.last_checkpoint = Some(dir);
        Ok(())
    }
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn fmt_metrics(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}
