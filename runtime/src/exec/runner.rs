//! Running the stages of a loaded experiment: per stage a fresh optimiser, evals before the
//! first step, every `every` steps and after the last, the steps themselves (`super::step`),
//! lagged and snapshot copies kept current, checkpoints, and at the end the summary, the plot
//! and the trained models exported to `<out>/models/<name>/`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use post_graph::ModelSource;
use rand_chacha::ChaCha8Rng;

use super::collapse::{self, Detectors, Signals, Verdict};
use super::load::{Encoded, Models};
use super::plan::{Plan, SlotKind, StagePlan};
use super::step::{StepInputs, StepState};
use super::{Context, RunError, RunOptions, eval::run_eval, io_err};
use crate::checkpoint::{self, CHECKPOINT_FORMAT, CheckpointData, CheckpointState, RngState};
use crate::data::{self, Batcher, Dataset};
use crate::hash::sub_seed;
use crate::memory;
use crate::model::Transformer;
use crate::objectives::plan_fused;
use crate::optim::{Optimizer, Params};
use crate::output::{self, MetricGoal, MetricsWriter, Progress, StepRecord, Summary};
use crate::rollouts::RolloutState;
use crate::tokenizer::Tokenizer;

pub(super) struct Runner<'g> {
    pub(super) plan: &'g Plan<'g>,
    pub(super) opts: &'g RunOptions,
    pub(super) models: Models,
    pub(super) tokenizer: Tokenizer,
    pub(super) datasets: BTreeMap<String, Dataset>,
    pub(super) encoded: Encoded,
    pub(super) device: Device,
    pub(super) records: Vec<StepRecord>,
    pub(super) metrics: MetricsWriter,
    pub(super) rng: ChaCha8Rng,
    pub(super) rollout_state: RolloutState,
    pub(super) global_step: u64,
    pub(super) last_checkpoint: Option<PathBuf>,
    pub(super) wall_before: f64,
    pub(super) start: Instant,
    pub(super) progress: Progress,
    pub(super) goals: BTreeMap<String, MetricGoal>,
    /// What the run found worth telling without stopping (also in `summary.json`).
    pub(super) warnings: Vec<String>,
}

impl Runner<'_> {
    fn wall_s(&self) -> f64 {
        self.wall_before + self.start.elapsed().as_secs_f64()
    }

    pub(super) fn write_summary(&self, stopped: Option<String>) -> Result<Summary, RunError> {
        let mut summary = output::summarize(
            &self.records,
            &self.goals,
            self.wall_s(),
            memory::peak_rss_bytes().unwrap_or(0),
        );
        summary.stopped = stopped;
        summary.warnings = self.warnings.clone();
        let path = self.opts.out_dir.join("summary.json");
        let text = serde_json::to_string_pretty(&summary).map_err(|e| io_err(&path, e))?;
        output::write_atomic(&path, text.as_bytes()).map_err(|e| io_err(&path, e))?;
        let plot = self.opts.out_dir.join("curves.svg");
        output::write_plot(&plot, &self.plan.graph.experiment, &self.records)
            .map_err(|e| io_err(&plot, e))?;
        Ok(summary)
    }

    /// Save every trained model to `<out>/models/<name>/` (a Hugging Face directory with the
    /// tokenizer): the stable path a later experiment starts from (`init = ...`).
    pub(super) fn export_models(&self) -> Result<(), RunError> {
        for name in self.models.trainable.keys() {
            let dir = self.opts.out_dir.join("models").join(name);
            let tmp = self
                .opts
                .out_dir
                .join("models")
                .join(format!(".{name}.tmp"));
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
            }
            crate::hf::save(&tmp, &self.models.models[name], Some(&self.tokenizer))
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
    pub(super) fn run_stages(
        &mut self,
        resume: Option<checkpoint::Loaded>,
    ) -> Result<Option<u64>, RunError> {
        let (start_index, mut resume) = match resume {
            Some(l) => (l.state.stage_index, Some(l)),
            None => (0, None),
        };
        let plan = self.plan;
        for sp in &plan.stages {
            if sp.index < start_index {
                continue;
            }
            let r = resume.take().filter(|l| l.state.stage_index == sp.index);
            if let Some(step) = self.run_stage(sp, r)? {
                return Ok(Some(step));
            }
        }
        Ok(None)
    }

    fn eval(&mut self, sp: &StagePlan, stage_step: u64) -> Result<BTreeMap<String, f64>, RunError> {
        let mut out = BTreeMap::new();
        for (i, e) in sp.evals.iter().enumerate() {
            let due = stage_step == 0
                || stage_step == sp.stage.steps
                || stage_step.is_multiple_of(e.eval.every);
            if !due {
                continue;
            }
            let seed = sub_seed(
                self.plan.graph.seed,
                &format!("eval/{}/{i}/{}", sp.name, self.global_step),
            );
            let values = run_eval(
                e,
                &self.datasets[&e.eval.data],
                &self.tokenizer,
                &self.models.models,
                seed,
            )
            .ctx(|| format!("stage `{}`: eval on `{}`", sp.name, e.eval.data))?;
            out.extend(values);
        }
        Ok(out)
    }

    fn run_stage(
        &mut self,
        sp: &StagePlan,
        resume: Option<checkpoint::Loaded>,
    ) -> Result<Option<u64>, RunError> {
        let (name, stage) = (sp.name, sp.stage);
        let varmap = &self.models.trainable[&stage.model];
        let policy = self.models.models[&stage.model].clone();
        let params = Params::from_varmap(varmap);
        let mut optimizer = Optimizer::new(&stage.optimizer, params.clone())
            .ctx(|| format!("stage `{name}`: optimizer"))?;
        let ds_len = self.datasets[&stage.data].records.len();
        let batch_seed = sub_seed(self.plan.graph.seed, &format!("batches/{name}"));
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
        let nll_vocab =
            collapse::is_token_mean_nll(&stage.objective.loss).then(|| policy.config().vocab_size);
        let deterministic = sp.slots.iter().any(|s| match &s.kind {
            SlotKind::Rollout { rollout, .. } => {
                let b = rollout.base();
                b.temperature == 0.0 || b.top_k == 1
            }
            SlotKind::Data { .. } => false,
        });
        let mut detectors =
            Detectors::new(collapse::WINDOW, nll_vocab, stage.grad_clip, deterministic);
        // Planned (and JIT-compiled, or fetched from the kernel cache) once per stage.
        let fused = plan_fused(&stage.objective.loss);
        if stage_step == 0 {
            self.retake_snapshots(sp)?;
        }
        if stage_step == 0 && !sp.evals.is_empty() {
            let ev = self.eval(sp, 0)?;
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
        while stage_step < stage.steps {
            let t0 = Instant::now();
            // Looked up every step: a lagged reference is replaced as the run goes.
            let reference = sp.reference.map(|r| self.models.models[r].clone());
            let s = stage_step;
            let lr = optimizer.lr_at(s, stage.steps);
            let hypers: BTreeMap<String, f64> = stage
                .hypers
                .iter()
                .map(|(k, v)| (k.clone(), v.at(s, stage.steps)))
                .collect();
            let indices = batcher.next_batch(sp.per_step);
            let inputs = StepInputs {
                policy: &policy,
                params: &params,
                reference: reference.as_ref(),
                fused: fused.as_ref(),
                loss: &stage.objective.loss,
                hypers: &hypers,
                lr,
            };
            let step = StepState {
                datasets: &self.datasets,
                encoded: &self.encoded,
                models: &self.models.models,
                tokenizer: &self.tokenizer,
                device: &self.device,
                rollout_state: &mut self.rollout_state,
                rng: &mut self.rng,
                global_step: self.global_step,
                last_checkpoint: self.last_checkpoint.as_ref(),
            }
            .train_step(sp, &inputs, &mut optimizer, &indices)?;
            stage_step += 1;
            self.global_step += 1;
            self.refresh_lagged()?;
            let train_s = t0.elapsed().as_secs_f64();
            let ev = if sp.evals.is_empty() {
                BTreeMap::new()
            } else {
                self.eval(sp, stage_step)?
            };
            let first_loss = step.loss;
            let signals = Signals {
                loss: step.loss,
                grad_norm: step.grad_norm,
                lr,
                groups: step.groups,
                reward_mean: step.reward_mean,
            };
            let record = StepRecord {
                step: self.global_step,
                stage: name.to_string(),
                stage_step,
                loss: Some(first_loss),
                lr: Some(lr),
                grad_norm: Some(step.grad_norm),
                tokens: Some(step.tokens as u64),
                tokens_per_s: Some(step.tokens as f64 / train_s.max(1e-9)),
                step_s: Some(train_s),
                extra: step.extra,
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
                self.checkpoint(sp, stage_step, &optimizer, batcher.state())?;
            }
            match detectors.observe(name, self.global_step, &signals) {
                Verdict::Continue => {}
                Verdict::Warn(msg) => {
                    self.progress.println(&msg);
                    self.warnings.push(msg);
                }
                Verdict::Stop(c) => {
                    return Err(RunError::NoLearning {
                        step: self.global_step,
                        detector: c.detector,
                        message: c.message,
                        checkpoint: self.last_checkpoint.clone(),
                    });
                }
            }
            if self.opts.stop_after.is_some_and(|n| self.global_step >= n) {
                return Ok(Some(self.global_step));
            }
        }
        Ok(None)
    }

    /// Replace copy `name` by a fresh frozen copy of model `of`'s current weights.
    fn retake(&mut self, name: &str, of: &str) -> Result<(), RunError> {
        let copy = self.models.models[of]
            .frozen_copy()
            .ctx(|| format!("copying `{of}` into `{name}`"))?;
        self.models.models.insert(name.to_string(), copy);
        Ok(())
    }

    /// IRFT's per-stage snapshot: every snapshot model the stage reads (as the reference, as a
    /// sampler of a slot, or in an eval) is re-taken from its source when the stage starts.
    fn retake_snapshots(&mut self, sp: &StagePlan) -> Result<(), RunError> {
        let plan = self.plan;
        for c in &plan.copies {
            if let ModelSource::Snapshot { .. } = c.source
                && sp.reads.contains(&c.name)
            {
                self.retake(c.name, c.of)?;
            }
        }
        Ok(())
    }

    /// Lagged samplers: refreshed from their source every `every_steps` optimiser steps.
    fn refresh_lagged(&mut self) -> Result<(), RunError> {
        let plan = self.plan;
        for c in &plan.copies {
            if let ModelSource::Lagged { every_steps, .. } = c.source
                && self.global_step.is_multiple_of(*every_steps)
            {
                self.retake(c.name, c.of)?;
            }
        }
        Ok(())
    }

    fn checkpoint(
        &mut self,
        sp: &StagePlan,
        stage_step: u64,
        optimizer: &Optimizer,
        batcher: data::BatcherState,
    ) -> Result<(), RunError> {
        let (opt_state, opt_step) = optimizer.state();
        // Trained models, and the copies that are not simply the initial weights (snapshots
        // and lagged samplers change during the run).
        let changing = |n: &str| {
            self.plan.copies.iter().any(|c| {
                c.name == n
                    && matches!(
                        c.source,
                        ModelSource::Snapshot { .. } | ModelSource::Lagged { .. }
                    )
            })
        };
        let trained: Vec<(String, &Transformer)> = self
            .models
            .models
            .iter()
            .filter(|(n, _)| self.models.trainable.contains_key(*n) || changing(n))
            .map(|(n, m)| (n.clone(), m))
            .collect();
        let graph = self.plan.graph;
        let state = CheckpointState {
            format: CHECKPOINT_FORMAT,
            graph_hash: graph.hash(),
            experiment: graph.experiment.clone(),
            global_step: self.global_step,
            stage_index: sp.index,
            stage_name: sp.name.to_string(),
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
        // Only now, with the new checkpoint in place and named by `latest`.
        let best = self.best_checkpoint(&root)?;
        checkpoint::retention::prune(
            &root,
            usize::try_from(sp.stage.keep_checkpoints).unwrap_or(usize::MAX),
            self.global_step,
            best,
        )?;
        Ok(())
    }

    /// The checkpoint with the best value of the run's first eval metric (the first metric
    /// of the first eval block), among those written at a step where it was evaluated.
    fn best_checkpoint(&self, root: &std::path::Path) -> Result<Option<u64>, RunError> {
        let Some(metric) = self
            .plan
            .stages
            .iter()
            .flat_map(|s| s.evals.iter())
            .find_map(|e| e.metrics.first())
            .map(|m| m.name)
        else {
            return Ok(None);
        };
        let goal = self
            .goals
            .get(metric)
            .copied()
            .unwrap_or(MetricGoal::Maximize);
        let scores: Vec<(u64, f64)> = checkpoint::retention::list(root)?
            .into_iter()
            .filter_map(|(step, _)| {
                self.records
                    .iter()
                    .rev()
                    .find(|r| r.step == step && r.eval.contains_key(metric))
                    .map(|r| (step, r.eval[metric]))
            })
            .collect();
        Ok(checkpoint::retention::best_step(&scores, goal))
    }
}

fn fmt_metrics(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}
