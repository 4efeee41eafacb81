//! Fusion regions: maximal element-wise pieces of an objective `Expr`, lowered into the IR with
//! their leaves (inputs, hyperparameters, reductions computed outside), differentiated, and
//! compiled into forward and backward kernels (cached by formula hash).
//!
//! Two kinds:
//! - a **token region** is the argument of a token reduction (`sum_tokens`, `mean_tokens`,
//!   `mean_all_tokens`, `sum_all_tokens`); its kernel runs once per sequence and fuses the masked
//!   sum: forward `S_b = sum_t mask * f`, backward `dlogp = g_b * mask * df/dlogp`;
//! - a **sequence region** is an element-wise expression over sequences (the argument of a group,
//!   batch or sequence reduction); forward `y = f`, backward `dcol_k = gy * df/dcol_k` for each
//!   differentiable column.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use post_graph::{Axis, BinaryOp, Expr, Quantity, UnaryOp};

use super::cuda;
pub use super::ir::RegionKind;
use super::ir::{Dag, Fn1, Fn2, NodeId};
use super::jit::{JitKernel, KernelSpec, compile};

/// Where a region leaf's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum LeafSource {
    Input(Quantity, String),
    Hyper(String),
    /// A reduction, evaluated outside the region (itself possibly fused).
    Sub(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    pub source: LeafSource,
    pub axis: Axis,
    /// `Col` index when the leaf varies per element, else `Uni` index.
    pub col: Option<u32>,
    pub uni: Option<u32>,
    /// Reaches the trained model's log-probabilities outside any `detach`.
    pub differentiable: bool,
}

/// A region before compilation: its DAG, root and leaves.
pub struct RegionDraft {
    pub kind: RegionKind,
    pub dag: Dag,
    pub root: NodeId,
    pub leaves: Vec<Leaf>,
    pub n_cols: u32,
    pub n_uni: u32,
}

/// Why a region cannot be fused (the planner then evaluates it with plain candle ops).
#[derive(Debug, Clone, PartialEq)]
pub enum NotFusable {
    /// A per-sequence or scalar leaf of the region carries gradient; the kernels only
    /// differentiate per-element columns.
    DifferentiableUniform(String),
}

fn depends_on_logp(e: &Expr) -> bool {
    match e {
        Expr::Input { quantity, .. } => *quantity == Quantity::Logp,
        Expr::Detach { .. } => false,
        _ => e.children().into_iter().any(depends_on_logp),
    }
}

/// Lowers the element-wise expression `e` (of axis `kind`) into a region. For token regions
/// `slot` names the token slot, whose mask becomes the last column.
pub fn lower(e: &Expr, kind: RegionKind, slot: Option<&str>) -> Result<RegionDraft, NotFusable> {
    let mut b = Builder {
        dag: Dag::default(),
        leaves: Vec::new(),
        kind,
        n_cols: 0,
        n_uni: 0,
        mask: None,
    };
    let root = match (kind, slot) {
        (RegionKind::Token, Some(s)) => {
            // The mask is column 0; log-probabilities read as 0 where it is 0 and the reduction
            // takes `mask > 0 ? mask * f : 0`, so NaN or -inf left in padding never reaches a
            // value or a gradient (the same convention as the runtime's objective evaluator).
            let m = b.leaf(
                LeafSource::Input(Quantity::Mask, s.to_string()),
                Axis::Token,
                true,
            );
            b.mask = Some(m);
            let f = b.build(e, false);
            let weighted = b.dag.bin(Fn2::Mul, m, f);
            let zero = b.dag.constant(0.0);
            b.dag.select(m, weighted, zero)
        }
        _ => b.build(e, false),
    };
    if let Some(l) = b
        .leaves
        .iter()
        .find(|l| l.uni.is_some() && l.differentiable)
    {
        return Err(NotFusable::DifferentiableUniform(format!("{:?}", l.source)));
    }
    Ok(RegionDraft {
        kind,
        dag: b.dag,
        root,
        leaves: b.leaves,
        n_cols: b.n_cols,
        n_uni: b.n_uni,
    })
}

struct Builder {
    dag: Dag,
    leaves: Vec<Leaf>,
    kind: RegionKind,
    n_cols: u32,
    n_uni: u32,
    /// The token mask column of a token region.
    mask: Option<NodeId>,
}

impl Builder {
    fn region_axis(&self) -> Axis {
        match self.kind {
            RegionKind::Token => Axis::Token,
            RegionKind::Seq => Axis::Seq,
        }
    }

    fn leaf(&mut self, source: LeafSource, axis: Axis, detached: bool) -> NodeId {
        let differentiable = !detached
            && match &source {
                LeafSource::Input(q, _) => *q == Quantity::Logp,
                LeafSource::Hyper(_) => false,
                LeafSource::Sub(e) => depends_on_logp(e),
            };
        if let Some(l) = self.leaves.iter_mut().find(|l| l.source == source) {
            l.differentiable |= differentiable;
            let (c, u) = (l.col, l.uni);
            return match (c, u) {
                (Some(c), _) => self.dag.col(c),
                (_, Some(u)) => self.dag.uni(u),
                _ => unreachable!("every leaf has a column or a uniform index"),
            };
        }
        let is_col = axis == self.region_axis();
        let (col, uni) = if is_col {
            self.n_cols += 1;
            (Some(self.n_cols - 1), None)
        } else {
            self.n_uni += 1;
            (None, Some(self.n_uni - 1))
        };
        self.leaves.push(Leaf {
            source,
            axis,
            col,
            uni,
            differentiable,
        });
        match (col, uni) {
            (Some(c), _) => self.dag.col(c),
            (_, Some(u)) => self.dag.uni(u),
            _ => unreachable!("just assigned"),
        }
    }

    fn build(&mut self, e: &Expr, detached: bool) -> NodeId {
        match e {
            Expr::Const { value } => self.dag.constant(*value as f32),
            Expr::Hyper { name } => {
                self.leaf(LeafSource::Hyper(name.clone()), Axis::Scalar, detached)
            }
            Expr::Input { quantity, slot } => {
                let x = self.leaf(
                    LeafSource::Input(*quantity, slot.clone()),
                    quantity.axis(),
                    detached,
                );
                match (quantity, self.mask) {
                    (Quantity::Logp | Quantity::RefLogp | Quantity::OldLogp, Some(m)) => {
                        let zero = self.dag.constant(0.0);
                        self.dag.select(m, x, zero)
                    }
                    _ => x,
                }
            }
            Expr::Reduce { f, .. } => {
                let axis = f.signature().1;
                self.leaf(LeafSource::Sub(e.clone()), axis, detached)
            }
            Expr::Detach { arg } => {
                let a = self.build(arg, true);
                self.dag.stop(a)
            }
            Expr::Unary { f, arg } => {
                let a = self.build(arg, detached);
                let f1 = match f {
                    UnaryOp::Square => return self.dag.bin(Fn2::Mul, a, a),
                    UnaryOp::Neg => Fn1::Neg,
                    UnaryOp::Exp => Fn1::Exp,
                    UnaryOp::Log => Fn1::Log,
                    UnaryOp::Log1p => Fn1::Log1p,
                    UnaryOp::Sigmoid => Fn1::Sigmoid,
                    UnaryOp::LogSigmoid => Fn1::LogSigmoid,
                    UnaryOp::Relu => Fn1::Relu,
                    UnaryOp::Abs => Fn1::Abs,
                    UnaryOp::Sqrt => Fn1::Sqrt,
                    UnaryOp::Tanh => Fn1::Tanh,
                };
                self.dag.un(f1, a)
            }
            Expr::Binary { f, lhs, rhs } => {
                let a = self.build(lhs, detached);
                let b = self.build(rhs, detached);
                let f2 = match f {
                    BinaryOp::Add => Fn2::Add,
                    BinaryOp::Sub => Fn2::Sub,
                    BinaryOp::Mul => Fn2::Mul,
                    BinaryOp::Div => Fn2::Div,
                    BinaryOp::Pow => Fn2::Pow,
                    BinaryOp::Min => Fn2::Min,
                    BinaryOp::Max => Fn2::Max,
                    BinaryOp::Gt => Fn2::Gt,
                    BinaryOp::Ge => Fn2::Ge,
                    BinaryOp::Lt => Fn2::Lt,
                    BinaryOp::Le => Fn2::Le,
                };
                self.dag.bin(f2, a, b)
            }
            Expr::Where {
                cond,
                then,
                otherwise,
            } => {
                let c = self.build(cond, detached);
                let t = self.build(then, detached);
                let o = self.build(otherwise, detached);
                self.dag.select(c, t, o)
            }
        }
    }
}

/// A compiled region: forward and backward kernels (Cranelift) and their CUDA C twin.
pub struct CompiledRegion {
    pub kind: RegionKind,
    pub hash: u64,
    pub n_cols: u32,
    pub n_uni: u32,
    /// Columns the backward differentiates, in the order of its outputs.
    pub diff_cols: Vec<u32>,
    pub fwd: JitKernel,
    pub bwd: Option<JitKernel>,
    /// Readable forward and backward expressions (the simplified DAG).
    pub fwd_listing: String,
    pub bwd_listing: String,
    pub cuda_source: String,
}

/// The specs of a region's kernels: forward, and backward with the columns it differentiates.
pub fn specs(draft: &mut RegionDraft) -> (KernelSpec, Option<(KernelSpec, Vec<u32>)>) {
    let diff_cols: Vec<u32> = draft
        .leaves
        .iter()
        .filter(|l| l.differentiable)
        .filter_map(|l| l.col)
        .collect();
    let dag = &mut draft.dag;
    let root = draft.root;
    match draft.kind {
        RegionKind::Token => {
            let fwd = KernelSpec {
                n_cols: draft.n_cols,
                n_uni: draft.n_uni,
                outputs: vec![],
                reduce: Some(root),
            };
            let g = dag.uni(draft.n_uni);
            let mut outs = Vec::new();
            let mut cols = Vec::new();
            for &c in &diff_cols {
                let d = dag.derivative(root, c);
                if dag.const_value(d) != Some(0.0) {
                    outs.push(dag.bin(Fn2::Mul, g, d));
                    cols.push(c);
                }
            }
            let bwd = (!outs.is_empty()).then(|| {
                (
                    KernelSpec {
                        n_cols: draft.n_cols,
                        n_uni: draft.n_uni + 1,
                        outputs: outs,
                        reduce: None,
                    },
                    cols,
                )
            });
            (fwd, bwd)
        }
        RegionKind::Seq => {
            let fwd = KernelSpec {
                n_cols: draft.n_cols,
                n_uni: draft.n_uni,
                outputs: vec![root],
                reduce: None,
            };
            let g = dag.col(draft.n_cols);
            let mut outs = Vec::new();
            let mut cols = Vec::new();
            for &c in &diff_cols {
                let d = dag.derivative(root, c);
                if dag.const_value(d) != Some(0.0) {
                    outs.push(dag.bin(Fn2::Mul, g, d));
                    cols.push(c);
                }
            }
            let bwd = (!outs.is_empty()).then(|| {
                (
                    KernelSpec {
                        n_cols: draft.n_cols + 1,
                        n_uni: draft.n_uni,
                        outputs: outs,
                        reduce: None,
                    },
                    cols,
                )
            });
            (fwd, bwd)
        }
    }
}

type Cache = Mutex<HashMap<u64, Arc<CompiledRegion>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Compiles a region, or returns the cached kernels of an identical formula.
pub fn compile_region(mut draft: RegionDraft) -> Result<Arc<CompiledRegion>, String> {
    let (fwd, bwd) = specs(&mut draft);
    let fwd_listing = draft.dag.listing(&fwd.roots());
    let bwd_listing = bwd
        .as_ref()
        .map(|(s, _)| draft.dag.listing(&s.roots()))
        .unwrap_or_default();
    let mut h = DefaultHasher::new();
    (draft.kind, draft.n_cols, draft.n_uni).hash(&mut h);
    fwd_listing.hash(&mut h);
    bwd_listing.hash(&mut h);
    let hash = h.finish();
    if let Some(c) = cache().lock().map_err(|e| e.to_string())?.get(&hash) {
        return Ok(c.clone());
    }
    let tag = match draft.kind {
        RegionKind::Token => "token",
        RegionKind::Seq => "seq",
    };
    let fwd_k = compile(&draft.dag, &fwd, &format!("post_{tag}_{hash:016x}_fwd"))?;
    let (bwd_k, diff_cols) = match &bwd {
        Some((spec, cols)) => (
            Some(compile(
                &draft.dag,
                spec,
                &format!("post_{tag}_{hash:016x}_bwd"),
            )?),
            cols.clone(),
        ),
        None => (None, vec![]),
    };
    let cuda_source = cuda::emit(
        &draft.dag,
        draft.kind,
        hash,
        &fwd,
        bwd.as_ref().map(|(s, _)| s),
    );
    let region = Arc::new(CompiledRegion {
        kind: draft.kind,
        hash,
        n_cols: draft.n_cols,
        n_uni: draft.n_uni,
        diff_cols,
        fwd: fwd_k,
        bwd: bwd_k,
        fwd_listing,
        bwd_listing,
        cuda_source,
    });
    cache()
        .lock()
        .map_err(|e| e.to_string())?
        .insert(hash, region.clone());
    Ok(region)
}

/// The slot of the token inputs a token region reads (a token reduction's argument always has
/// one, outside any nested reduction).
pub fn token_slot(e: &Expr) -> Option<String> {
    match e {
        Expr::Input { quantity, slot } if quantity.axis() == Axis::Token => Some(slot.clone()),
        Expr::Reduce { .. } => None,
        _ => e.children().into_iter().find_map(token_slot),
    }
}
