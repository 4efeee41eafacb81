//! What a checkpoint must say for this graph before a run continues from it. Its files are
//! already verified byte for byte against their manifest (`crate::checkpoint::manifest`); these
//! checks catch a checkpoint whose contents are whole but do not describe a point of this run
//! (a hand edit re-sealed, a writer bug): a resume from it would silently train from random
//! weights, skip stages, or lose metric history. Every check names what differs.

use std::collections::{BTreeMap, BTreeSet};

use post_graph::{ModelSource, Optimizer};

use super::load::Models;
use super::plan::Plan;
use crate::checkpoint::Loaded;
use crate::data::Dataset;
use crate::optim::Params;
use crate::rollouts::RolloutState;

/// The metric records a run has written after `stage_step` steps of stage `index`: per stage,
/// the eval before its first step (when it has evals) and one record per step.
pub fn expected_records(plan: &Plan, index: usize, stage_step: u64) -> u64 {
    let mut n = 0;
    for sp in &plan.stages {
        let done = if sp.index < index {
            sp.stage.steps
        } else if sp.index == index {
            stage_step
        } else {
            break;
        };
        // The eval before the first step runs when the stage starts, so it is there from
        // step 0 of a stage the run has entered.
        n += u64::from(!sp.evals.is_empty()) + done;
    }
    n
}

/// Check `loaded` against the plan, the built models and the datasets.
pub fn check(
    loaded: &Loaded,
    plan: &Plan,
    models: &Models,
    datasets: &BTreeMap<String, Dataset>,
) -> Result<(), String> {
    let st = &loaded.state;
    let stages = plan.graph.stages.len();
    let Some(sp) = plan.stages.iter().find(|s| s.index == st.stage_index) else {
        return Err(format!(
            "state.json: stage_index {} is not a training stage of this graph ({stages} stage{})",
            st.stage_index,
            if stages == 1 { "" } else { "s" }
        ));
    };
    if st.stage_name != sp.name {
        return Err(format!(
            "state.json: stage {} is `{}` in this graph, the checkpoint says `{}`",
            st.stage_index, sp.name, st.stage_name
        ));
    }
    let t = sp.stage;
    if st.stage_step > t.steps {
        return Err(format!(
            "state.json: stage_step {} is past stage `{}`'s {} steps",
            st.stage_step, sp.name, t.steps
        ));
    }
    let before: u64 = plan
        .stages
        .iter()
        .take_while(|s| s.index < sp.index)
        .map(|s| s.stage.steps)
        .sum();
    if st.global_step != before + st.stage_step {
        return Err(format!(
            "state.json: global_step {} is not the {before} steps of earlier stages plus stage_step {}",
            st.global_step, st.stage_step
        ));
    }
    let updates = t.objective.updates_per_batch as u64;
    if st.optimizer_step != st.stage_step * updates {
        return Err(format!(
            "state.json: optimizer_step {} after {} steps of {updates} update{} each",
            st.optimizer_step,
            st.stage_step,
            if updates == 1 { "" } else { "s" }
        ));
    }
    let len = datasets[&t.data].records.len();
    let b = st.batcher;
    let drawn = (b.epoch as u128) * (len as u128) + b.position as u128;
    if b.position > len || drawn != st.stage_step as u128 * sp.per_step as u128 {
        return Err(format!(
            "state.json: data order at epoch {} position {} of {len} records, but {} steps of {} records were drawn",
            b.epoch, b.position, st.stage_step, sp.per_step
        ));
    }
    check_models(loaded, plan, models)?;
    check_optimizer(loaded, &t.optimizer, &models.trainable[&t.model])?;
    RolloutState::from_json(&st.rollout_state).map_err(|e| format!("rollout_state: {e}"))?;
    let want = expected_records(plan, sp.index, st.stage_step);
    let have = loaded.metrics.len() as u64;
    if have != want {
        return Err(format!(
            "metrics.jsonl holds {have} records; step {} of this graph has written {want}",
            st.global_step
        ));
    }
    if let Some(last) = loaded.metrics.last()
        && last.step != st.global_step
    {
        return Err(format!(
            "metrics.jsonl ends at step {}, the checkpoint is at step {}",
            last.step, st.global_step
        ));
    }
    if loaded.metrics.windows(2).any(|w| w[1].step < w[0].step) {
        return Err("metrics.jsonl: steps go backwards".into());
    }
    Ok(())
}

/// Exactly the models the runner saves: every trained model, and every snapshot or lagged
/// copy (their weights change during a run).
fn check_models(loaded: &Loaded, plan: &Plan, models: &Models) -> Result<(), String> {
    let mut want: BTreeSet<&str> = models.trainable.keys().map(String::as_str).collect();
    for c in &plan.copies {
        if matches!(
            c.source,
            ModelSource::Snapshot { .. } | ModelSource::Lagged { .. }
        ) {
            want.insert(c.name);
        }
    }
    let have: BTreeSet<&str> = loaded.state.models.iter().map(String::as_str).collect();
    if let Some(missing) = want.difference(&have).next() {
        return Err(format!(
            "state.json: model `{missing}` is not in the checkpoint (it lists {}); its weights would start from scratch",
            if have.is_empty() {
                "none".to_string()
            } else {
                have.iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
    }
    if let Some(extra) = have.difference(&want).next() {
        return Err(format!(
            "state.json: model `{extra}` is not a trained, snapshot or lagged model of this graph"
        ));
    }
    Ok(())
}

/// The optimiser state holds one buffer set per parameter of the trained model, shaped like it.
fn check_optimizer(
    loaded: &Loaded,
    spec: &Optimizer,
    varmap: &candle_nn::VarMap,
) -> Result<(), String> {
    let prefixes: &[&str] = match spec {
        Optimizer::AdamW { .. } => &["m", "v"],
        Optimizer::Sgd { .. } => &["buf"],
    };
    let params = Params::from_varmap(varmap);
    let mut expected = BTreeSet::new();
    for (name, var) in &params.entries {
        for p in prefixes {
            let key = format!("{p}.{name}");
            match loaded.optimizer.get(&key) {
                None => return Err(format!("optimizer.safetensors has no `{key}`")),
                Some(t) if t.dims() != var.dims() => {
                    return Err(format!(
                        "optimizer.safetensors: `{key}` has shape {:?}, the parameter {:?}",
                        t.dims(),
                        var.dims()
                    ));
                }
                Some(_) => {}
            }
            expected.insert(key);
        }
    }
    if let Some(extra) = loaded.optimizer.keys().find(|k| !expected.contains(*k)) {
        return Err(format!(
            "optimizer.safetensors: `{extra}` is no parameter of the trained model"
        ));
    }
    Ok(())
}
