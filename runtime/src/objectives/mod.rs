//! Objectives: evaluates an objective formula ([`post_graph::Expr`]) on candle tensors.
//!
//! The compiler inlines every objective (sft, dpo, grpo, ...) into one `Expr` over named slots;
//! the trainer fills a [`SlotTensors`] per slot (per-token log-probabilities, masks, rewards) and
//! calls [`evaluate_loss_fused`] (or [`evaluate_loss`] with fusion off), then backpropagates the
//! returned scalar. Gradients flow only through `logp`.
//!
//! The evaluation itself lives in `post_kernels::formula`: one candle interpreter of `Expr`
//! (`formula::interp`, whose module docs give the numerical choices), the fused kernels around it,
//! and one fallback decision between them ([`FusedLoss::evaluate`]). The scalar semantics of every
//! operator are `post_graph::scalar`, shared with the compiler's constant folding.

use std::collections::BTreeMap;

use candle_core::{Result, Tensor};
use post_graph::Expr;

/// The tensors of one slot, and slots by name: one type from the trainer to the kernels.
pub use post_kernels::formula::{SlotMap, SlotTensors, evaluate_per_seq};

/// An objective planned for the fused path: the element-wise parts of its formula compiled by
/// `post_kernels::formula` (Cranelift on the CPU) around candle reductions.
pub use post_kernels::formula::FusedLoss;

/// Evaluate the scalar loss `expr` on `slots` with plain candle ops, with `hypers` giving every
/// `Expr::Hyper`. The result is a 0-d tensor in the dtype of the slots' `logp`, differentiable
/// through `logp`.
pub fn evaluate_loss(
    expr: &Expr,
    slots: &SlotMap,
    hypers: &BTreeMap<String, f64>,
) -> Result<Tensor> {
    post_kernels::formula::evaluate_unfused(expr, slots, hypers)
}

/// Plan `expr` for [`evaluate_loss_fused`]; `None` when fusion is off (`POST_FUSED=0`) or the
/// formula cannot be planned (then [`evaluate_loss`] is the path).
pub fn plan_fused(expr: &Expr) -> Option<FusedLoss> {
    if !crate::fusion::kernels_enabled() {
        return None;
    }
    FusedLoss::new(expr).ok()
}

/// [`evaluate_loss`] through fused kernels: the same value and gradient (the parity tests check
/// both). `expr` is the formula `fused` was planned from; [`FusedLoss::evaluate`] decides alone
/// when the kernels apply (f32 on the CPU) and otherwise interprets that formula.
pub fn evaluate_loss_fused(
    fused: &FusedLoss,
    expr: &Expr,
    slots: &SlotMap,
    hypers: &BTreeMap<String, f64>,
) -> Result<Tensor> {
    debug_assert!(
        fused.loss() == expr,
        "a fused plan evaluated for another formula"
    );
    fused.evaluate(slots, hypers)
}
