//! Token log-probabilities straight from logits: `logp[i] = logits[i, t_i] - logsumexp(logits[i])`
//! in one streaming pass per row, never materialising `log_softmax` (O(rows) extra memory instead
//! of O(rows x vocab)). The backward writes `g_i * (onehot(t_i) - softmax(logits_i))` on the fly,
//! recovering the log-sum-exp from the forward result instead of storing it.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, bail};

use crate::util::{f32_data, fast_exp, par_rows, row_logsumexp, threads_for, u32_data};

/// Log-probability of each target token: `logits` `[..., vocab]` (any float type), `targets` `[...]`
/// (u32 ids below `vocab`); returns f32 `[...]`, differentiable with respect to `logits`.
pub fn token_logprobs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let dims = logits.dims();
    let Some((&vocab, lead)) = dims.split_last() else {
        bail!("token_logprobs: logits must have a vocabulary dimension, got a scalar")
    };
    if targets.dims() != lead {
        bail!(
            "token_logprobs: targets have shape {:?}, expected {:?} (the logits' leading dimensions)",
            targets.dims(),
            lead
        )
    }
    if targets.dtype() != DType::U32 {
        bail!(
            "token_logprobs: targets must be u32, found {:?}",
            targets.dtype()
        )
    }
    let rows: usize = lead.iter().product();
    let logits2 = super::f32_contiguous(&logits.reshape((rows, vocab))?)?;
    let targets1 = targets.reshape(rows)?.contiguous()?;
    let out = if logits2.device().is_cpu() {
        logits2.apply_op2(&targets1, TokenLogprobs)?
    } else {
        super::composed::token_logprobs(&logits2, &targets1)?
    };
    out.reshape(lead)
}

pub(crate) struct TokenLogprobs;

impl CustomOp2 for TokenLogprobs {
    fn name(&self) -> &'static str {
        "post-token-logprobs"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, vocab) = l1.shape().dims2()?;
        let x = f32_data(s1, l1, "token_logprobs logits")?;
        let t = u32_data(s2, l2, "token_logprobs targets")?;
        check_targets(t, rows, vocab)?;
        let mut out = vec![0.0f32; rows];
        par_rows(&mut out, 1, threads_for(rows * vocab), |r0, o| {
            for (k, v) in o.iter_mut().enumerate() {
                let r = r0 + k;
                let row = &x[r * vocab..(r + 1) * vocab];
                *v = row[t[r] as usize] - row_logsumexp(row);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from(rows)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = Tensor::stack(&[res.detach(), grad.detach()], 1)?.contiguous()?;
        let g = logits
            .detach()
            .apply_op3_no_bwd(targets, &packed, &TokenLogprobsBwd)?;
        Ok((Some(g), None))
    }
}

pub(crate) fn check_targets(t: &[u32], rows: usize, vocab: usize) -> Result<()> {
    if t.len() != rows {
        bail!("token_logprobs: {} targets for {rows} rows", t.len())
    }
    if let Some(&bad) = t.iter().find(|&&id| id as usize >= vocab) {
        bail!("token_logprobs: target id {bad} is outside the vocabulary of {vocab}")
    }
    Ok(())
}

/// Gradient of the log-probabilities with respect to the logits. Third input: `[rows, 2]` holding
/// the forward result and the incoming gradient per row.
pub(crate) struct TokenLogprobsBwd;

impl CustomOp3 for TokenLogprobsBwd {
    fn name(&self) -> &'static str {
        "post-token-logprobs-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, vocab) = l1.shape().dims2()?;
        let x = f32_data(s1, l1, "token_logprobs logits")?;
        let t = u32_data(s2, l2, "token_logprobs targets")?;
        let rg = f32_data(s3, l3, "token_logprobs result/grad")?;
        check_targets(t, rows, vocab)?;
        let mut out = vec![0.0f32; rows * vocab];
        par_rows(&mut out, vocab, threads_for(rows * vocab), |r0, o| {
            for (k, orow) in o.chunks_mut(vocab).enumerate() {
                let r = r0 + k;
                let row = &x[r * vocab..(r + 1) * vocab];
                let tid = t[r] as usize;
                // The forward result is x_t - lse, so lse comes back without a second pass.
                let lse = row[tid] - rg[2 * r];
                let g = rg[2 * r + 1];
                for (o, &v) in orow.iter_mut().zip(row) {
                    *o = -g * fast_exp(v - lse);
                }
                orow[tid] += g;
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, vocab))))
    }
}
