//! Token log-probabilities fused with the LM-head matmul (Liger's fused linear cross-entropy,
//! Apple's Cut Cross-Entropy): `logp = token_logprobs(hidden @ weight^T, targets)` computed in
//! chunks of rows, so at most `chunk_rows x vocab` logits exist at once. The backward recomputes
//! each chunk's logits and accumulates the gradients of `hidden` and `weight`.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, bail};

use super::logprobs::{TokenLogprobs, TokenLogprobsBwd};

/// Rows per chunk so one chunk of logits takes about 16 MiB.
pub fn default_chunk_rows(vocab: usize) -> usize {
    ((16 << 20) / 4 / vocab.max(1)).clamp(1, 4096)
}

/// `hidden` `[..., H]`, `weight` `[V, H]` (the LM head, as stored by Llama/Qwen models), `targets`
/// `[...]` u32. Returns f32 `[...]`, differentiable with respect to `hidden` and `weight`.
/// `chunk_rows` bounds the rows of logits alive at once (default: [`default_chunk_rows`]).
pub fn fused_linear_token_logprobs(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    chunk_rows: Option<usize>,
) -> Result<Tensor> {
    let dims = hidden.dims();
    let Some((&h, lead)) = dims.split_last() else {
        bail!("fused_linear_token_logprobs: hidden must have a feature dimension, got a scalar")
    };
    let (vocab, wh) = weight.dims2()?;
    if wh != h {
        bail!("fused_linear_token_logprobs: weight is [{vocab}, {wh}] but hidden has {h} features")
    }
    if targets.dims() != lead {
        bail!(
            "fused_linear_token_logprobs: targets have shape {:?}, expected {:?}",
            targets.dims(),
            lead
        )
    }
    if targets.dtype() != DType::U32 {
        bail!(
            "fused_linear_token_logprobs: targets must be u32, found {:?}",
            targets.dtype()
        )
    }
    let rows: usize = lead.iter().product();
    let hidden2 = super::f32_contiguous(&hidden.reshape((rows, h))?)?;
    let weight = super::f32_contiguous(weight)?;
    let targets1 = targets.reshape(rows)?.contiguous()?;
    if !hidden2.device().is_cpu() {
        let logits = hidden2.matmul(&weight.t()?)?;
        return super::composed::token_logprobs(&logits, &targets1)?.reshape(lead);
    }
    let chunk = chunk_rows
        .unwrap_or_else(|| default_chunk_rows(vocab))
        .max(1);
    let op = FusedLinearLogprobs {
        hidden: hidden2.detach(),
        weight: weight.detach(),
        targets: targets1.clone(),
        chunk,
    };
    hidden2.apply_op3(&weight, &targets1, op)?.reshape(lead)
}

/// Holds detached handles of its inputs: the forward runs candle's matmul on them chunk by chunk,
/// which a storage-level kernel could not call.
struct FusedLinearLogprobs {
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    chunk: usize,
}

impl FusedLinearLogprobs {
    fn chunks(&self) -> Vec<(usize, usize)> {
        let rows = self.hidden.dim(0).unwrap_or(0);
        (0..rows)
            .step_by(self.chunk)
            .map(|s| (s, self.chunk.min(rows - s)))
            .collect()
    }

    fn chunk_logits(&self, start: usize, len: usize) -> Result<Tensor> {
        self.hidden
            .narrow(0, start, len)?
            .matmul(&self.weight.t()?)?
            .contiguous()
    }

    fn forward(&self) -> Result<Tensor> {
        let mut parts = Vec::new();
        for (s, n) in self.chunks() {
            let logits = self.chunk_logits(s, n)?;
            let t = self.targets.narrow(0, s, n)?;
            parts.push(logits.apply_op2_no_bwd(&t, &TokenLogprobs)?);
        }
        if parts.is_empty() {
            return Tensor::zeros(0, DType::F32, self.hidden.device());
        }
        Tensor::cat(&parts, 0)
    }
}

impl CustomOp3 for FusedLinearLogprobs {
    fn name(&self) -> &'static str {
        "post-fused-linear-token-logprobs"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = self.forward()?;
        let shape = out.shape().clone();
        Ok((CpuStorage::F32(out.to_vec1::<f32>()?), shape))
    }

    fn bwd(
        &self,
        _hidden: &Tensor,
        _weight: &Tensor,
        _targets: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let res = res.detach();
        let grad = grad.detach();
        let mut gh = Vec::new();
        let mut gw: Option<Tensor> = None;
        for (s, n) in self.chunks() {
            let logits = self.chunk_logits(s, n)?;
            let t = self.targets.narrow(0, s, n)?;
            let packed =
                Tensor::stack(&[res.narrow(0, s, n)?, grad.narrow(0, s, n)?], 1)?.contiguous()?;
            let g_logits = logits.apply_op3_no_bwd(&t, &packed, &TokenLogprobsBwd)?;
            gh.push(g_logits.matmul(&self.weight)?);
            let h = self.hidden.narrow(0, s, n)?;
            let part = g_logits.t()?.matmul(&h)?;
            gw = Some(match gw {
                Some(acc) => (acc + part)?,
                None => part,
            });
        }
        let gh = if gh.is_empty() {
            self.hidden.zeros_like()?
        } else {
            Tensor::cat(&gh, 0)?
        };
        let gw = match gw {
            Some(g) => g,
            None => self.weight.zeros_like()?,
        };
        Ok((Some(gh), Some(gw), None))
    }
}
