//! The candle interpreter of objective formulas: the one place that evaluates a
//! `post_graph::Expr` with plain candle ops. It is the unfused path ([`evaluate_unfused`]: other
//! dtypes and devices, `POST_FUSED=0`, and the reference of the parity tests) and it evaluates
//! everything around the fused regions of a [`super::FusedLoss`] (group and batch statistics,
//! means over sequences, scalar arithmetic), so both paths share every tensor semantic.
//!
//! The trainer fills a [`SlotTensors`] per slot (per-token log-probabilities, masks, rewards).
//! Gradients flow only through `logp`: every other input is detached on entry, so a caller may
//! pass e.g. `old_logp` computed from the same graph without leaking gradient into it.
//!
//! Axis rules follow `post_graph::expr`: scalars broadcast to sequences, sequences to tokens;
//! token reductions are weighted by the slot's mask, so padding, prompt and expert-prefix
//! tokens never count. Everything is computed in the dtype of the slots' `logp` (f32 in
//! training, f64 in the reference tests).
//!
//! Numerical choices (also the reference semantics the tests check against):
//! - constant sub-formulas stay host numbers, folded by `post_graph::scalar` (the compiler's and
//!   the kernels' semantics too);
//! - log-probabilities at masked positions read as 0, and token reductions replace masked
//!   positions by 0 before weighting, so NaN/inf left in padding never leaks into a value or a
//!   gradient;
//! - a mean over zero tokens (a fully masked sequence, or slot) is 0;
//! - group/batch std is the sample std (n - 1), and 0 for groups of one;
//! - `sigmoid` and `log_sigmoid` use a branch per sign whose inactive branch is clamped, so
//!   neither the value nor the gradient overflows for large |x|;
//! - comparisons yield 1/0 and carry no gradient; `min`/`max` split the gradient on ties.

use std::collections::BTreeMap;

use candle_core::{DType, Result, Tensor, bail};
use post_graph::{Axis, BinaryOp, Expr, Quantity, Reduce, UnaryOp, scalar};

/// The tensors of one slot: `n` sequences of at most `t` completion tokens each.
#[derive(Debug, Clone)]
pub struct SlotTensors {
    /// log pi_theta per completion token, `[n, t]`: the only differentiable input.
    pub logp: Tensor,
    /// Reference model log-probabilities, `[n, t]` (needed when the loss reads `ref_logp`).
    pub ref_logp: Option<Tensor>,
    /// Sampler log-probabilities, `[n, t]` (needed when the loss reads `old_logp`).
    pub old_logp: Option<Tensor>,
    /// 1 for loss-carrying completion tokens, 0 elsewhere, `[n, t]`.
    pub mask: Tensor,
    /// Per-sequence reward, `[n]` (needed when the loss reads `reward`).
    pub reward: Option<Tensor>,
    /// Consecutive runs of `group_size` sequences are the completions of one prompt.
    pub group_size: usize,
    /// The rollout's `max_tokens` (Dr.GRPO's normaliser).
    pub max_tokens: usize,
}

impl SlotTensors {
    /// A slot with only `logp` and `mask`; group size 1 and `max_tokens` = `t`.
    pub fn new(logp: Tensor, mask: Tensor) -> Result<Self> {
        let (_, t) = logp.dims2()?;
        Ok(SlotTensors {
            logp,
            ref_logp: None,
            old_logp: None,
            mask,
            reward: None,
            group_size: 1,
            max_tokens: t,
        })
    }

    /// Number of sequences.
    pub fn num_seqs(&self) -> Result<usize> {
        Ok(self.logp.dims2()?.0)
    }

    pub fn validate(&self, name: &str) -> Result<()> {
        let dims = self.logp.dims2().map_err(|_| {
            candle_core::Error::Msg(format!(
                "slot `{name}`: logp must be [sequences, tokens], got {:?}",
                self.logp.dims()
            ))
        })?;
        let same = |what: &str, t: &Tensor| -> Result<()> {
            if t.dims() != [dims.0, dims.1] {
                bail!(
                    "slot `{name}`: {what} has shape {:?}, expected {:?} like logp",
                    t.dims(),
                    [dims.0, dims.1]
                );
            }
            Ok(())
        };
        same("mask", &self.mask)?;
        if let Some(t) = &self.ref_logp {
            same("ref_logp", t)?;
        }
        if let Some(t) = &self.old_logp {
            same("old_logp", t)?;
        }
        if let Some(r) = &self.reward
            && r.dims() != [dims.0]
        {
            bail!(
                "slot `{name}`: reward has shape {:?}, expected [{}]",
                r.dims(),
                dims.0
            );
        }
        if self.group_size == 0 || dims.0 % self.group_size != 0 {
            bail!(
                "slot `{name}`: {} sequences do not split into groups of {}",
                dims.0,
                self.group_size
            );
        }
        Ok(())
    }
}

/// Slots by name, as the objective's `Expr::Input { slot, .. }` names them.
pub type SlotMap = BTreeMap<String, SlotTensors>;

/// Check every slot's shapes; the first slot (its dtype and device are the loss's).
pub(crate) fn validated(slots: &SlotMap) -> Result<&SlotTensors> {
    let Some(first) = slots.values().next() else {
        bail!("objective has no slots to evaluate on");
    };
    for (name, s) in slots {
        s.validate(name)?;
    }
    Ok(first)
}

/// Evaluate the scalar loss `expr` on `slots` with plain candle ops, with `hypers` giving every
/// `Expr::Hyper`.
///
/// The result is a 0-d tensor in the dtype of the slots' `logp`, differentiable through `logp`.
pub fn evaluate_unfused(
    expr: &Expr,
    slots: &SlotMap,
    hypers: &BTreeMap<String, f64>,
) -> Result<Tensor> {
    let ctx = Ctx::new(slots, hypers)?;
    ctx.scalar_result(ctx.eval(expr)?)
}

/// Evaluate a sequence-level expression (e.g. a GRPO advantage, for logging): one value per
/// sequence, detached.
pub fn evaluate_per_seq(
    expr: &Expr,
    slots: &SlotMap,
    hypers: &BTreeMap<String, f64>,
) -> Result<Vec<f64>> {
    let ctx = Ctx::new(slots, hypers)?;
    match ctx.eval(expr)? {
        Val::Seq { t, .. } => t.detach().to_dtype(DType::F64)?.to_vec1::<f64>(),
        _ => bail!("expected a per-sequence expression"),
    }
}

/// A value during evaluation. Plain numbers stay on the host so constant sub-expressions fold
/// and `x ^ const` can use `powf` (which handles negative bases).
#[derive(Clone)]
pub(crate) enum Val {
    Num(f64),
    /// 0-d tensor.
    Scalar(Tensor),
    /// `[n]`; `slot` decides the group size of group reductions.
    Seq {
        t: Tensor,
        slot: String,
    },
    /// `[n, t]`; `slot` decides the mask of token reductions.
    Token {
        t: Tensor,
        slot: String,
    },
}

pub(crate) struct Ctx<'a> {
    slots: &'a SlotMap,
    hypers: &'a BTreeMap<String, f64>,
    dtype: DType,
    device: candle_core::Device,
}

impl<'a> Ctx<'a> {
    /// Validates the slots; the first slot's `logp` decides the dtype and device.
    pub(crate) fn new(slots: &'a SlotMap, hypers: &'a BTreeMap<String, f64>) -> Result<Self> {
        let first = validated(slots)?;
        Ok(Ctx {
            slots,
            hypers,
            dtype: first.logp.dtype(),
            device: first.logp.device().clone(),
        })
    }

    /// The loss value as a 0-d tensor; errors when it is not a scalar.
    pub(crate) fn scalar_result(&self, v: Val) -> Result<Tensor> {
        match v {
            Val::Num(v) => Tensor::new(v, &self.device)?.to_dtype(self.dtype),
            Val::Scalar(t) => Ok(t),
            Val::Seq { .. } => bail!("the loss is a per-sequence value: reduce it to a scalar"),
            Val::Token { .. } => bail!("the loss is a per-token value: reduce it to a scalar"),
        }
    }

    pub(crate) fn hyper(&self, name: &str) -> Result<f64> {
        match self.hypers.get(name) {
            Some(v) => Ok(*v),
            None => bail!("hyperparameter `{name}` has no value"),
        }
    }

    pub(crate) fn slot(&self, name: &str) -> Result<&SlotTensors> {
        match self.slots.get(name) {
            Some(s) => Ok(s),
            None => bail!(
                "the objective reads slot `{name}`, which was not provided (have: {})",
                self.slots.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// A constant input in the evaluation dtype, cut from any autograd graph.
    fn constant(&self, t: &Tensor) -> Result<Tensor> {
        t.detach().to_dtype(self.dtype)
    }

    fn mask(&self, slot: &str) -> Result<Tensor> {
        self.constant(&self.slot(slot)?.mask)
    }

    pub(crate) fn eval(&self, e: &Expr) -> Result<Val> {
        match e {
            Expr::Const { value } => Ok(Val::Num(*value)),
            Expr::Hyper { name } => Ok(Val::Num(self.hyper(name)?)),
            Expr::Input { quantity, slot } => self.input(*quantity, slot, true),
            Expr::Unary { f, arg } => {
                let v = self.eval(arg)?;
                unary_val(*f, v)
            }
            Expr::Binary { f, lhs, rhs } => {
                let l = self.eval(lhs)?;
                let r = self.eval(rhs)?;
                self.binary(*f, l, r)
            }
            Expr::Where {
                cond,
                then,
                otherwise,
            } => {
                let c = self.eval(cond)?;
                let a = self.eval(then)?;
                let b = self.eval(otherwise)?;
                self.where_(c, a, b)
            }
            Expr::Reduce { f, arg } => {
                let v = self.eval(arg)?;
                self.reduce(*f, v)
            }
            Expr::Detach { arg } => Ok(detach_val(self.eval(arg)?)),
        }
    }

    /// An input quantity. With `clean_padding`, log-probabilities read as 0 where the mask is 0;
    /// fused token regions skip that pass because their kernels apply the same select.
    pub(crate) fn input(&self, q: Quantity, slot: &str, clean_padding: bool) -> Result<Val> {
        let s = self.slot(slot)?;
        let token = |t: Tensor| Val::Token {
            t,
            slot: slot.to_string(),
        };
        let missing = |what: &str| -> Result<Val> {
            bail!("the objective reads `{what}` of slot `{slot}`, which was not provided")
        };
        // Log-probabilities at masked positions become 0, so whatever the caller left in the
        // padding (NaN, -inf) never reaches a value or a gradient.
        let keep = || -> Result<Tensor> { self.constant(&s.mask)?.gt(0f64) };
        let clean = |t: Tensor| -> Result<Val> {
            if !clean_padding {
                return Ok(token(t));
            }
            let zeros = t.zeros_like()?;
            Ok(token(keep()?.where_cond(&t, &zeros)?))
        };
        Ok(match q {
            Quantity::Logp => clean(s.logp.to_dtype(self.dtype)?)?,
            Quantity::RefLogp => match &s.ref_logp {
                Some(t) => clean(self.constant(t)?)?,
                None => return missing("ref_logp"),
            },
            Quantity::OldLogp => match &s.old_logp {
                Some(t) => clean(self.constant(t)?)?,
                None => return missing("old_logp"),
            },
            Quantity::Mask => token(self.constant(&s.mask)?),
            Quantity::Reward => match &s.reward {
                Some(t) => Val::Seq {
                    t: self.constant(t)?,
                    slot: slot.to_string(),
                },
                None => return missing("reward"),
            },
            Quantity::Length => Val::Seq {
                t: self.constant(&s.mask)?.sum(1)?,
                slot: slot.to_string(),
            },
            Quantity::MaxTokens => Val::Num(s.max_tokens as f64),
            Quantity::NumSeqs => Val::Num(s.num_seqs()? as f64),
        })
    }

    /// Bring the values to a common axis and shape: the highest axis among them wins.
    /// Returns the broadcast tensors, or `None` when every value is a host number.
    fn align(&self, vals: Vec<Val>) -> Result<Option<(Vec<Tensor>, Val)>> {
        // The template value decides the result's axis, shape and slot.
        let mut template: Option<Val> = None;
        for v in &vals {
            let rank = |v: &Val| match v {
                Val::Num(_) => 0,
                Val::Scalar(_) => 1,
                Val::Seq { .. } => 2,
                Val::Token { .. } => 3,
            };
            if template.as_ref().is_none_or(|t| rank(v) > rank(t)) {
                template = Some(v.clone());
            }
        }
        let template = match template {
            None | Some(Val::Num(_)) => return Ok(None),
            Some(t) => t,
        };
        let target: Vec<usize> = match &template {
            Val::Scalar(t) | Val::Seq { t, .. } | Val::Token { t, .. } => t.dims().to_vec(),
            Val::Num(_) => vec![],
        };
        let mut out = Vec::with_capacity(vals.len());
        for v in vals {
            let t = match v {
                Val::Num(x) => {
                    Tensor::full(x, target.as_slice(), &self.device)?.to_dtype(self.dtype)?
                }
                Val::Scalar(t) => t.broadcast_as(target.as_slice())?,
                Val::Seq { t, slot } => {
                    let n = t.dims1()?;
                    if target.first() != Some(&n) {
                        bail!(
                            "per-sequence values of slot `{slot}` ({n} sequences) do not match the other operand's shape {target:?}"
                        );
                    }
                    if target.len() == 2 {
                        t.unsqueeze(1)?.broadcast_as(target.as_slice())?
                    } else {
                        t
                    }
                }
                Val::Token { t, slot } => {
                    if t.dims() != target.as_slice() {
                        bail!(
                            "per-token values of slot `{slot}` have shape {:?}, the other operand {target:?}",
                            t.dims()
                        );
                    }
                    t
                }
            };
            out.push(t);
        }
        Ok(Some((out, template)))
    }

    pub(crate) fn binary(&self, f: BinaryOp, l: Val, r: Val) -> Result<Val> {
        if let (Val::Num(a), Val::Num(b)) = (&l, &r) {
            return Ok(Val::Num(scalar::binary(f, *a, *b)));
        }
        // x ^ c with a host exponent: powf is exact for negative bases with integer exponents.
        if let (BinaryOp::Pow, Val::Num(e)) = (f, &r) {
            let e = *e;
            return map_val(l, |t| t.powf(e), |x| Ok(x.powf(e)));
        }
        let Some((ts, template)) = self.align(vec![l, r])? else {
            bail!("internal: binary operands are not tensors");
        };
        let (a, b) = (&ts[0], &ts[1]);
        let t = match f {
            BinaryOp::Add => (a + b)?,
            BinaryOp::Sub => (a - b)?,
            BinaryOp::Mul => (a * b)?,
            BinaryOp::Div => (a / b)?,
            BinaryOp::Pow => (b * a.log()?)?.exp()?,
            BinaryOp::Min => a.minimum(b)?,
            BinaryOp::Max => a.maximum(b)?,
            BinaryOp::Gt => a.detach().gt(&b.detach())?.to_dtype(self.dtype)?,
            BinaryOp::Ge => a.detach().ge(&b.detach())?.to_dtype(self.dtype)?,
            BinaryOp::Lt => a.detach().lt(&b.detach())?.to_dtype(self.dtype)?,
            BinaryOp::Le => a.detach().le(&b.detach())?.to_dtype(self.dtype)?,
        };
        Ok(with_tensor(template, t))
    }

    pub(crate) fn where_(&self, c: Val, a: Val, b: Val) -> Result<Val> {
        if let Val::Num(cv) = c {
            // A host condition picks a branch outright (NaN counts as false, like `cond > 0`).
            return Ok(if cv > 0.0 { a } else { b });
        }
        let Some((ts, template)) = self.align(vec![c, a, b])? else {
            bail!("internal: where operands are not tensors");
        };
        let pred = ts[0].detach().gt(0f64)?;
        Ok(with_tensor(template, pred.where_cond(&ts[1], &ts[2])?))
    }

    pub(crate) fn reduce(&self, f: Reduce, v: Val) -> Result<Val> {
        let wrong = |found: &str| -> Result<Val> {
            let (expected, _) = f.signature();
            bail!("{f:?} expects a {expected}-level value, found a {found}")
        };
        match f {
            Reduce::SumTokens
            | Reduce::MeanTokens
            | Reduce::MeanAllTokens
            | Reduce::SumAllTokens => {
                let Val::Token { t, slot } = v else {
                    return wrong("value that is not per-token");
                };
                let mask = self.mask(&slot)?;
                let masked = masked_weighted(&t, &mask)?;
                match f {
                    Reduce::SumTokens => Ok(Val::Seq {
                        t: masked.sum(1)?,
                        slot,
                    }),
                    Reduce::MeanTokens => {
                        let len = safe_count(&mask.sum(1)?)?;
                        Ok(Val::Seq {
                            t: (masked.sum(1)? / len)?,
                            slot,
                        })
                    }
                    Reduce::SumAllTokens => Ok(Val::Scalar(masked.sum_all()?)),
                    _ => {
                        let total = safe_count(&mask.sum_all()?)?;
                        Ok(Val::Scalar((masked.sum_all()? / total)?))
                    }
                }
            }
            Reduce::GroupMean | Reduce::GroupStd | Reduce::BatchMean | Reduce::BatchStd => {
                let Val::Seq { t, slot } = v else {
                    return wrong("value that is not per-sequence");
                };
                let n = t.dims1()?;
                let g = match f {
                    Reduce::GroupMean | Reduce::GroupStd => self.slot(&slot)?.group_size,
                    _ => n,
                };
                if g == 0 || n % g != 0 {
                    bail!("{n} sequences of slot `{slot}` do not split into groups of {g}");
                }
                let grouped = t.reshape((n / g, g))?;
                let mean = grouped.mean_keepdim(1)?;
                let out = match f {
                    Reduce::GroupMean | Reduce::BatchMean => mean.broadcast_as((n / g, g))?,
                    _ if g < 2 => grouped.zeros_like()?,
                    _ => {
                        let dev = grouped.broadcast_sub(&mean)?;
                        let var = (dev.sqr()?.sum_keepdim(1)? / (g as f64 - 1.0))?;
                        var.sqrt()?.broadcast_as((n / g, g))?
                    }
                };
                Ok(Val::Seq {
                    t: out.reshape(n)?,
                    slot,
                })
            }
            Reduce::MeanSeqs | Reduce::SumSeqs => {
                let Val::Seq { t, .. } = v else {
                    return wrong("value that is not per-sequence");
                };
                Ok(Val::Scalar(if f == Reduce::MeanSeqs {
                    t.mean_all()?
                } else {
                    t.sum_all()?
                }))
            }
        }
    }
}

/// `x` at mask > 0 (times the mask weight), exactly 0 elsewhere, even where `x` is NaN or inf.
fn masked_weighted(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let keep = mask.gt(0f64)?;
    let zeros = x.zeros_like()?;
    keep.where_cond(x, &zeros)? * mask
}

/// A token count to divide by: counts of 0 become 1 so an empty mean is 0, not NaN.
fn safe_count(count: &Tensor) -> Result<Tensor> {
    let ones = count.ones_like()?;
    count.gt(0f64)?.where_cond(count, &ones)
}

pub(crate) fn with_tensor(template: Val, t: Tensor) -> Val {
    match template {
        Val::Num(_) | Val::Scalar(_) => Val::Scalar(t),
        Val::Seq { slot, .. } => Val::Seq { t, slot },
        Val::Token { slot, .. } => Val::Token { t, slot },
    }
}

fn map_val(
    v: Val,
    on_tensor: impl FnOnce(&Tensor) -> Result<Tensor>,
    on_num: impl FnOnce(f64) -> Result<f64>,
) -> Result<Val> {
    Ok(match v {
        Val::Num(x) => Val::Num(on_num(x)?),
        Val::Scalar(t) => Val::Scalar(on_tensor(&t)?),
        Val::Seq { t, slot } => Val::Seq {
            t: on_tensor(&t)?,
            slot,
        },
        Val::Token { t, slot } => Val::Token {
            t: on_tensor(&t)?,
            slot,
        },
    })
}

/// Stable sigmoid pieces: returns (x >= 0 mask, max(x, 0) and min(x, 0)) selected with
/// `where_cond` (no tie-splitting), so the inactive branch sees a harmless 0.
fn split_sign(x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let pos_mask = x.ge(0f64)?;
    let zeros = x.zeros_like()?;
    let pos = pos_mask.where_cond(x, &zeros)?;
    let neg = pos_mask.where_cond(&zeros, x)?;
    Ok((pos_mask, pos, neg))
}

/// `log(1 + x)` without losing tiny `x` to `1 + x == 1`: `log(u) * x / (u - 1)` with
/// `u = 1 + x` (exact to a few ulps), and `x` itself where `u` rounds to 1; the inactive branch
/// sees a harmless denominator, so no gradient turns into NaN.
fn log1p(x: &Tensor) -> Result<Tensor> {
    let u = (x + 1.0)?;
    let d = (&u - 1.0)?;
    let tiny = d.eq(0f64)?;
    let d = tiny.where_cond(&d.ones_like()?, &d)?;
    let v = ((u.log()? * x)? / d)?;
    tiny.where_cond(x, &v)
}

/// `f` on a tensor: the safe forms of `post_graph::scalar`, written with candle ops.
fn unary(f: UnaryOp, x: &Tensor) -> Result<Tensor> {
    match f {
        UnaryOp::Neg => x.neg(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.log(),
        UnaryOp::Log1p => log1p(x),
        UnaryOp::Sigmoid => {
            // x >= 0: 1 / (1 + e^-x); x < 0: e^x / (1 + e^x).
            let (pos_mask, pos, neg) = split_sign(x)?;
            let a = ((pos.neg()?.exp()? + 1.0)?).recip()?;
            let en = neg.exp()?;
            let b = (&en / (&en + 1.0)?)?;
            pos_mask.where_cond(&a, &b)
        }
        UnaryOp::LogSigmoid => {
            // x >= 0: -log(1 + e^-x); x < 0: x - log(1 + e^x).
            let (pos_mask, pos, neg) = split_sign(x)?;
            let a = log1p(&pos.neg()?.exp()?)?.neg()?;
            let b = (&neg - log1p(&neg.exp()?)?)?;
            pos_mask.where_cond(&a, &b)
        }
        UnaryOp::Relu => x.relu(),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Square => x.sqr(),
        UnaryOp::Tanh => x.tanh(),
    }
}

/// `f` on a value: host numbers through `post_graph::scalar`, tensors through candle ops.
pub(crate) fn unary_val(f: UnaryOp, v: Val) -> Result<Val> {
    map_val(v, |t| unary(f, t), |x| Ok(scalar::unary(f, x)))
}

/// The value with no gradient flowing through it.
pub(crate) fn detach_val(v: Val) -> Val {
    match v {
        Val::Num(x) => Val::Num(x),
        Val::Scalar(t) => Val::Scalar(t.detach()),
        Val::Seq { t, slot } => Val::Seq {
            t: t.detach(),
            slot,
        },
        Val::Token { t, slot } => Val::Token {
            t: t.detach(),
            slot,
        },
    }
}

/// The slot a value of `e` carries through [`Ctx::align`] (the first operand of the highest
/// axis wins): the slot whose groups a group reduction of `e` uses. `None` for scalars.
pub(crate) fn value_slot(e: &Expr) -> Option<String> {
    let axis = e.axis().ok()?;
    if axis == Axis::Scalar {
        return None;
    }
    match e {
        Expr::Input { slot, .. } => Some(slot.clone()),
        Expr::Reduce { arg, .. } | Expr::Unary { arg, .. } | Expr::Detach { arg } => {
            value_slot(arg)
        }
        _ => {
            let kids = e.children();
            let top = kids.iter().filter_map(|k| k.axis().ok()).max()?;
            kids.into_iter()
                .find(|k| k.axis().ok() == Some(top))
                .and_then(value_slot)
        }
    }
}
