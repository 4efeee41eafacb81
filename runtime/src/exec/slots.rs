//! Slot building: the one place where sequences become the tensors an objective reads
//! ([`SlotTensors`]), for data slots (records' prompt + field) and rollout slots (sampled
//! groups) alike.
//!
//! A sequence is `[bos] prompt completion [eos]` (a rollout's context may also hold an expert
//! prefix), right-padded. Log-probabilities are those of each next token (`[n, len - 1]`); the
//! mask is 1 exactly where the predicted token belongs to the completion (including the final
//! eos), so prompt tokens, expert prefixes and padding carry no loss. One dtype rule holds for
//! every slot ([`logp_dtype`]).

use candle_core::{DType, Device, Result, Tensor, bail};

use crate::logprob::next_token_logprobs;
use crate::model::Transformer;
use crate::objectives::SlotTensors;
use crate::rewards::counted;
use crate::rollouts::RolloutBatch;

/// A right-padded batch of prompt + completion sequences.
pub struct SeqBatch {
    /// `[n, len]` u32.
    pub ids: Tensor,
    /// `[n, len - 1]` f32: 1 where the next token is a completion token.
    pub mask: Tensor,
    /// Real (non-padding) tokens in the batch.
    pub tokens: usize,
    /// Longest completion in tokens (eos included).
    pub max_completion: usize,
}

/// Build a batch from already-encoded sequences (`(ids, loss_start)`); loss starts at
/// `loss_start` (the prompt length; later for an expert prefix that is context).
pub fn build_batch(seqs: &[(Vec<u32>, usize)], pad: u32, device: &Device) -> Result<SeqBatch> {
    let len = seqs.iter().map(|(s, _)| s.len()).max().unwrap_or(0).max(2);
    let n = seqs.len();
    let mut ids = Vec::with_capacity(n * len);
    let mut mask = Vec::with_capacity(n * (len - 1));
    let mut tokens = 0;
    let mut max_completion = 0;
    for (s, start) in seqs {
        tokens += s.len();
        max_completion = max_completion.max(s.len().saturating_sub(*start));
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(pad, len - s.len()));
        // Position i predicts token i + 1.
        for i in 0..len - 1 {
            let target = i + 1;
            mask.push(if target >= *start && target < s.len() {
                1f32
            } else {
                0f32
            });
        }
    }
    Ok(SeqBatch {
        ids: Tensor::from_vec(ids, (n, len), device)?,
        mask: Tensor::from_vec(mask, (n, len - 1), device)?,
        tokens,
        max_completion,
    })
}

/// The dtype of every slot's log-probabilities and rewards: f64 for f64 models (tests),
/// otherwise f32 (half-precision models compute the objective in f32).
pub fn logp_dtype(policy: &Transformer) -> DType {
    if policy.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Next-token log-probabilities `[n, len - 1]` of `batch` under `model`, in `dtype`
/// (differentiable).
pub fn logprobs(model: &Transformer, batch: &SeqBatch, dtype: DType) -> Result<Tensor> {
    let logits = model.forward(&batch.ids)?;
    next_token_logprobs(&logits, &batch.ids)?.to_dtype(dtype)
}

/// The tensors of a slot over `batch`: policy log-probabilities (with gradient), the
/// reference's (detached) when `reference` is given, `old_logp` as the detached policy values,
/// the completion mask; no rewards, group size 1.
fn slot_of(
    policy: &Transformer,
    reference: Option<&Transformer>,
    batch: &SeqBatch,
    max_tokens: usize,
) -> Result<SlotTensors> {
    let dtype = logp_dtype(policy);
    let logp = logprobs(policy, batch, dtype)?;
    let ref_logp = match reference {
        Some(r) => Some(logprobs(r, batch, dtype)?.detach()),
        None => None,
    };
    Ok(SlotTensors {
        old_logp: Some(logp.detach()),
        logp,
        ref_logp,
        mask: batch.mask.clone(),
        reward: None,
        group_size: 1,
        max_tokens,
    })
}

/// A data slot: encoded (prompt, field) pairs; `max_tokens` is the longest completion.
pub fn data_slot(
    policy: &Transformer,
    reference: Option<&Transformer>,
    batch: &SeqBatch,
) -> Result<SlotTensors> {
    slot_of(policy, reference, batch, batch.max_completion)
}

/// The sequences of a rollout batch as `(context + completion, context length)`.
pub fn rollout_seqs(batch: &RolloutBatch) -> Vec<(Vec<u32>, usize)> {
    batch
        .seqs
        .iter()
        .map(|s| {
            let mut ids = s.context.clone();
            ids.extend_from_slice(&s.completion);
            (ids, s.context.len())
        })
        .collect()
}

/// A rollout slot: the completion tokens' log-probabilities, the loss mask (completion tokens
/// only; zero for truncated completions when `mask_truncated`), the rewards (counted as
/// [`counted`] says: NaN is 0), the group size and `max_tokens`.
pub fn rollout_slot(
    batch: &RolloutBatch,
    policy: &Transformer,
    reference: Option<&Transformer>,
    pad: u32,
    device: &Device,
    mask_truncated: bool,
) -> Result<SlotTensors> {
    if batch.seqs.is_empty() {
        bail!("rollout produced no sequences");
    }
    let b = build_batch(&rollout_seqs(batch), pad, device)?;
    let mut st = slot_of(policy, reference, &b, batch.max_tokens)?;
    if mask_truncated {
        let keep: Vec<f32> = batch
            .seqs
            .iter()
            .map(|s| if s.truncated { 0.0 } else { 1.0 })
            .collect();
        let keep =
            Tensor::from_vec(keep, (batch.seqs.len(), 1), device)?.to_dtype(st.mask.dtype())?;
        st.mask = st.mask.broadcast_mul(&keep)?;
    }
    let rewards: Vec<f64> = batch.seqs.iter().map(|s| counted(s.reward)).collect();
    st.reward = Some(Tensor::new(rewards.as_slice(), device)?.to_dtype(logp_dtype(policy))?);
    st.group_size = batch.group_size;
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Tokenizer;

    #[test]
    fn mask_covers_completion_and_eos_only() {
        let tok = Tokenizer::builtin_char();
        let a = tok.encode_pair("1+1", "2").unwrap();
        let b = tok.encode_pair("12+1", "13").unwrap();
        assert_eq!(a.1, 4);
        let batch = build_batch(&[a, b], tok.pad_id(), &Device::Cpu).unwrap();
        let mask: Vec<Vec<f32>> = batch.mask.to_vec2().unwrap();
        // a: [bos 1 + 1 2 eos pad pad]: positions 3 and 4 predict `2` and eos.
        assert_eq!(mask[0], vec![0., 0., 0., 1., 1., 0., 0.]);
        // b: [bos 1 2 + 1 1 3 eos]: positions 4..=6 predict `1`, `3`, eos.
        assert_eq!(mask[1], vec![0., 0., 0., 0., 1., 1., 1.]);
        assert_eq!(batch.tokens, 6 + 8);
        assert_eq!(batch.max_completion, 3);
    }
}
