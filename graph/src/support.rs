//! What the language describes and the runtime does not run yet: the single list the checker
//! turns into warnings (W0001, at the stage or dataset) and the runtime into its refusal, so
//! `post check` says in advance what `post run` will refuse.

use crate::{Condition, DataSource, Graph, Rollout, SlotSource, StageKind, Transform};

/// Where an unsupported feature is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    Stage(String),
    Dataset(String),
}

/// One use of a feature this runtime does not run yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub site: Site,
    /// What is not supported, as a sentence fragment ("replay buffers").
    pub what: String,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.site {
            Site::Stage(s) => write!(f, "stage `{s}`: ")?,
            Site::Dataset(d) => write!(f, "dataset `{d}`: ")?,
        }
        write!(f, "{} not supported by this runtime yet", self.what)
    }
}

fn decodes_specially(r: &Rollout) -> bool {
    matches!(r, Rollout::Guided { .. } | Rollout::VerifierStopped { .. })
}

/// Every use in `graph` of a feature the runtime does not run yet, in graph order.
pub fn unsupported(graph: &Graph) -> Vec<Unsupported> {
    let mut out = Vec::new();
    let stage = |name: &str, what: String| Unsupported {
        site: Site::Stage(name.to_string()),
        what,
    };
    let mut used_data: Vec<&str> = Vec::new();
    for s in &graph.stages {
        let t = match &s.kind {
            StageKind::Train(t) => t,
            StageKind::Select(_) => {
                out.push(stage(&s.name, "data selection stages (S2L) are".into()));
                continue;
            }
            StageKind::Analyze(_) => {
                out.push(stage(&s.name, "analysis stages are".into()));
                continue;
            }
        };
        used_data.push(&t.data);
        for slot in &t.objective.slots {
            match &slot.source {
                SlotSource::Rollout { rollout } => {
                    if graph
                        .rollout(rollout)
                        .is_some_and(|r| decodes_specially(&r.policy))
                    {
                        out.push(stage(
                            &s.name,
                            format!(
                                "slot `{}` trains on rollout `{rollout}`: guided or verifier-stopped decoding is",
                                slot.name
                            ),
                        ));
                    }
                }
                SlotSource::Replay { rollout, .. } => out.push(stage(
                    &s.name,
                    format!(
                        "slot `{}` samples from a replay buffer of rollout `{rollout}`: replay buffers are",
                        slot.name
                    ),
                )),
                SlotSource::Data { .. } => {}
            }
        }
        for e in &t.evals {
            used_data.push(&e.data);
            for m in &e.metrics {
                if graph
                    .rollout(&m.rollout)
                    .is_some_and(|r| decodes_specially(&r.policy))
                {
                    out.push(stage(
                        &s.name,
                        format!(
                            "metric `{}` decodes with rollout `{}`: guided or verifier-stopped decoding is",
                            m.name, m.rollout
                        ),
                    ));
                }
            }
        }
    }
    for d in &graph.datasets {
        if !used_data.contains(&d.name.as_str()) {
            continue;
        }
        let site = Site::Dataset(d.name.clone());
        if let DataSource::Selected { stage } = &d.source {
            out.push(Unsupported {
                site: site.clone(),
                what: format!("data selected by stage `{stage}` (S2L selection) is"),
            });
        }
        for t in &d.transforms {
            if let Transform::AppendIndicator {
                when: Condition::AttendsToContext { model, .. },
                ..
            } = t
            {
                out.push(Unsupported {
                    site: site.clone(),
                    what: format!(
                        "the attention probe condition (attends_to_context of model `{model}`) is"
                    ),
                });
            }
        }
    }
    out
}
