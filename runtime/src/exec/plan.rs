//! Validation: whether this runtime can execute a graph, answered before anything loads, and
//! the resolved [`Plan`] the rest of the run follows. Every name the graph uses (models,
//! datasets, rollouts, rewards, reference models) is looked up here, once; later phases read
//! the plan and never look a name up again.

use post_graph::{
    BatchUnit, Eval, Graph, MetricKind, ModelSource, Quantity, RExpr, Rollout, Sampling,
    SlotSource, StageKind, TrainStage,
};

use super::{Refusal, RunError};
use crate::rollouts::Scoring;

/// A validated graph with every name resolved.
#[derive(Debug)]
pub struct Plan<'g> {
    pub graph: &'g Graph,
    /// The training stages, in order.
    pub stages: Vec<StagePlan<'g>>,
    /// The frozen, snapshot and lagged copies, in graph order.
    pub copies: Vec<ModelCopy<'g>>,
}

/// A frozen, snapshot or lagged copy of a model.
#[derive(Debug)]
pub struct ModelCopy<'g> {
    pub name: &'g str,
    /// The model it copies (itself possibly a copy).
    pub of: &'g str,
    /// The trained model at the end of the `of` chain: where the copy's weights come from.
    pub root: &'g str,
    pub source: &'g ModelSource,
}

/// One training stage, resolved.
#[derive(Debug)]
pub struct StagePlan<'g> {
    /// Index in `graph.stages` (what checkpoints record).
    pub index: usize,
    pub name: &'g str,
    pub stage: &'g TrainStage,
    /// Records (prompts) drawn per step.
    pub per_step: usize,
    /// Records per gradient-accumulation micro-batch.
    pub micro: usize,
    /// The reference model, when the loss reads `ref_logp`.
    pub reference: Option<&'g str>,
    pub slots: Vec<SlotPlan<'g>>,
    pub evals: Vec<EvalPlan<'g>>,
    /// Every model the stage reads: its reference, its samplers, its evals' samplers
    /// (IRFT's snapshots among them are re-taken when the stage starts).
    pub reads: Vec<&'g str>,
}

/// One slot of a stage's objective.
#[derive(Debug)]
pub struct SlotPlan<'g> {
    pub name: &'g str,
    pub kind: SlotKind<'g>,
}

#[derive(Debug)]
pub enum SlotKind<'g> {
    /// The records' prompt and this field.
    Data { field: &'g str },
    /// Groups sampled by a rollout.
    Rollout {
        name: &'g str,
        rollout: &'g Rollout,
        /// The model sampled from.
        sampler: &'g str,
        scoring: Scoring<'g>,
    },
}

/// One `eval` block, resolved.
#[derive(Debug)]
pub struct EvalPlan<'g> {
    pub eval: &'g Eval,
    pub metrics: Vec<MetricPlan<'g>>,
}

/// One metric of an eval.
#[derive(Debug)]
pub struct MetricPlan<'g> {
    pub name: &'g str,
    /// The rollout named (metrics of one rollout share its samples).
    pub rollout: &'g str,
    /// Its base sampling (a branched rollout has no expert at test time).
    pub sampling: &'g Sampling,
    pub value: MetricValue<'g>,
}

#[derive(Debug)]
pub enum MetricValue<'g> {
    MeanReward(&'g RExpr),
    PassAtK(&'g RExpr, usize),
    MeanLength,
}

/// Check that this runtime can execute `graph`, before loading anything, and resolve every
/// name it uses into the [`Plan`] the run follows.
pub fn validate(graph: &Graph) -> Result<Plan<'_>, RunError> {
    let bad = |r: Refusal, m: String| Err(RunError::refused(r, m));
    if graph.stages.is_empty() {
        return bad(Refusal::NoStages, "the experiment has no stages".into());
    }
    let mut copies = Vec::new();
    for m in &graph.models {
        match &m.source {
            ModelSource::Preset { .. } | ModelSource::HuggingFace { .. } => {}
            ModelSource::Frozen { of }
            | ModelSource::Snapshot { of }
            | ModelSource::Lagged { of, .. } => {
                let Some(root) = graph.root_model(of) else {
                    return bad(
                        Refusal::UnknownName,
                        format!("model `{}` is a copy of unknown model `{of}`", m.name),
                    );
                };
                copies.push(ModelCopy {
                    name: &m.name,
                    of,
                    root: &root.name,
                    source: &m.source,
                });
                if let ModelSource::Lagged { every_steps: 0, .. } = m.source {
                    return bad(
                        Refusal::LaggedEveryZero,
                        format!(
                            "model `{}`: a lagged copy must be refreshed every 1 or more steps",
                            m.name
                        ),
                    );
                }
            }
        }
    }
    // What the language has and this runtime does not run yet (the checker warns, W0001).
    if let Some(u) = post_graph::support::unsupported(graph).into_iter().next() {
        return bad(Refusal::Unsupported, u.to_string());
    }
    let mut stages = Vec::new();
    for (index, stage) in graph.stages.iter().enumerate() {
        let StageKind::Train(t) = &stage.kind else {
            continue;
        };
        let here =
            |r: Refusal, m: String| RunError::refused(r, format!("stage `{}`: {m}", stage.name));
        match graph.model(&t.model).map(|m| &m.source) {
            None => {
                return Err(here(
                    Refusal::UnknownName,
                    format!("unknown model `{}`", t.model),
                ));
            }
            Some(
                ModelSource::Frozen { .. }
                | ModelSource::Snapshot { .. }
                | ModelSource::Lagged { .. },
            ) => {
                return Err(here(
                    Refusal::TrainsFrozenModel,
                    format!(
                        "model `{}` is a frozen, snapshot or lagged copy and cannot be trained",
                        t.model
                    ),
                ));
            }
            Some(_) => {}
        }
        if graph.dataset(&t.data).is_none() {
            return Err(here(
                Refusal::UnknownName,
                format!("unknown dataset `{}`", t.data),
            ));
        }
        if t.steps == 0 {
            return Err(here(Refusal::StepsZero, "steps must be positive".into()));
        }
        let records = records_per_step(graph, t);
        if t.grad_accum == 0 || records == 0 || !records.is_multiple_of(t.grad_accum) {
            return Err(here(
                Refusal::GradAccumSplit,
                format!(
                    "a batch of {records} records does not split into {} gradient-accumulation micro-batches",
                    t.grad_accum
                ),
            ));
        }
        if t.objective.updates_per_batch == 0 {
            return Err(here(
                Refusal::UpdatesPerBatchZero,
                "updates_per_batch must be positive".into(),
            ));
        }
        let inputs = t.objective.loss.inputs();
        let mut slots = Vec::new();
        for slot in &t.objective.slots {
            match &slot.source {
                SlotSource::Data { field } => {
                    if t.batch.unit == BatchUnit::Completions {
                        return Err(here(
                            Refusal::DataSlotMisuse,
                            format!(
                                "slot `{}` reads data, so the batch counts sequences or prompts, not completions",
                                slot.name
                            ),
                        ));
                    }
                    if inputs.contains(&(Quantity::Reward, slot.name.clone())) {
                        return Err(here(
                            Refusal::DataSlotMisuse,
                            format!(
                                "slot `{}` reads data records, which have no reward",
                                slot.name
                            ),
                        ));
                    }
                    slots.push(SlotPlan {
                        name: &slot.name,
                        kind: SlotKind::Data { field },
                    });
                }
                SlotSource::Rollout { rollout } => {
                    let r = graph.rollout(rollout).ok_or_else(|| {
                        here(
                            Refusal::UnknownName,
                            format!("slot `{}` uses unknown rollout `{rollout}`", slot.name),
                        )
                    })?;
                    let base = r.policy.base();
                    if graph.model(&base.model).is_none() {
                        return Err(here(
                            Refusal::UnknownName,
                            format!(
                                "rollout `{rollout}` samples from unknown model `{}`",
                                base.model
                            ),
                        ));
                    }
                    let n = base.n.max(1);
                    if t.batch.unit != BatchUnit::Prompts && t.batch.size % n != 0 {
                        return Err(here(
                            Refusal::GroupSplit,
                            format!(
                                "batch of {} completions does not split into groups of {n}",
                                t.batch.size
                            ),
                        ));
                    }
                    if let Some(reward) = &slot.reward {
                        let node = graph.reward(reward).ok_or_else(|| {
                            here(
                                Refusal::UnknownName,
                                format!("slot `{}` reads unknown reward `{reward}`", slot.name),
                            )
                        })?;
                        crate::rewards::validate(&node.expr).map_err(|e| {
                            here(Refusal::RewardInvalid, format!("reward `{reward}`: {e}"))
                        })?;
                    }
                    let scoring = Scoring::resolve(graph, &r.policy, slot.reward.as_deref())
                        .map_err(|e| {
                            here(
                                Refusal::UnknownName,
                                format!("slot `{}`: rollout `{rollout}`: {e}", slot.name),
                            )
                        })?;
                    slots.push(SlotPlan {
                        name: &slot.name,
                        kind: SlotKind::Rollout {
                            name: rollout,
                            rollout: &r.policy,
                            sampler: &base.model,
                            scoring,
                        },
                    });
                }
                SlotSource::Replay { .. } => {
                    // `unsupported` refuses replay buffers above; a graph reaching here is one
                    // that module does not know about.
                    return Err(here(
                        Refusal::Unsupported,
                        format!("slot `{}`: replay buffers are not supported", slot.name),
                    ));
                }
            }
        }
        let mut reads_ref = false;
        for (q, s) in &inputs {
            if !t.objective.slots.iter().any(|x| &x.name == s) {
                return Err(here(
                    Refusal::UnknownName,
                    format!("the loss reads {} of unknown slot `{s}`", q.name()),
                ));
            }
            if *q == Quantity::RefLogp {
                reads_ref = true;
                match &t.objective.reference {
                    None => {
                        return Err(here(
                            Refusal::NoReferenceModel,
                            "the loss reads ref_logp but the objective names no reference model"
                                .into(),
                        ));
                    }
                    Some(r) if graph.model(r).is_none() => {
                        return Err(here(
                            Refusal::UnknownName,
                            format!("unknown reference model `{r}`"),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        for h in t.objective.loss.hypers() {
            if !t.hypers.contains_key(&h) {
                return Err(here(
                    Refusal::MissingHyper,
                    format!("the loss reads hyperparameter `{h}`, which has no value"),
                ));
            }
        }
        let mut evals = Vec::new();
        for e in &t.evals {
            if graph.dataset(&e.data).is_none() {
                return Err(here(
                    Refusal::UnknownName,
                    format!("eval on unknown dataset `{}`", e.data),
                ));
            }
            if e.every == 0 {
                return Err(here(Refusal::EvalEveryZero, "eval every 0 steps".into()));
            }
            let mut metrics = Vec::new();
            for m in &e.metrics {
                let r = graph.rollout(&m.rollout).ok_or_else(|| {
                    here(
                        Refusal::UnknownName,
                        format!("metric `{}` uses unknown rollout `{}`", m.name, m.rollout),
                    )
                })?;
                if graph.model(&r.policy.base().model).is_none() {
                    return Err(here(
                        Refusal::UnknownName,
                        format!(
                            "rollout `{}` samples from unknown model `{}`",
                            m.rollout,
                            r.policy.base().model
                        ),
                    ));
                }
                // Evals decode with the rollout's base sampling (a branched rollout has no
                // expert at test time); guided and verifier-stopped decoding need their own
                // decoders, so `unsupported` refuses them above rather than replacing them.
                let reward = match &m.kind {
                    MetricKind::MeanReward { reward } | MetricKind::PassAtK { reward, .. } => {
                        Some(reward)
                    }
                    MetricKind::MeanLength => None,
                };
                let expr = match reward {
                    Some(reward) => {
                        let node = graph.reward(reward).ok_or_else(|| {
                            here(
                                Refusal::UnknownName,
                                format!("metric `{}` uses unknown reward `{reward}`", m.name),
                            )
                        })?;
                        crate::rewards::validate(&node.expr).map_err(|e| {
                            here(Refusal::RewardInvalid, format!("reward `{reward}`: {e}"))
                        })?;
                        Some(&node.expr)
                    }
                    None => None,
                };
                if let MetricKind::PassAtK { k, .. } = m.kind
                    && (k == 0 || k > r.policy.base().n)
                {
                    return Err(here(
                        Refusal::PassAtKRange,
                        format!(
                            "metric `{}`: pass@{k} needs between 1 and n = {} samples per prompt",
                            m.name,
                            r.policy.base().n
                        ),
                    ));
                }
                let value = match (&m.kind, expr) {
                    (MetricKind::MeanReward { .. }, Some(e)) => MetricValue::MeanReward(e),
                    (MetricKind::PassAtK { k, .. }, Some(e)) => MetricValue::PassAtK(e, *k),
                    _ => MetricValue::MeanLength,
                };
                metrics.push(MetricPlan {
                    name: &m.name,
                    rollout: &m.rollout,
                    sampling: r.policy.base(),
                    value,
                });
            }
            evals.push(EvalPlan { eval: e, metrics });
        }
        let reference = t.objective.reference.as_deref().filter(|_| reads_ref);
        let mut reads = Vec::new();
        reads.extend(t.objective.reference.as_deref());
        for s in &slots {
            if let SlotKind::Rollout { sampler, .. } = s.kind {
                reads.push(sampler);
            }
        }
        for e in &evals {
            reads.extend(e.metrics.iter().map(|m| m.sampling.model.as_str()));
        }
        stages.push(StagePlan {
            index,
            name: &stage.name,
            stage: t,
            per_step: records,
            micro: records / t.grad_accum,
            reference,
            slots,
            evals,
            reads,
        });
    }
    Ok(Plan {
        graph,
        stages,
        copies,
    })
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
