//! Objectives: formulas over slots lowered to [`post_graph::Expr`], fully inlined.
//!
//! Numeric parameters become `Expr::Hyper` (their values, constant or scheduled, go to the
//! stage's `hypers`), so equivalent spellings (`dr_grpo(...)` and `grpo(..., scale = none,
//! aggregate = seq_mean_token_sum_norm)`) lower to identical expressions. Symbol parameters
//! (`kl: k1 | k2 | k3`) and comparisons of constants are resolved at compile time by `match` and
//! `if`. Every reduction checks the axis of its argument.

use std::collections::{BTreeMap, HashMap};

use post_graph::{
    Axis, AxisError, BinaryOp, Expr, ObjectiveInstance, Quantity, Reduce, Schedule, Shape, UnaryOp,
};

use super::builtins::{self, PT, R, T};
use super::signatures::{self, Scope};
use super::{Checker, DefKind, ObjVal, Value};
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;
use crate::suggest;
use crate::syntax::ast::{self, BinOp, ExprKind};

/// What a parameter is bound to inside a formula.
#[derive(Debug, Clone)]
enum FArg {
    Slot(String),
    Num {
        hyper: String,
        value: Option<f64>,
    },
    Sym {
        value: Option<String>,
        options: Vec<String>,
    },
    Reward(String),
    Bool(Option<bool>),
    Tensor(Expr),
}

/// The value of a formula sub-expression.
#[derive(Debug, Clone)]
enum FVal {
    T(Expr),
    K(f64),
    H {
        hyper: String,
        value: Option<f64>,
    },
    B(Option<bool>),
    Sym {
        value: Option<String>,
        options: Vec<String>,
    },
    Slot(String),
    Reward(String),
}

pub struct SlotInfo {
    /// Completions per prompt for rollout slots (`None` for dataset slots).
    pub group: Option<usize>,
    pub reward: Option<String>,
}

struct Low {
    slots: BTreeMap<String, SlotInfo>,
    hypers: BTreeMap<String, Schedule>,
    abstract_mode: bool,
    stack: Vec<usize>,
}

const MAX_INLINE: usize = 32;

impl FVal {
    fn expr(&self) -> Option<Expr> {
        match self {
            FVal::T(e) => Some(e.clone()),
            FVal::K(x) => Some(Expr::constant(*x)),
            FVal::H { hyper, .. } => Some(Expr::Hyper {
                name: hyper.clone(),
            }),
            _ => None,
        }
    }
    fn known(&self) -> Option<f64> {
        match self {
            FVal::K(x) => Some(*x),
            FVal::H { value, .. } => *value,
            _ => None,
        }
    }
    fn is_compile_time(&self) -> bool {
        matches!(self, FVal::K(_) | FVal::H { .. })
    }
    fn describe(&self) -> &'static str {
        match self {
            FVal::T(_) | FVal::K(_) | FVal::H { .. } => "a number",
            FVal::B(_) => "a boolean",
            FVal::Sym { .. } => "an option name",
            FVal::Slot(_) => "a sequence set",
            FVal::Reward(_) => "a reward",
        }
    }
}

fn type_err(c: &mut Checker, span: Span, expected: &str, found: &FVal) {
    let help = match found {
        FVal::Slot(s) => format!(
            "a sequence set is not a value: take one of its quantities, e.g. `logp({s})` or `reward({s})`"
        ),
        FVal::Reward(r) => format!("apply the reward to a sequence set: `{r}(y)`"),
        FVal::Sym { .. } => format!(
            "an option name only selects a branch (`match`); this position takes {expected}"
        ),
        FVal::B(_) => format!("write `if cond then a else b` to turn a boolean into {expected}"),
        _ => format!("this position takes {expected}"),
    };
    c.err(
        Diagnostic::error(
            Code::E0201,
            format!("expected {expected}, found {}", found.describe()),
            span,
            format!("this is {}", found.describe()),
        )
        .with_help(help),
    );
}

/// Check an objective definition on its own (abstract arguments: every branch is checked).
pub fn check_definition(c: &mut Checker, id: usize) {
    let def = c.defs[id].def;
    let module = c.defs[id].module;
    let Some(params) = def.params.as_deref() else {
        c.err(
            Diagnostic::error(
                Code::E0201,
                format!("objective `{}` needs a parameter list", def.name.name),
                def.name.span,
                "no parameters",
            )
            .with_help(format!(
                "write `objective {}(y: seqs) = ...`",
                def.name.name
            )),
        );
        return;
    };
    let mut env = HashMap::new();
    let mut low = Low {
        slots: BTreeMap::new(),
        hypers: BTreeMap::new(),
        abstract_mode: true,
        stack: vec![id],
    };
    for p in params {
        let Some(ty) = param_ty(c, p) else { return };
        let arg = match ty {
            PT::Seqs => {
                low.slots.insert(
                    p.name.name.clone(),
                    SlotInfo {
                        group: None,
                        reward: None,
                    },
                );
                FArg::Slot(p.name.name.clone())
            }
            PT::Sym(options) => {
                if let Some(d) = &p.default {
                    let _ = builtins::symbol(c, d, &options);
                }
                FArg::Sym {
                    value: None,
                    options,
                }
            }
            PT::T(T::Reward) => FArg::Reward(p.name.name.clone()),
            PT::T(T::Bool) => FArg::Bool(None),
            PT::T(T::Num(r)) => {
                if let Some(d) = &p.default {
                    let _ = c.eval_as(module, d, T::Sched(r), &HashMap::new(), &p.name.name);
                }
                FArg::Num {
                    hyper: p.name.name.clone(),
                    value: None,
                }
            }
            PT::T(T::Int | T::Count) => {
                if let Some(d) = &p.default {
                    let _ = c.eval_as(module, d, T::Count, &HashMap::new(), &p.name.name);
                }
                FArg::Num {
                    hyper: p.name.name.clone(),
                    value: None,
                }
            }
            PT::Axis(a) => FArg::Tensor(placeholder(a, &p.name.name)),
            _ => {
                c.err(
                    Diagnostic::error(
                        Code::E0201,
                        "objective parameters are seqs, numbers, counts, booleans, rewards, options or formula values",
                        p.span,
                        "unsupported parameter type",
                    )
                    .with_help(
                        "declare it as `y: seqs`, `beta: num` (or `pos`, `prob`), `n: count`, `flag: bool`, `r: reward`, `mode: a | b`, or `x: token` / `seq` / `scalar`",
                    ),
                );
                return;
            }
        };
        env.insert(p.name.name.clone(), arg);
    }
    let _ = lower(c, &mut low, &env, module, &def.value);
}

fn placeholder(a: Axis, name: &str) -> Expr {
    match a {
        Axis::Token => Expr::input(Quantity::Logp, name),
        Axis::Seq => Expr::input(Quantity::Length, name),
        Axis::Scalar => Expr::Hyper {
            name: name.to_string(),
        },
    }
}

fn param_ty(c: &mut Checker, p: &ast::Param) -> Option<PT> {
    let Some(ty) = &p.ty else {
        c.err(
            Diagnostic::error(
                Code::E0201,
                format!("parameter `{}` needs a type", p.name.name),
                p.name.span,
                "no type",
            )
            .with_help(format!(
                "e.g. `{}: seqs`, `{}: pos = 0.1`, `{}: a | b`",
                p.name.name, p.name.name, p.name.name
            )),
        );
        return None;
    };
    match builtins::param_type(ty) {
        Some(t) => Some(t),
        None => {
            let first = &ty[0];
            c.err(
                Diagnostic::error(
                    Code::E0101,
                    format!("unknown type `{}`", first.name),
                    first.span,
                    "not a type",
                )
                .with_help(
                    suggest::did_you_mean(&first.name, builtins::TYPE_NAMES.iter().copied())
                        .unwrap_or_else(|| {
                            format!("the types are {}", builtins::TYPE_NAMES.join(", "))
                        }),
                ),
            );
            None
        }
    }
}

/// The sources a stage provides to an objective.
pub struct StageEnv<'s> {
    pub path: &'s str,
    /// Resolves a top-level `seqs` argument to (slot source, group size).
    pub stage_rollout: Option<&'s super::RolloutVal>,
    /// The stage sets `rollout` but it did not evaluate (already reported).
    pub rollout_failed: bool,
}

pub struct Lowered {
    pub instance: ObjectiveInstance,
    pub hypers: BTreeMap<String, Schedule>,
    /// Datasets that `seqs` arguments read fields of.
    pub data_used: Vec<(String, Span)>,
    pub rollouts_used: Vec<String>,
}

/// Lower an objective applied in a stage into an [`ObjectiveInstance`] (reference filled later).
pub fn instantiate(c: &mut Checker, obj: &ObjVal, st: &StageEnv) -> Option<Lowered> {
    let def = c.defs[obj.def].def;
    let def_module = c.defs[obj.def].module;
    let params = def.params.as_deref().unwrap_or(&[]);
    let names: Vec<&str> = params.iter().map(|p| p.name.name.as_str()).collect();
    let args: Vec<ast::Arg> = obj
        .args
        .iter()
        .map(|(n, e)| ast::Arg {
            name: n.clone(),
            value: e.clone(),
            span: n.as_ref().map_or(e.span, |n| n.span.join(e.span)),
        })
        .collect();
    let assigned = builtins::assign_args(c, &names, &args, obj.span)?;
    let mut low = Low {
        slots: BTreeMap::new(),
        hypers: BTreeMap::new(),
        abstract_mode: false,
        stack: vec![obj.def],
    };
    let mut env = HashMap::new();
    let mut shown = BTreeMap::new();
    let mut slots = Vec::new();
    let mut data_used = Vec::new();
    let mut rollouts_used = Vec::new();
    let mut mask_truncated = false;
    let mut updates = 1usize;
    let mut ok = true;
    let empty = HashMap::new();
    for (i, p) in params.iter().enumerate() {
        let ty = param_ty(c, p)?;
        let pname = p.name.name.clone();
        let path = format!("{}.{}", st.path, pname);
        let (expr, module, is_default) = match (assigned[i], &p.default) {
            (Some(a), _) => (Some(&args[a].value), obj.module, false),
            (None, Some(d)) => (Some(d), def_module, true),
            (None, None) => (None, obj.module, false),
        };
        if let (true, Some(e)) = (is_default, expr) {
            c.default_applied(
                &path,
                crate::fmt::expr_to_string(e),
                &format!("default of `{}`", def.name.name),
            );
        }
        if let Some(e) = expr {
            shown.insert(pname.clone(), crate::fmt::expr_to_string(e));
        }
        let arg = match ty {
            PT::Seqs => {
                let v = match expr {
                    Some(e) => c.eval(module, e, &empty, &path),
                    None => match st.stage_rollout {
                        Some(r) => {
                            let name = r.name.clone().unwrap_or_else(|| "the stage rollout".into());
                            c.default_applied(&path, name.clone(), "the stage's rollout");
                            shown.insert(pname.clone(), name);
                            Some(Value::Rollout(Box::new(r.clone())))
                        }
                        None if st.rollout_failed => {
                            ok = false;
                            continue;
                        }
                        None => {
                            c.err(Diagnostic::error(
                                Code::E0503,
                                format!("`{}` samples `{pname}` from a rollout, but the stage has none", def.name.name),
                                obj.span,
                                format!("`{pname}` not given"),
                            ).with_help(format!("set `rollout = ...` in the stage, or pass `{pname} = ...`")));
                            ok = false;
                            continue;
                        }
                    },
                };
                let Some(v) = v else {
                    ok = false;
                    continue;
                };
                let span = expr.map_or(obj.span, |e| e.span);
                let (source, group) = match v {
                    Value::Field(d, f) => {
                        data_used.push((d.clone(), span));
                        (post_graph::SlotSource::Data { field: f }, None)
                    }
                    Value::Rollout(r) => {
                        let hint = format!("{}_{}", st.path.replace([' ', '.'], "_"), pname);
                        let name = c.register_rollout(&r, &hint);
                        rollouts_used.push(name.clone());
                        (
                            post_graph::SlotSource::Rollout { rollout: name },
                            Some(r.rollout.base().n),
                        )
                    }
                    Value::Replay(r, capacity) => {
                        let hint = format!("{}_{}", st.path.replace([' ', '.'], "_"), pname);
                        let name = c.register_rollout(&r, &hint);
                        rollouts_used.push(name.clone());
                        (
                            post_graph::SlotSource::Replay {
                                rollout: name,
                                capacity,
                            },
                            Some(r.rollout.base().n),
                        )
                    }
                    other => {
                        c.type_error(
                            span,
                            "a dataset field (`train.solution`), a rollout or `replay(...)`",
                            &other,
                        );
                        ok = false;
                        continue;
                    }
                };
                slots.push(post_graph::Slot {
                    name: pname.clone(),
                    source,
                    reward: None,
                });
                low.slots.insert(
                    pname.clone(),
                    SlotInfo {
                        group,
                        reward: None,
                    },
                );
                FArg::Slot(pname.clone())
            }
            PT::Sym(options) => match expr {
                Some(e) => match builtins::symbol(c, e, &options) {
                    Some(Value::Sym(s)) => FArg::Sym {
                        value: Some(s),
                        options,
                    },
                    _ => {
                        ok = false;
                        continue;
                    }
                },
                None => {
                    missing(c, obj, p);
                    ok = false;
                    continue;
                }
            },
            PT::T(T::Reward) => {
                match expr.and_then(|e| c.eval_as(module, e, T::Reward, &empty, &path)) {
                    Some(Value::Reward(r)) => FArg::Reward(r),
                    _ => {
                        if expr.is_none() {
                            missing(c, obj, p);
                        }
                        ok = false;
                        continue;
                    }
                }
            }
            PT::T(T::Bool) => match expr.and_then(|e| c.eval_as(module, e, T::Bool, &empty, &path))
            {
                Some(Value::Bool(b)) => {
                    if pname == "mask_truncated" {
                        mask_truncated = b;
                    }
                    FArg::Bool(Some(b))
                }
                _ => {
                    if expr.is_none() {
                        missing(c, obj, p);
                    }
                    ok = false;
                    continue;
                }
            },
            PT::T(t @ (T::Num(_) | T::Int | T::Count)) => {
                let want = match t {
                    T::Num(r) => T::Sched(r),
                    other => other,
                };
                let Some(e) = expr else {
                    missing(c, obj, p);
                    ok = false;
                    continue;
                };
                let Some(v) = c.eval_as(module, e, want, &empty, &path) else {
                    ok = false;
                    continue;
                };
                if let T::Sched(r) = want
                    && builtins::check_value_range(c, &v, r, &pname, e.span).is_none()
                {
                    ok = false;
                    continue;
                }
                let sched = match v {
                    Value::Schedule(s) => s,
                    other => Schedule::constant(super::num_of(&other).unwrap_or(0.0)),
                };
                if pname == "updates" {
                    updates = match sched.shape {
                        Shape::Constant { value } => value as usize,
                        _ => 1,
                    };
                    FArg::Num {
                        hyper: pname.clone(),
                        value: Some(updates as f64),
                    }
                } else {
                    let value = match sched.shape {
                        Shape::Constant { value } if sched.warmup == 0 => Some(value),
                        _ => None,
                    };
                    low.hypers.insert(pname.clone(), sched);
                    FArg::Num {
                        hyper: pname.clone(),
                        value,
                    }
                }
            }
            _ => {
                c.err(
                    Diagnostic::error(
                        Code::E0201,
                        format!(
                            "`{}` takes a formula value and cannot be used as a stage objective",
                            def.name.name
                        ),
                        obj.span,
                        "not a top-level objective",
                    )
                    .with_help(format!(
                        "call `{}` inside another objective's formula, and use that objective in the stage",
                        def.name.name
                    )),
                );
                return None;
            }
        };
        env.insert(pname, arg);
    }
    if !ok {
        return None;
    }
    let v = c.at_site(def_module, obj.span, |c| {
        lower(c, &mut low, &env, def_module, &def.value)
    })?;
    let Some(loss) = v.expr() else {
        type_err(c, def.value.span, "a formula", &v);
        return None;
    };
    match loss.axis() {
        Ok(Axis::Scalar) => {}
        Ok(a) => {
            c.err(
                Diagnostic::error(
                    Code::E0302,
                    format!(
                        "objective `{}` is {a}-level; a loss must be a scalar",
                        def.name.name
                    ),
                    obj.span,
                    format!("{a}-level value"),
                )
                .with_label(def.value.span, "the formula")
                .with_help("reduce it, e.g. `mean_seqs(...)` or `mean_all_tokens(...)`"),
            );
            return None;
        }
        Err(_) => return None,
    }
    // Hypers the formula does not read are dropped (a KL weight of 0 removes its term).
    let used = loss.hypers();
    low.hypers.retain(|k, _| used.contains(k));
    for s in &mut slots {
        s.reward = low.slots.get(&s.name).and_then(|i| i.reward.clone());
    }
    Some(Lowered {
        instance: ObjectiveInstance {
            name: def.name.name.clone(),
            args: shown,
            slots,
            loss,
            reference: None,
            mask_truncated,
            updates_per_batch: updates.max(1),
        },
        hypers: low.hypers,
        data_used,
        rollouts_used,
    })
}

fn missing(c: &mut Checker, obj: &ObjVal, p: &ast::Param) {
    c.err(
        Diagnostic::error(
            Code::E0104,
            format!("missing argument `{}`", p.name.name),
            obj.span,
            "argument missing",
        )
        .with_label(p.name.span, "parameter declared here")
        .with_help(format!(
            "pass it: `{} = ...`, or give the parameter a default",
            p.name.name
        )),
    );
}

fn axis_of(c: &mut Checker, e: &Expr, span: Span) -> Option<Axis> {
    match e.axis() {
        Ok(a) => Some(a),
        Err(AxisError::MixedTokenSlots { left, right }) => {
            c.err(Diagnostic::error(
                Code::E0303,
                format!("token-level values of `{left}` and `{right}` cannot be combined"),
                span,
                "tokens of two sequence sets",
            ).with_help("reduce each to sequences first, e.g. `sum_tokens(logp(a)) - sum_tokens(logp(b))`"));
            None
        }
        Err(e) => {
            let help = match &e {
                AxisError::Reduce {
                    expected: Axis::Seq,
                    found: Axis::Token,
                    ..
                } => {
                    "reduce the tokens to sequences first: `sum_tokens(...)` or `mean_tokens(...)`"
                }
                AxisError::Reduce {
                    expected: Axis::Token,
                    found: Axis::Seq,
                    ..
                } => {
                    "this is already one value per sequence: use `mean_seqs(...)` or `sum_seqs(...)`"
                }
                AxisError::Reduce {
                    found: Axis::Scalar,
                    ..
                } => "this is already a scalar: drop the reduction",
                _ => {
                    "token-level values reduce with `sum_tokens`/`mean_tokens`, sequence-level ones with `mean_seqs`/`sum_seqs`"
                }
            };
            c.err(
                Diagnostic::error(Code::E0301, e.to_string(), span, "wrong axis").with_help(help),
            );
            None
        }
    }
}

fn lower(
    c: &mut Checker,
    low: &mut Low,
    env: &HashMap<String, FArg>,
    module: usize,
    e: &ast::Expr,
) -> Option<FVal> {
    match &e.kind {
        ExprKind::Number { value, .. } => Some(FVal::K(*value)),
        ExprKind::Bool(b) => Some(FVal::B(Some(*b))),
        ExprKind::Name(n) => {
            if let Some(a) = env.get(n) {
                return Some(match a.clone() {
                    FArg::Slot(s) => FVal::Slot(s),
                    FArg::Num { hyper, value } => FVal::H { hyper, value },
                    FArg::Sym { value, options } => FVal::Sym { value, options },
                    FArg::Reward(r) => FVal::Reward(r),
                    FArg::Bool(b) => FVal::B(b),
                    FArg::Tensor(t) => FVal::T(t),
                });
            }
            match c.lookup(module, n) {
                Some(id) if c.defs[id].def.kind == DefKind::Const => {
                    match c.def_value(id, e.span)? {
                        Value::Num(x) => Some(FVal::K(x)),
                        Value::Bool(b) => Some(FVal::B(Some(b))),
                        v => {
                            c.type_error(e.span, "a number", &v);
                            None
                        }
                    }
                }
                Some(id) if c.defs[id].def.kind == DefKind::Reward => {
                    if c.lower_reward_def(id).is_some() {
                        c.register_reward(id);
                    }
                    Some(FVal::Reward(n.clone()))
                }
                Some(id) => {
                    let d = c.defs[id].def;
                    c.err(
                        Diagnostic::error(
                            Code::E0201,
                            format!(
                                "`{n}` is a {} and cannot be used in a formula",
                                d.kind.keyword()
                            ),
                            e.span,
                            "not a formula value",
                        )
                        .with_label(d.name.span, "defined here")
                        .with_help(format!(
                            "pass it to the objective as an argument (`{n}` becomes a parameter of the formula) instead of naming it inside"
                        )),
                    );
                    None
                }
                None => {
                    let locals: Vec<&str> = env.keys().map(|s| s.as_str()).collect();
                    c.unresolved(module, n, e.span, &locals);
                    None
                }
            }
        }
        ExprKind::Unary { op, arg } => {
            let v = lower(c, low, env, module, arg)?;
            match op {
                ast::UnaryOp::Not => match v {
                    FVal::B(b) => Some(FVal::B(b.map(|b| !b))),
                    other => {
                        type_err(c, arg.span, "a boolean", &other);
                        None
                    }
                },
                ast::UnaryOp::Neg => match v {
                    FVal::K(x) => Some(FVal::K(-x)),
                    other => match other.expr() {
                        Some(x) => Some(FVal::T(Expr::unary(UnaryOp::Neg, x))),
                        None => {
                            type_err(c, arg.span, "a number", &other);
                            None
                        }
                    },
                },
            }
        }
        ExprKind::Binary { op, lhs, rhs } => {
            let l = lower(c, low, env, module, lhs);
            let r = lower(c, low, env, module, rhs);
            let (l, r) = (l?, r?);
            binary(c, *op, l, r, lhs.span, rhs.span, e.span)
        }
        ExprKind::If {
            cond,
            then,
            otherwise,
        } => {
            let cv = lower(c, low, env, module, cond)?;
            match cv {
                FVal::B(Some(true)) => lower(c, low, env, module, then),
                FVal::B(Some(false)) => lower(c, low, env, module, otherwise),
                FVal::B(None) if !low.abstract_mode => {
                    c.err(Diagnostic::error(
                        Code::E0203,
                        "this condition depends on a scheduled value, so it cannot choose a formula",
                        cond.span,
                        "changes over the stage",
                    ).with_help("compare constants only; a scheduled weight can multiply a term instead"));
                    None
                }
                FVal::B(None) => {
                    let t = lower(c, low, env, module, then);
                    let o = lower(c, low, env, module, otherwise);
                    let (t, _) = (t?, o?);
                    Some(t)
                }
                FVal::T(cond_e) => {
                    let t = lower(c, low, env, module, then)?;
                    let o = lower(c, low, env, module, otherwise)?;
                    let (Some(te), Some(oe)) = (t.expr(), o.expr()) else {
                        type_err(c, then.span, "a number", &t);
                        return None;
                    };
                    let out = Expr::Where {
                        cond: Box::new(cond_e),
                        then: Box::new(te),
                        otherwise: Box::new(oe),
                    };
                    axis_of(c, &out, e.span)?;
                    Some(FVal::T(out))
                }
                other => {
                    type_err(c, cond.span, "a condition", &other);
                    None
                }
            }
        }
        ExprKind::Match { scrutinee, arms } => {
            let sv = lower(c, low, env, module, scrutinee)?;
            let FVal::Sym { value, options } = sv else {
                type_err(
                    c,
                    scrutinee.span,
                    "an option parameter (`kind: a | b`)",
                    &sv,
                );
                return None;
            };
            let mut covered = Vec::new();
            let mut ok = true;
            for a in arms {
                let pat = a.pattern.name.as_str();
                if pat != "_" && !options.iter().any(|o| o == pat) {
                    c.err(
                        Diagnostic::error(
                            Code::E0204,
                            format!("`{pat}` is not an option of this parameter"),
                            a.pattern.span,
                            "unknown option",
                        )
                        .with_help(
                            suggest::did_you_mean(pat, options.iter().map(|s| s.as_str()))
                                .unwrap_or_else(|| {
                                    format!("the options are {}", options.join(", "))
                                }),
                        ),
                    );
                    ok = false;
                }
                covered.push(pat.to_string());
            }
            if !covered.iter().any(|p| p == "_") {
                let missing: Vec<&str> = options
                    .iter()
                    .filter(|o| !covered.contains(o))
                    .map(|s| s.as_str())
                    .collect();
                if !missing.is_empty() {
                    c.err(
                        Diagnostic::error(
                            Code::E0204,
                            format!("`match` does not cover {}", missing.join(", ")),
                            e.span,
                            "non-exhaustive match",
                        )
                        .with_help("add an arm for each option, or `_ => ...`"),
                    );
                    ok = false;
                }
            }
            if !ok {
                return None;
            }
            match value {
                Some(v) => {
                    let arm = arms
                        .iter()
                        .find(|a| a.pattern.name == v)
                        .or_else(|| arms.iter().find(|a| a.pattern.name == "_"))?;
                    lower(c, low, env, module, &arm.value)
                }
                None => {
                    let mut first = None;
                    let mut all_ok = true;
                    for a in arms {
                        match lower(c, low, env, module, &a.value) {
                            Some(v) => {
                                if first.is_none() {
                                    first = Some(v);
                                }
                            }
                            None => all_ok = false,
                        }
                    }
                    if all_ok { first } else { None }
                }
            }
        }
        ExprKind::Call { callee, args } => call(c, low, env, module, e, callee, args),
        ExprKind::Str(_)
        | ExprKind::Quantity { .. }
        | ExprKind::Tuple(_)
        | ExprKind::List(_)
        | ExprKind::Arrow { .. }
        | ExprKind::Field { .. } => {
            c.err(Diagnostic::error(Code::E0201, "this form is not available in objective formulas", e.span, "not a formula")
                .with_help("formulas use numbers, parameters, operators, `if`, `match` and the formula functions"));
            None
        }
    }
}

fn binary(
    c: &mut Checker,
    op: BinOp,
    l: FVal,
    r: FVal,
    ls: Span,
    rs: Span,
    span: Span,
) -> Option<FVal> {
    // Logic on compile-time booleans.
    if matches!(op, BinOp::And | BinOp::Or) {
        let (FVal::B(a), FVal::B(b)) = (&l, &r) else {
            let (bad, s) = if matches!(l, FVal::B(_)) {
                (&r, rs)
            } else {
                (&l, ls)
            };
            type_err(c, s, "a boolean", bad);
            return None;
        };
        return Some(FVal::B(match (op, a, b) {
            (BinOp::And, Some(x), Some(y)) => Some(*x && *y),
            (BinOp::Or, Some(x), Some(y)) => Some(*x || *y),
            _ => None,
        }));
    }
    let is_cmp = matches!(
        op,
        BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
    );
    if is_cmp && l.is_compile_time() && r.is_compile_time() {
        let out = match (l.known(), r.known()) {
            (Some(a), Some(b)) => Some(match op {
                BinOp::Eq => a == b,
                BinOp::Ne => a != b,
                BinOp::Lt => a < b,
                BinOp::Le => a <= b,
                BinOp::Gt => a > b,
                _ => a >= b,
            }),
            _ => None,
        };
        return Some(FVal::B(out));
    }
    if let (FVal::K(a), FVal::K(b)) = (&l, &r) {
        let f = match op {
            BinOp::Add => BinaryOp::Add,
            BinOp::Sub => BinaryOp::Sub,
            BinOp::Mul => BinaryOp::Mul,
            BinOp::Div => BinaryOp::Div,
            _ => BinaryOp::Pow,
        };
        let v = fold_binary(f, *a, *b);
        if !v.is_finite() {
            c.err(
                Diagnostic::error(
                    Code::E0401,
                    "this constant is not a finite number",
                    span,
                    "not finite",
                )
                .with_help(
                    "the constant arithmetic overflows or divides by zero: check the operands",
                ),
            );
            return None;
        }
        return Some(FVal::K(v));
    }
    // A term weighted by the constant 0 vanishes (beta = 0 removes the KL term, and with it the
    // need for a reference model).
    let zero = |v: &FVal| {
        matches!(v, FVal::K(x) if *x == 0.0)
            || matches!(v, FVal::H { value: Some(x), .. } if *x == 0.0)
    };
    let numeric = |v: &FVal| v.expr().is_some();
    if numeric(&l) && numeric(&r) {
        match op {
            BinOp::Mul if zero(&l) || zero(&r) => return Some(FVal::K(0.0)),
            BinOp::Add | BinOp::Sub if zero(&r) => return Some(l),
            BinOp::Add if zero(&l) => return Some(r),
            BinOp::Sub if zero(&l) => {
                return Some(match r {
                    FVal::K(x) => FVal::K(-x),
                    other => FVal::T(Expr::unary(UnaryOp::Neg, other.expr()?)),
                });
            }
            _ => {}
        }
    }
    let (Some(le), Some(re)) = (l.expr(), r.expr()) else {
        let (bad, s) = if l.expr().is_none() {
            (&l, ls)
        } else {
            (&r, rs)
        };
        type_err(c, s, "a number", bad);
        return None;
    };
    let f = match op {
        BinOp::Add => BinaryOp::Add,
        BinOp::Sub => BinaryOp::Sub,
        BinOp::Mul => BinaryOp::Mul,
        BinOp::Div => BinaryOp::Div,
        BinOp::Pow => BinaryOp::Pow,
        BinOp::Lt => BinaryOp::Lt,
        BinOp::Le => BinaryOp::Le,
        BinOp::Gt => BinaryOp::Gt,
        BinOp::Ge => BinaryOp::Ge,
        _ => {
            c.err(
                Diagnostic::error(
                    Code::E0201,
                    format!("`{}` compares only constants in formulas", op.symbol()),
                    span,
                    "not available on tensors",
                )
                .with_help("use `<`, `<=`, `>` or `>=` on per-token or per-sequence values"),
            );
            return None;
        }
    };
    let out = Expr::binary(f, le, re);
    axis_of(c, &out, span)?;
    Some(FVal::T(out))
}

fn slot_arg(
    c: &mut Checker,
    low: &mut Low,
    env: &HashMap<String, FArg>,
    module: usize,
    a: &ast::Arg,
    fname: &str,
) -> Option<String> {
    match lower(c, low, env, module, &a.value)? {
        FVal::Slot(s) => Some(s),
        other => {
            c.err(
                Diagnostic::error(
                    Code::E0201,
                    format!("`{fname}` reads a sequence set, found {}", other.describe()),
                    a.value.span,
                    "not a sequence set",
                )
                .with_help("pass a `seqs` parameter of the objective"),
            );
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn call(
    c: &mut Checker,
    low: &mut Low,
    env: &HashMap<String, FArg>,
    module: usize,
    e: &ast::Expr,
    callee: &ast::Expr,
    args: &[ast::Arg],
) -> Option<FVal> {
    let ExprKind::Name(name) = &callee.kind else {
        c.err(super::not_callable(callee.span, "only names are called in a formula: a built-in like `logp(y)`, an objective, or a reward parameter"));
        return None;
    };
    let name = name.as_str();
    // A reward parameter applied to a sequence set: that set's per-sequence reward.
    let reward = match env.get(name) {
        Some(FArg::Reward(r)) => Some(r.clone()),
        None => match c.lookup(module, name) {
            Some(id) if c.defs[id].def.kind == DefKind::Reward => {
                c.lower_reward_def(id)?;
                c.register_reward(id);
                Some(name.to_string())
            }
            _ => None,
        },
        _ => None,
    };
    if let Some(r) = reward {
        if args.len() != 1 {
            c.err(
                Diagnostic::error(
                    Code::E0105,
                    format!("a reward applies to one sequence set: `{name}(y)`"),
                    e.span,
                    "wrong arguments",
                )
                .with_help(format!(
                    "pass exactly one sequence set parameter, e.g. `{name}(y)`"
                )),
            );
            return None;
        }
        let slot = slot_arg(c, low, env, module, &args[0], name)?;
        if let Some(info) = low.slots.get_mut(&slot) {
            match &info.reward {
                Some(prev) if *prev != r && !low.abstract_mode => {
                    c.err(Diagnostic::error(Code::E0304, format!("`{slot}` is scored by both `{prev}` and `{r}`"), e.span, "second reward")
                        .with_help("score each sequence set with one reward; combine rewards in a `reward` definition"));
                    return None;
                }
                _ => info.reward = Some(r),
            }
        }
        return Some(FVal::T(Expr::input(Quantity::Reward, &slot)));
    }
    if let Some(id) = c.lookup(module, name).filter(|_| !env.contains_key(name)) {
        let d = c.defs[id].def;
        if d.kind == DefKind::Objective {
            return inline(c, low, env, module, id, e, args);
        }
    }
    // A built-in: its arity and parameters come from the signature table.
    let Some(sig) = signatures::exact(name, Scope::Formula) else {
        let locals: Vec<&str> = env.keys().map(|s| s.as_str()).collect();
        c.unresolved(module, name, callee.span, &locals);
        return None;
    };
    let bound = builtins::bind_expr_call(c, sig, args, e.span)?;
    let args = &bound.positional[..];
    let quantity = match name {
        "logp" => Some(Quantity::Logp),
        "ref_logp" => Some(Quantity::RefLogp),
        "old_logp" => Some(Quantity::OldLogp),
        "mask" => Some(Quantity::Mask),
        "length" => Some(Quantity::Length),
        "max_tokens" => Some(Quantity::MaxTokens),
        "num_seqs" => Some(Quantity::NumSeqs),
        _ => None,
    };
    if let Some(q) = quantity {
        let slot = slot_arg(c, low, env, module, args[0], name)?;
        return Some(FVal::T(Expr::input(q, &slot)));
    }
    if name == "group_size" {
        let slot = slot_arg(c, low, env, module, args[0], name)?;
        if low.abstract_mode {
            return Some(FVal::T(Expr::Hyper {
                name: format!("group_size({slot})"),
            }));
        }
        let n = low.slots.get(&slot).and_then(|s| s.group);
        return match n {
            Some(n) if n >= 2 => Some(FVal::K(n as f64)),
            _ => {
                group_error(c, &slot, n, e.span);
                None
            }
        };
    }
    let unary = match name {
        "exp" => Some(UnaryOp::Exp),
        "log" => Some(UnaryOp::Log),
        "log1p" => Some(UnaryOp::Log1p),
        "sigmoid" => Some(UnaryOp::Sigmoid),
        "log_sigmoid" => Some(UnaryOp::LogSigmoid),
        "relu" => Some(UnaryOp::Relu),
        "abs" => Some(UnaryOp::Abs),
        "sqrt" => Some(UnaryOp::Sqrt),
        "square" => Some(UnaryOp::Square),
        "tanh" => Some(UnaryOp::Tanh),
        _ => None,
    };
    if let Some(u) = unary {
        let v = lower(c, low, env, module, &args[0].value)?;
        if let FVal::K(x) = v {
            let y = fold_unary(u, x);
            if !y.is_finite() {
                c.err(
                    Diagnostic::error(
                        Code::E0401,
                        format!("`{name}({})` is not finite", builtins::fmt_num(x)),
                        e.span,
                        "not finite",
                    )
                    .with_help(format!(
                        "`{name}` is not defined at {}: use another constant",
                        builtins::fmt_num(x)
                    )),
                );
                return None;
            }
            return Some(FVal::K(y));
        }
        let Some(x) = v.expr() else {
            type_err(c, args[0].value.span, "a number", &v);
            return None;
        };
        return Some(FVal::T(Expr::unary(u, x)));
    }
    let reduce = match name {
        "sum_tokens" => Some(Reduce::SumTokens),
        "mean_tokens" => Some(Reduce::MeanTokens),
        "group_mean" => Some(Reduce::GroupMean),
        "group_std" => Some(Reduce::GroupStd),
        "batch_mean" => Some(Reduce::BatchMean),
        "batch_std" => Some(Reduce::BatchStd),
        "mean_seqs" => Some(Reduce::MeanSeqs),
        "sum_seqs" => Some(Reduce::SumSeqs),
        "mean_all_tokens" => Some(Reduce::MeanAllTokens),
        "sum_all_tokens" => Some(Reduce::SumAllTokens),
        _ => None,
    };
    if let Some(f) = reduce {
        let v = lower(c, low, env, module, &args[0].value)?;
        let Some(x) = v.expr() else {
            type_err(c, args[0].value.span, "a formula", &v);
            return None;
        };
        let found = axis_of(c, &x, args[0].value.span)?;
        let (expected, _) = f.signature();
        if found != expected {
            let help = match (expected, found) {
                (Axis::Seq, Axis::Token) => {
                    "reduce the tokens first: `sum_tokens(...)` or `mean_tokens(...)`"
                }
                (Axis::Token, _) => "this reduction takes per-token values such as `logp(y)`",
                _ => "this reduction takes per-sequence values",
            };
            c.err(
                Diagnostic::error(
                    Code::E0301,
                    format!("`{name}` expects a {expected}-level value, found a {found}-level one"),
                    args[0].value.span,
                    format!("{found}-level"),
                )
                .with_label(callee.span, format!("expects {expected}-level"))
                .with_help(help),
            );
            return None;
        }
        if matches!(f, Reduce::GroupMean | Reduce::GroupStd) && !low.abstract_mode {
            for s in x.slots() {
                let n = low.slots.get(&s).and_then(|i| i.group);
                if !matches!(n, Some(n) if n >= 2) {
                    group_error(c, &s, n, e.span);
                    return None;
                }
            }
        }
        return Some(FVal::T(Expr::reduce(f, x)));
    }
    match name {
        "detach" => {
            let v = lower(c, low, env, module, &args[0].value)?;
            match v {
                FVal::T(x) => Some(FVal::T(Expr::Detach { arg: Box::new(x) })),
                other if other.expr().is_some() => Some(other),
                other => {
                    type_err(c, args[0].value.span, "a formula", &other);
                    None
                }
            }
        }
        "min" | "max" => {
            let a = lower(c, low, env, module, &args[0].value)?;
            let b = lower(c, low, env, module, &args[1].value)?;
            if let (FVal::K(x), FVal::K(y)) = (&a, &b) {
                let f = if name == "min" {
                    BinaryOp::Min
                } else {
                    BinaryOp::Max
                };
                return Some(FVal::K(fold_binary(f, *x, *y)));
            }
            let (Some(x), Some(y)) = (a.expr(), b.expr()) else {
                type_err(c, e.span, "numbers", &a);
                return None;
            };
            let out = Expr::binary(
                if name == "min" {
                    BinaryOp::Min
                } else {
                    BinaryOp::Max
                },
                x,
                y,
            );
            axis_of(c, &out, e.span)?;
            Some(FVal::T(out))
        }
        "clip" => {
            let mut xs = Vec::new();
            for a in args {
                let v = lower(c, low, env, module, &a.value)?;
                let Some(x) = v.expr() else {
                    type_err(c, a.value.span, "a number", &v);
                    return None;
                };
                xs.push(x);
            }
            let hi = xs.pop()?;
            let lo = xs.pop()?;
            let x = xs.pop()?;
            let out = Expr::binary(BinaryOp::Min, Expr::binary(BinaryOp::Max, x, lo), hi);
            axis_of(c, &out, e.span)?;
            Some(FVal::T(out))
        }
        "where" => {
            let mut xs = Vec::new();
            for a in args {
                let v = lower(c, low, env, module, &a.value)?;
                let Some(x) = v.expr() else {
                    type_err(c, a.value.span, "a number", &v);
                    return None;
                };
                xs.push(x);
            }
            let o = xs.pop()?;
            let t = xs.pop()?;
            let cnd = xs.pop()?;
            let out = Expr::Where {
                cond: Box::new(cnd),
                then: Box::new(t),
                otherwise: Box::new(o),
            };
            axis_of(c, &out, e.span)?;
            Some(FVal::T(out))
        }
        _ => {
            let locals: Vec<&str> = env.keys().map(|s| s.as_str()).collect();
            c.unresolved(module, name, callee.span, &locals);
            None
        }
    }
}

fn group_error(c: &mut Checker, slot: &str, n: Option<usize>, span: Span) {
    let msg = match n {
        Some(n) => format!(
            "group statistics of `{slot}` need at least 2 completions per prompt, the rollout samples {n}"
        ),
        None => format!(
            "`{slot}` comes from a dataset (one sequence per prompt): group statistics need a rollout"
        ),
    };
    c.err(
        Diagnostic::error(Code::E0405, msg, span, "group of one")
            .with_help("sample with `n = 2` or more, e.g. `sample(policy, n = 8)`"),
    );
}

/// A unary op on a constant: the shared scalar semantics (`post_graph::scalar`), so the
/// compiler folds exactly what the runtime and the kernels compute.
fn fold_unary(u: UnaryOp, x: f64) -> f64 {
    post_graph::scalar::unary(u, x)
}

/// A binary op on two constants, with the same shared semantics.
fn fold_binary(f: BinaryOp, a: f64, b: f64) -> f64 {
    post_graph::scalar::binary(f, a, b)
}

/// Inline a call of another objective inside a formula.
#[allow(clippy::too_many_arguments)]
fn inline(
    c: &mut Checker,
    low: &mut Low,
    env: &HashMap<String, FArg>,
    module: usize,
    id: usize,
    e: &ast::Expr,
    args: &[ast::Arg],
) -> Option<FVal> {
    let def = c.defs[id].def;
    let def_module = c.defs[id].module;
    if low.stack.contains(&id) || low.stack.len() > MAX_INLINE {
        c.err(
            Diagnostic::error(
                Code::E0109,
                format!("objective `{}` calls itself", def.name.name),
                e.span,
                "recursive call",
            )
            .with_label(def.name.span, "definition")
            .with_help(
                "an objective cannot call itself, directly or through other objectives: write out the terms it needs",
            ),
        );
        return None;
    }
    let params = def.params.as_deref().unwrap_or(&[]);
    let names: Vec<&str> = params.iter().map(|p| p.name.name.as_str()).collect();
    let assigned = builtins::assign_args(c, &names, args, e.span)?;
    let mut inner = HashMap::new();
    for (i, p) in params.iter().enumerate() {
        let ty = param_ty(c, p)?;
        let (expr, m, caller_env) = match (assigned[i], &p.default) {
            (Some(a), _) => (&args[a].value, module, true),
            (None, Some(d)) => (d, def_module, false),
            (None, None) => {
                c.err(
                    Diagnostic::error(
                        Code::E0104,
                        format!("missing argument `{}` of `{}`", p.name.name, def.name.name),
                        e.span,
                        "argument missing",
                    )
                    .with_label(p.name.span, "parameter declared here")
                    .with_help(format!(
                        "pass it: `{}({} = ...)`, or give the parameter a default",
                        def.name.name, p.name.name
                    )),
                );
                return None;
            }
        };
        let empty = HashMap::new();
        let env_here = if caller_env { env } else { &empty };
        let arg = match ty {
            PT::Sym(options) => {
                // A caller's own option parameter passes through; otherwise a literal option.
                if let ExprKind::Name(n) = &expr.kind
                    && let Some(FArg::Sym {
                        value,
                        options: caller_opts,
                    }) = env_here.get(n)
                {
                    let val = value.clone();
                    if let Some(v) = &val {
                        if !options.contains(v) {
                            c.err(
                                Diagnostic::error(
                                    Code::E0401,
                                    format!("`{v}` is not an option of `{}`", p.name.name),
                                    expr.span,
                                    "unknown option",
                                )
                                .with_help(format!(
                                    "`{}` of `{}` takes one of {}",
                                    p.name.name,
                                    def.name.name,
                                    options.join(", ")
                                )),
                            );
                            return None;
                        }
                    } else if let Some(bad) = caller_opts.iter().find(|o| !options.contains(o)) {
                        c.err(Diagnostic::error(
                            Code::E0401,
                            format!(
                                "option `{bad}` is not accepted by `{}` of `{}`",
                                p.name.name, def.name.name
                            ),
                            expr.span,
                            "incompatible options",
                        )
                        .with_help(format!(
                            "`{}` of `{}` takes only {}: narrow this parameter's options to those",
                            p.name.name,
                            def.name.name,
                            options.join(", ")
                        )));
                        return None;
                    }
                    inner.insert(
                        p.name.name.clone(),
                        FArg::Sym {
                            value: val,
                            options,
                        },
                    );
                    continue;
                }
                match builtins::symbol(c, expr, &options) {
                    Some(Value::Sym(s)) => FArg::Sym {
                        value: Some(s),
                        options,
                    },
                    _ => return None,
                }
            }
            _ => {
                let v = lower(c, low, env_here, m, expr)?;
                match (ty.clone(), v) {
                    (PT::Seqs, FVal::Slot(s)) => FArg::Slot(s),
                    (PT::T(T::Reward), FVal::Reward(r)) => FArg::Reward(r),
                    (PT::T(T::Bool), FVal::B(b)) => FArg::Bool(b),
                    (PT::T(T::Num(r) | T::Sched(r)), FVal::H { hyper, value }) => {
                        if let Some(x) = value {
                            range_check(c, r, x, &p.name.name, expr.span)?;
                        }
                        FArg::Num { hyper, value }
                    }
                    (PT::T(T::Int | T::Count), FVal::H { hyper, value }) => {
                        FArg::Num { hyper, value }
                    }
                    (PT::T(T::Num(r) | T::Sched(r)), FVal::K(x)) => {
                        range_check(c, r, x, &p.name.name, expr.span)?;
                        FArg::Num {
                            hyper: fresh_hyper(low, &def.name.name, &p.name.name, x),
                            value: Some(x),
                        }
                    }
                    (PT::T(T::Int | T::Count), FVal::K(x)) => FArg::Num {
                        hyper: fresh_hyper(low, &def.name.name, &p.name.name, x),
                        value: Some(x),
                    },
                    (PT::Axis(a), v) => {
                        let Some(x) = v.expr() else {
                            type_err(c, expr.span, "a formula", &v);
                            return None;
                        };
                        let found = axis_of(c, &x, expr.span)?;
                        if found > a {
                            c.err(Diagnostic::error(
                                Code::E0301,
                                format!("`{}` of `{}` takes a value of at most {a} level, found a {found}-level one", p.name.name, def.name.name),
                                expr.span,
                                format!("{found}-level"),
                            ).with_help("reduce it first"));
                            return None;
                        }
                        FArg::Tensor(x)
                    }
                    (_, v) => {
                        let want = match ty {
                            PT::Seqs => "a sequence set",
                            PT::T(T::Reward) => "a reward",
                            PT::T(T::Bool) => "a boolean",
                            _ => "a number",
                        };
                        type_err(c, expr.span, want, &v);
                        return None;
                    }
                }
            }
        };
        inner.insert(p.name.name.clone(), arg);
    }
    low.stack.push(id);
    let out = c.at_site(def_module, e.span, |c| {
        lower(c, low, &inner, def_module, &def.value)
    });
    low.stack.pop();
    out
}

fn range_check(c: &mut Checker, r: R, x: f64, name: &str, span: Span) -> Option<()> {
    let ok = match r {
        R::Any => true,
        R::Pos => x > 0.0,
        R::NonNeg => x >= 0.0,
        R::Prob => x > 0.0 && x < 1.0,
        R::Frac => x > 0.0 && x <= 1.0,
    };
    if !ok {
        c.err(
            Diagnostic::error(
                Code::E0401,
                format!("`{name}` is out of range: {}", builtins::fmt_num(x)),
                span,
                "out of range",
            )
            .with_help(r.help(name, x, false)),
        );
        return None;
    }
    Some(())
}

/// A hyper name for a constant passed to a nested objective; reuses an equal existing one.
fn fresh_hyper(low: &mut Low, callee: &str, param: &str, x: f64) -> String {
    let sched = Schedule::constant(x);
    let mut name = param.to_string();
    let mut k = 0;
    loop {
        match low.hypers.get(&name) {
            None => {
                low.hypers.insert(name.clone(), sched);
                return name;
            }
            Some(s) if *s == sched => return name,
            Some(_) => {
                k += 1;
                name = if k == 1 {
                    format!("{callee}.{param}")
                } else {
                    format!("{callee}.{param}{k}")
                };
            }
        }
    }
}
