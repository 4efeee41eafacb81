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
//! [`interp`] is the one candle interpreter of `Expr`: [`evaluate_unfused`] (other dtypes and
//! devices, fusion off, and the reference the parity tests and the benchmark compare against)
//! and every non-fused node of a plan both run through it.

mod cuda;
pub mod interp;
pub mod ir;
pub mod jit;
pub mod region;

use interp::{Ctx, Val};
pub use interp::{SlotMap, SlotTensors, evaluate_per_seq, evaluate_unfused};

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
        /// The slot whose groups a group reduction of the region's value uses.
        slot: String,
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

fn plan(
    e: &Expr,
    regions: &mut Vec<(Arc<CompiledRegion>, String)>,
) -> std::result::Result<Plan, FormulaError> {
    let mut sub = |x: &Expr| plan(x, regions).map(Box::new);
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
                if let Ok(draft) = region::lower(arg, RegionKind::Token, Some(&slot)) {
                    let leaves = plan_leaves(&draft.leaves, regions)?;
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
                    arg: Box::new(plan(arg, regions)?),
                }
            } else {
                let inner = if !is_leaf(arg) {
                    match (
                        region::lower(arg, RegionKind::Seq, None),
                        interp::value_slot(arg),
                    ) {
                        (Ok(draft), Some(slot)) => {
                            let leaves = plan_leaves(&draft.leaves, regions)?;
                            let legend = legend(&draft.leaves);
                            let r = region::compile_region(draft).map_err(FormulaError::Jit)?;
                            regions.push((r.clone(), legend));
                            Plan::Seq {
                                region: r,
                                leaves,
                                slot,
                            }
                        }
                        _ => plan(arg, regions)?,
                    }
                } else {
                    plan(arg, regions)?
                };
                Plan::Reduce {
                    f: *f,
                    arg: Box::new(inner),
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
    regions: &mut Vec<(Arc<CompiledRegion>, String)>,
) -> std::result::Result<Vec<(Leaf, Plan)>, FormulaError> {
    leaves
        .iter()
        .map(|l| {
            let p = match &l.source {
                LeafSource::Input(q, s) => Plan::Input(*q, s.clone()),
                LeafSource::Hyper(h) => Plan::Hyper(h.clone()),
                LeafSource::Sub(e) => plan(e, regions)?,
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
        let plan = plan(loss, &mut regions)?;
        Ok(FusedLoss {
            loss: loss.clone(),
            plan,
            regions,
        })
    }

    /// The scalar loss, differentiable with respect to every slot's `logp`. The one fallback
    /// decision: the fused kernels run on f32 CPU tensors; any other dtype or device takes the
    /// candle interpreter ([`evaluate_unfused`]), with the same value and gradient.
    pub fn evaluate(&self, slots: &SlotMap, hypers: &BTreeMap<String, f64>) -> Result<Tensor> {
        let ctx = Ctx::new(slots, hypers)?;
        if !Self::runs_fused(slots) {
            return ctx.scalar_result(ctx.eval(&self.loss)?);
        }
        ctx.scalar_result(eval(&self.plan, &ctx)?)
    }

    /// Whether [`FusedLoss::evaluate`] runs the fused kernels on these slots (f32 on the CPU)
    /// rather than the candle interpreter.
    pub fn runs_fused(slots: &SlotMap) -> bool {
        slots
            .values()
            .next()
            .is_some_and(|s| s.logp.dtype() == DType::F32 && s.logp.device().is_cpu())
    }

    /// The formula this plan was made from.
    pub fn loss(&self) -> &Expr {
        &self.loss
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

/// A token count to divide by: counts of 0 become 1, so an empty mean is 0, not NaN.
fn safe_count(count: &Tensor) -> Result<Tensor> {
    count.gt(0.0)?.where_cond(count, &count.ones_like()?)
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

/// Runs a plan: fused regions as CustomOps, every other node through the candle interpreter's
/// own operations ([`interp`]), so the fused and unfused paths share every tensor semantic.
fn eval(p: &Plan, ctx: &Ctx) -> Result<Val> {
    Ok(match p {
        Plan::Const(v) => Val::Num(*v),
        Plan::Hyper(h) => Val::Num(ctx.hyper(h)?),
        Plan::Input(q, s) => ctx.input(*q, s, true)?,
        Plan::Unary(f, a) => interp::unary_val(*f, eval(a, ctx)?)?,
        Plan::Binary(f, a, b) => {
            let (a, b) = (eval(a, ctx)?, eval(b, ctx)?);
            ctx.binary(*f, a, b)?
        }
        Plan::Where(c, a, b) => {
            let (c, a, b) = (eval(c, ctx)?, eval(a, ctx)?, eval(b, ctx)?);
            ctx.where_(c, a, b)?
        }
        Plan::Detach(a) => interp::detach_val(eval(a, ctx)?),
        Plan::Reduce { f, arg } => {
            let a = eval(arg, ctx)?;
            ctx.reduce(*f, a)?
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
            let t = finish_token(*f, sums, mask)?;
            match f.signature().1 {
                Axis::Seq => Val::Seq {
                    t,
                    slot: slot.clone(),
                },
                _ => Val::Scalar(t),
            }
        }
        Plan::Seq {
            region,
            leaves,
            slot,
        } => {
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
            Val::Seq {
                t,
                slot: slot.clone(),
            }
        }
    })
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
                ctx.input(*q, s, false)?
            }
            _ => eval(p, ctx)?,
        };
        if let Some(c) = leaf.col {
            let t = match v {
                Val::Seq { t, .. } | Val::Token { t, .. } => t.to_dtype(DType::F32)?,
                _ => bail!("a fused region column got a scalar value"),
            };
            cols[c as usize] = Some(t.detach().contiguous()?);
            live[c as usize] = Some(t);
        } else if let Some(u) = leaf.uni {
            let u = u as usize;
            let scalar = match &v {
                Val::Num(x) => Some(*x as f32),
                Val::Scalar(t) => Some(t.to_dtype(DType::F32)?.reshape(())?.to_scalar::<f32>()?),
                _ => None,
            };
            match (scalar, v) {
                (Some(x), _) => {
                    for r in 0..rows {
                        uni[r * nu + u] = x;
                    }
                }
                (None, Val::Seq { t, .. }) => {
                    let xs = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
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
                (None, _) => bail!("a fused region uniform got a per-token value"),
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
