//! Per-token log-probabilities of target tokens under a model's logits, differentiable.
//!
//! `log p(y_t) = logit[y_t] - logsumexp(logits)`: the target logit is gathered and the
//! log-normaliser subtracted, so the full `[b, t, vocab]` log-softmax is never materialised
//! (TRL's "selective log-softmax"). Every op records a backward pass. With fusion on
//! ([`crate::fusion`]) and f32 logits, [`token_logprobs`] runs `post_kernels::ops::token_logprobs`
//! (one streaming pass per row, with a backward) instead of the composed ops, which stay as the
//! reference ([`token_logprobs_with`] picks explicitly).

use candle_core::{D, DType, Result, Tensor};

use crate::fusion::Fusion;

/// `logits` [b, t, v] (float), `targets` [b, t] (integer ids) -> log-probabilities [b, t] in the
/// logits' dtype. Fused or composed as the process-wide [`crate::fusion`] setting says.
pub fn token_logprobs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    token_logprobs_with(logits, targets, Fusion::current())
}

/// [`token_logprobs`] with an explicit choice of kernel (the fused one only serves f32 logits;
/// other dtypes always take the composed path).
pub fn token_logprobs_with(logits: &Tensor, targets: &Tensor, fusion: Fusion) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    let (tb, tt) = targets.dims2()?;
    if (tb, tt) != (b, t) {
        candle_core::bail!(
            "token_logprobs: logits are [{b}, {t}, {v}] but targets are [{tb}, {tt}]"
        );
    }
    if b * t > 0 {
        let max = targets
            .flatten_all()?
            .to_dtype(DType::U32)?
            .max(0)?
            .to_vec0::<u32>()?;
        if max as usize >= v {
            candle_core::bail!("token_logprobs: target id {max} out of range for vocabulary {v}");
        }
    }
    if fusion.is_on() && logits.dtype() == DType::F32 {
        return post_kernels::ops::token_logprobs(logits, &targets.to_dtype(DType::U32)?);
    }
    // The max only stabilises the exponent; its gradient would cancel exactly, so it is detached.
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let lse = logits
        .broadcast_sub(&m)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        .add(&m)?;
    let idx = targets
        .to_dtype(DType::U32)?
        .unsqueeze(D::Minus1)?
        .contiguous()?;
    let picked = logits.contiguous()?.gather(&idx, D::Minus1)?;
    (picked - lse)?.squeeze(D::Minus1)
}

/// Log-probabilities of each next token of `ids` [b, t]: logits at position i score token i+1.
/// Returns [b, t - 1].
pub fn next_token_logprobs(logits: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (_, t, _) = logits.dims3()?;
    if t < 2 {
        candle_core::bail!("next_token_logprobs needs sequences of at least 2 tokens, got {t}");
    }
    let l = logits.narrow(1, 0, t - 1)?;
    let y = ids.narrow(1, 1, t - 1)?;
    token_logprobs(&l, &y)
}

/// [`token_logprobs`] multiplied by `mask` [b, t] (1 = counted, 0 = prompt or padding), so masked
/// positions contribute exactly 0 (and receive no gradient).
pub fn masked_token_logprobs(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let lp = token_logprobs(logits, targets)?;
    if mask.dims() != lp.dims() {
        candle_core::bail!(
            "masked_token_logprobs: mask is {:?} but log-probabilities are {:?}",
            mask.dims(),
            lp.dims()
        );
    }
    // where_cond rather than a product: a -inf log-probability at a masked position must give
    // 0, not NaN.
    let keep = mask.ne(0.0)?;
    keep.where_cond(&lp, &lp.zeros_like()?)
}

/// Per-sequence sums of masked log-probabilities: [b].
pub fn sequence_logprobs(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    masked_token_logprobs(logits, targets, mask)?.sum(D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Float64 reference computed on plain vectors.
    fn reference(logits: &[Vec<f64>], targets: &[usize]) -> Vec<f64> {
        logits
            .iter()
            .zip(targets)
            .map(|(row, &y)| {
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
                row[y] - lse
            })
            .collect()
    }

    #[test]
    fn matches_float64_reference_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let rows: Vec<Vec<f64>> = (0..6)
            .map(|i| {
                (0..5)
                    .map(|j| ((i * 7 + j * 3) % 11) as f64 * 0.37 - 1.5)
                    .collect()
            })
            .collect();
        let targets = [0usize, 4, 2, 2, 1, 3];
        let flat: Vec<f64> = rows.iter().flatten().cloned().collect();
        let var = Var::from_vec(flat, (2, 3, 5), &dev)?;
        let tg = Tensor::from_vec(
            targets.iter().map(|&t| t as u32).collect::<Vec<_>>(),
            (2, 3),
            &dev,
        )?;
        let lp = token_logprobs(var.as_tensor(), &tg)?;
        let got: Vec<f64> = lp.flatten_all()?.to_vec1()?;
        for (g, r) in got.iter().zip(reference(&rows, &targets)) {
            assert!((g - r).abs() < 1e-12, "{g} vs {r}");
        }
        // d/dx_j sum_t logp = onehot(y) - softmax(x).
        let grads = lp.sum_all()?.backward()?;
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .expect("logits receive a gradient")
            .flatten_all()?
            .to_vec1()?;
        for (r, row) in rows.iter().enumerate() {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
            for (j, x) in row.iter().enumerate() {
                let want = f64::from(u8::from(j == targets[r])) - (x - m).exp() / z;
                assert!((g[r * 5 + j] - want).abs() < 1e-12);
            }
        }
        Ok(())
    }

    #[test]
    fn mask_zeroes_positions_and_shapes_are_checked() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[[0f32, 1.0, 2.0], [2.0, 1.0, 0.0]]], &dev)?;
        let tg = Tensor::new(&[[2u32, 2]], &dev)?;
        let mask = Tensor::new(&[[0f32, 1.0]], &dev)?;
        let lp = masked_token_logprobs(&logits, &tg, &mask)?.to_vec2::<f32>()?;
        assert_eq!(lp[0][0], 0.0);
        assert!(lp[0][1] < -2.0);
        let s = sequence_logprobs(&logits, &tg, &mask)?.to_vec1::<f32>()?;
        assert_eq!(s[0], lp[0][1]);
        assert!(token_logprobs(&logits, &Tensor::new(&[[5u32, 0]], &dev)?).is_err());
        assert!(token_logprobs(&logits, &Tensor::new(&[[1u32]], &dev)?).is_err());
        let nt = next_token_logprobs(&logits, &tg)?;
        assert_eq!(nt.dims(), &[1, 1]);
        Ok(())
    }
}
