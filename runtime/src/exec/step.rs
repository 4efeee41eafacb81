//! One training step: sample every rollout slot once for the whole batch, then for each of the
//! objective's `updates_per_batch` updates and each gradient-accumulation micro-batch fill
//! every slot (`super::slots`), evaluate the loss, backpropagate and accumulate; average, clip
//! by global norm and apply the optimiser.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use post_graph::Expr;
use rand_chacha::ChaCha8Rng;

use super::collapse::Groups;
use super::load::Encoded;
use super::plan::{SlotKind, StagePlan};
use super::slots;
use super::{Context, RunError};
use crate::data::Dataset;
use crate::model::Transformer;
use crate::objectives::{FusedLoss, SlotMap, evaluate_loss, evaluate_loss_fused};
use crate::optim::{Grads, Optimizer, Params};
use crate::record::Record;
use crate::rewards::counted;
use crate::rollouts::{RolloutBatch, RolloutState};
use crate::tokenizer::Tokenizer;

/// What one step measured.
pub struct StepResult {
    /// The loss of the first update (mean over micro-batches).
    pub loss: f64,
    /// The gradient norm of the last update (before clipping).
    pub grad_norm: f64,
    /// Tokens trained on (every slot, first update).
    pub tokens: usize,
    /// Rollout metrics (`rollout/...`, `<slot>/reward_mean`, `<slot>/reward_std`).
    pub extra: BTreeMap<String, f64>,
    /// Tied and identical groups of the rollout slots (for `super::collapse`).
    pub groups: Groups,
    /// The first rollout slot's mean reward.
    pub reward_mean: Option<f64>,
}

/// The stage-wide inputs of a step.
pub struct StepInputs<'a> {
    pub policy: &'a Transformer,
    pub params: &'a Params,
    pub reference: Option<&'a Transformer>,
    pub fused: Option<&'a FusedLoss>,
    pub loss: &'a Expr,
    pub hypers: &'a BTreeMap<String, f64>,
    pub lr: f64,
}

/// The run's state a step reads and advances (the runner's, borrowed).
pub struct StepState<'a> {
    pub datasets: &'a BTreeMap<String, Dataset>,
    pub encoded: &'a Encoded,
    pub models: &'a BTreeMap<String, Transformer>,
    pub tokenizer: &'a Tokenizer,
    pub device: &'a Device,
    pub rollout_state: &'a mut RolloutState,
    pub rng: &'a mut ChaCha8Rng,
    /// Global steps done before this one.
    pub global_step: u64,
    pub last_checkpoint: Option<&'a PathBuf>,
}

impl StepState<'_> {
    fn non_finite(&self, stage: &str, what: &str, value: f64) -> RunError {
        RunError::NonFinite {
            step: self.global_step + 1,
            stage: stage.to_string(),
            what: what.to_string(),
            value,
            checkpoint: self.last_checkpoint.cloned(),
        }
    }

    /// Train on the records `indices` of the stage's dataset.
    pub fn train_step(
        &mut self,
        sp: &StagePlan,
        input: &StepInputs,
        optimizer: &mut Optimizer,
        indices: &[usize],
    ) -> Result<StepResult, RunError> {
        let stage = sp.stage;
        let name = sp.name;
        let micro = sp.micro;
        let mut tokens = 0usize;
        let mut first_loss = 0f64;
        let mut grad_norm = 0f64;
        let mut extra = BTreeMap::new();
        let mut groups = Groups::default();
        let mut reward_mean = None;
        // Rollout slots sample once per step, for the whole batch, from the sampler's
        // current weights; every update and micro-batch then reads those samples.
        let mut sampled: BTreeMap<&str, RolloutBatch> = BTreeMap::new();
        {
            let records: Vec<&Record> = indices
                .iter()
                .map(|&i| &self.datasets[&stage.data].records[i])
                .collect();
            for slot in &sp.slots {
                if let SlotKind::Rollout {
                    name: rollout,
                    rollout: node,
                    sampler,
                    scoring,
                } = &slot.kind
                {
                    let batch = self
                        .rollout_state
                        .run(
                            node,
                            scoring,
                            &self.models[*sampler],
                            self.tokenizer,
                            &records,
                            self.rng,
                        )
                        .ctx(|| format!("stage `{name}`: rollout `{rollout}`"))?;
                    for (k, v) in self.rollout_state.metrics(&batch) {
                        extra.insert(k, v);
                    }
                    let rewards: Vec<f64> = batch.seqs.iter().map(|q| counted(q.reward)).collect();
                    let (mean, std) = mean_std(&rewards);
                    let samples: Vec<(f64, &str)> = rewards
                        .iter()
                        .zip(&batch.seqs)
                        .map(|(r, q)| (*r, q.text.as_str()))
                        .collect();
                    groups.add(Groups::count(&samples, batch.group_size));
                    reward_mean.get_or_insert(mean);
                    extra.insert(format!("{}/reward_mean", slot.name), mean);
                    extra.insert(format!("{}/reward_std", slot.name), std);
                    sampled.insert(slot.name, batch);
                }
            }
        }
        let mut old: Vec<BTreeMap<&str, (Tensor, Option<Tensor>)>> = Vec::new();
        for update in 0..stage.objective.updates_per_batch {
            let mut grads: Option<Grads> = None;
            let mut loss_sum = 0f64;
            for (mi, chunk) in indices.chunks(micro).enumerate() {
                let mut slot_map = SlotMap::new();
                let ref_model = if update == 0 { input.reference } else { None };
                for slot in &sp.slots {
                    let mut st = match &slot.kind {
                        SlotKind::Data { .. } => {
                            let all = &self.encoded[&(sp.index, slot.name.to_string())];
                            let seqs: Vec<(Vec<u32>, usize)> =
                                chunk.iter().map(|&i| all[i].clone()).collect();
                            let batch =
                                slots::build_batch(&seqs, self.tokenizer.pad_id(), self.device)
                                    .ctx(|| format!("slot `{}`", slot.name))?;
                            if update == 0 {
                                tokens += batch.tokens;
                            }
                            slots::data_slot(input.policy, ref_model, &batch)
                        }
                        SlotKind::Rollout { .. } => {
                            let all = &sampled[slot.name];
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
                            slots::rollout_slot(
                                &part,
                                input.policy,
                                ref_model,
                                self.tokenizer.pad_id(),
                                self.device,
                                stage.objective.mask_truncated,
                            )
                        }
                    }
                    .ctx(|| format!("stage `{name}`: slot `{}`", slot.name))?;
                    if update == 0 {
                        if old.len() <= mi {
                            old.push(BTreeMap::new());
                        }
                        old[mi].insert(slot.name, (st.logp.detach(), st.ref_logp.clone()));
                    } else {
                        // The sampler's log-probabilities stay those of the first update.
                        let (o, r) = &old[mi][slot.name];
                        st.old_logp = Some(o.clone());
                        st.ref_logp = r.clone();
                    }
                    slot_map.insert(slot.name.to_string(), st);
                }
                let loss = match input.fused {
                    Some(f) => evaluate_loss_fused(f, input.loss, &slot_map, input.hypers),
                    None => evaluate_loss(input.loss, &slot_map, input.hypers),
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
                let g = Grads::from_store(input.params, &store);
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
                .step(&grads, input.lr)
                .ctx(|| "optimizer step".to_string())?;
        }
        Ok(StepResult {
            loss: first_loss,
            grad_norm,
            tokens,
            extra,
            groups,
            reward_mean,
        })
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
