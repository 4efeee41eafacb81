//! Hand-written fused ops as candle CustomOps, each with a CPU forward (the reference) and a
//! backward. They replace candle ops that either record no backward (`softmax_last_dim`,
//! `rms_norm`, `rope`) or materialise a full `[tokens, vocab]` tensor (`log_softmax` + `gather`).
//!
//! Every public function takes and returns ordinary tensors and is differentiable through
//! candle's autograd (`Tensor::backward`).

mod linear_logprobs;
mod logprobs;
mod rms_norm;
mod rope;
mod softmax;

pub use linear_logprobs::{default_chunk_rows, fused_linear_token_logprobs};
pub use logprobs::token_logprobs;
pub use rms_norm::rms_norm;
pub use rope::rope;
pub use softmax::softmax_last_dim;

use candle_core::{DType, Result, Tensor};

/// The tensor as contiguous f32, converting other float types (the conversion is differentiable).
pub(crate) fn f32_contiguous(t: &Tensor) -> Result<Tensor> {
    let t = if t.dtype() == DType::F32 {
        t.clone()
    } else {
        t.to_dtype(DType::F32)?
    };
    t.contiguous()
}
