//! W0002: settings that type-check but cannot train. They are read off the lowered graph (the
//! objective with its formula inlined and its slots bound), so a user objective that compares
//! two sequence sets is caught like the standard ones.
//!
//! - A group statistic (`group_mean`, `group_std`) over completions sampled at temperature 0:
//!   the n completions of a prompt are the same sequence, so every advantage is zero.
//! - Two slots of one objective bound to the same sequences (`dpo(train.chosen, train.chosen)`):
//!   the terms that compare them cancel, so the loss has no gradient.
//!
//! `grad_clip = 0` (which would scale every update to nothing) is an E0401 range error instead:
//! the setting's range is positive.

use post_graph::{Expr, Graph, Reduce, Rollout, SlotSource, StageKind, TrainStage};

use super::Checker;
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;
use crate::syntax::ast::{Block, Item};

/// What cannot train in one stage, as (message, label, help).
fn findings(graph: &Graph, stage: &TrainStage) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    let objective = &stage.objective;
    let mut grouped = std::collections::BTreeSet::new();
    objective.loss.visit(&mut |e| {
        if let Expr::Reduce {
            f: Reduce::GroupMean | Reduce::GroupStd,
            arg,
        } = e
        {
            grouped.extend(arg.slots());
        }
    });
    for slot in &objective.slots {
        if !grouped.contains(&slot.name) {
            continue;
        }
        let SlotSource::Rollout { rollout } = &slot.source else {
            continue;
        };
        let node = graph.rollouts.iter().find(|r| r.name == *rollout);
        let sampling = match node.map(|r| &r.policy) {
            Some(Rollout::Sample(s)) => s,
            Some(Rollout::Branched { base, .. }) => base,
            _ => continue,
        };
        if sampling.temperature == 0.0 && sampling.n >= 2 {
            out.push((
                format!(
                    "`{}` compares the {} completions of each prompt, and rollout `{rollout}` samples them at temperature 0: they are the same sequence, so every advantage is zero",
                    objective.name, sampling.n
                ),
                "zero advantage",
                format!(
                    "sample the group at a temperature above 0 (e.g. `temperature = 1.0` in `{rollout}`)"
                ),
            ));
        }
    }
    for (i, a) in objective.slots.iter().enumerate() {
        for b in &objective.slots[i + 1..] {
            if a.source == b.source && !matches!(a.source, SlotSource::Replay { .. }) {
                let what = match &a.source {
                    SlotSource::Data { field } => format!("field `{field}` of `{}`", stage.data),
                    SlotSource::Rollout { rollout } => format!("the samples of `{rollout}`"),
                    SlotSource::Replay { rollout, .. } => format!("the replay of `{rollout}`"),
                };
                out.push((
                    format!(
                        "`{}` reads the same sequences as `{}` and `{}` ({what}): the terms that compare them cancel, so the loss has no gradient",
                        objective.name, a.name, b.name
                    ),
                    "same sequences twice",
                    format!("bind `{}` and `{}` to different fields or rollouts", a.name, b.name),
                ));
            }
        }
    }
    out
}

/// The span of the stage's `objective` setting (else the stage's name).
fn objective_span(exp: &Block, stage: &str) -> Option<Span> {
    let block = exp.items.iter().find_map(|i| match i {
        Item::Block(b) if b.name.name == stage => Some(b),
        _ => None,
    })?;
    Some(
        block
            .items
            .iter()
            .find_map(|i| match i {
                Item::Setting(s) if s.key.name == "objective" => Some(s.value.span),
                _ => None,
            })
            .unwrap_or(block.name.span),
    )
}

impl Checker<'_> {
    /// W0002 for every stage of `graph` whose settings cannot train.
    pub(super) fn warn_untrainable(&mut self, exp: &Block, graph: &Graph) {
        for stage in &graph.stages {
            let StageKind::Train(t) = &stage.kind else {
                continue;
            };
            let span = objective_span(exp, &stage.name).unwrap_or(exp.name.span);
            for (message, label, help) in findings(graph, t) {
                self.err(
                    Diagnostic::warning(
                        Code::W0002,
                        format!("stage `{}`: {message}", stage.name),
                        span,
                        label,
                    )
                    .with_help(help),
                );
            }
        }
    }
}
