//! Turning records into padded token batches with loss masks, and those into the per-slot
//! tensors an objective reads ([`SlotTensors`]).
//!
//! A sequence is `[bos] prompt completion [eos]`, right-padded. Log-probabilities are those of
//! each next token (`[n, len - 1]`); the mask is 1 exactly where the predicted token belongs to
//! the completion (including the final eos), so prompt tokens and padding carry no loss.

use candle_core::{DType, Device, Result, Tensor};

use crate::logprob::next_token_logprobs;
use crate::model::Transformer;
use crate::objectives::SlotTensors;
use crate::tokenizer::Tokenizer;

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

/// Token ids of a (prompt, completion) pair: `[bos] prompt completion eos`, and the prompt
/// length (bos included).
pub fn encode_pair(
    tok: &Tokenizer,
    prompt: &str,
    completion: &str,
) -> std::result::Result<(Vec<u32>, usize), String> {
    let mut ids: Vec<u32> = tok.bos_id().into_iter().collect();
    ids.extend(tok.encode(prompt).map_err(|e| e.to_string())?);
    let prompt_len = ids.len();
    ids.extend(tok.encode(completion).map_err(|e| e.to_string())?);
    ids.push(tok.eos_id());
    Ok((ids, prompt_len))
}

/// Prompt ids for generation: `[bos] prompt`.
pub fn encode_prompt(tok: &Tokenizer, prompt: &str) -> std::result::Result<Vec<u32>, String> {
    let mut ids: Vec<u32> = tok.bos_id().into_iter().collect();
    ids.extend(tok.encode(prompt).map_err(|e| e.to_string())?);
    if ids.is_empty() {
        // A model needs at least one token to condition on; the eos id stands in for a
        // missing bos (Hugging Face tokenizers without one, QFFT's empty prompts).
        ids.push(tok.eos_id());
    }
    Ok(ids)
}

/// Build a batch from already-encoded sequences (`(ids, prompt_len)`); loss starts at
/// `loss_start` (usually the prompt length; later for an expert prefix that is context).
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

/// Next-token log-probabilities `[n, len - 1]` of `batch` under `model` (differentiable).
pub fn logprobs(model: &Transformer, batch: &SeqBatch) -> Result<Tensor> {
    let logits = model.forward(&batch.ids)?;
    next_token_logprobs(&logits, &batch.ids)?.to_dtype(DType::F32)
}

/// The slot tensors for `batch`: policy log-probabilities (with gradient), the reference's
/// (detached) when `reference` is given, `old_logp` as the detached policy values.
pub fn slot_tensors(
    policy: &Transformer,
    reference: Option<&Transformer>,
    batch: &SeqBatch,
    max_tokens: usize,
) -> Result<SlotTensors> {
    let logp = logprobs(policy, batch)?;
    let ref_logp = match reference {
        Some(r) => Some(logprobs(r, batch)?.detach()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_covers_completion_and_eos_only() {
        let tok = Tokenizer::builtin_char();
        let a = encode_pair(&tok, "1+1", "2").unwrap();
        let b = encode_pair(&tok, "12+1", "13").unwrap();
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
