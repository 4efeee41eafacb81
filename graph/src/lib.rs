//! The runtime graph: what `post compile --emit graph` prints and what `post run` executes.
//!
//! Pipeline: `.post` source -> syntax (parse) -> check -> lower -> **graph** -> runtime.
//! The compiler produces a [`Graph`]; the runtime consumes it; nothing else passes between them.
//! Every name in a graph is resolved and every default is filled in (and listed in
//! [`Graph::defaults_applied`]), so the runtime never guesses.
//!
//! Three small expression languages live here:
//! - [`Expr`]: objective formulas over per-token, per-sequence and scalar tensors (differentiable,
//!   evaluated on candle by the runtime and fused into kernels by `post-kernels`);
//! - [`RExpr`]: reward and predicate expressions over one sample's text and dataset fields
//!   (pure, evaluated on strings and numbers, never differentiated);
//! - [`Schedule`]: a numeric hyperparameter as a function of the stage step.
//!
//! The format is versioned ([`GRAPH_VERSION`]); [`Graph::from_json`] refuses other versions.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

mod expr;
pub mod files;
mod hash;
pub mod hf_files;
pub mod paths;
pub mod pattern;
pub mod presets;
pub mod scalar;
pub mod support;
pub mod tasks;

pub use expr::{Axis, AxisError, BinaryOp, Expr, Quantity, Reduce, UnaryOp};
pub use hash::content_hash;

/// Bump when the serialized structure changes in a way old readers cannot follow.
pub const GRAPH_VERSION: u32 = 1;

/// A whole lowered experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// Always [`GRAPH_VERSION`] when written by this crate.
    pub version: u32,
    /// The experiment's name, from the `.post` file.
    pub experiment: String,
    /// Seed for every random choice of the run (sampling, shuffling, init).
    pub seed: u64,
    pub models: Vec<ModelNode>,
    pub datasets: Vec<DataNode>,
    pub rewards: Vec<RewardNode>,
    pub rollouts: Vec<RolloutNode>,
    /// Stages run in this order.
    pub stages: Vec<Stage>,
    /// Every default the compiler filled in, in source order, so a run is fully explained.
    pub defaults_applied: Vec<AppliedDefault>,
    /// Other experiments whose trained models this one starts from; `post run` builds each
    /// first when its output is missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<Prerequisite>,
}

/// Another experiment this one builds on: `model policy = trained("base.post", model =
/// "policy")`. Its output is keyed by its graph hash, so an edited prerequisite is rebuilt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prerequisite {
    /// The prerequisite's experiment name.
    pub experiment: String,
    /// Its `.post` file, relative to this experiment's file.
    pub file: String,
    /// The hash of its graph ([`Graph::hash`]) when this graph was compiled.
    pub graph_hash: String,
}

/// A preset that starts from the weights a prerequisite experiment exports for its `model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trained {
    /// The prerequisite's experiment name ([`Prerequisite::experiment`]).
    pub prerequisite: String,
    /// The model's name in the prerequisite.
    pub model: String,
}

impl Prerequisite {
    /// The directory a prerequisite's run is cached in, under a runs directory:
    /// `<runs>/prereq/<experiment>-<first 12 hex digits of its graph hash>`.
    pub fn cache_dir_name(&self) -> String {
        let short: String = self.graph_hash.chars().take(12).collect();
        format!("{}-{short}", self.experiment)
    }
}

/// One default the compiler applied: `path` names where (`stage rl.optimizer.weight_decay`),
/// `value` the value as written in `.post` syntax, `origin` where the default comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedDefault {
    pub path: String,
    pub value: String,
    pub origin: String,
}

// ---------------------------------------------------------------------------------------------
// Models

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelNode {
    pub name: String,
    pub source: ModelSource,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSource {
    /// A built-in architecture preset (`tiny`, `small`, `20m`), randomly initialised from the
    /// graph seed unless `init` names a checkpoint directory to start from.
    Preset {
        preset: String,
        config: ModelConfig,
        init: Option<String>,
        /// Initial weights from a prerequisite experiment (`trained(...)`), instead of `init`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trained: Option<Trained>,
    },
    /// A Hugging Face directory: `config.json`, `*.safetensors`, `tokenizer.json`.
    HuggingFace { path: String },
    /// A frozen copy of another model, taken when the run starts.
    Frozen { of: String },
    /// A frozen copy of another model, re-taken at the start of every stage that names it
    /// (IRFT's per-stage snapshot, the reference of a later stage).
    Snapshot { of: String },
    /// A copy of another model refreshed every `every_steps` optimiser steps (a lagged sampler).
    Lagged { of: String, every_steps: u64 },
}

/// Architecture of a Llama/Qwen2-family decoder. Preset values are filled in by the compiler so
/// the runtime and the checker agree on sizes (context length, vocabulary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub tie_embeddings: bool,
    /// Sliding-window attention (Mistral's `sliding_window`): a query attends to itself and
    /// the `w - 1` keys before it, in every layer. `None`: full causal attention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
}

// ---------------------------------------------------------------------------------------------
// Data

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataNode {
    pub name: String,
    pub source: DataSource,
    /// Applied in order to every record after loading.
    pub transforms: Vec<Transform>,
}

/// Largest batch of a stage, in records (prompts, sequences or completions): batches are held
/// in memory whole, and a batch such as `2^62` overflowed the sizes computed from it.
pub const MAX_BATCH: usize = 1 << 20;

/// Largest JSONL data file read (4 GiB), by `post check` and by the runtime: a bigger one is
/// refused with its name rather than exhausting memory.
pub const MAX_DATA_FILE_BYTES: u64 = 4 << 30;

/// Every record is a map of named text fields. Canonical field names used by the stdlib:
/// `prompt`, `solution` (an expert trace, steps separated by newlines), `answer`, `chosen`,
/// `rejected`, `context`, `label`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// A JSONL file: one object per line; `fields` maps record field -> JSON key.
    Jsonl {
        path: String,
        fields: BTreeMap<String, String>,
    },
    /// A built-in synthetic task with checkable answers and step-by-step expert traces.
    Task {
        task: String,
        split: Split,
        size: usize,
        /// The largest difficulty (problem size); every problem has it unless `min_difficulty`
        /// is set.
        difficulty: u32,
        /// With a value, each problem's difficulty is drawn uniformly from
        /// `min_difficulty..=difficulty` (a mixture of sizes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_difficulty: Option<u32>,
    },
    /// The subset chosen by a selection stage (S2L); available once that stage has run.
    Selected { stage: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Test,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transform {
    /// Render `template` (with `{field}` holes) into field `into` (usually `prompt`).
    Template { template: String, into: String },
    /// QFFT: train on the response alone: the prompt becomes empty (no template, no system text).
    DropPrompt,
    /// Append `token` to the prompt of records for which `when` holds (context-aware SFT).
    AppendIndicator { token: String, when: Condition },
    /// Keep shard `index` of `count` (records i with i % count == index).
    Shard { index: usize, count: usize },
    /// Keep records whose predicate holds.
    Filter { when: RExpr },
    /// Keep `n` records chosen uniformly with the graph seed (after shuffling).
    Take { n: usize },
    /// Shuffle with the graph seed.
    Shuffle,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    /// A predicate over the record's fields.
    Expr { expr: RExpr },
    /// The probe of "loss of context awareness": the share of attention the `model` gives to the
    /// user's context tokens while reading the response exceeds `threshold`.
    AttendsToContext { model: String, threshold: f64 },
}

// ---------------------------------------------------------------------------------------------
// Rewards

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardNode {
    pub name: String,
    /// Evaluates to a number (booleans count as 0/1).
    pub expr: RExpr,
}

/// A pure expression over one sample: the generated completion and the fields of the record it
/// was generated for. No IO, no code execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RExpr {
    Num {
        value: f64,
    },
    Str {
        value: String,
    },
    Bool {
        value: bool,
    },
    /// The generated text.
    Completion,
    /// A field of the sample's record (`prompt`, `answer`, ...).
    Field {
        name: String,
    },
    /// Length in tokens of the completion.
    CompletionTokens,
    Call {
        func: RFunc,
        args: Vec<RExpr>,
    },
    Unary {
        op: RUnary,
        arg: Box<RExpr>,
    },
    Binary {
        op: RBinary,
        lhs: Box<RExpr>,
        rhs: Box<RExpr>,
    },
    If {
        cond: Box<RExpr>,
        then: Box<RExpr>,
        otherwise: Box<RExpr>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum RFunc {
    /// Parse a number from text (the last number in it); NaN if there is none.
    Number,
    /// The first capture group (or the whole match) of `pattern`, or "" if it does not match.
    Extract {
        pattern: String,
    },
    /// Whether `pattern` matches anywhere in the text.
    Matches {
        pattern: String,
    },
    /// The final answer of a completion: text after the last `answer_marker`, trimmed.
    Answer {
        marker: String,
    },
    /// Whether a text is a valid `climb` solution of a prompt (`climb_valid(prompt, text,
    /// max_jump)`): every line a state 1 to `max_jump` steps above the one before, then the
    /// right answer. The answer check alone passes lucky guesses near the target.
    ClimbValid,
    /// Length in characters.
    Len,
    Contains,
    StartsWith,
    EndsWith,
    Trim,
    Lower,
    Abs,
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RUnary {
    Neg,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RBinary {
    Add,
    Sub,
    Mul,
    Div,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

// ---------------------------------------------------------------------------------------------
// Rollouts

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutNode {
    pub name: String,
    pub policy: Rollout,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub model: String,
    /// Completions per prompt (the group size G).
    pub n: usize,
    pub temperature: f64,
    /// 0 = no top-k filter.
    pub top_k: usize,
    /// 1.0 = no nucleus filter.
    pub top_p: f64,
    pub max_tokens: usize,
    /// Generation ends at any of these strings (the end-of-sequence token always ends it).
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rollout {
    /// Ancestral sampling; `temperature == 0` is greedy.
    Sample(Sampling),
    /// BREAD: sample `base`; for each group where `when` says all rollouts failed, splice a prefix
    /// of the record's expert trace (`expert_field`, split into steps at `step_delimiter`) into the
    /// context and sample branched continuations. The prefix length is the shortest number of
    /// steps that yields a success, found by `search`, remembered per problem when `remember`.
    Branched {
        base: Sampling,
        /// Reward whose value > `success_threshold` counts as a success.
        reward: String,
        success_threshold: f64,
        expert_field: String,
        step_delimiter: String,
        search: PrefixSearch,
        remember: bool,
        /// What fills a group whose shortest successful prefix succeeded every time (equal
        /// rewards would give it zero advantage). Absent in graphs written before it existed,
        /// which behaved as `Boundary`.
        #[serde(default)]
        anchor: BranchAnchor,
    },
    /// Transfer-Q*: at each step, expand the base model's top-`k` tokens, score each by the
    /// reward of a `lookahead`-token greedy rollout of `baseline`, sample from
    /// pi_base(z|s) * exp(alpha * Q(s, z)).
    Guided {
        base: Sampling,
        baseline: String,
        reward: String,
        k: usize,
        alpha: f64,
        lookahead: usize,
    },
    /// VTS: decode step by step (steps end at `step_delimiter`); after each step the verifier
    /// scores the trajectory (its summed log-ratio against `verifier_ref`); stop when the score
    /// changes by less than `tau` or after `max_steps` steps.
    VerifierStopped {
        base: Sampling,
        verifier: String,
        verifier_ref: String,
        step_delimiter: String,
        tau: f64,
        max_steps: usize,
    },
}

impl Rollout {
    /// The sampling settings every rollout policy is built on.
    pub fn base(&self) -> &Sampling {
        match self {
            Rollout::Sample(s) => s,
            Rollout::Branched { base, .. }
            | Rollout::Guided { base, .. }
            | Rollout::VerifierStopped { base, .. } => base,
        }
    }
}

/// How BREAD treats a branched group in which every continuation succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchAnchor {
    /// Half the successes, filled with the failures of the longest failing prefix (or of the
    /// original rollouts): a group with mixed contexts.
    #[default]
    Boundary,
    /// Half the successes, filled with the original (prompt-only) failed rollouts.
    Original,
    /// The group as it is: equal rewards, zero advantage, no update from it.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixSearch {
    Binary,
    Linear,
}

// ---------------------------------------------------------------------------------------------
// Objectives

/// A sequence set the objective reads: each sequence is a prompt plus a completion; loss flows
/// through completion tokens only (the prompt and any expert prefix are context).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    pub name: String,
    pub source: SlotSource,
    /// The reward whose value `Quantity::Reward` of this slot reads (a name in
    /// [`Graph::rewards`]); `None` when the loss does not read the reward.
    #[serde(default)]
    pub reward: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SlotSource {
    /// Completions are `field` of the stage's dataset records (prompt = the `prompt` field).
    Data { field: String },
    /// Completions are sampled by `rollout` on the stage's prompts (grouped, n per prompt).
    Rollout { rollout: String },
    /// Completions are sampled from a replay buffer of `capacity` sequences filled by `rollout`.
    Replay { rollout: String, capacity: usize },
}

/// An objective bound to its sources, with its formula fully inlined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveInstance {
    /// The stdlib or user objective this was instantiated from (`grpo`, `dpo`, `my_loss`).
    pub name: String,
    /// The arguments as written and defaulted, for display.
    pub args: BTreeMap<String, String>,
    pub slots: Vec<Slot>,
    /// Scalar loss to minimise.
    pub loss: Expr,
    /// The model whose log-probabilities `ref_logp` reads; required when the loss uses it.
    pub reference: Option<String>,
    /// Zero the mask of completions that hit `max_tokens` without stopping.
    pub mask_truncated: bool,
    /// Optimisation steps on each sampled batch (`old_logp` is the sampler's and stays fixed).
    pub updates_per_batch: usize,
}

// ---------------------------------------------------------------------------------------------
// Stages

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub kind: StageKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// A graph holds a handful of stages, built once per run: boxing the large variant would
// complicate every match on it for no measurable saving.
#[allow(clippy::large_enum_variant)]
pub enum StageKind {
    Train(TrainStage),
    Select(SelectStage),
    Analyze(AnalyzeStage),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainStage {
    /// The model that is optimised.
    pub model: String,
    pub data: String,
    pub steps: u64,
    pub batch: Batch,
    pub objective: ObjectiveInstance,
    pub optimizer: Optimizer,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f64>,
    pub grad_accum: usize,
    /// Values of every `Expr::Hyper` in the objective, as schedules over this stage's steps.
    pub hypers: BTreeMap<String, Schedule>,
    pub evals: Vec<Eval>,
    /// Write a checkpoint every this many steps (and at the end of the stage).
    pub checkpoint_every: u64,
    /// Keep this many of the newest checkpoints (plus the best by the first eval metric);
    /// older ones are deleted as new ones are written. At least 1.
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: u64,
}

/// `keep_checkpoints` when a stage does not set it.
pub const DEFAULT_KEEP_CHECKPOINTS: u64 = 3;

fn default_keep_checkpoints() -> u64 {
    DEFAULT_KEEP_CHECKPOINTS
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub size: usize,
    pub unit: BatchUnit,
}

/// What a batch counts. With a rollout of n per prompt, `prompts` x n = completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchUnit {
    Prompts,
    Sequences,
    Completions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Optimizer {
    AdamW {
        lr: Schedule,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    Sgd {
        lr: Schedule,
        momentum: f64,
    },
}

/// A numeric value over a stage's steps. Warmup ramps linearly from 0 over `warmup` steps,
/// then the shape runs over the remaining steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub shape: Shape,
    pub warmup: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shape {
    Constant { value: f64 },
    Linear { from: f64, to: f64 },
    Cosine { from: f64, to: f64 },
}

impl Schedule {
    pub fn constant(value: f64) -> Self {
        Schedule {
            shape: Shape::Constant { value },
            warmup: 0,
        }
    }

    /// The value at 0-based `step` of a stage with `total` steps.
    pub fn at(&self, step: u64, total: u64) -> f64 {
        let peak = match self.shape {
            Shape::Constant { value } => value,
            Shape::Linear { from, .. } | Shape::Cosine { from, .. } => from,
        };
        if step < self.warmup {
            return peak * (step + 1) as f64 / self.warmup as f64;
        }
        let span = total.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).clamp(0.0, 1.0);
        match self.shape {
            Shape::Constant { value } => value,
            Shape::Linear { from, to } => from + (to - from) * t,
            Shape::Cosine { from, to } => {
                to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// Metrics computed every `every` steps (and before the first and after the last step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Eval {
    pub data: String,
    pub every: u64,
    /// Evaluate on at most this many records of `data` (all when None).
    pub limit: Option<usize>,
    pub metrics: Vec<Metric>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// The name written in the `.post` file; the key in metrics.jsonl and summary.json.
    pub name: String,
    pub rollout: String,
    pub kind: MetricKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetricKind {
    /// Mean of the reward over all completions (accuracy when the reward is 0/1).
    MeanReward { reward: String },
    /// Unbiased pass@k from n samples per prompt (n = the rollout's n).
    PassAtK { reward: String, k: usize },
    /// Mean completion length in tokens.
    MeanLength,
}

/// SmallToLarge data selection: train `proxy` on `data` for `steps` steps, recording each
/// example's loss every `record_every` steps; k-means the loss trajectories into `clusters`
/// clusters; sample `budget` examples evenly across clusters, smallest cluster first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectStage {
    pub proxy: String,
    pub data: String,
    pub steps: u64,
    pub batch: Batch,
    pub optimizer: Optimizer,
    pub record_every: u64,
    pub clusters: usize,
    pub budget: usize,
}

/// Representation analysis: capture last-token hidden states of `model` on `data` at `layers`
/// and write a table of `summaries` per layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyzeStage {
    pub model: String,
    pub data: String,
    /// Layer indices (0 = embeddings output); empty = every layer.
    pub layers: Vec<usize>,
    pub limit: Option<usize>,
    pub summaries: Vec<Summary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Summary {
    /// Two-NN intrinsic dimension estimate.
    IntrinsicDim,
    /// Density-peak clustering; adjusted Rand index against the record field `labels`.
    DensityPeaks { labels: String },
    /// Share of attention on the record field `context` tokens, per layer.
    ContextAttention { context: String },
}

// ---------------------------------------------------------------------------------------------
// Serialization

#[derive(Debug)]
pub enum GraphError {
    Json(serde_json::Error),
    Version {
        found: u32,
        expected: u32,
    },
    /// A name that is not an identifier: names become file names under `--out`
    /// (`models/<name>`), so `../x` would write outside it.
    Name {
        what: &'static str,
        name: String,
    },
    /// A size past the limit the checker enforces on `.post` files (a hand-written graph JSON
    /// with `batch = 2^62` would otherwise overflow allocation arithmetic at run time).
    Size {
        what: String,
        value: usize,
        limit: usize,
    },
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::Json(e) => write!(f, "malformed graph JSON: {e}"),
            GraphError::Size { what, value, limit } => write!(
                f,
                "{what} is {value}, past the limit of {limit} that `post check` enforces"
            ),
            GraphError::Name { what, name } => write!(
                f,
                "{what} name {name:?} is not an identifier (letters, digits and `_`, not starting with a digit)"
            ),
            GraphError::Version { found, expected } => write!(
                f,
                "graph format version {found} is not supported (this build reads version {expected}); recompile the .post file"
            ),
        }
    }
}

impl std::error::Error for GraphError {}

impl Graph {
    /// Pretty JSON, the form `post compile --emit graph` prints.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parse a graph, refusing versions this build cannot read.
    pub fn from_json(text: &str) -> Result<Graph, GraphError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly = serde_json::from_str(text).map_err(GraphError::Json)?;
        if v.version != GRAPH_VERSION {
            return Err(GraphError::Version {
                found: v.version,
                expected: GRAPH_VERSION,
            });
        }
        let graph: Graph = serde_json::from_str(text).map_err(GraphError::Json)?;
        graph.validate_names()?;
        graph.validate_sizes()?;
        Ok(graph)
    }

    /// Batch and task sizes within the limits the checker puts on `.post` files
    /// ([`MAX_BATCH`], [`tasks::MAX_TASK_SIZE`]), so a graph JSON cannot reach the runtime's
    /// size arithmetic with values no `.post` file could give.
    pub fn validate_sizes(&self) -> Result<(), GraphError> {
        let check = |what: String, value: usize, limit: usize| {
            if value > limit {
                Err(GraphError::Size { what, value, limit })
            } else {
                Ok(())
            }
        };
        for d in &self.datasets {
            if let DataSource::Task { size, .. } = &d.source {
                check(
                    format!("dataset `{}`: task size", d.name),
                    *size,
                    tasks::MAX_TASK_SIZE,
                )?;
            }
        }
        for st in &self.stages {
            if let StageKind::Train(t) = &st.kind {
                check(
                    format!("stage `{}`: batch", st.name),
                    t.batch.size,
                    MAX_BATCH,
                )?;
                check(
                    format!("stage `{}`: grad_accum", st.name),
                    t.grad_accum,
                    MAX_BATCH,
                )?;
            }
        }
        for r in &self.rollouts {
            let n = match &r.policy {
                Rollout::Sample(s) => s.n,
                Rollout::Branched { base, .. } => base.n,
                _ => continue,
            };
            check(format!("rollout `{}`: n", r.name), n, MAX_BATCH)?;
        }
        Ok(())
    }

    /// Every name is an identifier, as the compiler writes them (a hand-written graph JSON
    /// could otherwise name a model `../../x` and have its export written outside `--out`).
    pub fn validate_names(&self) -> Result<(), GraphError> {
        let ident = |s: &str| {
            let mut chars = s.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let names = std::iter::once(("experiment", &self.experiment))
            .chain(self.models.iter().map(|m| ("model", &m.name)))
            .chain(self.datasets.iter().map(|d| ("dataset", &d.name)))
            .chain(self.rewards.iter().map(|r| ("reward", &r.name)))
            .chain(self.rollouts.iter().map(|r| ("rollout", &r.name)))
            .chain(self.stages.iter().map(|s| ("stage", &s.name)))
            .chain(
                self.prerequisites
                    .iter()
                    .map(|p| ("prerequisite", &p.experiment)),
            );
        for (what, name) in names {
            if !ident(name) {
                return Err(GraphError::Name {
                    what,
                    name: name.clone(),
                });
            }
        }
        Ok(())
    }

    /// A stable hex hash of the graph's content (checkpoints record it to refuse a resume
    /// against a different experiment).
    pub fn hash(&self) -> String {
        content_hash(&self.to_json())
    }

    /// The prerequisite experiment called `experiment`.
    pub fn prerequisite(&self, experiment: &str) -> Option<&Prerequisite> {
        self.prerequisites
            .iter()
            .find(|p| p.experiment == experiment)
    }

    pub fn model(&self, name: &str) -> Option<&ModelNode> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn dataset(&self, name: &str) -> Option<&DataNode> {
        self.datasets.iter().find(|d| d.name == name)
    }

    pub fn reward(&self, name: &str) -> Option<&RewardNode> {
        self.rewards.iter().find(|r| r.name == name)
    }

    pub fn rollout(&self, name: &str) -> Option<&RolloutNode> {
        self.rollouts.iter().find(|r| r.name == name)
    }

    /// Follow `Frozen`/`Snapshot`/`Lagged` links to the model that owns the architecture.
    pub fn root_model<'a>(&'a self, name: &str) -> Option<&'a ModelNode> {
        let mut current = self.model(name)?;
        for _ in 0..self.models.len() {
            match &current.source {
                ModelSource::Frozen { of }
                | ModelSource::Snapshot { of }
                | ModelSource::Lagged { of, .. } => current = self.model(of)?,
                _ => return Some(current),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warmup_then_cosine() {
        let s = Schedule {
            shape: Shape::Cosine { from: 1.0, to: 0.0 },
            warmup: 10,
        };
        assert!((s.at(0, 110) - 0.1).abs() < 1e-12);
        assert!((s.at(9, 110) - 1.0).abs() < 1e-12);
        assert!((s.at(10, 110) - 1.0).abs() < 1e-12);
        assert!((s.at(60, 110) - 0.5).abs() < 1e-12);
        assert!(s.at(110, 110).abs() < 1e-12);
    }

    #[test]
    fn linear_schedule_interpolates() {
        let s = Schedule {
            shape: Shape::Linear { from: 2.0, to: 1.0 },
            warmup: 0,
        };
        assert_eq!(s.at(0, 4), 2.0);
        assert_eq!(s.at(2, 4), 1.5);
    }

    #[test]
    fn names_that_are_not_identifiers_are_refused() {
        let g = Graph {
            version: GRAPH_VERSION,
            experiment: "e".into(),
            seed: 0,
            models: vec![ModelNode {
                name: "../../x".into(),
                source: ModelSource::HuggingFace { path: "m".into() },
            }],
            datasets: vec![],
            rewards: vec![],
            rollouts: vec![],
            stages: vec![],
            defaults_applied: vec![],
            prerequisites: vec![],
        };
        let err = Graph::from_json(&g.to_json()).unwrap_err();
        assert!(
            matches!(&err, GraphError::Name { what: "model", name } if name == "../../x"),
            "{err}"
        );
        let ok = Graph {
            models: vec![ModelNode {
                name: "policy_2".into(),
                source: ModelSource::HuggingFace { path: "m".into() },
            }],
            ..g
        };
        assert!(Graph::from_json(&ok.to_json()).is_ok());
    }

    #[test]
    fn sizes_past_the_checker_limits_are_refused() {
        let task = |size: usize| Graph {
            version: GRAPH_VERSION,
            experiment: "e".into(),
            seed: 0,
            models: vec![],
            datasets: vec![DataNode {
                name: "d".into(),
                source: DataSource::Task {
                    task: "arith".into(),
                    split: Split::Train,
                    size,
                    difficulty: 2,
                    min_difficulty: None,
                },
                transforms: vec![],
            }],
            rewards: vec![],
            rollouts: vec![],
            stages: vec![],
            defaults_applied: vec![],
            prerequisites: vec![],
        };
        assert!(Graph::from_json(&task(tasks::MAX_TASK_SIZE).to_json()).is_ok());
        let err = Graph::from_json(&task(1 << 62).to_json()).unwrap_err();
        assert!(
            matches!(&err, GraphError::Size { limit, .. } if *limit == tasks::MAX_TASK_SIZE),
            "{err}"
        );
        assert!(err.to_string().contains("dataset `d`: task size"), "{err}");
    }

    #[test]
    fn version_is_checked() {
        let err = Graph::from_json(r#"{"version": 999}"#).unwrap_err();
        assert!(matches!(err, GraphError::Version { found: 999, .. }));
    }
}
