//! Stages: `stage` (training), `select` (S2L data selection) and `analysis` blocks, with their
//! settings, evals and cross-field constraints (units, batch vs group size, reference model,
//! context length, dataset fields of rewards).

use std::collections::{BTreeMap, HashMap};

use post_graph::{
    AnalyzeStage, Batch, BatchUnit, DataSource, Eval, Metric, ModelSource, Optimizer, Quantity,
    SelectStage, SlotSource, Stage, StageKind, TrainStage,
};

use super::builtins::{D, P, R, T, p};
use super::formula::{self, StageEnv};
use super::{Checker, RolloutVal, Settings, Unit, Value, num_of};
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;
use crate::syntax::ast::*;

/// The settings of the experiment block itself.
pub const EXPERIMENT_SETTINGS: &[P] =
    &[p("seed", T::Int, D::Num(0.0)).doc("Seeds every random choice of the run.")];

/// The experiment setting `name` (its type and default), as the checker reads it.
pub fn experiment_setting(name: &str) -> &'static P {
    EXPERIMENT_SETTINGS
        .iter()
        .find(|p| p.name == name)
        .expect("an experiment setting of the table")
}

/// The settings of a `stage` block: what the checker accepts and the editor documents.
pub const STAGE_SETTINGS: &[P] = &[
    p("model", T::Model, D::Doc("policy")).doc(
        "The model trained (default: the model named `policy`, else the first trainable one).",
    ),
    p("data", T::Data, D::Opt).doc(
        "The dataset whose prompts the stage trains on (default: the dataset the objective reads).",
    ),
    p("steps", T::Steps, D::Req).doc("Optimizer steps of the stage."),
    p("batch", T::Batch, D::Req)
        .doc("Batch size with its unit: `32 prompts`, `64 sequences` or `512 completions`."),
    p("objective", T::Objective, D::Req)
        .doc("The loss, an objective applied to its arguments: `sft(train.solution)`."),
    p("rollout", T::Rollout, D::Opt)
        .doc("The rollout that produces the completions the objective scores."),
    p("optimizer", T::Optimizer, D::Doc("adamw(lr = 0.0001)"))
        .doc("The optimizer and its learning-rate schedule."),
    p("reference", T::Model, D::Opt).doc(
        "The reference model for `ref_logp` (default: the model named `reference`, else a frozen one).",
    ),
    p("grad_clip", T::Num(R::Pos), D::Num(1.0)).doc("Global gradient-norm clip."),
    p("grad_accum", T::Count, D::Num(1.0)).doc("Micro-batches accumulated per step."),
    p("checkpoint_every", T::Steps, D::Doc("the stage's steps")).doc("Checkpoint interval."),
    p(
        "keep_checkpoints",
        T::Count,
        D::Num(post_graph::DEFAULT_KEEP_CHECKPOINTS as f64),
    )
    .doc("Checkpoints kept: the newest this many, plus the best by the first eval metric."),
];

/// The settings of a `select` (S2L) block.
pub const SELECT_SETTINGS: &[P] = &[
    p("proxy", T::Model, D::Req)
        .doc("The small proxy model trained to record loss trajectories (S2L)."),
    p("data", T::Data, D::Req).doc("The candidate examples."),
    p("steps", T::Steps, D::Req).doc("Proxy training steps."),
    p("batch", T::Batch, D::Req).doc("Proxy batch size, in sequences or prompts."),
    p("optimizer", T::Optimizer, D::Doc("adamw(lr = 0.0001)")).doc("The proxy's optimizer."),
    p("record_every", T::Steps, D::Opt).doc("How often per-example losses are recorded."),
    p("clusters", T::Count, D::Opt).doc("Number of trajectory clusters."),
    p("budget", T::Count, D::Req).doc("How many examples are selected."),
];

/// Besides `limit`, every line of an eval block names a metric: `accuracy = accuracy(...)`.
pub const EVAL_SETTINGS: &[P] = &[p("limit", T::Count, D::Opt)
    .doc("Evaluate at most this many examples of the dataset (default: all).")];

/// The settings of an `analysis` block.
pub const ANALYSIS_SETTINGS: &[P] = &[
    p("model", T::Model, D::Req).doc("The model whose activations are captured."),
    p("data", T::Data, D::Req).doc("The inputs."),
    p("layers", T::IntList, D::Opt).doc("Layers to capture (default: all)."),
    p("limit", T::Count, D::Opt).doc("At most this many examples."),
    p("summaries", T::Summaries, D::Req).doc("Summaries computed over the activations."),
];

fn get(
    c: &mut Checker,
    m: usize,
    s: &Settings,
    key: &str,
    t: T,
    path: &str,
) -> Option<(Value, Span)> {
    let st = s.get(key)?;
    let v = c.eval_as(m, &st.value, t, &HashMap::new(), &format!("{path}.{key}"))?;
    // A numeric setting's range (`grad_clip` > 0) holds like an argument's.
    if let T::Num(r) | T::Sched(r) = t {
        super::builtins::check_value_range(c, &v, r, key, st.value.span)?;
    }
    Some((v, st.value.span))
}

fn required(c: &mut Checker, s: &Settings, key: &str, b: &Block) -> bool {
    if s.get(key).is_none() {
        c.err(
            Diagnostic::error(
                Code::E0104,
                format!("{} `{}` has no `{key}`", b.kind.keyword(), b.name.name),
                b.name.span,
                format!("`{key}` missing"),
            )
            .with_help(format!("add `{key} = ...` to the block")),
        );
        return false;
    }
    true
}

fn data_name(v: &Value) -> Option<String> {
    match v {
        Value::Data(d) => d.name.clone(),
        _ => None,
    }
}

fn default_policy(c: &mut Checker, path: &str, span: Span) -> Option<String> {
    let trainable: Vec<String> = c
        .models
        .iter()
        .filter(|m| {
            matches!(
                m.source,
                ModelSource::Preset { .. } | ModelSource::HuggingFace { .. }
            )
        })
        .map(|m| m.name.clone())
        .collect();
    let pick = if trainable.iter().any(|n| n == "policy") {
        Some("policy".to_string())
    } else {
        trainable.first().cloned()
    };
    match pick {
        Some(n) => {
            c.default_applied(
                &format!("{path}.model"),
                n.clone(),
                if n == "policy" {
                    "the model named `policy`"
                } else {
                    "the first trainable model"
                },
            );
            Some(n)
        }
        None => {
            c.err(
                Diagnostic::error(Code::E0104, "no model to train", span, "no `model`")
                    .with_help("declare `model policy = preset(\"tiny\")`"),
            );
            None
        }
    }
}

fn optimizer(c: &mut Checker, m: usize, s: &Settings, path: &str) -> Option<Optimizer> {
    match get(c, m, s, "optimizer", T::Optimizer, path) {
        Some((Value::Optimizer(o), _)) => Some(o),
        Some(_) => None,
        None if s.get("optimizer").is_some() => None,
        None => {
            let lr = 1e-4;
            c.default_applied(
                &format!("{path}.optimizer"),
                "adamw(lr = 0.0001)".into(),
                "built-in default",
            );
            for (k, v) in [
                ("beta1", "0.9"),
                ("beta2", "0.999"),
                ("eps", "0.00000001"),
                ("weight_decay", "0"),
            ] {
                c.default_applied(
                    &format!("{path}.optimizer.{k}"),
                    v.into(),
                    "built-in default",
                );
            }
            Some(Optimizer::AdamW {
                lr: post_graph::Schedule::constant(lr),
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            })
        }
    }
}

fn batch(c: &mut Checker, m: usize, s: &Settings, path: &str) -> Option<(Batch, Span)> {
    let (v, span) = get(c, m, s, "batch", T::Batch, path)?;
    let Value::Quantity(x, u) = v else {
        return None;
    };
    let unit = match u {
        Unit::Prompts => BatchUnit::Prompts,
        Unit::Sequences => BatchUnit::Sequences,
        _ => BatchUnit::Completions,
    };
    Some((
        Batch {
            size: x as usize,
            unit,
        },
        span,
    ))
}

/// Check that a rollout's generation fits in its model's context, given the prompts of `data`.
fn check_context(c: &mut Checker, r: &RolloutVal, data: Option<&str>, span: Span) {
    let base = r.rollout.base();
    let Some(cfg) = c.model_config(&base.model) else {
        return;
    };
    let ctx = cfg.max_position_embeddings;
    let prompt = data
        .and_then(|d| c.data_info.get(d))
        .map_or(1, |d| d.prompt_tokens.max(1));
    if base.max_tokens + prompt > ctx {
        c.err(Diagnostic::error(
            Code::E0404,
            format!("max_tokens {} plus a prompt of up to ~{prompt} tokens exceeds the context of `{}` ({ctx} tokens)", base.max_tokens, base.model),
            span,
            "does not fit",
        ).with_help(format!("use `max_tokens = {} tokens` or fewer", ctx.saturating_sub(prompt))));
    }
}

/// The fields a reward reads must exist in the dataset it scores.
fn check_reward_fields(c: &mut Checker, reward: &str, data: Option<&str>, span: Span) {
    let Some(d) = data.and_then(|d| c.data_info.get(d)).cloned() else {
        return;
    };
    let Some(fields) = d.fields.clone() else {
        return;
    };
    let used = c.reward_fields.get(reward).cloned().unwrap_or_default();
    for (f, fspan) in used {
        if !fields.contains(&f) {
            let (primary, label) = if fspan == Span::default() {
                (span, None)
            } else {
                (fspan, Some(span))
            };
            let help = crate::suggest::did_you_mean(&f, fields.iter().map(|s| s.as_str()))
                .unwrap_or_else(|| {
                    format!(
                        "the dataset's fields are {}",
                        fields
                            .iter()
                            .map(|f| format!("`{f}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
            let mut d2 = Diagnostic::error(
                Code::E0501,
                format!(
                    "reward `{reward}` reads field `{f}`, which dataset `{}` does not have",
                    d.name.clone().unwrap_or_default()
                ),
                primary,
                "unknown field",
            )
            .with_help(help);
            if let Some(l) = label {
                d2 = d2.with_label(l, "used on that dataset here");
            }
            c.err(d2);
        }
    }
}

pub fn stage(c: &mut Checker, m: usize, b: &Block, earlier: &[Stage]) -> Option<Stage> {
    match b.kind {
        BlockKind::Stage => train(c, m, b, earlier),
        BlockKind::Select => select(c, m, b),
        BlockKind::Analysis => analysis(c, m, b),
        BlockKind::Experiment => {
            c.err(
                Diagnostic::error(
                    Code::E0107,
                    "experiments do not nest",
                    b.name.span,
                    "nested experiment",
                )
                .with_help("one file holds one experiment: move this one to its own file"),
            );
            None
        }
    }
}

fn reject_evals(c: &mut Checker, b: &Block) {
    for i in &b.items {
        match i {
            Item::Eval(e) => c.err(
                Diagnostic::error(
                    Code::E0107,
                    format!("`eval` is not allowed in a `{}` block", b.kind.keyword()),
                    e.span,
                    "not allowed here",
                )
                .with_help("eval blocks belong to training stages (`stage name { ... }`)"),
            ),
            other => reject_nested(c, other),
        }
    }
}

/// Definitions and blocks belong to the experiment: inside any stage-like block they are errors.
fn reject_nested(c: &mut Checker, item: &Item) {
    match item {
        Item::Def(d) => c.err(
            Diagnostic::error(
                Code::E0107,
                "definitions belong to the experiment, not to a stage",
                d.span,
                "not allowed here",
            )
            .with_help("move it out of the stage"),
        ),
        Item::Block(x) => c.err(
            Diagnostic::error(
                Code::E0107,
                "blocks do not nest",
                x.name.span,
                "not allowed here",
            )
            .with_help(format!(
                "move `{} {}` out, to the experiment's top level",
                x.kind.keyword(),
                x.name.name
            )),
        ),
        _ => {}
    }
}

fn check_data_ready(c: &mut Checker, data: &str, span: Span, earlier: &[Stage]) {
    if let Some(DataSource::Selected { stage }) = c
        .datasets
        .iter()
        .find(|d| d.name == data)
        .map(|d| d.source.clone())
        && !earlier.iter().any(|s| s.name == stage)
    {
        c.err(Diagnostic::error(Code::E0407, format!("dataset `{data}` is chosen by stage `{stage}`, which does not run before this one"), span, "not selected yet")
                .with_help(format!("put stage `{stage}` first")));
    }
}

fn train(c: &mut Checker, m: usize, b: &Block, earlier: &[Stage]) -> Option<Stage> {
    let path = format!("stage {}", b.name.name);
    for i in &b.items {
        reject_nested(c, i);
    }
    let s = Settings::collect(c, &b.items, STAGE_SETTINGS, "stage");
    let has_obj = required(c, &s, "objective", b);
    let has_steps = required(c, &s, "steps", b);
    let has_batch = required(c, &s, "batch", b);
    let model = match get(c, m, &s, "model", T::Model, &path) {
        Some((Value::Model(n), _)) => Some(n),
        _ if s.get("model").is_some() => None,
        _ => default_policy(c, &path, b.name.span),
    };
    if let Some(name) = &model
        && let Some(node) = c.models.iter().find(|n| n.name == *name)
        && let ModelSource::Frozen { of }
        | ModelSource::Snapshot { of }
        | ModelSource::Lagged { of, .. } = &node.source
    {
        let span = s.get("model").map_or(b.name.span, |x| x.value.span);
        c.err(
            Diagnostic::error(
                Code::E0407,
                format!("model `{name}` is a copy of `{of}` and cannot be trained"),
                span,
                "a frozen, snapshot or lagged copy",
            )
            .with_help(format!(
                "train `{of}` (`model = {of}`); copies follow the model they copy"
            )),
        );
    }
    let rollout = match get(c, m, &s, "rollout", T::Rollout, &path) {
        Some((Value::Rollout(mut r), span)) => {
            // An unnamed stage rollout is registered under the stage's name.
            let name = c.register_rollout(&r, &format!("{}_rollout", b.name.name));
            r.name = Some(name);
            Some((*r, span))
        }
        _ => None,
    };
    let data_set = get(c, m, &s, "data", T::Data, &path);
    let mut data = data_set.as_ref().and_then(|(v, _)| data_name(v));
    if let (Some((_, span)), None) = (&data_set, &data) {
        c.err(
            Diagnostic::error(
                Code::E0201,
                "a stage trains on a named dataset",
                *span,
                "unnamed dataset",
            )
            .with_help("declare it: `data train = ...`"),
        );
    }
    let steps = get(c, m, &s, "steps", T::Steps, &path)
        .and_then(|(v, _)| num_of(&v))
        .map(|x| x as u64);
    let batch = if has_batch {
        batch(c, m, &s, &path)
    } else {
        None
    };
    let optimizer = optimizer(c, m, &s, &path);
    let reference = match get(c, m, &s, "reference", T::Model, &path) {
        Some((Value::Model(n), span)) => Some((n, span)),
        _ => None,
    };
    let grad_clip = match get(c, m, &s, "grad_clip", T::Num(R::Pos), &path) {
        Some((v, _)) => num_of(&v),
        None => {
            if s.get("grad_clip").is_none() {
                c.default_applied(&format!("{path}.grad_clip"), "1".into(), "built-in default");
            }
            Some(1.0)
        }
    };
    let grad_accum = match get(c, m, &s, "grad_accum", T::Count, &path) {
        Some((v, _)) => num_of(&v).unwrap_or(1.0) as usize,
        None => {
            if s.get("grad_accum").is_none() {
                c.default_applied(
                    &format!("{path}.grad_accum"),
                    "1".into(),
                    "built-in default",
                );
            }
            1
        }
    };
    let objective = if has_obj {
        match get(c, m, &s, "objective", T::Objective, &path) {
            Some((Value::Objective(o), _)) => Some(o),
            _ => None,
        }
    } else {
        None
    };
    let lowered = objective.as_ref().and_then(|o| {
        let env = StageEnv {
            path: &format!("{path}.objective"),
            stage_rollout: rollout.as_ref().map(|(r, _)| r),
            rollout_failed: rollout.is_none() && s.get("rollout").is_some(),
        };
        formula::instantiate(c, o, &env)
    });
    // The stage's data: as set, or the dataset whose fields the objective reads.
    if data.is_none() && data_set.is_none() {
        if let Some(l) = &lowered
            && let Some((d, _)) = l.data_used.first()
        {
            c.default_applied(
                &format!("{path}.data"),
                d.clone(),
                "the dataset the objective reads",
            );
            data = Some(d.clone());
        }
        if data.is_none() && lowered.is_some() {
            c.err(
                Diagnostic::error(
                    Code::E0104,
                    format!("stage `{}` has no `data`", b.name.name),
                    b.name.span,
                    "`data` missing",
                )
                .with_help("add `data = train` (the prompts the stage trains on)"),
            );
        }
    }
    if let (Some(l), Some(d)) = (&lowered, &data) {
        for (used, span) in &l.data_used {
            if used != d {
                c.err(
                    Diagnostic::error(
                        Code::E0407,
                        format!("the objective reads `{used}` but the stage trains on `{d}`"),
                        *span,
                        "another dataset",
                    )
                    .with_help(format!("read fields of `{d}`, or set `data = {used}`")),
                );
            }
        }
    }
    if let Some(d) = &data {
        let span = s.get("data").map_or(b.name.span, |x| x.value.span);
        check_data_ready(c, d, span, earlier);
    }
    // Evals are checked even when the objective has errors.
    let steps_v = steps.unwrap_or(0);
    let mut evals = Vec::new();
    for i in &b.items {
        if let Item::Eval(e) = i
            && let Some(ev) = eval(c, m, e, &path, steps_v)
        {
            evals.push(ev);
        }
    }
    // When the objective has errors the checks below that need it are skipped, but the stage's
    // own rollout can still be checked, so one run reports as much as it can.
    if lowered.is_none()
        && let Some((r, span)) = &rollout
    {
        check_context(c, r, data.as_deref(), *span);
    }
    let mut lowered = lowered?;
    let obj_span = s.get("objective").map_or(b.name.span, |x| x.value.span);

    // Reference model: required when the loss reads ref_logp.
    let needs_ref = lowered
        .instance
        .loss
        .inputs()
        .iter()
        .any(|(q, _)| *q == Quantity::RefLogp);
    if needs_ref {
        let r = match &reference {
            Some((n, _)) => Some(n.clone()),
            None => {
                let frozen = c
                    .models
                    .iter()
                    .find(|mm| mm.name == "reference")
                    .or_else(|| {
                        c.models.iter().find(|mm| {
                            matches!(
                                mm.source,
                                ModelSource::Frozen { .. } | ModelSource::Snapshot { .. }
                            )
                        })
                    });
                match frozen.map(|mm| mm.name.clone()) {
                    Some(n) => {
                        c.default_applied(
                            &format!("{path}.reference"),
                            n.clone(),
                            "the frozen model of the experiment",
                        );
                        Some(n)
                    }
                    None => {
                        c.err(Diagnostic::error(
                            Code::E0403,
                            format!("objective `{}` reads `ref_logp`, but there is no reference model", lowered.instance.name),
                            obj_span,
                            "needs a reference model",
                        ).with_help("declare `model reference = frozen(policy)` (or set `reference = ...` in the stage)"));
                        None
                    }
                }
            }
        };
        lowered.instance.reference = r;
    } else {
        lowered.instance.reference = reference.as_ref().map(|(n, _)| n.clone());
    }

    // Units of the batch against the slot sources, and divisibility by the group size.
    let group = lowered
        .instance
        .slots
        .iter()
        .find_map(|sl| match &sl.source {
            SlotSource::Rollout { rollout } | SlotSource::Replay { rollout, .. } => c
                .rollouts
                .iter()
                .find(|r| r.name == *rollout)
                .map(|r| r.policy.base().n),
            SlotSource::Data { .. } => None,
        });
    // A reward scores sampled completions; a slot bound to dataset records has none.
    let inputs = lowered.instance.loss.inputs();
    for sl in &lowered.instance.slots {
        if let SlotSource::Data { field } = &sl.source
            && inputs.contains(&(Quantity::Reward, sl.name.clone()))
        {
            c.err(
                Diagnostic::error(
                    Code::E0201,
                    format!(
                        "the objective reads the reward of `{}`, bound to dataset field `{field}`: records have no reward",
                        sl.name
                    ),
                    obj_span,
                    "reward of data records",
                )
                .with_help(format!(
                    "leave `{}` unbound and give the stage a `rollout` to sample completions the reward scores",
                    sl.name
                )),
            );
        }
    }
    let samples = lowered
        .instance
        .slots
        .iter()
        .any(|sl| matches!(sl.source, SlotSource::Rollout { .. }));
    if let Some((bt, bspan)) = &batch {
        match (samples, bt.unit) {
            (true, BatchUnit::Sequences) => c.err(
                Diagnostic::error(
                    Code::E0202,
                    "this stage samples completions: count its batch in prompts or completions",
                    *bspan,
                    "batch in sequences",
                )
                .with_help(format!(
                    "write `{} prompts` (each sampled {} times) or `{} completions`",
                    bt.size,
                    group.unwrap_or(1),
                    bt.size
                )),
            ),
            (false, BatchUnit::Completions) => c.err(
                Diagnostic::error(
                    Code::E0202,
                    "this stage samples nothing: count its batch in prompts or sequences",
                    *bspan,
                    "batch in completions",
                )
                .with_help(format!(
                    "write `{} sequences` (records of the dataset), or give the stage a `rollout` to sample completions",
                    bt.size
                )),
            ),
            (true, BatchUnit::Completions) => {
                if let Some(n) = group
                    && bt.size % n != 0
                {
                    c.err(
                        Diagnostic::error(
                            Code::E0402,
                            format!(
                                "a batch of {} completions is not a whole number of groups of {n}",
                                bt.size
                            ),
                            *bspan,
                            format!("not divisible by {n}"),
                        )
                        .with_help(format!(
                            "use a multiple of {n}, e.g. `{} completions`",
                            (bt.size / n).max(1) * n
                        )),
                    );
                }
            }
            _ => {}
        }
        // The runtime draws `records` prompts or records a step and splits them into
        // `grad_accum` equal micro-batches.
        let records = match bt.unit {
            BatchUnit::Prompts => bt.size,
            BatchUnit::Sequences | BatchUnit::Completions => bt.size / group.unwrap_or(1).max(1),
        };
        if grad_accum == 0 || records == 0 || records % grad_accum != 0 {
            let unit = if bt.unit == BatchUnit::Sequences {
                "records"
            } else {
                "prompts"
            };
            let span = s.get("grad_accum").map_or(*bspan, |x| x.value.span);
            let fits: Vec<String> = (1..=records.min(64))
                .filter(|k| records % k == 0)
                .map(|k| k.to_string())
                .collect();
            c.err(
                Diagnostic::error(
                    Code::E0408,
                    format!(
                        "a batch of {records} {unit} does not split into {grad_accum} gradient-accumulation micro-batches"
                    ),
                    span,
                    format!("{records} is not a multiple of {grad_accum}"),
                )
                .with_label(*bspan, "the batch")
                .with_help(if fits.is_empty() {
                    "the batch must hold at least one record per micro-batch".to_string()
                } else {
                    format!(
                        "grad_accum must divide the {records} {unit} of a step: one of {}",
                        fits.join(", ")
                    )
                }),
            );
        }
    }

    // Context length of every rollout the stage samples from.
    for rname in &lowered.rollouts_used {
        if let Some(r) = c.rollout_named(rname).cloned() {
            let rv = RolloutVal {
                name: Some(r.name.clone()),
                rollout: r.policy.clone(),
            };
            let span = s.get("rollout").map_or(obj_span, |x| x.value.span);
            check_context(c, &rv, data.as_deref(), span);
            if let post_graph::Rollout::Branched { reward, .. }
            | post_graph::Rollout::Guided { reward, .. } = &r.policy
            {
                check_reward_fields(c, reward, data.as_deref(), span);
            }
        }
    }
    for sl in &lowered.instance.slots {
        if let Some(r) = &sl.reward {
            check_reward_fields(c, r, data.as_deref(), obj_span);
        }
    }
    if let Some(model) = &model
        && let Some(r) = &lowered.instance.reference
        && r == model
    {
        c.err(
            Diagnostic::error(
                Code::E0407,
                format!("the reference model `{r}` is the model being trained"),
                obj_span,
                "same model",
            )
            .with_help(format!(
                "use a frozen copy: `model reference = frozen({model})`"
            )),
        );
    }

    let checkpoint_every = match get(c, m, &s, "checkpoint_every", T::Steps, &path) {
        Some((v, _)) => num_of(&v).unwrap_or(0.0) as u64,
        None => {
            if s.get("checkpoint_every").is_none() {
                c.default_applied(
                    &format!("{path}.checkpoint_every"),
                    format!("{steps_v} steps"),
                    "the stage's steps",
                );
            }
            steps_v
        }
    };
    let keep_checkpoints = match get(c, m, &s, "keep_checkpoints", T::Count, &path) {
        Some((v, _)) => num_of(&v).unwrap_or(1.0) as u64,
        None => {
            if s.get("keep_checkpoints").is_none() {
                c.default_applied(
                    &format!("{path}.keep_checkpoints"),
                    post_graph::DEFAULT_KEEP_CHECKPOINTS.to_string(),
                    "built-in default",
                );
            }
            post_graph::DEFAULT_KEEP_CHECKPOINTS
        }
    };
    if steps == Some(0) {
        let span = s.get("steps").map_or(b.name.span, |x| x.value.span);
        c.err(
            Diagnostic::error(
                Code::E0401,
                "a stage needs at least 1 step",
                span,
                "zero steps",
            )
            .with_help("write `steps = 1` or more, or remove the stage"),
        );
    }
    if !has_steps {
        return None;
    }
    Some(Stage {
        name: b.name.name.clone(),
        kind: StageKind::Train(TrainStage {
            model: model?,
            data: data?,
            steps: steps?,
            batch: batch?.0,
            objective: lowered.instance,
            optimizer: optimizer?,
            grad_clip,
            grad_accum,
            hypers: lowered.hypers,
            evals,
            checkpoint_every: checkpoint_every.max(1),
            keep_checkpoints: keep_checkpoints.max(1),
        }),
    })
}

fn eval(c: &mut Checker, m: usize, e: &EvalBlock, stage_path: &str, steps: u64) -> Option<Eval> {
    let path = format!("{stage_path}.eval");
    let every = match &e.every {
        Some(x) => match c.eval_as(m, x, T::Steps, &HashMap::new(), &path) {
            Some(v) => {
                let n = num_of(&v).unwrap_or(0.0) as u64;
                if n == 0 {
                    c.err(
                        Diagnostic::error(
                            Code::E0401,
                            "evaluate every 1 step or more",
                            x.span,
                            "zero",
                        )
                        .with_help("write `eval every 1 steps on ...` or more, or remove `every` to evaluate once at the end"),
                    );
                    return None;
                }
                Some(n)
            }
            None => None,
        },
        None => {
            c.default_applied(
                &format!("{path}.every"),
                format!("{steps} steps"),
                "the stage's steps (start and end only)",
            );
            Some(steps.max(1))
        }
    };
    let data = match &e.on {
        Some(on) => match c.lookup(m, &on.name) {
            Some(id) => match c.def_value(id, on.span) {
                Some(Value::Data(d)) => d.name.clone(),
                Some(v) => {
                    c.type_error(on.span, "a dataset", &v);
                    None
                }
                None => None,
            },
            None => {
                c.unresolved(m, &on.name, on.span, &[]);
                None
            }
        },
        None => {
            c.err(
                Diagnostic::error(
                    Code::E0104,
                    "an eval needs a dataset: `eval every 50 steps on test { ... }`",
                    e.span,
                    "no `on`",
                )
                .with_help(
                    "add `on <dataset>` after the interval: `eval every 50 steps on test { ... }`",
                ),
            );
            None
        }
    };
    let mut metrics = Vec::new();
    let mut limit = None;
    let mut seen: BTreeMap<String, Span> = BTreeMap::new();
    for i in &e.items {
        match i {
            Item::Setting(s) => {
                if let Some(prev) = seen.insert(s.key.name.clone(), s.key.span) {
                    c.err(
                        Diagnostic::error(
                            Code::E0105,
                            format!("`{}` is set twice", s.key.name),
                            s.key.span,
                            "set again here",
                        )
                        .with_label(prev, "first set here")
                        .with_help(format!("keep one `{} = ...` line in the eval", s.key.name)),
                    );
                    continue;
                }
                if s.key.name == "limit" {
                    limit = c
                        .eval_as(m, &s.value, T::Count, &HashMap::new(), &path)
                        .and_then(|v| num_of(&v))
                        .map(|x| x as usize);
                    continue;
                }
                let mpath = format!("{path}.{}", s.key.name);
                if let Some(Value::Metric(kind, r)) =
                    c.eval_as(m, &s.value, T::Metric, &HashMap::new(), &mpath)
                {
                    let hint = format!("{}_{}", stage_path.replace("stage ", "eval_"), s.key.name);
                    let rname = c.register_rollout(&r, &hint);
                    check_context(c, &r, data.as_deref(), s.value.span);
                    if let post_graph::MetricKind::MeanReward { reward }
                    | post_graph::MetricKind::PassAtK { reward, .. } = &kind
                    {
                        check_reward_fields(c, reward, data.as_deref(), s.value.span);
                    }
                    metrics.push(Metric {
                        name: s.key.name.clone(),
                        rollout: rname,
                        kind,
                    });
                }
            }
            other => c.err(
                Diagnostic::error(
                    Code::E0107,
                    "an eval block holds `metric = ...` lines and `limit = N`",
                    other.span(),
                    "not allowed here",
                )
                .with_help("write e.g. `accuracy = accuracy(correct, greedy(policy))` or `limit = 100`; move other items out of the eval"),
            ),
        }
    }
    let written = e
        .items
        .iter()
        .any(|i| !matches!(i, Item::Setting(s) if s.key.name == "limit"));
    if !written && data.is_some() {
        c.err(
            Diagnostic::error(
                Code::E0104,
                "an eval needs at least one metric",
                e.span,
                "no metrics",
            )
            .with_help("e.g. `accuracy = accuracy(correct, greedy(policy))`"),
        );
    }
    Some(Eval {
        data: data?,
        every: every?,
        limit,
        metrics,
    })
}

fn select(c: &mut Checker, m: usize, b: &Block) -> Option<Stage> {
    let path = format!("select {}", b.name.name);
    reject_evals(c, b);
    let s = Settings::collect(c, &b.items, SELECT_SETTINGS, "select");
    let ok = ["proxy", "data", "steps", "batch", "budget"]
        .iter()
        .all(|k| required(c, &s, k, b));
    let proxy = match get(c, m, &s, "proxy", T::Model, &path) {
        Some((Value::Model(n), _)) => Some(n),
        _ => None,
    };
    let data = get(c, m, &s, "data", T::Data, &path).and_then(|(v, _)| data_name(&v));
    let steps = get(c, m, &s, "steps", T::Steps, &path)
        .and_then(|(v, _)| num_of(&v))
        .map(|x| x as u64);
    let batch = batch(c, m, &s, &path);
    if let Some((bt, span)) = &batch
        && bt.unit == BatchUnit::Completions
    {
        c.err(
            Diagnostic::error(
                Code::E0202,
                "a selection stage samples nothing: count its batch in sequences or prompts",
                *span,
                "batch in completions",
            )
            .with_help(format!("write `batch = {} sequences`", bt.size)),
        );
    }
    let optimizer = optimizer(c, m, &s, &path);
    let record_every = match get(c, m, &s, "record_every", T::Steps, &path) {
        Some((v, _)) => num_of(&v).map(|x| x as u64),
        None if s.get("record_every").is_some() => None,
        None => {
            let r = (steps.unwrap_or(10) / 10).max(1);
            c.default_applied(
                &format!("{path}.record_every"),
                format!("{r} steps"),
                "a tenth of the steps",
            );
            Some(r)
        }
    };
    let clusters = match get(c, m, &s, "clusters", T::Count, &path) {
        Some((v, _)) => num_of(&v).map(|x| x as usize),
        None if s.get("clusters").is_some() => None,
        None => {
            c.default_applied(
                &format!("{path}.clusters"),
                "100".into(),
                "S2L default (K = 100)",
            );
            Some(100)
        }
    };
    let budget = get(c, m, &s, "budget", T::Count, &path)
        .and_then(|(v, _)| num_of(&v))
        .map(|x| x as usize);
    if !ok {
        return None;
    }
    if let (Some(r), Some(st)) = (record_every, steps)
        && (r == 0 || r > st)
    {
        let span = s.get("record_every").map_or(b.name.span, |x| x.value.span);
        c.err(
            Diagnostic::error(
                Code::E0401,
                format!("record_every must be between 1 and the {st} steps"),
                span,
                "out of range",
            )
            .with_help(format!(
                "write e.g. `record_every = {} steps` (at most the stage's {st} steps)",
                (st / 10).max(1)
            )),
        );
    }
    Some(Stage {
        name: b.name.name.clone(),
        kind: StageKind::Select(SelectStage {
            proxy: proxy?,
            data: data?,
            steps: steps?,
            batch: batch?.0,
            optimizer: optimizer?,
            record_every: record_every?,
            clusters: clusters?,
            budget: budget?,
        }),
    })
}

fn analysis(c: &mut Checker, m: usize, b: &Block) -> Option<Stage> {
    let path = format!("analysis {}", b.name.name);
    reject_evals(c, b);
    let s = Settings::collect(c, &b.items, ANALYSIS_SETTINGS, "analysis");
    let ok = ["model", "data", "summaries"]
        .iter()
        .all(|k| required(c, &s, k, b));
    let model = match get(c, m, &s, "model", T::Model, &path) {
        Some((Value::Model(n), _)) => Some(n),
        _ => None,
    };
    let data = get(c, m, &s, "data", T::Data, &path).and_then(|(v, _)| data_name(&v));
    let layers: Vec<usize> = match get(c, m, &s, "layers", T::IntList, &path) {
        Some((Value::List(xs), span)) => {
            let ls: Vec<usize> = xs.iter().filter_map(num_of).map(|x| x as usize).collect();
            if let Some(cfg) = model.as_ref().and_then(|mm| c.model_config(mm)) {
                let n = cfg.num_layers;
                if let Some(bad) = ls.iter().find(|l| **l > n) {
                    c.err(
                        Diagnostic::error(
                            Code::E0401,
                            format!("layer {bad} does not exist: the model has layers 0..={n}"),
                            span,
                            "no such layer",
                        )
                        .with_help(format!(
                            "list layers from 0 to {n}, e.g. `layers = [0, {n}]`"
                        )),
                    );
                }
            }
            ls
        }
        _ => {
            if s.get("layers").is_none() {
                c.default_applied(&format!("{path}.layers"), "[]".into(), "every layer");
            }
            vec![]
        }
    };
    let limit = get(c, m, &s, "limit", T::Count, &path)
        .and_then(|(v, _)| num_of(&v))
        .map(|x| x as usize);
    let summaries = match get(c, m, &s, "summaries", T::Summaries, &path) {
        Some((Value::List(xs), _)) => Some(
            xs.into_iter()
                .filter_map(|x| match x {
                    Value::Summary(s) => Some(s),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
        _ => None,
    };
    if let (Some(d), Some(sums)) = (&data, &summaries) {
        let info = c.data_info.get(d).cloned();
        for sm in sums {
            let f = match sm {
                post_graph::Summary::DensityPeaks { labels } => labels,
                post_graph::Summary::ContextAttention { context } => context,
                post_graph::Summary::IntrinsicDim => continue,
            };
            if let Some(info) = &info {
                let span = s.get("summaries").map_or(b.name.span, |x| x.value.span);
                c.check_field(info, f, span);
            }
        }
    }
    if !ok {
        return None;
    }
    Some(Stage {
        name: b.name.name.clone(),
        kind: StageKind::Analyze(AnalyzeStage {
            model: model?,
            data: data?,
            layers,
            limit,
            summaries: summaries?,
        }),
    })
}
