//! The vocabulary of built-in parameters: value types ([`T`]), numeric ranges ([`R`]),
//! defaults ([`D`]) and the parameter record ([`P`]) that the signature table
//! ([`super::signatures`]) is written in and the checker ([`super::builtins`]) binds against.
//! A leaf: it knows values and units, not the checker.

use super::{Unit, Value};
use crate::syntax::ast::Ident;

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
    pub fn holds(self, x: f64) -> bool {
        match self {
            R::Any => x.is_finite(),
            R::Pos => x > 0.0,
            R::NonNeg => x >= 0.0,
            R::Prob => x > 0.0 && x < 1.0,
            R::Frac => x > 0.0 && x <= 1.0,
        }
    }

    /// The range closed at its bounds: what the end of a linear or cosine schedule may be.
    /// A schedule over `T` steps applies `from` at step 0 and approaches `to` without
    /// reaching it (step `T - 1` is at `(T - 1) / T` of the way), so `cosine(1e-3 -> 0)`
    /// applies only positive learning rates.
    pub fn holds_at_end(self, x: f64) -> bool {
        match self {
            R::Any => x.is_finite(),
            R::Pos | R::NonNeg => x >= 0.0,
            R::Prob | R::Frac => (0.0..=1.0).contains(&x),
        }
    }

    /// What to write instead of `x`, an out-of-range value of `name`.
    pub fn help(self, name: &str, x: f64, scheduled: bool) -> String {
        let fix = if x < 0.0 && self.holds(-x) {
            format!("did you mean `{}`? ", fmt_num(-x))
        } else {
            String::new()
        };
        let range = match self {
            R::Any => format!("`{name}` takes any finite number"),
            R::Pos => format!("`{name}` takes a positive number (> 0), e.g. `{name} = 1e-4`"),
            R::NonNeg => format!("`{name}` takes zero or a positive number (>= 0)"),
            R::Prob => format!("`{name}` lies strictly between 0 and 1, e.g. `{name} = 0.9`"),
            R::Frac => format!("`{name}` is a fraction in (0, 1]; 1 keeps everything"),
        };
        let ends = if scheduled {
            "; a schedule starts in range and may end on its bound (its end value is never applied)"
        } else {
            ""
        };
        format!("{fix}{range}{ends}")
    }

    pub fn text(self) -> &'static str {
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
    /// A formula argument of a formula built-in (its axis is checked by the formula checker).
    Formula,
    /// A sequence set argument of a formula built-in.
    Seqs,
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
    /// A default the checker works out (`the stage's steps`), described for the editor; never
    /// applied by [`bind`].
    Doc(&'static str),
}

/// A parameter of a built-in (or a block setting): its name, type, default and documentation,
/// written once in `signatures::BUILTINS` (or the settings tables of `stage`).
#[derive(Debug, Clone, Copy)]
pub struct P {
    pub name: &'static str,
    pub ty: T,
    pub default: D,
    pub doc: &'static str,
}

pub const fn p(name: &'static str, ty: T, default: D) -> P {
    P {
        name,
        ty,
        default,
        doc: "",
    }
}

impl P {
    /// The parameter with its documentation.
    pub const fn doc(self, doc: &'static str) -> P {
        P { doc, ..self }
    }
}

impl D {
    /// The default as the editor and the defaults report write it.
    pub fn text(self) -> Option<String> {
        match self {
            D::Doc(t) => Some(t.to_string()),
            d => d.value().map(|(_, t)| t),
        }
    }

    pub fn value(self) -> Option<(Value, String)> {
        Some(match self {
            D::Req | D::Opt | D::Doc(_) => return None,
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
