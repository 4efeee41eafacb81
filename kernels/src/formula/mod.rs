//! Formula fusion: an objective's `Expr` becomes fused kernels around candle reductions.
//!
//! 1. [`FusedLoss::new`] plans the loss: every token reduction whose argument is element-wise
//!    becomes a token region, every non-trivial element-wise argument of a sequence reduction a
//!    sequence region ([`region`]); reductions inside a region become its leaves, planned the same
//!    way, so any user-defined objective gets the same treatment as the stdlib ones.
//! 2. Each region is lowered into the hash-consed IR ([`ir`]), differentiated symbolically
//!    (simplified as it is built), and compiled by Cranelift ([`jit`]) into a forward and a
//!    backward kernel; the CUDA C twin is generated alongside ([`cuda`]). Compiled regions are
//!    cached by a hash of their simplified formula.
//! 3. [`FusedLoss::evaluate`] runs the plan on candle tensors: fused regions as CustomOps with
//!    `bwd`, everything else (group and batch statistics, means over sequences, scalar arithmetic)
//!    as plain candle ops, so `loss.backward()` reaches `logp` through both.
//!
//! [`evaluate_unfused`] evaluates the same formula with plain candle ops only: the reference the
//! parity tests and the benchmark compare against.

mod cuda;
pub mod ir;
pub mod jit;
pub mod region;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor, bail};
use post_graph::{Axis, BinaryOp, Expr, Graph, Quantity, Reduce, StageKind, UnaryOp};

use crate::util::{f32_data, par_rows, threads_above};

/// Token count from which a fused formula kernel spreads rows over candle's worker pool (below
/// it, one thread is faster than waking the pool: the kernels are memory-bound).
const FORMULA_PAR_ELEMS: usize = 1 << 21;
use jit::JitKernel;
use region::{CompiledRegion, Leaf, LeafSource, RegionKind};

/// The tensors of one slot, as an objective reads them.
#[derive(Debug, Clone)]
pub struct SlotInputs {
    /// `[B, T]` f32 log-probabilities of the trained model (differentiable).
    pub logp: Tensor,
    /// `[B, T]` reference-model log-probabilities, when the formula reads them.
    pub ref_logp: Option<Tensor>,
    /// `[B, T]` sampler log-probabilities, when the formula reads them.
    pub old_logp: Option<Tensor>,
    /// `[B, T]` f32, 1 on loss-carrying tokens.
    pub mask: Tensor,
    /// `[B]` f32 rewards, when the formula reads them.
    pub reward: Option<Tensor>,
    /// The rollout's `max_tokens`, when the formula reads it.
    pub max_tokens: Option<f64>,
    /// Completions per prompt; groups are contiguous runs of this many sequences.
    pub group_size: usize,
}

/// Errors found while planning or compiling a formula.
#[derive(Debug, thiserror::Error)]
pub enum FormulaError {
    #[error("the formula is ill-typed: {0}")]
    Axis(String),
    #[error("the loss must be a scalar, found a {0}-level value")]
    NotScalar(Axis),
    #[error("compiling a fused kernel failed: {0}")]
    Jit(String),
}

#[derive(Debug, Clone)]
enum Plan {
    Const(f64),
    Hyper(String),
    Input(Quantity, String),
    Unary(UnaryOp, Box<Plan>),
    Binary(BinaryOp, Box<Plan>, Box<Plan>),
    Where(Box<Plan>, Box<Plan>, Box<Plan>),
    Detach(Box<Plan>),
    Reduce {
        f: Reduce,
        arg: Box<Plan>,
        /// The slot whose mask (token reductions) or groups (group reductions) apply.
        slot: Option<String>,
    },
    Token {
        f: Reduce,
        slot: String,
        region: Arc<CompiledRegion>,
        leaves: Vec<(Leaf, Plan)>,
    },
    Seq {
        region: Arc<CompiledRegion>,
        leaves: Vec<(Leaf, Plan)>,
    },
}

impl std::fmt::Debug for CompiledRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CompiledRegion({:?}, {:016x})", self.kind, self.hash)
    }
}

fn is_leaf(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Const { .. } | Expr::Hyper { .. } | Expr::Input { .. } | Expr::Reduce { .. }
    )
}

fn first_slot(e: &Expr) -> Option<String> {
    e.slots().into_iter().next()
}

fn plan(
    e: &Expr,
    fuse: bool,
    regions: &mut Vec<(Arc<CompiledRegion>, String)>,
) -> std::result::Result<Plan, FormulaError> {
    let mut sub = |x: &Expr| plan(x, fuse, regions).map(Box::new);
    Ok(match e {
        Expr::Const { value } => Plan::Const(*value),
        Expr::Hyper { name } => Plan::Hyper(name.clone()),
        Expr::Input { quantity, slot } => Plan::Input(*quantity, slot.clone()),
        Expr::Unary { f, arg } => Plan::Unary(*f, sub(arg)?),
        Expr::Binary { f, lhs, rhs } => Plan::Binary(*f, sub(lhs)?, sub(rhs)?),
        Expr::Where {
            cond,
            then,
            otherwise,
        } => Plan::Where(sub(cond)?, sub(then)?, sub(otherwise)?),
        Expr::Detach { arg } => Plan::Detach(sub(arg)?),
        Expr::Reduce { f, arg } => {
            let (input_axis, _) = f.signature();
            if input_axis == Axis::Token {
                let slot = region::token_slot(arg).ok_or_else(|| {
                    FormulaError::Axis(format!("{f:?} of a value with no token input"))
                })?;
                if fuse && let Ok(draft) = region::lower(arg, RegionKind::Token, Some(&slot)) {
                    let leaves = plan_leaves(&draft.leaves, fuse, regions)?;
                    let legend = legend(&draft.leaves);
                    let r = region::compile_region(draft).map_err(FormulaError::Jit)?;
                    regions.push((r.clone(), legend));
                    return Ok(Plan::Token {
                        f: *f,
                        slot,
                        region: r,
                        leaves,
                    });
                }
                Plan::Reduce {
                    f: *f,
                    arg: Box::new(plan(arg, fuse, regions)?),
                    slot: Some(slot),
                }
            } else {
                let inner = if fuse && !is_leaf(arg) {
                    match region::lower(arg, RegionKind::Seq, None) {
                        Ok(draft) => {
                            let leaves = plan_leaves(&draft.leaves, fuse, regions)?;
                            let legend = legend(&draft.leaves);
                            let r = region::compile_region(draft).map_err(FormulaError::Jit)?;
                            regions.push((r.clone(), legend));
                            Plan::Seq { region: r, leaves }
                        }
                        Err(_) => plan(arg, fuse, regions)?,
                    }
                } else {
                    plan(arg, fuse, regions)?
                };
                Plan::Reduce {
                    f: *f,
                    arg: Box::new(inner),
                    slot: first_slot(arg),
                }
            }
        }
    })
}

/// Names the columns and uniforms of a region for `--emit kernels`.
fn legend(leaves: &[Leaf]) -> String {
    let mut s = String::new();
    for l in leaves {
        let what = match &l.source {
            LeafSource::Input(q, slot) => format!("{}[{slot}]", q.name()),
            LeafSource::Hyper(h) => format!("hyperparameter {h}"),
            LeafSource::Sub(Expr::Reduce { f, .. }) => {
                format!("{f:?} (a reduction computed outside)")
            }
            LeafSource::Sub(_) => "a value computed outside".to_string(),
        };
        let slot = match (l.col, l.uni) {
            (Some(c), _) => format!("col{c}"),
            (_, Some(u)) => format!("uni{u}"),
            _ => continue,
        };
        let grad = if l.differentiable {
            ", differentiated"
        } else {
            ""
        };
        let _ = writeln!(s, "//   {slot} = {what} ({} level{grad})", l.axis);
    }
    s
}

fn plan_leaves(
    leaves: &[Leaf],
    fuse: bool,
    regions: &mut Vec<(Arc<CompiledRegion>, String)>,
) -> std::result::Result<Vec<(Leaf, Plan)>, FormulaError> {
    leaves
        .iter()
        .map(|l| {
            let p = match &l.source {
                LeafSource::Input(q, s) => Plan::Input(*q, s.clone()),
                LeafSource::Hyper(h) => Plan::Hyper(h.clone()),
                LeafSource::Sub(e) => plan(e, fuse, regions)?,
            };
            Ok((l.clone(), p))
        })
        .collect()
}

/// A planned, compiled objective.
#[derive(Debug)]
pub struct FusedLoss {
    loss: Expr,
    plan: Plan,
    /// Each compiled region with the legend of its leaves.
    regions: Vec<(Arc<CompiledRegion>, String)>,
}

fn check_scalar(loss: &Expr) -> std::result::Result<(), FormulaError> {
    match loss.axis() {
        Ok(Axis::Scalar) => Ok(()),
        Ok(a) => Err(FormulaError::NotScalar(a)),
        Err(e) => Err(FormulaError::Axis(e.to_string())),
    }
}

impl FusedLoss {
    /// Plans `loss` and compiles (or fetches from the cache) the kernels of its regions.
    pub fn new(loss: &Expr) -> std::result::Result<FusedLoss, FormulaError> {
        check_scalar(loss)?;
        let mut regions = Vec::new();
        let plan = plan(loss, true, &mut regions)?;
        Ok(FusedLoss {
            loss: loss.clone(),
            plan,
            regions,
        })
    }

    /// The scalar loss, differentiable with respect to every slot's `logp`.
    pub fn evaluate(
        &self,
        slots: &BTreeMap<String, SlotInputs>,
        hypers: &BTreeMap<String, f64>,
    ) -> Result<Tensor> {
        let ctx = Ctx { slots, hypers };
        if !device(&ctx).is_cpu() {
            return evaluate_unfused(&self.loss, slots, hypers);
        }
        eval(&self.plan, &ctx)?.t.reshape(())
    }

    /// Number of fused regions (kernel pairs) in the plan.
    pub fn fused_regions(&self) -> usize {
        self.regions.len()
    }

    /// Readable text of every region: simplified forward/backward formulas, Cranelift IR, CUDA C.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (r, legend) in &self.regions {
            let _ = writeln!(
                s,
                "// region {:016x} ({:?}, {} columns, {} uniforms)",
                r.hash, r.kind, r.n_cols, r.n_uni
            );
            s.push_str(legend);
            let _ = writeln!(s, "// forward:\n{}", comment(&r.fwd_listing));
            if r.bwd.is_some() {
                let _ = writeln!(
                    s,
                    "// backward (d/d columns {:?}):\n{}",
                    r.diff_cols,
                    comment(&r.bwd_listing)
                );
            }
            let _ = writeln!(s, "// ---- Cranelift IR (forward)\n{}", comment(&r.fwd.ir));
            if let Some(b) = &r.bwd {
                let _ = writeln!(s, "// ---- Cranelift IR (backward)\n{}", comment(&b.ir));
            }
            let _ = writeln!(s, "// ---- CUDA C (NVRTC)\n{}", r.cuda_source);
        }
        s
    }
}

fn comment(text: &str) -> String {
    text.lines().map(|l| format!("// {l}\n")).collect()
}

/// The loss evaluated with plain candle ops only (no fusion): the reference for parity tests and
/// the "unfused" side of the benchmark.
pub fn evaluate_unfused(
    loss: &Expr,
    slots: &BTreeMap<String, SlotInputs>,
    hypers: &BTreeMap<String, f64>,
) -> Result<Tensor> {
    check_scalar(loss).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let p =
        plan(loss, false, &mut Vec::new()).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    eval(&p, &Ctx { slots, hypers })?.t.reshape(())
}

/// The generated CUDA C and readable Cranelift IR of every objective in `graph`
/// (`post compile --emit kernels`).
pub fn emit_kernels(graph: &Graph) -> String {
    let mut s = format!(
        "// post-kernels: fused objectives of experiment `{}`\n// {}\n",
        graph.experiment,
        crate::backend_note()
    );
    for stage in &graph.stages {
        let StageKind::Train(t) = &stage.kind else {
            continue;
        };
        let _ = writeln!(
            s,
            "\n// ===== stage `{}`: objective `{}`",
            stage.name, t.objective.name
        );
        match FusedLoss::new(&t.objective.loss) {
            Ok(f) => {
                let _ = writeln!(s, "// {} fused region(s)", f.fused_regions());
                s.push_str(&f.describe());
            }
            Err(e) => {
                let _ = writeln!(s, "// not fused: {e}");
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Evaluation

struct Ctx<'a> {
    slots: &'a BTreeMap<String, SlotInputs>,
    hypers: &'a BTreeMap<String, f64>,
}

#[derive(Clone)]
struct Val {
    t: Tensor,
    axis: Axis,
}

impl Ctx<'_> {
    fn slot(&self, name: &str) -> Result<&SlotInputs> {
        match self.slots.get(name) {
            Some(s) => Ok(s),
            None => bail!("the formula reads slot `{name}`, which has no tensors"),
        }
    }
}

fn token_tensor(s: &SlotInputs, t: &Tensor, what: &str, slot: &str) -> Result<Tensor> {
    if t.dims() != s.mask.dims() || t.rank() != 2 {
        bail!(
            "slot `{slot}`: {what} has shape {:?}, expected the mask's {:?} ([sequences, tokens])",
            t.dims(),
            s.mask.dims()
        )
    }
    t.to_dtype(DType::F32)
}

/// An input quantity. With `clean`, log-probabilities read as 0 where the mask is 0; fused token
/// regions skip that pass because their kernels apply the same select to each element.
fn input(ctx: &Ctx, q: Quantity, slot: &str, clean_padding: bool) -> Result<Val> {
    let s = ctx.slot(slot)?;
    let missing = |what: &str| {
        candle_core::Error::Msg(format!(
            "the formula reads `{what}` of slot `{slot}`, which was not provided"
        ))
    };
    let b = s.mask.dim(0)?;
    // Log-probabilities read as 0 where the mask is 0 (padding may hold NaN or -inf).
    let clean = |t: Tensor| -> Result<Tensor> {
        if !clean_padding {
            return Ok(t);
        }
        let keep = s.mask.to_dtype(DType::F32)?.detach().gt(0.0)?;
        keep.where_cond(&t, &t.zeros_like()?)
    };
    let (t, axis) = match q {
        Quantity::Logp => (clean(token_tensor(s, &s.logp, "logp", slot)?)?, Axis::Token),
        Quantity::RefLogp => (
            clean(
                token_tensor(
                    s,
                    s.ref_logp.as_ref().ok_or_else(|| missing("ref_logp"))?,
                    "ref_logp",
                    slot,
                )?
                .detach(),
            )?,
            Axis::Token,
        ),
        Quantity::OldLogp => (
            clean(
                token_tensor(
                    s,
                    s.old_logp.as_ref().ok_or_else(|| missing("old_logp"))?,
                    "old_logp",
                    slot,
                )?
                .detach(),
            )?,
            Axis::Token,
        ),
        Quantity::Mask => (
            token_tensor(s, &s.mask, "mask", slot)?.detach(),
            Axis::Token,
        ),
        Quantity::Reward => {
            let r = s.reward.as_ref().ok_or_else(|| missing("reward"))?;
            if r.dims() != [b] {
                bail!(
                    "slot `{slot}`: reward has shape {:?}, expected [{b}]",
                    r.dims()
                )
            }
            (r.to_dtype(DType::F32)?.detach(), Axis::Seq)
        }
        Quantity::Length => (s.mask.to_dtype(DType::F32)?.sum(1)?.detach(), Axis::Seq),
        Quantity::MaxTokens => {
            let m = s.max_tokens.ok_or_else(|| missing("max_tokens"))?;
            (Tensor::new(m as f32, s.mask.device())?, Axis::Scalar)
        }
        Quantity::NumSeqs => (Tensor::new(b as f32, s.mask.device())?, Axis::Scalar),
    };
    Ok(Val { t, axis })
}

/// Brings values to a common axis and shape (sequence values become `[B, 1]` next to tokens).
fn common(vals: &[&Val]) -> Result<(Vec<Tensor>, Axis)> {
    let axis = vals.iter().map(|v| v.axis).max().unwrap_or(Axis::Scalar);
    let target = vals
        .iter()
        .find(|v| v.axis == axis)
        .map(|v| v.t.dims().to_vec())
        .unwrap_or_default();
    let out = vals
        .iter()
        .map(|v| {
            let t = if v.axis == Axis::Seq && axis == Axis::Token {
                v.t.unsqueeze(1)?
            } else {
                v.t.clone()
            };
            t.broadcast_as(target.as_slice())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((out, axis))
}

fn unary(f: UnaryOp, x: &Tensor) -> Result<Tensor> {
    match f {
        UnaryOp::Neg => x.neg(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.log(),
        UnaryOp::Log1p => (x + 1.0)?.log(),
        UnaryOp::Sigmoid => (x.neg()?.exp()? + 1.0)?.recip(),
        UnaryOp::LogSigmoid => {
            let m = x.minimum(0.0)?;
            m - (x.abs()?.neg()?.exp()? + 1.0)?.log()?
        }
        UnaryOp::Relu => x.relu(),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Square => x.sqr(),
        UnaryOp::Tanh => x.tanh(),
    }
}

fn binary(f: BinaryOp, a: &Tensor, b: &Tensor, rhs_const: Option<f64>) -> Result<Tensor> {
    let flag = |t: Tensor| t.to_dtype(DType::F32);
    match f {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Pow => match rhs_const {
            Some(c) => a.powf(c),
            None => (b * a.log()?)?.exp(),
        },
        // candle splits the gradient evenly at a tie, as the fused kernels do.
        BinaryOp::Min => a.minimum(b),
        BinaryOp::Max => a.maximum(b),
        BinaryOp::Gt => flag(a.gt(b)?),
        BinaryOp::Ge => flag(a.ge(b)?),
        BinaryOp::Lt => flag(a.lt(b)?),
        BinaryOp::Le => flag(a.le(b)?),
    }
}

fn group_shape(n: usize, group: usize) -> Result<(usize, usize)> {
    if group == 0 || !n.is_multiple_of(group) {
        bail!("{n} sequences do not split into groups of {group}")
    }
    Ok((n / group, group))
}

/// Mean and sample standard deviation over contiguous groups, broadcast back to `[B]`.
fn group_reduce(x: &Tensor, group: usize, std: bool) -> Result<Tensor> {
    let n = x.dim(0)?;
    let (g, k) = group_shape(n, group)?;
    let xs = x.reshape((g, k))?;
    let mean = xs.mean_keepdim(1)?.broadcast_as((g, k))?;
    if !std {
        return mean.reshape(n);
    }
    if k < 2 {
        return x.zeros_like();
    }
    let d = (xs - mean)?;
    (d.sqr()?.sum_keepdim(1)? / (k - 1) as f64)?
        .sqrt()?
        .broadcast_as((g, k))?
        .reshape(n)
}

/// A token count to divide by: counts of 0 become 1, so an empty mean is 0, not NaN.
fn safe_count(count: &Tensor) -> Result<Tensor> {
    count.gt(0.0)?.where_cond(count, &count.ones_like()?)
}

fn token_reduce(f: Reduce, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.detach();
    // `mask > 0 ? x * mask : 0`: NaN or inf in padding never reaches the sum.
    let xm = m.gt(0.0)?.where_cond(&(x * &m)?, &x.zeros_like()?)?;
    match f {
        Reduce::SumTokens => xm.sum(1),
        Reduce::MeanTokens => xm.sum(1)? / safe_count(&m.sum(1)?)?,
        Reduce::SumAllTokens => xm.sum_all(),
        Reduce::MeanAllTokens => xm.sum_all()? / safe_count(&m.sum_all()?)?,
        _ => bail!("{f:?} is not a token reduction"),
    }
}

/// Finishes a fused token reduction from the per-sequence masked sums.
fn finish_token(f: Reduce, sums: Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.detach();
    match f {
        Reduce::SumTokens => Ok(sums),
        Reduce::MeanTokens => sums / safe_count(&m.sum(1)?)?,
        Reduce::SumAllTokens => sums.sum_all(),
        Reduce::MeanAllTokens => sums.sum_all()? / safe_count(&m.sum_all()?)?,
        _ => bail!("{f:?} is not a token reduction"),
    }
}

fn eval(p: &Plan, ctx: &Ctx) -> Result<Val> {
    Ok(match p {
        Plan::Const(v) => Val {
            t: Tensor::new(*v as f32, &device(ctx))?,
            axis: Axis::Scalar,
        },
        Plan::Hyper(h) => {
            let Some(v) = ctx.hypers.get(h) else {
                bail!("hyperparameter `{h}` has no value")
            };
            Val {
                t: Tensor::new(*v as f32, &device(ctx))?,
                axis: Axis::Scalar,
            }
        }
        Plan::Input(q, s) => input(ctx, *q, s, true)?,
        Plan::Unary(f, a) => {
            let a = eval(a, ctx)?;
            Val {
                t: unary(*f, &a.t)?,
                axis: a.axis,
            }
        }
        Plan::Binary(f, a, b) => {
            let rhs_const = match **b {
                Plan::Const(c) => Some(c),
                _ => None,
            };
            let (a, b) = (eval(a, ctx)?, eval(b, ctx)?);
            let (ts, axis) = common(&[&a, &b])?;
            Val {
                t: binary(*f, &ts[0], &ts[1], rhs_const)?,
                axis,
            }
        }
        Plan::Where(c, a, b) => {
            let (c, a, b) = (eval(c, ctx)?, eval(a, ctx)?, eval(b, ctx)?);
            let (ts, axis) = common(&[&c, &a, &b])?;
            Val {
                t: ts[0].gt(0.0)?.where_cond(&ts[1], &ts[2])?,
                axis,
            }
        }
        Plan::Detach(a) => {
            let a = eval(a, ctx)?;
            Val {
                t: a.t.detach(),
                axis: a.axis,
            }
        }
        Plan::Reduce { f, arg, slot } => {
            let a = eval(arg, ctx)?;
            let (want, produced) = f.signature();
            if a.axis != want {
                bail!(
                    "{f:?} expects a {want}-level value, found a {}-level one",
                    a.axis
                )
            }
            let group = |s: &Option<String>| -> Result<usize> {
                match s {
                    Some(s) => Ok(ctx.slot(s)?.group_size),
                    None => Ok(1),
                }
            };
            let t = match f {
                Reduce::SumTokens
                | Reduce::MeanTokens
                | Reduce::SumAllTokens
                | Reduce::MeanAllTokens => {
                    let Some(s) = slot else {
                        bail!("{f:?} without a token slot")
                    };
                    token_reduce(*f, &a.t, &ctx.slot(s)?.mask)?
                }
                Reduce::GroupMean => group_reduce(&a.t, group(slot)?, false)?,
                Reduce::GroupStd => group_reduce(&a.t, group(slot)?, true)?,
                Reduce::BatchMean => group_reduce(&a.t, a.t.dim(0)?, false)?,
                Reduce::BatchStd => group_reduce(&a.t, a.t.dim(0)?, true)?,
                Reduce::MeanSeqs => a.t.mean_all()?,
                Reduce::SumSeqs => a.t.sum_all()?,
            };
            Val { t, axis: produced }
        }
        Plan::Token {
            f,
            slot,
            region,
            leaves,
        } => {
            let mask = &ctx.slot(slot)?.mask;
            let (rows, n) = mask.dims2()?;
            let (cols, uni, diff) = bind(region, leaves, ctx, rows)?;
            let op = RegionOp {
                region: region.clone(),
                cols,
                uni,
                rows,
                n,
            };
            let sums = match diff {
                Some(arg) if region.bwd.is_some() => arg.apply_op1(op)?,
                _ => op.cols[0].clone().apply_op1_no_bwd(&op)?,
            };
            Val {
                t: finish_token(*f, sums, mask)?,
                axis: f.signature().1,
            }
        }
        Plan::Seq { region, leaves } => {
            let (cols, uni, diff) = bind(region, leaves, ctx, 1)?;
            let n = cols[0].dim(0)?;
            let op = RegionOp {
                region: region.clone(),
                cols,
                uni,
                rows: 1,
                n,
            };
            let t = match diff {
                Some(arg) if region.bwd.is_some() => arg.apply_op1(op)?,
                _ => op.cols[0].clone().apply_op1_no_bwd(&op)?,
            };
            Val { t, axis: Axis::Seq }
        }
    })
}

fn device(ctx: &Ctx) -> candle_core::Device {
    ctx.slots
        .values()
        .next()
        .map(|s| s.mask.device().clone())
        .unwrap_or(candle_core::Device::Cpu)
}

/// Evaluates a region's leaves: the columns (detached, contiguous f32), the uniform table
/// (`rows x n_uni`, row-major) and the tensor that carries the gradient (the differentiable
/// columns, stacked for sequence regions).
fn bind(
    region: &CompiledRegion,
    leaves: &[(Leaf, Plan)],
    ctx: &Ctx,
    rows: usize,
) -> Result<(Vec<Tensor>, Vec<f32>, Option<Tensor>)> {
    let nu = region.n_uni as usize;
    let mut cols: Vec<Option<Tensor>> = vec![None; region.n_cols as usize];
    let mut live: Vec<Option<Tensor>> = vec![None; region.n_cols as usize];
    let mut uni = vec![0.0f32; rows * nu];
    for (leaf, p) in leaves {
        let v = match p {
            Plan::Input(q, s) if region.kind == RegionKind::Token && leaf.col.is_some() => {
                input(ctx, *q, s, false)?
            }
            _ => eval(p, ctx)?,
        };
        if let Some(c) = leaf.col {
            let t = v.t.to_dtype(DType::F32)?;
            cols[c as usize] = Some(t.detach().contiguous()?);
            live[c as usize] = Some(t);
        } else if let Some(u) = leaf.uni {
            let u = u as usize;
            match v.axis {
                Axis::Scalar => {
                    let x = v.t.to_dtype(DType::F32)?.reshape(())?.to_scalar::<f32>()?;
                    for r in 0..rows {
                        uni[r * nu + u] = x;
                    }
                }
                _ => {
                    let xs = v.t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                    if xs.len() != rows {
                        bail!(
                            "a sequence-level value has {} entries for {rows} sequences",
                            xs.len()
                        )
                    }
                    for (r, x) in xs.into_iter().enumerate() {
                        uni[r * nu + u] = x;
                    }
                }
            }
        }
    }
    let cols: Vec<Tensor> = cols
        .into_iter()
        .map(|c| {
            c.ok_or_else(|| candle_core::Error::Msg("a fused region column has no value".into()))
        })
        .collect::<Result<_>>()?;
    let shape = cols[0].dims().to_vec();
    if let Some(bad) = cols.iter().find(|c| c.dims() != shape.as_slice()) {
        bail!(
            "fused region columns disagree in shape: {:?} vs {:?}",
            bad.dims(),
            shape
        )
    }
    let diff: Vec<Tensor> = region
        .diff_cols
        .iter()
        .filter_map(|&c| live[c as usize].clone())
        .collect();
    let diff = match (region.kind, diff.len()) {
        (_, 0) => None,
        (RegionKind::Token, _) => Some(diff[0].clone()),
        (RegionKind::Seq, _) => Some(Tensor::stack(&diff, 0)?),
    };
    Ok((cols, uni, diff))
}

/// A fused region applied to tensors. Token regions: output `[rows]` masked sums. Sequence
/// regions (`rows == 1`): output `[n]`. The argument only hooks the op into autograd; the data is
/// read from `cols`.
struct RegionOp {
    region: Arc<CompiledRegion>,
    cols: Vec<Tensor>,
    uni: Vec<f32>,
    rows: usize,
    n: usize,
}

/// Runs `k` over one row of `n` elements: the 4-aligned body in place, the tail through padded
/// buffers (columns padded with their last value, the token mask column with zeros).
///
/// # Safety
/// `cols[k]` valid for `n` reads, `outs[k]` for `n` writes, counts matching the kernel's spec.
unsafe fn run_row(
    k: &JitKernel,
    n: usize,
    cols: &[*const f32],
    uni: &[f32],
    outs: &[*mut f32],
    zero_pad_col: Option<usize>,
) -> f32 {
    let main = n / 4 * 4;
    // SAFETY: the caller's contract covers `main <= n` elements.
    let mut s = if main > 0 {
        unsafe { k.call(main, cols, uni, outs) }
    } else {
        0.0
    };
    let tail = n - main;
    if tail > 0 {
        let mut cb = vec![[0.0f32; 4]; cols.len()];
        for (j, (buf, &p)) in cb.iter_mut().zip(cols).enumerate() {
            for (l, slot) in buf.iter_mut().enumerate() {
                let src = main + l.min(tail - 1);
                // SAFETY: `src < n`, within the column.
                let v = unsafe { *p.add(src) };
                *slot = if Some(j) == zero_pad_col && l >= tail {
                    0.0
                } else {
                    v
                };
            }
        }
        let mut ob = vec![[0.0f32; 4]; outs.len()];
        let cp: Vec<*const f32> = cb.iter().map(|b| b.as_ptr()).collect();
        let op: Vec<*mut f32> = ob.iter_mut().map(|b| b.as_mut_ptr()).collect();
        // SAFETY: every buffer holds exactly 4 values.
        s += unsafe { k.call(4, &cp, uni, &op) };
        for (buf, &o) in ob.iter().zip(outs) {
            for (l, &v) in buf.iter().take(tail).enumerate() {
                // SAFETY: `main + l < n`, within the output row.
                unsafe { *o.add(main + l) = v };
            }
        }
    }
    s
}

/// Read guards and f32 slices of CPU tensors.
fn with_cpu_slices<R>(ts: &[Tensor], f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(ts.len());
    for (g, l) in &guards {
        match &**g {
            Storage::Cpu(c) => slices.push(f32_data(c, l, "fused region column")?),
            _ => bail!(
                "fused formula kernels run on CPU tensors only in this build ({})",
                crate::backend_note()
            ),
        }
    }
    f(&slices)
}

impl RegionOp {
    fn token_mask_col(&self) -> Option<usize> {
        // The mask is a token region's first column (see `region::lower`).
        (self.region.kind == RegionKind::Token).then_some(0)
    }

    fn forward(&self) -> Result<Vec<f32>> {
        let nu = self.region.n_uni as usize;
        let n = self.n;
        let mask_col = self.token_mask_col();
        with_cpu_slices(&self.cols, |cols| {
            match self.region.kind {
                RegionKind::Token => {
                    let mut out = vec![0.0f32; self.rows];
                    par_rows(
                        &mut out,
                        1,
                        threads_above(self.rows * n, FORMULA_PAR_ELEMS),
                        |r0, o| {
                            for (k, v) in o.iter_mut().enumerate() {
                                let r = r0 + k;
                                let ptrs: Vec<*const f32> =
                                    cols.iter().map(|c| c[r * n..].as_ptr()).collect();
                                // SAFETY: each column holds `rows * n` values, so row `r` has `n`.
                                *v = unsafe {
                                    run_row(
                                        &self.region.fwd,
                                        n,
                                        &ptrs,
                                        &self.uni[r * nu..(r + 1) * nu],
                                        &[],
                                        mask_col,
                                    )
                                };
                            }
                        },
                    );
                    Ok(out)
                }
                RegionKind::Seq => {
                    let mut out = vec![0.0f32; n];
                    let ptrs: Vec<*const f32> = cols.iter().map(|c| c.as_ptr()).collect();
                    // SAFETY: every column and the output hold `n` values.
                    unsafe {
                        run_row(
                            &self.region.fwd,
                            n,
                            &ptrs,
                            &self.uni,
                            &[out.as_mut_ptr()],
                            None,
                        )
                    };
                    Ok(out)
                }
            }
        })
    }
}

impl CustomOp1 for RegionOp {
    fn name(&self) -> &'static str {
        "post-fused-formula"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = self.forward()?;
        let shape = Shape::from(out.len());
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.detach().to_dtype(DType::F32)?.contiguous()?;
        let op = RegionBwd { fwd: self };
        Ok(Some(op.run(&g)?))
    }
}

struct RegionBwd<'a> {
    fwd: &'a RegionOp,
}

impl RegionBwd<'_> {
    fn run(&self, g: &Tensor) -> Result<Tensor> {
        let f = self.fwd;
        let Some(kernel) = &f.region.bwd else {
            bail!("fused region has no backward kernel")
        };
        let gv = g.to_vec1::<f32>()?;
        let nu = f.region.n_uni as usize;
        let n = f.n;
        let k_out = f.region.diff_cols.len();
        let dev = g.device().clone();
        match f.region.kind {
            RegionKind::Token => {
                if gv.len() != f.rows {
                    bail!(
                        "fused token region: {} gradients for {} sequences",
                        gv.len(),
                        f.rows
                    )
                }
                let mask_col = f.token_mask_col();
                let mut out = vec![0.0f32; f.rows * n];
                with_cpu_slices(&f.cols, |cols| {
                    if n > 0 {
                        par_rows(
                            &mut out,
                            n,
                            threads_above(f.rows * n, FORMULA_PAR_ELEMS),
                            |r0, o| {
                                let mut u = vec![0.0f32; nu + 1];
                                for (k, orow) in o.chunks_mut(n).enumerate() {
                                    let r = r0 + k;
                                    u[..nu].copy_from_slice(&f.uni[r * nu..(r + 1) * nu]);
                                    u[nu] = gv[r];
                                    let ptrs: Vec<*const f32> =
                                        cols.iter().map(|c| c[r * n..].as_ptr()).collect();
                                    // SAFETY: row `r` of each column and `orow` hold `n` values; the
                                    // token backward has exactly one output.
                                    unsafe {
                                        run_row(
                                            kernel,
                                            n,
                                            &ptrs,
                                            &u,
                                            &[orow.as_mut_ptr()],
                                            mask_col,
                                        )
                                    };
                                }
                            },
                        );
                    }
                    Ok(())
                })?;
                Tensor::from_vec(out, (f.rows, n), &dev)
            }
            RegionKind::Seq => {
                if gv.len() != n {
                    bail!(
                        "fused sequence region: {} gradients for {n} values",
                        gv.len()
                    )
                }
                let mut out = vec![0.0f32; k_out * n];
                with_cpu_slices(&f.cols, |cols| {
                    let mut ptrs: Vec<*const f32> = cols.iter().map(|c| c.as_ptr()).collect();
                    ptrs.push(gv.as_ptr());
                    let outs: Vec<*mut f32> =
                        out.chunks_mut(n.max(1)).map(|c| c.as_mut_ptr()).collect();
                    if n > 0 {
                        // SAFETY: every column, the gradient and each output hold `n` values.
                        unsafe { run_row(kernel, n, &ptrs, &f.uni, &outs, None) };
                    }
                    Ok(())
                })?;
                Tensor::from_vec(out, (k_out, n), &dev)
            }
        }
    }
}
