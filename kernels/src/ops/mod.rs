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

/// Unfused candle compositions of the ops, differentiable through candle's autograd: used on
/// devices the fused kernels do not cover in this build (see [`crate::backend_note`]).
pub(crate) mod composed {
    use candle_core::{D, Result, Tensor};

    pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
        let m = x.max_keepdim(D::Minus1)?.detach();
        let s = x.broadcast_sub(&m)?;
        s.broadcast_sub(&s.exp()?.sum_keepdim(D::Minus1)?.log()?)
    }

    pub fn token_logprobs(logits2: &Tensor, targets1: &Tensor) -> Result<Tensor> {
        log_softmax(logits2)?
            .gather(&targets1.unsqueeze(1)?, 1)?
            .squeeze(1)
    }

    pub fn softmax(x: &Tensor) -> Result<Tensor> {
        log_softmax(x)?.exp()
    }

    pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
        x.broadcast_mul(&r)?.broadcast_mul(w)
    }

    pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let d = x.dim(3)?;
        let (x1, x2) = (x.narrow(3, 0, d / 2)?, x.narrow(3, d / 2, d / 2)?);
        let (c, s) = (
            cos.unsqueeze(0)?.unsqueeze(0)?,
            sin.unsqueeze(0)?.unsqueeze(0)?,
        );
        let y1 = (x1.broadcast_mul(&c)? - x2.broadcast_mul(&s)?)?;
        let y2 = (x1.broadcast_mul(&s)? + x2.broadcast_mul(&c)?)?;
        Tensor::cat(&[y1, y2], 3)
    }
}
