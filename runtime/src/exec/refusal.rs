//! Every reason the runtime refuses an experiment before its first step, by name.
//!
//! post promises that a mistake surfaces in `post check`, before anything loads. Each refusal
//! here is either also a checker diagnostic (a code in `spec/language.md`) or knowable only at
//! run time, in which case the spec lists it under "Known only at run time" and
//! `post check --deep` (or `post run --dry-run`) reports it without training. The end-to-end
//! test `tests/refusals.rs` matches on every variant (no wildcard), so a new refusal cannot be
//! added without saying which of the two it is.

/// Why the runtime refused a graph before its first step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The experiment has no stages.
    NoStages,
    /// A model, dataset, rollout, reward, slot or reference the graph names does not exist
    /// (only a hand-written graph JSON can do this: the checker resolves every name).
    UnknownName,
    /// A lagged copy refreshed every 0 steps.
    LaggedEveryZero,
    /// A stage trains a frozen copy.
    TrainsFrozenModel,
    /// `steps = 0`.
    StepsZero,
    /// The batch does not split into the gradient-accumulation micro-batches.
    GradAccumSplit,
    /// An objective with `updates_per_batch = 0`.
    UpdatesPerBatchZero,
    /// A data slot with a batch counted in completions, or a data slot read as a reward.
    DataSlotMisuse,
    /// A batch of completions that does not split into the rollout's groups.
    GroupSplit,
    /// A reward the evaluator cannot run (e.g. a regex it refuses).
    RewardInvalid,
    /// The loss reads `ref_logp` but the objective has no reference model.
    NoReferenceModel,
    /// The loss reads a hyperparameter that has no value.
    MissingHyper,
    /// `eval every 0 steps`.
    EvalEveryZero,
    /// `pass@k` with k outside 1..=n.
    PassAtKRange,
    /// A feature the language has and this runtime does not run yet (selection and analysis
    /// stages, replay buffers, guided or verifier-stopped decoding).
    Unsupported,
    /// A path the experiment reads (data file, model directory, initial weights) is missing
    /// or unreadable.
    MissingPath,
    /// A model directory or checkpoint exists but its contents do not load (config values,
    /// tensor shapes, dtypes, tokenizer).
    ModelContents,
    /// A preset's vocabulary cannot hold the built-in tokenizer.
    VocabularyTooSmall,
    /// A built-in task asked for a difficulty or size its generator does not support (the
    /// range is `graph/src/tasks.rs`, which the checker reads too).
    TaskRange,
    /// A dataset record beyond what the checker reads (malformed line, missing field, text
    /// too long for the context, a filter that keeps nothing).
    DataContents,
    /// The memory plan does not fit the machine.
    Memory,
    /// `--resume` names a checkpoint that does not belong to this graph, or no checkpoint
    /// there passes verification (manifest checksums, state consistent with the graph).
    Resume,
    /// The output directory holds a run already (without `--resume` or `--force`), or another
    /// run is writing it.
    RunDirectory,
}

impl Refusal {
    /// Every refusal, in declaration order.
    pub const ALL: &[Refusal] = &[
        Refusal::NoStages,
        Refusal::UnknownName,
        Refusal::LaggedEveryZero,
        Refusal::TrainsFrozenModel,
        Refusal::StepsZero,
        Refusal::GradAccumSplit,
        Refusal::UpdatesPerBatchZero,
        Refusal::DataSlotMisuse,
        Refusal::GroupSplit,
        Refusal::RewardInvalid,
        Refusal::NoReferenceModel,
        Refusal::MissingHyper,
        Refusal::EvalEveryZero,
        Refusal::PassAtKRange,
        Refusal::Unsupported,
        Refusal::MissingPath,
        Refusal::ModelContents,
        Refusal::VocabularyTooSmall,
        Refusal::TaskRange,
        Refusal::DataContents,
        Refusal::Memory,
        Refusal::Resume,
        Refusal::RunDirectory,
    ];

    /// A stable kebab-case name (the spec's run-time-only list uses it).
    pub fn id(self) -> &'static str {
        match self {
            Refusal::NoStages => "no-stages",
            Refusal::UnknownName => "unknown-name",
            Refusal::LaggedEveryZero => "lagged-every-zero",
            Refusal::TrainsFrozenModel => "trains-frozen-model",
            Refusal::StepsZero => "steps-zero",
            Refusal::GradAccumSplit => "grad-accum-split",
            Refusal::UpdatesPerBatchZero => "updates-per-batch-zero",
            Refusal::DataSlotMisuse => "data-slot-misuse",
            Refusal::GroupSplit => "group-split",
            Refusal::RewardInvalid => "reward-invalid",
            Refusal::NoReferenceModel => "no-reference-model",
            Refusal::MissingHyper => "missing-hyper",
            Refusal::EvalEveryZero => "eval-every-zero",
            Refusal::PassAtKRange => "pass-at-k-range",
            Refusal::Unsupported => "unsupported",
            Refusal::MissingPath => "missing-path",
            Refusal::ModelContents => "model-contents",
            Refusal::VocabularyTooSmall => "vocabulary-too-small",
            Refusal::TaskRange => "task-range",
            Refusal::DataContents => "data-contents",
            Refusal::Memory => "memory",
            Refusal::Resume => "resume",
            Refusal::RunDirectory => "run-directory",
        }
    }
}
