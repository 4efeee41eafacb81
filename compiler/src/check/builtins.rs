//! Built-in functions of the experiment level (models, data, transforms, rollouts, optimizers,
//! schedules, metrics, summaries): their signatures (types, ranges, defaults), argument binding
//! with "did you mean" on unknown keys, and the values they build.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use post_graph::{
    BranchAnchor, Condition, DataSource, MetricKind, ModelSource, Optimizer, PrefixSearch, Rollout,
    Sampling, Schedule, Shape, Split, Summary, Transform,
};

use super::signatures::{self, Scope};
use super::{Checker, DataVal, RolloutVal, Unit, Value, num_of};
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;
use crate::suggest;
use crate::syntax::ast::*;

pub use super::params::{D, P, PT, R, T, TYPE_NAMES, fmt_num, p, param_type};

/// The values bound to a call's parameters.
#[derive(Debug, Default)]
pub struct Bound {
    vals: HashMap<&'static str, (Value, Span)>,
}

impl Bound {
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.vals.get(k).map(|(v, _)| v)
    }
    pub fn span(&self, k: &str) -> Option<Span> {
        self.vals.get(k).map(|(_, s)| *s)
    }
    pub fn num(&self, k: &str) -> f64 {
        self.get(k).and_then(num_of).unwrap_or(0.0)
    }
    pub fn usize(&self, k: &str) -> usize {
        self.num(k) as usize
    }
    pub fn str(&self, k: &str) -> String {
        match self.get(k) {
            Some(Value::Str(s)) | Some(Value::Sym(s)) | Some(Value::Model(s)) => s.clone(),
            _ => String::new(),
        }
    }
    pub fn bool(&self, k: &str) -> bool {
        matches!(self.get(k), Some(Value::Bool(true)))
    }
    pub fn strs(&self, k: &str) -> Vec<String> {
        match self.get(k) {
            Some(Value::List(xs)) => xs
                .iter()
                .filter_map(|x| match x {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => vec![],
        }
    }
    pub fn sched(&self, k: &str) -> Schedule {
        match self.get(k) {
            Some(Value::Schedule(s)) => s.clone(),
            _ => Schedule::constant(self.num(k)),
        }
    }
    pub fn rollout(&self, k: &str) -> Option<RolloutVal> {
        match self.get(k) {
            Some(Value::Rollout(r)) => Some((**r).clone()),
            _ => None,
        }
    }
    pub fn sampling(&self, k: &str) -> Option<Sampling> {
        self.rollout(k).map(|r| r.rollout.base().clone())
    }
}

/// Match call arguments to parameter names: index of the argument for each parameter.
pub fn assign_args(
    c: &mut Checker,
    names: &[&str],
    args: &[Arg],
    call_span: Span,
) -> Option<Vec<Option<usize>>> {
    let mut out: Vec<Option<usize>> = vec![None; names.len()];
    let mut ok = true;
    let mut next_pos = 0usize;
    let mut seen_named = false;
    for (ai, a) in args.iter().enumerate() {
        match &a.name {
            None => {
                if seen_named {
                    c.err(
                        Diagnostic::error(
                            Code::E0105,
                            "positional argument after a named one",
                            a.span,
                            "positional argument",
                        )
                        .with_help("name this argument, or move it before the named ones"),
                    );
                    ok = false;
                    continue;
                }
                if next_pos >= names.len() {
                    c.err(
                        Diagnostic::error(
                            Code::E0105,
                            format!("too many arguments: expected at most {}", names.len()),
                            a.span,
                            "extra argument",
                        )
                        .with_label(call_span, "in this call")
                        .with_help(if names.is_empty() {
                            "this takes no arguments: remove it".to_string()
                        } else {
                            format!("the arguments are, in order: {}", names.join(", "))
                        }),
                    );
                    ok = false;
                    continue;
                }
                out[next_pos] = Some(ai);
                next_pos += 1;
            }
            Some(n) => {
                seen_named = true;
                match names.iter().position(|x| *x == n.name) {
                    Some(i) => {
                        if let Some(prev) = out[i] {
                            c.err(
                                Diagnostic::error(
                                    Code::E0105,
                                    format!("argument `{}` given twice", n.name),
                                    n.span,
                                    "given again here",
                                )
                                .with_label(args[prev].span, "first given here")
                                .with_help(format!("keep one `{}`: remove the other", n.name)),
                            );
                            ok = false;
                        } else {
                            out[i] = Some(ai);
                        }
                    }
                    None => {
                        let (help, fix) = suggest::unknown_name(&n.name, names.iter().copied());
                        let help = help.unwrap_or_else(|| {
                            if names.is_empty() {
                                "this takes no arguments".to_string()
                            } else {
                                format!("the arguments are: {}", names.join(", "))
                            }
                        });
                        let d = Diagnostic::error(
                            Code::E0103,
                            format!("unknown argument `{}`", n.name),
                            n.span,
                            "unknown argument",
                        )
                        .with_help(help)
                        .with_fix_opt(n.span, fix);
                        c.err(d);
                        ok = false;
                    }
                }
            }
        }
    }
    ok.then_some(out)
}

/// Bind a call's arguments against a built-in signature, applying (and recording) defaults.
#[allow(clippy::too_many_arguments)]
pub fn bind(
    c: &mut Checker,
    module: usize,
    sig: &[P],
    args: &[Arg],
    call_span: Span,
    locals: &HashMap<String, Value>,
    path: &str,
) -> Option<Bound> {
    let names: Vec<&str> = sig.iter().map(|p| p.name).collect();
    let assigned = assign_args(c, &names, args, call_span)?;
    let mut b = Bound::default();
    let mut ok = true;
    for (i, prm) in sig.iter().enumerate() {
        match assigned[i] {
            Some(ai) => {
                let a = &args[ai];
                let v = match prm.ty {
                    T::Sym(opts) => symbol_in(c, &a.value, opts, locals),
                    t => c.eval_as(module, &a.value, t, locals, &format!("{path}.{}", prm.name)),
                };
                let v = v.and_then(|v| check_range(c, v, prm, a.value.span));
                match v {
                    Some(v) => {
                        b.vals.insert(prm.name, (v, a.value.span));
                    }
                    None => ok = false,
                }
            }
            None => match prm.default {
                D::Req => {
                    c.err(
                        Diagnostic::error(
                            Code::E0104,
                            format!("missing required argument `{}`", prm.name),
                            call_span,
                            format!("`{}` is required", prm.name),
                        )
                        .with_help(format!(
                            "add `{} = ...` to the call ({} has no default)",
                            prm.name, prm.name
                        )),
                    );
                    ok = false;
                }
                D::Opt => {}
                d => {
                    if let Some((v, text)) = d.value() {
                        let v = match (prm.ty, v) {
                            (T::Sched(_), Value::Num(x)) => Value::Schedule(Schedule::constant(x)),
                            (_, v) => v,
                        };
                        c.default_applied(
                            &format!("{path}.{}", prm.name),
                            text,
                            "built-in default",
                        );
                        b.vals.insert(prm.name, (v, call_span));
                    }
                }
            },
        }
    }
    ok.then_some(b)
}

fn check_range(c: &mut Checker, v: Value, prm: &P, span: Span) -> Option<Value> {
    let r = match prm.ty {
        T::Num(r) | T::Sched(r) => r,
        _ => return Some(v),
    };
    check_value_range(c, &v, r, prm.name, span)?;
    Some(v)
}

/// Every value a number or schedule takes must lie in `r`.
pub fn check_value_range(c: &mut Checker, v: &Value, r: R, name: &str, span: Span) -> Option<()> {
    // (value, whether it is a schedule's end, which is approached but never applied)
    let values: Vec<(f64, bool)> = match v {
        Value::Num(x) => vec![(*x, false)],
        Value::Schedule(s) => match s.shape {
            Shape::Constant { value } => vec![(value, false)],
            Shape::Linear { from, to } | Shape::Cosine { from, to } => {
                vec![(from, false), (to, true)]
            }
        },
        _ => vec![],
    };
    for (x, end) in values {
        let ok = if end { r.holds_at_end(x) } else { r.holds(x) };
        if !ok {
            let scheduled =
                matches!(v, Value::Schedule(s) if !matches!(s.shape, Shape::Constant { .. }));
            c.err(
                Diagnostic::error(
                    Code::E0401,
                    format!("`{name}` must be {}, found {}", r.text(), fmt_num(x)),
                    span,
                    format!("out of range ({})", r.text()),
                )
                .with_help(r.help(name, x, scheduled)),
            );
            return None;
        }
    }
    Some(())
}

/// A symbol argument: a bare name (or string) among `opts`.
/// [`symbol`] inside a template: a name that is not an option but one of the template's own
/// option parameters (`anchor = anchor`) stands for that parameter's value.
pub fn symbol_in(
    c: &mut Checker,
    e: &Expr,
    opts: &[impl AsRef<str>],
    locals: &HashMap<String, Value>,
) -> Option<Value> {
    if let ExprKind::Name(n) = &e.kind
        && !opts.iter().any(|o| o.as_ref() == n)
        && let Some(Value::Sym(v)) = locals.get(n)
    {
        return symbol(
            c,
            &Expr {
                kind: ExprKind::Name(v.clone()),
                span: e.span,
            },
            opts,
        );
    }
    symbol(c, e, opts)
}

pub fn symbol(c: &mut Checker, e: &Expr, opts: &[impl AsRef<str>]) -> Option<Value> {
    let name = match &e.kind {
        ExprKind::Name(n) => n.clone(),
        ExprKind::Str(s) => s.clone(),
        _ => {
            let list: Vec<&str> = opts.iter().map(|o| o.as_ref()).collect();
            c.err(
                Diagnostic::error(
                    Code::E0201,
                    format!("expected one of {}", list.join(", ")),
                    e.span,
                    "not an option name",
                )
                .with_help(format!(
                    "write one of the names as they are (no quotes needed): {}",
                    list.join(", ")
                )),
            );
            return None;
        }
    };
    if opts.iter().any(|o| o.as_ref() == name) {
        return Some(Value::Sym(name));
    }
    let list: Vec<&str> = opts.iter().map(|o| o.as_ref()).collect();
    c.err(
        Diagnostic::error(
            Code::E0401,
            format!("`{name}` is not one of {}", list.join(", ")),
            e.span,
            "unknown option",
        )
        .with_help(
            suggest::did_you_mean(&name, list.iter().copied())
                .unwrap_or_else(|| format!("the options are {}", list.join(", "))),
        ),
    );
    None
}

/// Coerce a value to a type (units, integers, schedules, registered names).
pub fn coerce(c: &mut Checker, v: Value, t: T, span: Span) -> Option<Value> {
    let mismatch = |c: &mut Checker, expected: &str, v: &Value| {
        c.type_error(span, expected, v);
        None
    };
    match t {
        T::Num(_) => match v {
            Value::Num(_) => Some(v),
            Value::Quantity(x, u) => {
                c.err(
                    Diagnostic::error(
                        Code::E0202,
                        format!("expected a plain number, found a number of {}", u.name()),
                        span,
                        "unexpected unit",
                    )
                    .with_help(format!("write `{}` without a unit", fmt_num(x))),
                );
                None
            }
            v => mismatch(c, "a number", &v),
        },
        T::Int | T::Count => {
            let x = match v {
                Value::Num(x) => x,
                Value::Quantity(x, u) => {
                    c.err(
                        Diagnostic::error(
                            Code::E0202,
                            format!("expected a plain count, found a number of {}", u.name()),
                            span,
                            "unexpected unit",
                        )
                        .with_help(format!("write `{}` without a unit", fmt_num(x))),
                    );
                    return None;
                }
                Value::Schedule(_) => {
                    c.err(
                        Diagnostic::error(
                            Code::E0203,
                            "a schedule is not allowed here: this value must be a constant",
                            span,
                            "scheduled",
                        )
                        .with_help("write a whole number"),
                    );
                    return None;
                }
                v => return mismatch(c, "a whole number", &v),
            };
            let min = if t == T::Count { 1.0 } else { 0.0 };
            if x.fract() != 0.0 || x < min || x > 1e15 {
                c.err(
                    Diagnostic::error(
                        Code::E0401,
                        format!("expected a whole number >= {}, found {}", min, fmt_num(x)),
                        span,
                        "out of range",
                    )
                    .with_help(
                        if x.fract() != 0.0 && x.round() >= min && x <= 1e15 {
                            format!("write a whole number, e.g. `{}`", fmt_num(x.round()))
                        } else {
                            format!("write a whole number from {min} to 1e15")
                        },
                    ),
                );
                return None;
            }
            Some(Value::Num(x))
        }
        T::Tokens | T::Steps => {
            let want = if t == T::Tokens {
                Unit::Tokens
            } else {
                Unit::Steps
            };
            let x = match v {
                Value::Num(x) => x,
                Value::Quantity(x, u) if u == want => x,
                Value::Quantity(q, u) => {
                    c.err(
                        Diagnostic::error(
                            Code::E0202,
                            format!("expected {}, found {}", want.name(), u.name()),
                            span,
                            format!("this counts {}", u.name()),
                        )
                        .with_help(format!(
                            "this setting is counted in {}: write a number of {}, e.g. `{} {}`",
                            want.name(),
                            want.name(),
                            fmt_num(q.round().max(1.0)),
                            want.name()
                        )),
                    );
                    return None;
                }
                v => return mismatch(c, &format!("a number of {}", want.name()), &v),
            };
            if x.fract() != 0.0 || !(0.0..=1e15).contains(&x) {
                c.err(
                    Diagnostic::error(
                        Code::E0401,
                        format!(
                            "expected a whole number of {}, found {}",
                            want.name(),
                            fmt_num(x)
                        ),
                        span,
                        "out of range",
                    )
                    .with_help(
                        if x.fract() != 0.0 && (0.0..=1e15).contains(&x.round()) {
                            format!(
                                "write a whole number, e.g. `{} {}`",
                                fmt_num(x.round()),
                                want.name()
                            )
                        } else {
                            format!("write a whole number of {} from 0 to 1e15", want.name())
                        },
                    ),
                );
                return None;
            }
            Some(Value::Quantity(x, want))
        }
        T::Batch => match v {
            Value::Quantity(x, u @ (Unit::Prompts | Unit::Sequences | Unit::Completions)) => {
                if x > post_graph::MAX_BATCH as f64 {
                    c.err(
                        Diagnostic::error(
                            Code::E0401,
                            format!(
                                "a batch of {} {} is more than the limit of {}",
                                fmt_num(x),
                                u.name(),
                                post_graph::MAX_BATCH
                            ),
                            span,
                            "too large",
                        )
                        .with_help(format!(
                            "a batch is held in memory whole: write at most `{} {}`",
                            post_graph::MAX_BATCH,
                            u.name()
                        )),
                    );
                    return None;
                }
                if x.fract() != 0.0 || x < 1.0 {
                    c.err(
                        Diagnostic::error(
                            Code::E0401,
                            "a batch is a whole number >= 1",
                            span,
                            "out of range",
                        )
                        .with_help(format!(
                            "write a whole count of at least 1, e.g. `{} {}`",
                            fmt_num(x.round().max(1.0)),
                            u.name()
                        )),
                    );
                    return None;
                }
                Some(Value::Quantity(x, u))
            }
            Value::Quantity(_, u) => {
                c.err(
                    Diagnostic::error(
                        Code::E0202,
                        format!(
                            "a batch counts prompts, sequences or completions, not {}",
                            u.name()
                        ),
                        span,
                        format!("batch in {}", u.name()),
                    )
                    .with_help("write e.g. `32 prompts`"),
                );
                None
            }
            Value::Num(x) => {
                c.err(
                    Diagnostic::error(Code::E0202, "a batch size needs a unit", span, "no unit")
                        .with_help(format!(
                            "write `{} prompts`, `{} sequences` or `{} completions`",
                            fmt_num(x),
                            fmt_num(x),
                            fmt_num(x)
                        )),
                );
                None
            }
            v => mismatch(c, "a batch size", &v),
        },
        T::Str => match v {
            Value::Str(_) => Some(v),
            v => mismatch(c, "a string", &v),
        },
        T::Bool => match v {
            Value::Bool(_) => Some(v),
            v => mismatch(c, "a boolean", &v),
        },
        T::ModelSrc => match v {
            Value::ModelSrc(_) | Value::Model(_) => Some(v),
            v => mismatch(c, "a model", &v),
        },
        T::Model => match v {
            Value::Model(_) => Some(v),
            Value::ModelSrc(src) => {
                let name = c.register_model(src, "model");
                Some(Value::Model(name))
            }
            v => mismatch(c, "a model", &v),
        },
        T::Data => match v {
            Value::Data(_) => Some(v),
            v => mismatch(c, "a dataset", &v),
        },
        T::Reward => match v {
            Value::Reward(_) => Some(v),
            v => mismatch(c, "a reward", &v),
        },
        T::Rollout => match v {
            Value::Rollout(_) => Some(v),
            v => mismatch(c, "a rollout", &v),
        },
        T::Sampling => match v {
            Value::Rollout(ref r) if matches!(r.rollout, Rollout::Sample(_)) => Some(v),
            Value::Rollout(_) => {
                c.err(
                    Diagnostic::error(
                        Code::E0201,
                        "expected a `sample(...)` or `greedy(...)` rollout",
                        span,
                        "a composite rollout cannot be a base",
                    )
                    .with_help(
                        "pass the plain `sample(...)` (or `greedy(...)`) rollout this one is built on; composite rollouts do not nest",
                    ),
                );
                None
            }
            v => mismatch(c, "a `sample(...)` rollout", &v),
        },
        T::Sched(_) => match v {
            Value::Num(x) => Some(Value::Schedule(Schedule::constant(x))),
            Value::Schedule(_) => Some(v),
            Value::Range(..) => {
                c.err(
                    Diagnostic::error(
                        Code::E0201,
                        "a range `a -> b` needs a schedule shape",
                        span,
                        "bare range",
                    )
                    .with_help("write `linear(a -> b)` or `cosine(a -> b)`"),
                );
                None
            }
            v => mismatch(c, "a number or a schedule", &v),
        },
        T::Range => match v {
            Value::Range(..) => Some(v),
            v => mismatch(c, "a range `a -> b`", &v),
        },
        T::Sym(_) | T::FieldName => Some(v),
        T::StrList => match v {
            Value::Str(s) => Some(Value::List(vec![Value::Str(s)])),
            Value::List(xs) => {
                if let Some(bad) = xs.iter().find(|x| !matches!(x, Value::Str(_))) {
                    return mismatch(c, "a list of strings", bad);
                }
                Some(Value::List(xs))
            }
            v => mismatch(c, "a list of strings", &v),
        },
        T::IntList => match v {
            Value::List(xs) => {
                for x in &xs {
                    match x {
                        Value::Num(n) if n.fract() == 0.0 && *n >= 0.0 => {}
                        other => return mismatch(c, "a list of whole numbers", other),
                    }
                }
                Some(Value::List(xs))
            }
            v => mismatch(c, "a list of whole numbers", &v),
        },
        T::Summaries => match v {
            Value::Summary(_) => Some(Value::List(vec![v])),
            Value::List(xs) => {
                if let Some(bad) = xs.iter().find(|x| !matches!(x, Value::Summary(_))) {
                    return mismatch(c, "a list of summaries", bad);
                }
                Some(Value::List(xs))
            }
            v => mismatch(c, "a list of summaries", &v),
        },
        T::Cond => match v {
            Value::Condition(_) => Some(v),
            Value::Reward(name) => {
                let expr = c
                    .rewards
                    .iter()
                    .find(|r| r.name == name)
                    .map(|r| r.expr.clone())?;
                Some(Value::Condition(Condition::Expr { expr }))
            }
            v => mismatch(c, "a condition (a reward used as a predicate)", &v),
        },
        T::Optimizer => match v {
            Value::Optimizer(_) => Some(v),
            v => mismatch(c, "an optimizer", &v),
        },
        T::Metric => match v {
            Value::Metric(..) => Some(v),
            v => mismatch(c, "a metric", &v),
        },
        T::Objective => match v {
            Value::Objective(_) => Some(v),
            v => mismatch(c, "an objective", &v),
        },
        // Arguments of formula built-ins: the formula checker lowers them, never `coerce`.
        T::Formula | T::Seqs => mismatch(c, "a formula", &v),
    }
}

pub const PRESETS: &[&str] = post_graph::presets::NAMES;
pub const TASK_FIELDS: &[&str] = post_graph::tasks::FIELDS;

fn sampling(b: &Bound, greedy: bool) -> Sampling {
    Sampling {
        model: b.str("model"),
        n: b.usize("n"),
        temperature: if greedy { 0.0 } else { b.num("temperature") },
        top_k: if greedy { 0 } else { b.usize("top_k") },
        top_p: if greedy { 1.0 } else { b.num("top_p") },
        max_tokens: b.usize("max_tokens"),
        stop: b.strs("stop"),
    }
}

fn rollout(r: Rollout) -> Option<Value> {
    Some(Value::Rollout(Box::new(RolloutVal {
        name: None,
        rollout: r,
    })))
}

/// Call a built-in by name; `None` when `name` is not a built-in of the experiment level.
#[allow(clippy::too_many_arguments)]
pub fn call(
    c: &mut Checker,
    module: usize,
    name: &str,
    callee_span: Span,
    span: Span,
    args: &[Arg],
    locals: &HashMap<String, Value>,
    path: &str,
) -> Option<Option<Value>> {
    if name == "jsonl" {
        return Some(jsonl(c, module, callee_span, span, args, locals, path));
    }
    let sig = signatures::exact(name, Scope::Experiment)?.params;
    let path = format!("{path}.{name}");
    let Some(b) = bind(c, module, sig, args, span, locals, &path) else {
        return Some(None);
    };
    Some(build(c, name, &b, span))
}

fn build(c: &mut Checker, name: &str, b: &Bound, span: Span) -> Option<Value> {
    match name {
        "preset" => {
            let preset = b.str("name");
            let Some(config) = post_graph::presets::config(&preset) else {
                c.err(
                    Diagnostic::error(
                        Code::E0401,
                        format!("unknown model preset `{preset}`"),
                        b.span("name").unwrap_or(span),
                        "unknown preset",
                    )
                    .with_help(
                        suggest::did_you_mean(&preset, PRESETS.iter().copied())
                            .unwrap_or_else(|| format!("the presets are {}", PRESETS.join(", "))),
                    ),
                );
                return None;
            };
            let init = b.get("init").map(|_| b.str("init"));
            if let Some(dir) = &init {
                let at = b.span("init").unwrap_or(span);
                // Reported, and the model still defined: nothing else cascades from it.
                let _ = check_model_dir(c, dir, false, at);
            }
            let mut config = config;
            if b.get("sliding_window").is_some() {
                let w = b.usize("sliding_window");
                if w == 0 || w > config.max_position_embeddings {
                    c.err(
                        Diagnostic::error(
                            Code::E0401,
                            format!(
                                "sliding_window must be 1 to {} tokens (the context of `{preset}`), found {w}",
                                config.max_position_embeddings
                            ),
                            b.span("sliding_window").unwrap_or(span),
                            "out of range",
                        )
                        .with_help("a query attends to itself and the `sliding_window - 1` tokens before it"),
                    );
                    return None;
                }
                config.sliding_window = Some(w);
            }
            Some(Value::ModelSrc(ModelSource::Preset {
                preset,
                config,
                init,
                trained: None,
            }))
        }
        "hf" => {
            let path = b.str("path");
            let _ = check_model_dir(c, &path, true, b.span("path").unwrap_or(span));
            Some(Value::ModelSrc(ModelSource::HuggingFace { path }))
        }
        "frozen" => Some(Value::ModelSrc(ModelSource::Frozen { of: b.str("model") })),
        "snapshot" => Some(Value::ModelSrc(ModelSource::Snapshot {
            of: b.str("model"),
        })),
        "trained" => super::prerequisite::trained(
            c,
            (b.str("file"), b.span("file").unwrap_or(span)),
            (b.str("model"), b.span("model").unwrap_or(span)),
        ),
        "lagged" => {
            let every = b.num("every") as u64;
            if every == 0 {
                c.err(
                    Diagnostic::error(
                        Code::E0401,
                        "`every` must be at least 1 step",
                        b.span("every").unwrap_or(span),
                        "out of range",
                    )
                    .with_help(
                        "write `every = 1` (or more): the copy is refreshed every that many steps",
                    ),
                );
                return None;
            }
            Some(Value::ModelSrc(ModelSource::Lagged {
                of: b.str("model"),
                every_steps: every,
            }))
        }
        "task" => {
            let task = b.str("name");
            let Some(spec) = post_graph::tasks::spec(&task) else {
                let names: Vec<&str> = post_graph::tasks::names().collect();
                c.err(
                    Diagnostic::error(
                        Code::E0401,
                        format!("unknown task `{task}`"),
                        b.span("name").unwrap_or(span),
                        "unknown task",
                    )
                    .with_help(
                        suggest::did_you_mean(&task, names.iter().copied()).unwrap_or_else(|| {
                            format!("the built-in tasks are {}", names.join(", "))
                        }),
                    ),
                );
                return None;
            };
            let (lo, hi) = (spec.min_difficulty as usize, spec.max_difficulty as usize);
            let difficulty = b.usize("difficulty");
            if !(lo..=hi).contains(&difficulty) {
                c.err(
                    Diagnostic::error(
                        Code::E0401,
                        format!(
                            "task `{task}` supports difficulty {lo}..={hi}, found {difficulty}"
                        ),
                        b.span("difficulty").unwrap_or(span),
                        "out of range",
                    )
                    .with_help(format!(
                        "pick a difficulty from {lo} to {hi} ({})",
                        spec.range_reason
                    )),
                );
                return None;
            }
            let min_difficulty = b.get("min_difficulty").map(|_| b.usize("min_difficulty"));
            if let Some(min) = min_difficulty
                && !(lo..=difficulty).contains(&min)
            {
                c.err(
                    Diagnostic::error(
                        Code::E0401,
                        format!(
                            "`min_difficulty` {min} must be in {lo}..={difficulty} (the `difficulty`)"
                        ),
                        b.span("min_difficulty").unwrap_or(span),
                        "out of range",
                    )
                    .with_help(
                        "problems get a difficulty drawn from `min_difficulty..=difficulty`",
                    ),
                );
                return None;
            }
            let size = b.num("size");
            if size > post_graph::tasks::MAX_TASK_SIZE as f64 {
                c.err(
                    Diagnostic::error(
                        Code::E0401,
                        format!(
                            "a task of {} records is more than the limit of {}",
                            fmt_num(size),
                            post_graph::tasks::MAX_TASK_SIZE
                        ),
                        b.span("size").unwrap_or(span),
                        "too many records",
                    )
                    .with_help(format!(
                        "every record is held in memory: pick a size up to {}",
                        post_graph::tasks::MAX_TASK_SIZE
                    )),
                );
                return None;
            }
            let split = if b.str("split") == "test" {
                Split::Test
            } else {
                Split::Train
            };
            Some(Value::Data(Box::new(DataVal {
                name: None,
                prompt_tokens: post_graph::tasks::prompt_tokens(&task, difficulty),
                source: DataSource::Task {
                    task,
                    split,
                    size: b.usize("size"),
                    difficulty: difficulty as u32,
                    min_difficulty: min_difficulty.map(|m| m as u32),
                },
                transforms: vec![],
                fields: Some(TASK_FIELDS.iter().map(|s| s.to_string()).collect()),
            })))
        }
        "selected" => {
            let stage = b.str("stage");
            match c.stage_kinds.iter().find(|(n, _)| *n == stage) {
                Some((_, BlockKind::Select)) => {}
                Some(_) => {
                    let selects: Vec<String> = c
                        .stage_kinds
                        .iter()
                        .filter(|(_, k)| *k == BlockKind::Select)
                        .map(|(n, _)| format!("`{n}`"))
                        .collect();
                    c.err(
                        Diagnostic::error(
                            Code::E0201,
                            format!("stage `{stage}` is not a `select` stage"),
                            b.span("stage").unwrap_or(span),
                            "not a selection",
                        )
                        .with_help(if selects.is_empty() {
                            "`selected(...)` reads the subset chosen by a `select name { ... }` block; declare one".to_string()
                        } else {
                            format!("the select stages are {}", selects.join(", "))
                        }),
                    );
                    return None;
                }
                None => {
                    let names: Vec<String> = c
                        .stage_kinds
                        .iter()
                        .filter(|(_, k)| *k == BlockKind::Select)
                        .map(|(n, _)| n.clone())
                        .collect();
                    c.err(
                        Diagnostic::error(
                            Code::E0101,
                            format!("no select stage named `{stage}`"),
                            b.span("stage").unwrap_or(span),
                            "unknown stage",
                        )
                        .with_help(
                            suggest::did_you_mean(&stage, names.iter().map(|s| s.as_str()))
                                .unwrap_or_else(|| {
                                    if names.is_empty() {
                                        "declare a `select name { ... }` block before using `selected(name)`".to_string()
                                    } else {
                                        format!("the select stages are {}", names.join(", "))
                                    }
                                }),
                        ),
                    );
                    return None;
                }
            }
            Some(Value::Data(Box::new(DataVal {
                name: None,
                source: DataSource::Selected { stage },
                transforms: vec![],
                fields: None,
                prompt_tokens: 0,
            })))
        }
        "sample" => rollout(Rollout::Sample(sampling(b, false))),
        "greedy" => rollout(Rollout::Sample(sampling(b, true))),
        "branched" => rollout(Rollout::Branched {
            base: b.sampling("base")?,
            reward: reward_name(b)?,
            success_threshold: b.num("success_threshold"),
            expert_field: b.str("expert"),
            step_delimiter: b.str("step_delimiter"),
            search: if b.str("search") == "linear" {
                PrefixSearch::Linear
            } else {
                PrefixSearch::Binary
            },
            remember: b.bool("remember"),
            anchor: match b.str("anchor").as_str() {
                "original" => BranchAnchor::Original,
                "boundary" => BranchAnchor::Boundary,
                _ => BranchAnchor::None,
            },
        }),
        "guided" => rollout(Rollout::Guided {
            base: b.sampling("base")?,
            baseline: b.str("baseline"),
            reward: reward_name(b)?,
            k: b.usize("k"),
            alpha: b.num("alpha"),
            lookahead: b.usize("lookahead"),
        }),
        "verifier_stopped" => rollout(Rollout::VerifierStopped {
            base: b.sampling("base")?,
            verifier: b.str("verifier"),
            verifier_ref: b.str("verifier_ref"),
            step_delimiter: b.str("step_delimiter"),
            tau: b.num("tau"),
            max_steps: b.usize("max_steps"),
        }),
        "replay" => Some(Value::Replay(
            Box::new(b.rollout("rollout")?),
            b.usize("capacity"),
        )),
        "adamw" => Some(Value::Optimizer(Optimizer::AdamW {
            lr: b.sched("lr"),
            beta1: b.num("beta1"),
            beta2: b.num("beta2"),
            eps: b.num("eps"),
            weight_decay: b.num("weight_decay"),
        })),
        "sgd" => Some(Value::Optimizer(Optimizer::Sgd {
            lr: b.sched("lr"),
            momentum: b.num("momentum"),
        })),
        "constant" => Some(Value::Schedule(Schedule {
            shape: Shape::Constant {
                value: b.num("value"),
            },
            warmup: b.num("warmup") as u64,
        })),
        "linear" | "cosine" => {
            let (from, to) = match b.get("range") {
                Some(Value::Range(a, z)) => (*a, *z),
                _ => return None,
            };
            let shape = if name == "linear" {
                Shape::Linear { from, to }
            } else {
                Shape::Cosine { from, to }
            };
            Some(Value::Schedule(Schedule {
                shape,
                warmup: b.num("warmup") as u64,
            }))
        }
        "warmup" => Some(Value::Schedule(Schedule {
            shape: Shape::Constant {
                value: b.num("value"),
            },
            warmup: b.num("steps") as u64,
        })),
        "accuracy" | "mean_reward" => Some(Value::Metric(
            MetricKind::MeanReward {
                reward: reward_name(b)?,
            },
            Box::new(b.rollout("rollout")?),
        )),
        "mean_length" => Some(Value::Metric(
            MetricKind::MeanLength,
            Box::new(b.rollout("rollout")?),
        )),
        "pass_at" => {
            let r = b.rollout("rollout")?;
            let k = b.usize("k");
            let n = r.rollout.base().n;
            if n < k {
                c.err(
                    Diagnostic::error(
                        Code::E0406,
                        format!(
                            "pass@{k} needs at least {k} samples per prompt, the rollout draws {n}"
                        ),
                        b.span("rollout").unwrap_or(span),
                        format!("n = {n}"),
                    )
                    .with_label(b.span("k").unwrap_or(span), format!("k = {k}"))
                    .with_help(format!("sample with `n = {k}` or more")),
                );
                return None;
            }
            Some(Value::Metric(
                MetricKind::PassAtK {
                    reward: reward_name(b)?,
                    k,
                },
                Box::new(r),
            ))
        }
        "intrinsic_dim" => Some(Value::Summary(Summary::IntrinsicDim)),
        "density_peaks" => Some(Value::Summary(Summary::DensityPeaks {
            labels: b.str("labels"),
        })),
        "context_attention" => Some(Value::Summary(Summary::ContextAttention {
            context: b.str("context"),
        })),
        "attends_to_context" => Some(Value::Condition(Condition::AttendsToContext {
            model: b.str("model"),
            threshold: b.num("threshold"),
        })),
        _ => None,
    }
}

fn reward_name(b: &Bound) -> Option<String> {
    match b.get("reward") {
        Some(Value::Reward(n)) => Some(n.clone()),
        _ => None,
    }
}

/// A model directory (`hf(...)`, with `needs_config`) or initial weights (`init = ...`) that
/// lacks a file the runtime's loader needs: E0504 at the path's span. `None` when reported.
fn check_model_dir(c: &mut Checker, dir: &str, needs_config: bool, at: Span) -> Option<()> {
    let resolved = c.read_path(dir, at)?;
    let what = if needs_config {
        "model directory"
    } else {
        "initial weights"
    };
    let file = |f: &str| format!("{}/{f}", resolved.trim_end_matches('/'));
    let missing = if !c.fs.is_dir(&resolved) {
        Some(format!(
            "{what} `{dir}` does not exist (looked for `{resolved}`)"
        ))
    } else if let Some(f) = post_graph::hf_files::missing(needs_config, |f| c.fs.is_file(&file(f)))
    {
        Some(format!("{what} `{dir}` has no {f}"))
    } else if needs_config && !c.fs.is_file(&file(post_graph::hf_files::TOKENIZER)) {
        Some(format!(
            "{what} `{dir}` has no {}: post tokenizes with the model's own tokenizer",
            post_graph::hf_files::TOKENIZER
        ))
    } else {
        None
    };
    let Some(message) = missing else {
        return Some(());
    };
    let help = if needs_config {
        "a Hugging Face model directory holds config.json, model.safetensors (or a shard index) and tokenizer.json; the path is relative to this .post file"
    } else if dir.contains("/models/") {
        "a run exports its trained models to <out>/models/<name>: run that experiment first, or name it with `trained(\"its.post\", model = \"name\")` so `post run` builds it"
    } else {
        "initial weights are a directory holding model.safetensors (a checkpoint or a run's models/<name>); the path is relative to this .post file"
    };
    c.err(Diagnostic::error(Code::E0504, message, at, "missing").with_help(help));
    None
}

/// `jsonl("path", prompt = "question", solution = "answer")`: named arguments map record
/// fields to JSON keys; the keys are checked against the first records when the file exists.
#[allow(clippy::too_many_arguments)]
fn jsonl(
    c: &mut Checker,
    module: usize,
    _callee_span: Span,
    span: Span,
    args: &[Arg],
    locals: &HashMap<String, Value>,
    path: &str,
) -> Option<Value> {
    let mut file: Option<(String, Span)> = None;
    let mut fields: BTreeMap<String, (String, Span)> = BTreeMap::new();
    let mut ok = true;
    for a in args {
        match &a.name {
            None if file.is_none() => match c.eval_as(module, &a.value, T::Str, locals, path) {
                Some(Value::Str(s)) => file = Some((s, a.value.span)),
                _ => ok = false,
            },
            None => {
                c.err(
                    Diagnostic::error(
                        Code::E0105,
                        "`jsonl` takes one positional argument (the path)",
                        a.span,
                        "extra argument",
                    )
                    .with_help("map fields by name: `jsonl(\"x.jsonl\", prompt = \"question\")`"),
                );
                ok = false;
            }
            Some(n) => match c.eval_as(module, &a.value, T::Str, locals, path) {
                Some(Value::Str(s)) => {
                    if fields.insert(n.name.clone(), (s, a.value.span)).is_some() {
                        c.err(
                            Diagnostic::error(
                                Code::E0105,
                                format!("field `{}` mapped twice", n.name),
                                n.span,
                                "mapped again",
                            )
                            .with_help(format!(
                                "map `{}` to one JSON key: keep one of the two arguments",
                                n.name
                            )),
                        );
                        ok = false;
                    }
                }
                _ => ok = false,
            },
        }
    }
    let Some((file, file_span)) = file else {
        c.err(
            Diagnostic::error(
                Code::E0104,
                "missing the path of the JSONL file",
                span,
                "path missing",
            )
            .with_help("give the file first: `jsonl(\"data/train.jsonl\", prompt = \"question\")`"),
        );
        return None;
    };
    if !ok {
        return None;
    }
    let resolved = c.read_path(&file, file_span)?;
    let mut known: Option<BTreeSet<String>> = if fields.is_empty() {
        None
    } else {
        Some(fields.keys().cloned().collect())
    };
    let too_big =
        c.fs.file_len(&resolved)
            .filter(|&n| n > post_graph::MAX_DATA_FILE_BYTES);
    if let Some(n) = too_big.filter(|_| c.fs.is_file(&resolved)) {
        c.err(
            Diagnostic::error(
                Code::E0502,
                format!(
                    "data file `{file}` (`{resolved}`) is {n} bytes, over the limit of {} bytes",
                    post_graph::MAX_DATA_FILE_BYTES
                ),
                file_span,
                "too large",
            )
            .with_help("split the data into smaller files, or take a part of it with `head`"),
        );
        return None;
    }
    if c.fs.is_file(&resolved) {
        match c.fs.read_head(&resolved, 5) {
            Ok(lines) => {
                let mut keys: Option<BTreeSet<String>> = None;
                for l in lines.iter().filter(|l| !l.trim().is_empty()) {
                    match serde_json::from_str::<serde_json::Value>(
                        l.trim_start_matches('\u{feff}'),
                    ) {
                        Ok(serde_json::Value::Object(m)) => {
                            let ks: BTreeSet<String> = m.keys().cloned().collect();
                            keys = Some(match keys {
                                None => ks,
                                Some(prev) => prev.intersection(&ks).cloned().collect(),
                            });
                        }
                        _ => {
                            c.err(
                                Diagnostic::error(
                                    Code::E0502,
                                    format!(
                                        "`{file}` does not start with JSON objects, one per line"
                                    ),
                                    file_span,
                                    "not JSONL",
                                )
                                .with_help(
                                    "JSONL holds one JSON object a line, e.g. {\"prompt\": \"2+2=\", \"answer\": \"4\"}",
                                ),
                            );
                            return None;
                        }
                    }
                }
                match keys {
                    None => {
                        c.err(
                            Diagnostic::error(
                                Code::E0502,
                                format!("`{file}` has no records"),
                                file_span,
                                "empty file",
                            )
                            .with_help("a dataset needs at least one JSON object a line"),
                        );
                        return None;
                    }
                    Some(keys) => {
                        for (field, (key, kspan)) in &fields {
                            if !keys.contains(key) {
                                let help =
                                    suggest::did_you_mean(key, keys.iter().map(|s| s.as_str()))
                                        .unwrap_or_else(|| {
                                            format!(
                                                "the records have keys: {}",
                                                keys.iter()
                                                    .map(|k| format!("\"{k}\""))
                                                    .collect::<Vec<_>>()
                                                    .join(", ")
                                            )
                                        });
                                c.err(Diagnostic::error(
                                    Code::E0501,
                                    format!("the records of `{file}` have no key \"{key}\" (mapped to field `{field}`)"),
                                    *kspan,
                                    "not in the first records",
                                ).with_help(help));
                                ok = false;
                            }
                        }
                        if fields.is_empty() {
                            known = Some(keys);
                        }
                    }
                }
            }
            Err(e) => {
                c.err(
                    Diagnostic::error(
                        Code::E0502,
                        format!("cannot read `{file}` (`{resolved}`): {e}"),
                        file_span,
                        "unreadable",
                    )
                    .with_help("the data file must be readable UTF-8 text, one JSON object a line"),
                );
                return None;
            }
        }
    } else {
        let what = if c.fs.is_dir(&resolved) {
            "is a directory, not a JSONL file"
        } else if c.fs.exists(&resolved) {
            // `/dev/zero` would be read without end, a named pipe would block the run.
            "is not a regular file (a device, pipe or socket), so it cannot be read as data"
        } else {
            "does not exist"
        };
        c.err(
            Diagnostic::error(
                Code::E0504,
                format!("data file `{file}` {what} (looked for `{resolved}`)"),
                file_span,
                "no such file",
            )
            .with_help("the path is relative to this .post file's directory"),
        );
    }
    if !ok {
        return None;
    }
    let mut map: BTreeMap<String, String> = fields.into_iter().map(|(f, (k, _))| (f, k)).collect();
    if map.is_empty()
        && let Some(k) = &known
    {
        map = k.iter().map(|f| (f.clone(), f.clone())).collect();
    }
    Some(Value::Data(Box::new(DataVal {
        name: None,
        source: DataSource::Jsonl {
            path: file,
            fields: map,
        },
        transforms: vec![],
        fields: known,
        prompt_tokens: 0,
    })))
}

/// A transform method on a dataset: `.template(...)`, `.shuffle()`, ...
#[allow(clippy::too_many_arguments)]
pub fn transform(
    c: &mut Checker,
    module: usize,
    mut d: DataVal,
    method: &Ident,
    span: Span,
    args: &[Arg],
    locals: &HashMap<String, Value>,
    path: &str,
) -> Option<Value> {
    let sig = match signatures::exact(&method.name, Scope::Transform) {
        Some(b) => b.params,
        None => {
            let other = method.name.as_str();
            let methods: Vec<&str> = signatures::BUILTINS
                .iter()
                .filter(|b| b.scope == Scope::Transform)
                .map(|b| b.name)
                .collect();
            c.err(
                Diagnostic::error(
                    Code::E0101,
                    format!("datasets have no transform `{other}`"),
                    method.span,
                    "unknown transform",
                )
                .with_help(
                    suggest::did_you_mean(other, methods.iter().copied())
                        .unwrap_or_else(|| format!("the transforms are {}", methods.join(", "))),
                ),
            );
            return None;
        }
    };
    let b = bind(
        c,
        module,
        sig,
        args,
        span,
        locals,
        &format!("{path}.{}", method.name),
    )?;
    let t = match method.name.as_str() {
        "template" => {
            let text = b.str("text");
            // Every `{field}` hole must name a field of the records.
            let mut rest = text.as_str();
            let mut offset = 0usize;
            while let Some(open) = rest.find('{') {
                let Some(close) = rest[open..].find('}') else {
                    break;
                };
                let hole = &rest[open + 1..open + close];
                if let Some(fields) = &d.fields
                    && !fields.contains(hole)
                {
                    let s = b.span("text").unwrap_or(span);
                    let at = s.start as usize + 1 + offset + open;
                    let hspan = if text.len() + 2 == s.len() {
                        Span::new(at, at + close + 1)
                    } else {
                        s
                    };
                    c.err(
                        Diagnostic::error(
                            Code::E0501,
                            format!("template hole `{{{hole}}}` names no field of the records"),
                            hspan,
                            "unknown field",
                        )
                        .with_help(
                            suggest::did_you_mean(hole, fields.iter().map(|s| s.as_str()))
                                .unwrap_or_else(|| {
                                    format!(
                                        "the fields are {}",
                                        fields.iter().cloned().collect::<Vec<_>>().join(", ")
                                    )
                                }),
                        ),
                    );
                    return None;
                }
                offset += open + close + 1;
                rest = &rest[open + close + 1..];
            }
            let into = b.str("into");
            d.prompt_tokens += text.len();
            if let Some(f) = &mut d.fields {
                f.insert(into.clone());
            }
            Transform::Template {
                template: text,
                into,
            }
        }
        "drop_prompt" => {
            d.prompt_tokens = 0;
            Transform::DropPrompt
        }
        "append_indicator" => {
            let token = b.str("token");
            d.prompt_tokens += token.len();
            let when = match b.get("when") {
                Some(Value::Condition(cond)) => cond.clone(),
                _ => return None,
            };
            Transform::AppendIndicator { token, when }
        }
        "shard" => {
            let (index, count) = (b.usize("index"), b.usize("count"));
            if index >= count {
                c.err(
                    Diagnostic::error(
                        Code::E0401,
                        format!("shard index {index} is not below the shard count {count}"),
                        b.span("index").unwrap_or(span),
                        "out of range",
                    )
                    .with_help(format!("indices run from 0 to {}", count.saturating_sub(1))),
                );
                return None;
            }
            Transform::Shard { index, count }
        }
        "filter" => match b.get("when") {
            Some(Value::Condition(Condition::Expr { expr })) => {
                Transform::Filter { when: expr.clone() }
            }
            _ => {
                c.err(
                    Diagnostic::error(
                        Code::E0201,
                        "`filter` takes a reward used as a predicate",
                        b.span("when").unwrap_or(span),
                        "not a predicate",
                    )
                    .with_help(
                        "define `reward keep(s) = <condition>` and write `.filter(keep)`; only the records where it holds are kept",
                    ),
                );
                return None;
            }
        },
        "take" | "select" => Transform::Take { n: b.usize("n") },
        _ => Transform::Shuffle,
    };
    d.transforms.push(t);
    d.name = None;
    Some(Value::Data(Box::new(d)))
}

/// A formula's or reward's call bound to its entry in [`signatures::BUILTINS`].
pub struct ExprCall<'a> {
    /// The argument of each required parameter, in the table's order.
    pub positional: Vec<&'a Arg>,
    /// The named arguments given, each for a parameter with a default.
    pub named: Vec<(&'static str, &'a Arg)>,
}

/// Bind a formula's or reward's call against its signature in the table: the required
/// parameters are positional (exactly as many as the table lists), those with a default are
/// given by name. The arity and parameter names come from the table alone, so the table and
/// the checker cannot disagree.
pub fn bind_expr_call<'a>(
    c: &mut Checker,
    b: &signatures::Builtin,
    args: &'a [Arg],
    call_span: Span,
) -> Option<ExprCall<'a>> {
    let required: Vec<&str> = b
        .params
        .iter()
        .filter(|p| matches!(p.default, D::Req))
        .map(|p| p.name)
        .collect();
    let optional: Vec<&'static str> = b
        .params
        .iter()
        .filter(|p| !matches!(p.default, D::Req))
        .map(|p| p.name)
        .collect();
    let name = b.name;
    let mut out = ExprCall {
        positional: Vec::new(),
        named: Vec::new(),
    };
    for a in args {
        let Some(n) = &a.name else {
            out.positional.push(a);
            continue;
        };
        let Some(p) = optional.iter().find(|p| **p == n.name) else {
            let (help, fix) = suggest::unknown_name(&n.name, optional.iter().copied());
            c.err(
                Diagnostic::error(
                    Code::E0103,
                    format!("unknown argument `{}` of `{name}`", n.name),
                    a.span,
                    "unknown argument",
                )
                .with_help(help.unwrap_or_else(|| {
                    format!(
                        "`{name}` takes positional arguments only: drop `{} =`",
                        n.name
                    )
                }))
                .with_fix_opt(n.span, fix),
            );
            return None;
        };
        if let Some((_, prev)) = out.named.iter().find(|(q, _)| q == p) {
            c.err(
                Diagnostic::error(
                    Code::E0105,
                    format!("argument `{p}` given twice"),
                    n.span,
                    "given again here",
                )
                .with_label(prev.span, "first given here")
                .with_help(format!("keep one `{p}`: remove the other")),
            );
            return None;
        }
        out.named.push((p, a));
    }
    let n = required.len();
    if out.positional.len() != n {
        c.err(
            Diagnostic::error(
                Code::E0105,
                format!(
                    "`{name}` takes {n} argument{}, found {}",
                    if n == 1 { "" } else { "s" },
                    out.positional.len()
                ),
                call_span,
                "wrong number of arguments",
            )
            .with_help(format!("write `{name}({})`", required.join(", "))),
        );
        return None;
    }
    Some(out)
}
