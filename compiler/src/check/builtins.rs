//! Built-in functions of the experiment level (models, data, transforms, rollouts, optimizers,
//! schedules, metrics, summaries): their signatures (types, ranges, defaults), argument binding
//! with "did you mean" on unknown keys, and the values they build.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use post_graph::{
    BranchAnchor, Condition, DataSource, MetricKind, ModelSource, Optimizer, PrefixSearch, Rollout,
    Sampling, Schedule, Shape, Split, Summary, Transform,
};

use super::{Checker, DataVal, RolloutVal, Unit, Value, num_of};
use crate::diagnostic::Diagnostic;
use crate::span::Span;
use crate::suggest;
use crate::syntax::ast::*;

/// Numeric ranges a parameter may require.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum R {
    Any,
    /// > 0
    Pos,
    /// >= 0
    NonNeg,
    /// strictly between 0 and 1
    Prob,
    /// in (0, 1]
    Frac,
}

impl R {
    fn holds(self, x: f64) -> bool {
        match self {
            R::Any => x.is_finite(),
            R::Pos => x > 0.0,
            R::NonNeg => x >= 0.0,
            R::Prob => x > 0.0 && x < 1.0,
            R::Frac => x > 0.0 && x <= 1.0,
        }
    }

    fn text(self) -> &'static str {
        match self {
            R::Any => "a finite number",
            R::Pos => "> 0",
            R::NonNeg => ">= 0",
            R::Prob => "strictly between 0 and 1",
            R::Frac => "in (0, 1]",
        }
    }
}

/// Types of built-in parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum T {
    Num(R),
    /// A non-negative whole number.
    Int,
    /// A whole number >= 1.
    Count,
    Str,
    Bool,
    Tokens,
    Steps,
    Batch,
    ModelSrc,
    Model,
    Data,
    Reward,
    Rollout,
    /// A `sample(...)`/`greedy(...)` rollout (the base of the composite policies).
    Sampling,
    Sched(R),
    Range,
    Sym(&'static [&'static str]),
    FieldName,
    StrList,
    IntList,
    Summaries,
    Cond,
    Optimizer,
    Metric,
    Objective,
}

/// Types of parameters declared in `.post` definitions (`beta: pos = 0.1`).
#[derive(Debug, Clone, PartialEq)]
pub enum PT {
    T(T),
    Sym(Vec<String>),
    /// A sequence set (slot) of an objective.
    Seqs,
    /// A formula value at most this axis (`token`, `seq`, `scalar`).
    Axis(post_graph::Axis),
    Any,
}

pub const TYPE_NAMES: &[&str] = &[
    "num", "pos", "nonneg", "prob", "int", "count", "str", "bool", "tokens", "steps", "model",
    "data", "reward", "rollout", "seqs", "token", "seq", "scalar",
];

pub fn param_type(ty: &[Ident]) -> Option<PT> {
    if ty.len() > 1 {
        return Some(PT::Sym(ty.iter().map(|i| i.name.clone()).collect()));
    }
    let name = ty.first()?.name.as_str();
    Some(match name {
        "num" => PT::T(T::Num(R::Any)),
        "pos" => PT::T(T::Num(R::Pos)),
        "nonneg" => PT::T(T::Num(R::NonNeg)),
        "prob" => PT::T(T::Num(R::Prob)),
        "int" => PT::T(T::Int),
        "count" => PT::T(T::Count),
        "str" => PT::T(T::Str),
        "bool" => PT::T(T::Bool),
        "tokens" => PT::T(T::Tokens),
        "steps" => PT::T(T::Steps),
        "model" => PT::T(T::Model),
        "data" => PT::T(T::Data),
        "reward" => PT::T(T::Reward),
        "rollout" => PT::T(T::Rollout),
        "seqs" => PT::Seqs,
        "token" => PT::Axis(post_graph::Axis::Token),
        "seq" => PT::Axis(post_graph::Axis::Seq),
        "scalar" => PT::Axis(post_graph::Axis::Scalar),
        _ => return None,
    })
}

/// Defaults of built-in parameters.
#[derive(Debug, Clone, Copy)]
pub enum D {
    Req,
    Opt,
    Num(f64),
    Str(&'static str),
    Bool(bool),
    Sym(&'static str),
    Tokens(u64),
    Steps(u64),
    Empty,
}

pub struct P {
    pub name: &'static str,
    pub ty: T,
    pub default: D,
}

const fn p(name: &'static str, ty: T, default: D) -> P {
    P { name, ty, default }
}

impl D {
    fn value(self) -> Option<(Value, String)> {
        Some(match self {
            D::Req | D::Opt => return None,
            D::Num(x) => (Value::Num(x), fmt_num(x)),
            D::Str(s) => (Value::Str(s.to_string()), format!("{s:?}")),
            D::Bool(b) => (Value::Bool(b), b.to_string()),
            D::Sym(s) => (Value::Sym(s.to_string()), s.to_string()),
            D::Tokens(n) => (
                Value::Quantity(n as f64, Unit::Tokens),
                format!("{n} tokens"),
            ),
            D::Steps(n) => (Value::Quantity(n as f64, Unit::Steps), format!("{n} steps")),
            D::Empty => (Value::List(vec![]), "[]".to_string()),
        })
    }
}

pub fn fmt_num(x: f64) -> String {
    if x == x.trunc() && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Every name callable at the experiment level, in formulas or in rewards (for suggestions).
pub const BUILTIN_NAMES: &[&str] = &[
    "preset",
    "hf",
    "frozen",
    "snapshot",
    "lagged",
    "task",
    "jsonl",
    "selected",
    "sample",
    "greedy",
    "branched",
    "guided",
    "verifier_stopped",
    "replay",
    "adamw",
    "sgd",
    "constant",
    "linear",
    "cosine",
    "warmup",
    "accuracy",
    "mean_reward",
    "mean_length",
    "pass_at",
    "intrinsic_dim",
    "density_peaks",
    "context_attention",
    "attends_to_context",
    "logp",
    "ref_logp",
    "old_logp",
    "mask",
    "length",
    "max_tokens",
    "num_seqs",
    "group_size",
    "exp",
    "log",
    "log1p",
    "sigmoid",
    "log_sigmoid",
    "relu",
    "abs",
    "sqrt",
    "square",
    "tanh",
    "detach",
    "min",
    "max",
    "clip",
    "where",
    "sum_tokens",
    "mean_tokens",
    "group_mean",
    "group_std",
    "batch_mean",
    "batch_std",
    "mean_seqs",
    "sum_seqs",
    "mean_all_tokens",
    "sum_all_tokens",
    "number",
    "answer",
    "extract",
    "matches",
    "len",
    "contains",
    "starts_with",
    "ends_with",
    "trim",
    "lower",
    "climb_valid",
];

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
                            "E0105",
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
                            "E0105",
                            format!("too many arguments: expected at most {}", names.len()),
                            a.span,
                            "extra argument",
                        )
                        .with_label(call_span, "in this call"),
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
                                    "E0105",
                                    format!("argument `{}` given twice", n.name),
                                    n.span,
                                    "given again here",
                                )
                                .with_label(args[prev].span, "first given here"),
                            );
                            ok = false;
                        } else {
                            out[i] = Some(ai);
                        }
                    }
                    None => {
                        let help = suggest::did_you_mean(&n.name, names.iter().copied())
                            .unwrap_or_else(|| {
                                if names.is_empty() {
                                    "this takes no arguments".to_string()
                                } else {
                                    format!("the arguments are: {}", names.join(", "))
                                }
                            });
                        c.err(
                            Diagnostic::error(
                                "E0103",
                                format!("unknown argument `{}`", n.name),
                                n.span,
                                "unknown argument",
                            )
                            .with_help(help),
                        );
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
                    c.err(Diagnostic::error(
                        "E0104",
                        format!("missing required argument `{}`", prm.name),
                        call_span,
                        format!("`{}` is required", prm.name),
                    ));
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
    let values: Vec<f64> = match v {
        Value::Num(x) => vec![*x],
        Value::Schedule(s) => match s.shape {
            Shape::Constant { value } => vec![value],
            Shape::Linear { from, to } | Shape::Cosine { from, to } => vec![from, to],
        },
        _ => vec![],
    };
    for x in values {
        if !r.holds(x) {
            c.err(Diagnostic::error(
                "E0401",
                format!("`{name}` must be {}, found {}", r.text(), fmt_num(x)),
                span,
                format!("out of range ({})", r.text()),
            ));
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
            c.err(Diagnostic::error(
                "E0201",
                format!("expected one of {}", list.join(", ")),
                e.span,
                "not an option name",
            ));
            return None;
        }
    };
    if opts.iter().any(|o| o.as_ref() == name) {
        return Some(Value::Sym(name));
    }
    let list: Vec<&str> = opts.iter().map(|o| o.as_ref()).collect();
    c.err(
        Diagnostic::error(
            "E0401",
            format!("`{name}` is not one of {}", list.join(", ")),
            e.span,
            "unknown option",
        )
        .with_help_opt(suggest::did_you_mean(&name, list.iter().copied())),
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
                        "E0202",
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
                            "E0202",
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
                            "E0203",
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
                c.err(Diagnostic::error(
                    "E0401",
                    format!("expected a whole number >= {}, found {}", min, fmt_num(x)),
                    span,
                    "out of range",
                ));
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
                Value::Quantity(_, u) => {
                    c.err(Diagnostic::error(
                        "E0202",
                        format!("expected {}, found {}", want.name(), u.name()),
                        span,
                        format!("this counts {}", u.name()),
                    ));
                    return None;
                }
                v => return mismatch(c, &format!("a number of {}", want.name()), &v),
            };
            if x.fract() != 0.0 || !(0.0..=1e15).contains(&x) {
                c.err(Diagnostic::error(
                    "E0401",
                    format!(
                        "expected a whole number of {}, found {}",
                        want.name(),
                        fmt_num(x)
                    ),
                    span,
                    "out of range",
                ));
                return None;
            }
            Some(Value::Quantity(x, want))
        }
        T::Batch => match v {
            Value::Quantity(x, u @ (Unit::Prompts | Unit::Sequences | Unit::Completions)) => {
                if x.fract() != 0.0 || x < 1.0 {
                    c.err(Diagnostic::error(
                        "E0401",
                        "a batch is a whole number >= 1",
                        span,
                        "out of range",
                    ));
                    return None;
                }
                Some(Value::Quantity(x, u))
            }
            Value::Quantity(_, u) => {
                c.err(
                    Diagnostic::error(
                        "E0202",
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
                    Diagnostic::error("E0202", "a batch size needs a unit", span, "no unit")
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
                c.err(Diagnostic::error(
                    "E0201",
                    "expected a `sample(...)` or `greedy(...)` rollout",
                    span,
                    "a composite rollout cannot be a base",
                ));
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
                        "E0201",
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
    }
}

pub const PRESETS: &[&str] = post_graph::presets::NAMES;
pub const TASKS: &[&str] = &["arith", "carry", "chain", "climb", "countdown"];
pub const TASK_FIELDS: &[&str] = &["prompt", "solution", "steps", "answer", "rejected"];

const SAMPLE_SIG: &[P] = &[
    p("model", T::Model, D::Req),
    p("n", T::Count, D::Num(1.0)),
    p("temperature", T::Num(R::NonNeg), D::Num(1.0)),
    p("top_k", T::Int, D::Num(0.0)),
    p("top_p", T::Num(R::Frac), D::Num(1.0)),
    p("max_tokens", T::Tokens, D::Tokens(128)),
    p("stop", T::StrList, D::Empty),
];

const GREEDY_SIG: &[P] = &[
    p("model", T::Model, D::Req),
    p("n", T::Count, D::Num(1.0)),
    p("max_tokens", T::Tokens, D::Tokens(128)),
    p("stop", T::StrList, D::Empty),
];

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

fn task_prompt_tokens(task: &str, difficulty: usize) -> usize {
    match task {
        // "123+456=" with a little framing.
        "arith" | "chain" => 2 * difficulty + 8,
        // "517<600" and a newline.
        "climb" => 9,
        // "use 3 5 7 to make 24:" and similar.
        _ => 4 * difficulty + 24,
    }
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
    let sig: &[P] = match name {
        "preset" => &[p("name", T::Str, D::Req), p("init", T::Str, D::Opt)],
        "hf" => &[p("path", T::Str, D::Req)],
        "frozen" | "snapshot" => &[p("model", T::Model, D::Req)],
        "lagged" => &[p("model", T::Model, D::Req), p("every", T::Steps, D::Req)],
        "task" => &[
            p("name", T::Str, D::Req),
            p("split", T::Sym(&["train", "test"]), D::Sym("train")),
            p("size", T::Count, D::Num(1000.0)),
            p("difficulty", T::Count, D::Num(1.0)),
            p("min_difficulty", T::Count, D::Opt),
        ],
        "jsonl" => return Some(jsonl(c, module, callee_span, span, args, locals, path)),
        "selected" => &[p("stage", T::FieldName, D::Req)],
        "sample" => SAMPLE_SIG,
        "greedy" => GREEDY_SIG,
        "branched" => &[
            p("base", T::Sampling, D::Req),
            p("reward", T::Reward, D::Req),
            p("success_threshold", T::Num(R::Any), D::Num(0.5)),
            p("expert", T::FieldName, D::Sym("solution")),
            p("step_delimiter", T::Str, D::Str("\n")),
            p("search", T::Sym(&["binary", "linear"]), D::Sym("binary")),
            p("remember", T::Bool, D::Bool(true)),
            p(
                "anchor",
                T::Sym(&["none", "original", "boundary"]),
                D::Sym("none"),
            ),
        ],
        "guided" => &[
            p("base", T::Sampling, D::Req),
            p("baseline", T::Model, D::Req),
            p("reward", T::Reward, D::Req),
            p("k", T::Count, D::Num(10.0)),
            p("alpha", T::Num(R::Any), D::Num(1.0)),
            p("lookahead", T::Tokens, D::Tokens(16)),
        ],
        "verifier_stopped" => &[
            p("base", T::Sampling, D::Req),
            p("verifier", T::Model, D::Req),
            p("verifier_ref", T::Model, D::Req),
            p("step_delimiter", T::Str, D::Str("\n")),
            p("tau", T::Num(R::Pos), D::Num(0.01)),
            p("max_steps", T::Count, D::Num(8.0)),
        ],
        "replay" => &[
            p("rollout", T::Rollout, D::Req),
            p("capacity", T::Count, D::Num(1024.0)),
        ],
        "adamw" => &[
            p("lr", T::Sched(R::Pos), D::Req),
            p("beta1", T::Num(R::Prob), D::Num(0.9)),
            p("beta2", T::Num(R::Prob), D::Num(0.999)),
            p("eps", T::Num(R::Pos), D::Num(1e-8)),
            p("weight_decay", T::Num(R::NonNeg), D::Num(0.0)),
        ],
        "sgd" => &[
            p("lr", T::Sched(R::Pos), D::Req),
            p("momentum", T::Num(R::NonNeg), D::Num(0.0)),
        ],
        "constant" => &[
            p("value", T::Num(R::Any), D::Req),
            p("warmup", T::Steps, D::Steps(0)),
        ],
        "linear" | "cosine" => &[
            p("range", T::Range, D::Req),
            p("warmup", T::Steps, D::Steps(0)),
        ],
        "warmup" => &[
            p("value", T::Num(R::Any), D::Req),
            p("steps", T::Steps, D::Req),
        ],
        "accuracy" | "mean_reward" => &[
            p("reward", T::Reward, D::Req),
            p("rollout", T::Rollout, D::Req),
        ],
        "mean_length" => &[p("rollout", T::Rollout, D::Req)],
        "pass_at" => &[
            p("k", T::Count, D::Req),
            p("reward", T::Reward, D::Req),
            p("rollout", T::Rollout, D::Req),
        ],
        "intrinsic_dim" => &[],
        "density_peaks" => &[p("labels", T::FieldName, D::Req)],
        "context_attention" => &[p("context", T::FieldName, D::Sym("context"))],
        "attends_to_context" => &[
            p("model", T::Model, D::Req),
            p("threshold", T::Num(R::Prob), D::Num(0.5)),
        ],
        _ => return None,
    };
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
                        "E0401",
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
            Some(Value::ModelSrc(ModelSource::Preset {
                preset,
                config,
                init,
            }))
        }
        "hf" => Some(Value::ModelSrc(ModelSource::HuggingFace {
            path: b.str("path"),
        })),
        "frozen" => Some(Value::ModelSrc(ModelSource::Frozen { of: b.str("model") })),
        "snapshot" => Some(Value::ModelSrc(ModelSource::Snapshot {
            of: b.str("model"),
        })),
        "lagged" => {
            let every = b.num("every") as u64;
            if every == 0 {
                c.err(Diagnostic::error(
                    "E0401",
                    "`every` must be at least 1 step",
                    b.span("every").unwrap_or(span),
                    "out of range",
                ));
                return None;
            }
            Some(Value::ModelSrc(ModelSource::Lagged {
                of: b.str("model"),
                every_steps: every,
            }))
        }
        "task" => {
            let task = b.str("name");
            if !TASKS.contains(&task.as_str()) {
                c.err(
                    Diagnostic::error(
                        "E0401",
                        format!("unknown task `{task}`"),
                        b.span("name").unwrap_or(span),
                        "unknown task",
                    )
                    .with_help(
                        suggest::did_you_mean(&task, TASKS.iter().copied()).unwrap_or_else(|| {
                            format!("the built-in tasks are {}", TASKS.join(", "))
                        }),
                    ),
                );
                return None;
            }
            let difficulty = b.usize("difficulty");
            let max_d = match task.as_str() {
                "countdown" => 6,
                "chain" => 11,
                "climb" => 20,
                _ => 12,
            };
            if difficulty > max_d {
                c.err(Diagnostic::error(
                    "E0401",
                    format!("task `{task}` supports difficulty 1..={max_d}, found {difficulty}"),
                    b.span("difficulty").unwrap_or(span),
                    "out of range",
                ));
                return None;
            }
            let min_difficulty = b.get("min_difficulty").map(|_| b.usize("min_difficulty"));
            if let Some(min) = min_difficulty
                && !(1..=difficulty).contains(&min)
            {
                c.err(
                    Diagnostic::error(
                        "E0401",
                        format!(
                            "`min_difficulty` {min} must be in 1..={difficulty} (the `difficulty`)"
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
            let split = if b.str("split") == "test" {
                Split::Test
            } else {
                Split::Train
            };
            Some(Value::Data(Box::new(DataVal {
                name: None,
                prompt_tokens: task_prompt_tokens(&task, difficulty),
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
                    c.err(Diagnostic::error(
                        "E0201",
                        format!("stage `{stage}` is not a `select` stage"),
                        b.span("stage").unwrap_or(span),
                        "not a selection",
                    ));
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
                            "E0101",
                            format!("no select stage named `{stage}`"),
                            b.span("stage").unwrap_or(span),
                            "unknown stage",
                        )
                        .with_help_opt(suggest::did_you_mean(
                            &stage,
                            names.iter().map(|s| s.as_str()),
                        )),
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
                        "E0406",
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
                        "E0105",
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
                        c.err(Diagnostic::error(
                            "E0105",
                            format!("field `{}` mapped twice", n.name),
                            n.span,
                            "mapped again",
                        ));
                        ok = false;
                    }
                }
                _ => ok = false,
            },
        }
    }
    let Some((file, file_span)) = file else {
        c.err(Diagnostic::error(
            "E0104",
            "missing the path of the JSONL file",
            span,
            "path missing",
        ));
        return None;
    };
    if !ok {
        return None;
    }
    let resolved = if file.starts_with('/') || c.base_dir.is_empty() {
        file.clone()
    } else {
        format!("{}/{}", c.base_dir, file)
    };
    let mut known: Option<BTreeSet<String>> = if fields.is_empty() {
        None
    } else {
        Some(fields.keys().cloned().collect())
    };
    if c.fs.is_file(&resolved) {
        match c.fs.read_head(&resolved, 5) {
            Ok(lines) => {
                let mut keys: Option<BTreeSet<String>> = None;
                for l in lines.iter().filter(|l| !l.trim().is_empty()) {
                    match serde_json::from_str::<serde_json::Value>(l) {
                        Ok(serde_json::Value::Object(m)) => {
                            let ks: BTreeSet<String> = m.keys().cloned().collect();
                            keys = Some(match keys {
                                None => ks,
                                Some(prev) => prev.intersection(&ks).cloned().collect(),
                            });
                        }
                        _ => {
                            c.err(Diagnostic::error(
                                "E0502",
                                format!("`{file}` does not start with JSON objects, one per line"),
                                file_span,
                                "not JSONL",
                            ));
                            return None;
                        }
                    }
                }
                match keys {
                    None => {
                        c.err(Diagnostic::error(
                            "E0502",
                            format!("`{file}` has no records"),
                            file_span,
                            "empty file",
                        ));
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
                                    "E0501",
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
                c.err(Diagnostic::error(
                    "E0502",
                    format!("cannot read `{file}`: {e}"),
                    file_span,
                    "unreadable",
                ));
                return None;
            }
        }
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
    const METHODS: &[&str] = &[
        "template",
        "drop_prompt",
        "append_indicator",
        "shard",
        "filter",
        "take",
        "select",
        "shuffle",
    ];
    let sig: &[P] = match method.name.as_str() {
        "template" => &[
            p("text", T::Str, D::Req),
            p("into", T::FieldName, D::Sym("prompt")),
        ],
        "drop_prompt" | "shuffle" => &[],
        "append_indicator" => &[p("token", T::Str, D::Req), p("when", T::Cond, D::Req)],
        "shard" => &[p("index", T::Int, D::Req), p("count", T::Count, D::Req)],
        "filter" => &[p("when", T::Cond, D::Req)],
        "take" | "select" => &[p("n", T::Count, D::Req)],
        other => {
            c.err(
                Diagnostic::error(
                    "E0101",
                    format!("datasets have no transform `{other}`"),
                    method.span,
                    "unknown transform",
                )
                .with_help(
                    suggest::did_you_mean(other, METHODS.iter().copied())
                        .unwrap_or_else(|| format!("the transforms are {}", METHODS.join(", "))),
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
                            "E0501",
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
                        "E0401",
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
                c.err(Diagnostic::error(
                    "E0201",
                    "`filter` takes a reward used as a predicate",
                    b.span("when").unwrap_or(span),
                    "not a predicate",
                ));
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
