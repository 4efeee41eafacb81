//! The graph executor: runs a lowered [`Graph`] end to end. Split by job:
//!
//! 1. `plan`: [`validate`] checks that every stage, model, dataset, slot, rollout and eval the
//!    graph names exists and is supported by this runtime, and returns the resolved [`Plan`];
//!    nothing later looks a name up again;
//! 2. `load`: datasets are loaded and transformed (a malformed JSONL line stops here, with
//!    file:line), every training sequence is tokenized once and checked against the model's
//!    context; models are built (presets from the seed, Hugging Face directories, frozen
//!    copies); the memory estimate is printed and checked;
//! 3. `resume`: a checkpoint is restored when resuming: verified against its manifest and
//!    checked against the graph (`resume_check`), falling back to an older one when it fails;
//! 4. `runner`: stages run in order, each with a fresh optimiser of its own settings; `eval`
//!    blocks (`eval`) run before a stage's first step, every `every` steps and after its last;
//!    checkpoints are written every `checkpoint_every` steps and at the end of each stage; at
//!    the end the trained models are exported to `<out>/models/<name>/`;
//! 5. `step`: one training step. Rollout slots sample once for the whole batch
//!    (`crate::rollouts`, which returns data); then for each of the objective's
//!    `updates_per_batch` updates and each gradient-accumulation micro-batch every slot is
//!    filled by `slots` (the one builder of data and rollout slots), the loss evaluated
//!    (`crate::objectives::evaluate_loss_fused` with fusion on, else `evaluate_loss`),
//!    backpropagated and accumulated; then averaged, clipped by global norm and applied with
//!    the scheduled learning rate.
//!
//! Every refusal before the first step carries its [`Refusal`] kind. A non-finite loss or
//! gradient norm stops the run at that step, before the update, naming it and the last good
//! checkpoint; training that cannot learn (`collapse`: zero gradients, a loss stuck at the
//! uniform value, identical samples in every group) stops it after the step that proves it.

mod collapse;
mod eval;
mod load;
mod plan;
mod refusal;
mod resume;
mod resume_check;
mod runner;
mod slots;
mod step;
mod unk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use post_graph::{Graph, MetricKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint;
use crate::data::DataError;
use crate::hash::sub_seed;
use crate::output::{MetricGoal, MetricsWriter, Progress, Summary};
use crate::rollouts::RolloutState;

pub use eval::{pass_at_k, run_eval};
pub use plan::{
    EvalPlan, MetricPlan, MetricValue, ModelCopy, Plan, SlotKind, SlotPlan, StagePlan, validate,
};
pub use refusal::Refusal;
pub use slots::{SeqBatch, build_batch, data_slot, logp_dtype, rollout_seqs, rollout_slot};

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
    /// Do everything before the first step (validate, load data and models, plan memory)
    /// and stop: `post check --deep` and `post run --dry-run`. Nothing is written.
    pub dry_run: bool,
    /// Replace a run that `out_dir` already holds (without it such a run is refused).
    pub force: bool,
    /// The finished run directory of each prerequisite experiment, by experiment name
    /// (`trained(...)` models load `<dir>/models/<model>`). The CLI builds them.
    pub prerequisite_dirs: BTreeMap<String, PathBuf>,
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
            dry_run: false,
            force: false,
            prerequisite_dirs: BTreeMap::new(),
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
    /// [`RunOptions::dry_run`]: everything before the first step passed.
    DryRun {
        /// The memory estimate of the largest stage, as printed.
        memory: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Refused before the first step: see [`Refusal`] for which refusals the checker reports.
    #[error("{message}")]
    Refused { refusal: Refusal, message: String },
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
    /// A collapse detector (`collapse`) found that training cannot learn.
    #[error(
        "{message}. The run stopped after step {step} (detector `{detector}`). {}",
        match checkpoint {
            Some(c) => format!("Last checkpoint: {}", c.display()),
            None => "No checkpoint had been written yet.".to_string(),
        }
    )]
    NoLearning {
        step: u64,
        detector: &'static str,
        message: String,
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

impl RunError {
    pub fn refused(refusal: Refusal, message: impl Into<String>) -> RunError {
        RunError::Refused {
            refusal,
            message: message.into(),
        }
    }

    /// Which pre-step refusal this is, if it is one.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            RunError::Refused { refusal, .. } => Some(*refusal),
            RunError::Data(DataError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Some(Refusal::MissingPath)
            }
            RunError::Data(DataError::Task(_)) => Some(Refusal::TaskRange),
            RunError::Data(_) => Some(Refusal::DataContents),
            RunError::Memory(_) => Some(Refusal::Memory),
            RunError::Resume(_) | RunError::Checkpoint(_) => Some(Refusal::Resume),
            _ => None,
        }
    }
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
    let plan = validate(graph)?;
    let device = Device::Cpu;
    let datasets = load::load_datasets(&plan, &opts.base_dir)?;
    let (mut models, tokenizer) = load::build_models(&plan, opts, &device, log)?;
    let context = plan
        .stages
        .iter()
        .map(|s| {
            models.models[&s.stage.model]
                .config()
                .max_position_embeddings
        })
        .min()
        .unwrap_or(0);
    let lengths = load::encode_and_check(&plan, &datasets, &tokenizer, context)?;
    for w in &lengths.warnings {
        log(w);
    }
    let worst = load::plan_memory(&plan, &models, &lengths, opts, log)?;
    if opts.dry_run {
        return Ok(RunOutcome::DryRun {
            memory: worst.map(|e| e.to_string()),
        });
    }

    // Claimed for the whole run: a run that holds it already is never overwritten, and two
    // runs never write it at once.
    let resumes_here = opts
        .resume
        .as_ref()
        .is_some_and(|r| r.starts_with(&opts.out_dir));
    let _lock = crate::rundir::claim(&opts.out_dir, resumes_here, opts.force)
        .map_err(|e| RunError::refused(Refusal::RunDirectory, e.to_string()))?;
    let resume_state = match &opts.resume {
        Some(path) => Some(resume::restore(
            path,
            &plan,
            &mut models,
            &datasets,
            &device,
            log,
        )?),
        None => None,
    };
    let prefix = resume_state
        .as_ref()
        .map_or_else(Vec::new, |l| l.metrics.clone());
    let wall_before = resume_state.as_ref().map_or(0.0, |l| l.state.wall_s);
    let metrics_path = opts.out_dir.join("metrics.jsonl");
    let metrics =
        MetricsWriter::create(&metrics_path, &prefix).map_err(|e| io_err(&metrics_path, e))?;
    let total: u64 = plan.stages.iter().map(|s| s.stage.steps).sum();
    let mut goals = BTreeMap::new();
    for s in &plan.stages {
        for e in &s.stage.evals {
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
    let mut runner = runner::Runner {
        plan: &plan,
        opts,
        models,
        tokenizer,
        datasets,
        encoded: lengths.encoded,
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
        warnings: Vec::new(),
    };
    let result = runner.run_stages(resume_state);
    runner.progress.finish();
    match result {
        Ok(Some(step)) => Ok(RunOutcome::Stopped { step }),
        Ok(None) => {
            runner.export_models()?;
            let summary = runner.write_summary(None)?;
            Ok(RunOutcome::Finished(Box::new(summary)))
        }
        Err(e @ (RunError::NonFinite { .. } | RunError::NoLearning { .. })) => {
            // Keep what was measured, and say why the run stopped.
            let _ = runner.write_summary(Some(e.to_string()));
            Err(e)
        }
        Err(e) => Err(e),
    }
}
