//! Objective formulas: expressions over per-token, per-sequence and scalar quantities.
//!
//! Every quantity lives on an [`Axis`]. Token-level values exist for each completion token of each
//! sequence of a slot, sequence-level values once per sequence, scalars once. Binary operations
//! broadcast the lower axis up (a sequence's advantage applies to each of its tokens); going down
//! needs an explicit [`Reduce`]. Token reductions are always weighted by the loss mask, so prompt
//! and expert-prefix tokens never count. A loss is a scalar.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    Scalar,
    Seq,
    Token,
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Axis::Scalar => "scalar",
            Axis::Seq => "sequence",
            Axis::Token => "token",
        })
    }
}

/// Inputs an objective can read, per slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// log pi_theta(y_t | x, y_<t) of the trained model: the only differentiable input.
    Logp,
    /// Log-probability under the objective's reference model (constant).
    RefLogp,
    /// Log-probability under the policy that sampled the sequence (constant; equals `logp`'s value
    /// on the first update of a batch).
    OldLogp,
    /// 1 for completion tokens that carry loss, 0 for padding.
    Mask,
    /// The sequence's reward (constant).
    Reward,
    /// Number of loss-carrying tokens in the sequence.
    Length,
    /// The rollout's `max_tokens` (Dr.GRPO's normaliser), a scalar.
    MaxTokens,
    /// Number of sequences in the slot, a scalar.
    NumSeqs,
}

impl Quantity {
    pub fn axis(self) -> Axis {
        match self {
            Quantity::Logp | Quantity::RefLogp | Quantity::OldLogp | Quantity::Mask => Axis::Token,
            Quantity::Reward | Quantity::Length => Axis::Seq,
            Quantity::MaxTokens | Quantity::NumSeqs => Axis::Scalar,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Quantity::Logp => "logp",
            Quantity::RefLogp => "ref_logp",
            Quantity::OldLogp => "old_logp",
            Quantity::Mask => "mask",
            Quantity::Reward => "reward",
            Quantity::Length => "length",
            Quantity::MaxTokens => "max_tokens",
            Quantity::NumSeqs => "num_seqs",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Log1p,
    Sigmoid,
    /// log(sigmoid(x)), computed stably.
    LogSigmoid,
    Relu,
    Abs,
    Sqrt,
    Square,
    Tanh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Min,
    Max,
    /// Comparisons yield 1.0 or 0.0 and carry no gradient.
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduce {
    /// token -> seq: sum over the sequence's masked tokens.
    SumTokens,
    /// token -> seq: masked mean over the sequence's tokens.
    MeanTokens,
    /// seq -> seq: mean over the sequence's group (the completions of one prompt), broadcast back.
    GroupMean,
    /// seq -> seq: sample standard deviation (n - 1) over the group, broadcast back.
    GroupStd,
    /// seq -> seq: mean over all sequences of the slot, broadcast back.
    BatchMean,
    /// seq -> seq: sample standard deviation over all sequences of the slot, broadcast back.
    BatchStd,
    /// seq -> scalar.
    MeanSeqs,
    /// seq -> scalar.
    SumSeqs,
    /// token -> scalar: masked mean over every token of the slot (DAPO's token-mean).
    MeanAllTokens,
    /// token -> scalar: masked sum over every token of the slot.
    SumAllTokens,
}

impl Reduce {
    /// (axis accepted, axis produced)
    pub fn signature(self) -> (Axis, Axis) {
        match self {
            Reduce::SumTokens | Reduce::MeanTokens => (Axis::Token, Axis::Seq),
            Reduce::GroupMean | Reduce::GroupStd | Reduce::BatchMean | Reduce::BatchStd => {
                (Axis::Seq, Axis::Seq)
            }
            Reduce::MeanSeqs | Reduce::SumSeqs => (Axis::Seq, Axis::Scalar),
            Reduce::MeanAllTokens | Reduce::SumAllTokens => (Axis::Token, Axis::Scalar),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Expr {
    Const {
        value: f64,
    },
    /// A stage hyperparameter (possibly scheduled), read at each step from `TrainStage::hypers`.
    Hyper {
        name: String,
    },
    Input {
        quantity: Quantity,
        slot: String,
    },
    Unary {
        f: UnaryOp,
        arg: Box<Expr>,
    },
    Binary {
        f: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// Element-wise `cond > 0 ? then : otherwise`.
    Where {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    Reduce {
        f: Reduce,
        arg: Box<Expr>,
    },
    /// The value of `arg` with no gradient flowing through it.
    Detach {
        arg: Box<Expr>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AxisError {
    /// A reduction got an argument on the wrong axis.
    Reduce {
        reduce: Reduce,
        expected: Axis,
        found: Axis,
    },
    /// Token-level values of two different slots cannot be combined element-wise.
    MixedTokenSlots { left: String, right: String },
}

impl fmt::Display for AxisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AxisError::Reduce {
                reduce,
                expected,
                found,
            } => write!(
                f,
                "{reduce:?} expects a {expected}-level value, found a {found}-level one"
            ),
            AxisError::MixedTokenSlots { left, right } => write!(
                f,
                "token-level values of `{left}` and `{right}` cannot be combined: reduce one to sequences first"
            ),
        }
    }
}

impl Expr {
    pub fn constant(value: f64) -> Expr {
        Expr::Const { value }
    }

    pub fn input(quantity: Quantity, slot: &str) -> Expr {
        Expr::Input {
            quantity,
            slot: slot.to_string(),
        }
    }

    pub fn unary(f: UnaryOp, arg: Expr) -> Expr {
        Expr::Unary {
            f,
            arg: Box::new(arg),
        }
    }

    pub fn binary(f: BinaryOp, lhs: Expr, rhs: Expr) -> Expr {
        Expr::Binary {
            f,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        }
    }

    pub fn reduce(f: Reduce, arg: Expr) -> Expr {
        Expr::Reduce {
            f,
            arg: Box::new(arg),
        }
    }

    /// The children of this node, in evaluation order.
    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Const { .. } | Expr::Hyper { .. } | Expr::Input { .. } => vec![],
            Expr::Unary { arg, .. } | Expr::Reduce { arg, .. } | Expr::Detach { arg } => {
                vec![arg]
            }
            Expr::Binary { lhs, rhs, .. } => vec![lhs, rhs],
            Expr::Where {
                cond,
                then,
                otherwise,
            } => vec![cond, then, otherwise],
        }
    }

    /// Slots read anywhere below this node.
    pub fn slots(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.visit(&mut |e| {
            if let Expr::Input { slot, .. } = e {
                out.insert(slot.clone());
            }
        });
        out
    }

    /// Quantities read anywhere below this node, with their slots.
    pub fn inputs(&self) -> BTreeSet<(Quantity, String)> {
        let mut out = BTreeSet::new();
        self.visit(&mut |e| {
            if let Expr::Input { quantity, slot } = e {
                out.insert((*quantity, slot.clone()));
            }
        });
        out
    }

    /// Hyperparameter names read anywhere below this node.
    pub fn hypers(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.visit(&mut |e| {
            if let Expr::Hyper { name } = e {
                out.insert(name.clone());
            }
        });
        out
    }

    /// Pre-order traversal.
    pub fn visit(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        for c in self.children() {
            c.visit(f);
        }
    }

    /// The axis of the value, and for token-level values the slot they belong to.
    pub fn axis(&self) -> Result<Axis, AxisError> {
        self.axis_and_token_slot().map(|(a, _)| a)
    }

    fn axis_and_token_slot(&self) -> Result<(Axis, Option<String>), AxisError> {
        match self {
            Expr::Const { .. } | Expr::Hyper { .. } => Ok((Axis::Scalar, None)),
            Expr::Input { quantity, slot } => {
                let axis = quantity.axis();
                let slot = (axis == Axis::Token).then(|| slot.clone());
                Ok((axis, slot))
            }
            Expr::Unary { arg, .. } | Expr::Detach { arg } => arg.axis_and_token_slot(),
            Expr::Reduce { f, arg } => {
                let (found, _) = arg.axis_and_token_slot()?;
                let (expected, produced) = f.signature();
                if found != expected {
                    return Err(AxisError::Reduce {
                        reduce: *f,
                        expected,
                        found,
                    });
                }
                Ok((produced, None))
            }
            Expr::Binary { lhs, rhs, .. } => join(&[lhs, rhs]),
            Expr::Where {
                cond,
                then,
                otherwise,
            } => join(&[cond, then, otherwise]),
        }
    }
}

fn join(parts: &[&Expr]) -> Result<(Axis, Option<String>), AxisError> {
    let mut axis = Axis::Scalar;
    let mut slot: Option<String> = None;
    for p in parts {
        let (a, s) = p.axis_and_token_slot()?;
        axis = axis.max(a);
        if let Some(s) = s {
            match &slot {
                Some(prev) if *prev != s => {
                    return Err(AxisError::MixedTokenSlots {
                        left: prev.clone(),
                        right: s,
                    });
                }
                _ => slot = Some(s),
            }
        }
    }
    Ok((axis, slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_and_reductions() {
        let logp = Expr::input(Quantity::Logp, "y");
        let reward = Expr::input(Quantity::Reward, "y");
        let prod = Expr::binary(BinaryOp::Mul, logp.clone(), reward);
        assert_eq!(prod.axis(), Ok(Axis::Token));
        let seq = Expr::reduce(Reduce::MeanTokens, prod);
        assert_eq!(seq.axis(), Ok(Axis::Seq));
        assert_eq!(Expr::reduce(Reduce::MeanSeqs, seq).axis(), Ok(Axis::Scalar));
        let bad = Expr::reduce(Reduce::MeanSeqs, logp);
        assert!(matches!(bad.axis(), Err(AxisError::Reduce { .. })));
    }

    #[test]
    fn token_values_of_two_slots_do_not_mix() {
        let a = Expr::input(Quantity::Logp, "chosen");
        let b = Expr::input(Quantity::Logp, "rejected");
        let e = Expr::binary(BinaryOp::Sub, a.clone(), b.clone());
        assert!(matches!(e.axis(), Err(AxisError::MixedTokenSlots { .. })));
        let ok = Expr::binary(
            BinaryOp::Sub,
            Expr::reduce(Reduce::SumTokens, a),
            Expr::reduce(Reduce::SumTokens, b),
        );
        assert_eq!(ok.axis(), Ok(Axis::Seq));
    }
}
