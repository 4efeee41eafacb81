//! Fused kernels for post: hand-written candle CustomOps and the objective-formula JIT.
//!
//! The pipeline this crate serves, step by step:
//! 1. The compiler lowers an objective into a `post_graph::Expr` (a scalar loss over per-token,
//!    per-sequence and scalar quantities).
//! 2. [`formula`] cuts that expression into element-wise regions (everything between the inputs and
//!    the reductions), differentiates each region symbolically with respect to its differentiable
//!    leaves (simplifying: constant folding, `x*1`, `x+0`, shared subexpressions), and compiles one
//!    forward and one backward kernel per region: Cranelift machine code on the CPU (F32X4 lanes with
//!    inline polynomial exp/log), CUDA C text for NVRTC on the GPU. Token regions fuse their masked
//!    token reduction too. Kernels are cached by a hash of the formula.
//! 3. [`formula::FusedLoss`] evaluates the whole loss: the fused regions as candle CustomOps with
//!    `bwd`, the remaining reductions (group statistics, means over sequences) as plain candle ops.
//! 4. [`ops`] holds hand-written kernels that replace candle ops recording no backward, or ops that
//!    materialise too much memory: token log-probabilities straight from logits (streaming
//!    log-sum-exp), the same fused with the LM-head matmul in row chunks, RMSNorm, softmax and RoPE.
//!
//! Every op has a CPU forward (the reference). CUDA sources live in `kernels/cuda/*.cu`; see
//! [`backend_note`] for what the current build runs.

pub mod cuda_sources;
pub mod formula;
pub mod ops;
mod util;

/// One line saying which backend the fused kernels run on in this build, for logs and `--help`.
pub fn backend_note() -> &'static str {
    if cfg!(feature = "cuda") {
        "post-kernels: fused kernels run on CPU tensors only; tensors on a CUDA device fall back to unfused candle ops (the NVRTC sources in kernels/cuda are not wired into this build)"
    } else {
        "post-kernels: built without the `cuda` feature: every fused kernel runs on the CPU (Cranelift JIT and Rust kernels)"
    }
}
