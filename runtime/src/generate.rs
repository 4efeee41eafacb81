//! Batched sampling with a KV cache kept outside the model.
//!
//! Prompts of different lengths are left-padded into one batch (see the padding convention in
//! `crate::model`); each step samples one token per unfinished row on the CPU from the last
//! column's logits: temperature (0 = greedy argmax, lowest id on ties), then top-k, then top-p
//! on the renormalised top-k distribution, as Hugging Face's warpers do. Randomness comes only
//! from the `ChaCha8Rng` passed in, consumed in row order for unfinished rows, so a seed fixes
//! the output.
//!
//! A row ends at an end-of-sequence id (kept as its last token), when its decoded completion
//! contains a stop string (the token that completed it is kept, and the text includes the
//! stop string), or at `max_tokens` / the model's context (then `truncated` is true).

use candle_core::{DType, Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::model::Transformer;
use crate::tokenizer::Tokenizer;

/// Prompts generated per `generate` call (bounds the KV cache).
pub const GEN_CHUNK: usize = 64;

/// How to sample. `Default`: greedy, no filters, 64 new tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f64,
    /// 0 = no top-k filter.
    pub top_k: usize,
    /// 1.0 = no nucleus filter; otherwise in (0, 1).
    pub top_p: f64,
    /// Maximum number of new tokens per prompt.
    pub max_tokens: usize,
    /// A row ends when its decoded completion contains one of these (needs a tokenizer).
    pub stop: Vec<String>,
    /// Ids that end a row, in addition to the tokenizer's end-of-sequence id.
    pub eos_ids: Vec<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            max_tokens: 64,
            stop: Vec::new(),
            eos_ids: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// The settings of a lowered rollout (`post_graph::Sampling`); `n` and `model` are the
    /// caller's business.
    pub fn from_graph(s: &post_graph::Sampling) -> Self {
        Self {
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            max_tokens: s.max_tokens,
            stop: s.stop.clone(),
            eos_ids: Vec::new(),
        }
    }

    fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            candle_core::bail!("sampling: temperature {} must be >= 0", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            candle_core::bail!("sampling: top_p {} must be in (0, 1]", self.top_p);
        }
        if self.stop.iter().any(String::is_empty) {
            candle_core::bail!("sampling: empty stop string");
        }
        Ok(())
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    /// The stop string that matched.
    Stop(String),
    MaxTokens,
    /// The model's context length was reached first.
    Context,
}

/// One completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The new tokens (the prompt is not repeated); ends with the eos id when it stopped there.
    pub tokens: Vec<u32>,
    /// The decoded completion (special tokens skipped), when a tokenizer was given.
    pub text: Option<String>,
    /// Hit `max_tokens` or the context without an eos or stop string.
    pub truncated: bool,
    pub stop_reason: StopReason,
}

/// Samples one completion per prompt. `prompts` must be non-empty token lists (a prompt may
/// end with a forced prefix of the answer: the completion continues after it).
pub fn generate(
    model: &Transformer,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Generation>> {
    params.validate()?;
    if !params.stop.is_empty() && tokenizer.is_none() {
        candle_core::bail!("sampling: stop strings need a tokenizer to decode completions");
    }
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = model.config().max_position_embeddings;
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            candle_core::bail!("sampling: prompt {i} is empty (start it with a BOS token)");
        }
        if p.len() >= ctx {
            candle_core::bail!(
                "sampling: prompt {i} has {} tokens, the model's context is {ctx}",
                p.len()
            );
        }
    }
    let mut eos = params.eos_ids.clone();
    if let Some(t) = tokenizer {
        eos.push(t.eos_id());
    }
    let pad = tokenizer.map(|t| t.pad_id()).unwrap_or(0);
    let b = prompts.len();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    // New tokens allowed per row: max_tokens, or fewer where the context ends first.
    let limits: Vec<usize> = prompts
        .iter()
        .map(|p| params.max_tokens.min(ctx - p.len()))
        .collect();
    let steps = limits.iter().copied().max().unwrap_or(0);
    let mut out: Vec<Generation> = limits
        .iter()
        .map(|&l| Generation {
            tokens: Vec::new(),
            text: tokenizer.map(|_| String::new()),
            truncated: true,
            stop_reason: if l < params.max_tokens {
                StopReason::Context
            } else {
                StopReason::MaxTokens
            },
        })
        .collect();
    if steps == 0 {
        return Ok(out);
    }
    let left_pad: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
    let mut flat = Vec::with_capacity(b * width);
    for (p, &lp) in prompts.iter().zip(&left_pad) {
        flat.extend(std::iter::repeat_n(pad, lp));
        flat.extend_from_slice(p);
    }
    let dev = model.device();
    let mut cache = model.new_cache(left_pad, width + steps)?;
    let ids = Tensor::from_vec(flat, (b, width), dev)?;
    let mut logits = model.forward_cached_last(&ids, &mut cache)?;
    let mut done = vec![false; b];
    for _ in 0..steps {
        let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
        let mut next = vec![pad; b];
        for r in 0..b {
            if done[r] {
                continue;
            }
            let tok = sample_token(&rows[r], params, rng)?;
            next[r] = tok;
            let g = &mut out[r];
            g.tokens.push(tok);
            if eos.contains(&tok) {
                (done[r], g.truncated, g.stop_reason) = (true, false, StopReason::Eos);
            }
            if let Some(t) = tokenizer {
                let text = t
                    .decode(&g.tokens)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                if !done[r]
                    && let Some(s) = params.stop.iter().find(|s| text.contains(s.as_str()))
                {
                    (done[r], g.truncated) = (true, false);
                    g.stop_reason = StopReason::Stop(s.clone());
                }
                g.text = Some(text);
            }
            if g.tokens.len() >= limits[r] {
                done[r] = true; // stop_reason / truncated keep their max-tokens or context value
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        let ids = Tensor::from_vec(next, (b, 1), dev)?;
        logits = model.forward_cached_last(&ids, &mut cache)?;
    }
    Ok(out)
}

/// The sampling loop of rollouts and evals: `n` completions for each context (consecutive per
/// context), generated [`GEN_CHUNK`] prompts per call.
pub fn generate_n(
    model: &Transformer,
    tok: &Tokenizer,
    contexts: &[Vec<u32>],
    n: usize,
    params: &SamplingParams,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Generation>> {
    let mut prompts = Vec::with_capacity(contexts.len() * n);
    for c in contexts {
        for _ in 0..n {
            prompts.push(c.clone());
        }
    }
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(GEN_CHUNK) {
        out.extend(generate(model, Some(tok), chunk, params, rng)?);
    }
    Ok(out)
}

/// The generation contexts of `prompts`: [`Tokenizer::encode_prompt`] of each.
pub fn prompt_contexts<'a>(
    tok: &Tokenizer,
    prompts: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Vec<u32>>> {
    prompts
        .into_iter()
        .map(|p| tok.encode_prompt(p).map_err(candle_core::Error::Msg))
        .collect()
}

/// Draws one token from a row of logits under `params` (greedy when temperature is 0).
pub fn sample_token(logits: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> Result<u32> {
    if params.temperature == 0.0 {
        return argmax(logits);
    }
    let support = filter_support(logits, params.temperature, params.top_k, params.top_p)?;
    let u: f64 = rng.random::<f64>();
    let mut acc = 0.0;
    for &(id, p) in &support {
        acc += p;
        if u < acc {
            return Ok(id);
        }
    }
    // Rounding can leave the cumulative sum a hair below 1: the last token takes the remainder.
    support
        .last()
        .map(|&(id, _)| id)
        .ok_or_else(|| candle_core::Error::Msg("sampling: empty support".into()))
}

/// Index of the largest logit, the lowest on ties; errors on NaN.
pub fn argmax(logits: &[f32]) -> Result<u32> {
    let mut best: Option<usize> = None;
    for (i, &x) in logits.iter().enumerate() {
        if x.is_nan() {
            candle_core::bail!("sampling: NaN logit at id {i}");
        }
        if best.is_none_or(|b| x > logits[b]) {
            best = Some(i);
        }
    }
    best.map(|i| i as u32)
        .ok_or_else(|| candle_core::Error::Msg("sampling: empty logits".into()))
}

/// The tokens that may be sampled and their renormalised probabilities: most probable first
/// (ties: lower id first) when a filter is active, in id order otherwise. `temperature` > 0 scales the logits; `top_k` > 0 keeps the k most
/// probable; `top_p` < 1 then keeps the smallest most-probable prefix whose mass reaches
/// `top_p`. Without a full sort of the vocabulary: top-k selects with `select_nth_unstable`,
/// and top-p alone widens a selected window until it holds enough mass.
pub fn filter_support(
    logits: &[f32],
    temperature: f64,
    top_k: usize,
    top_p: f64,
) -> Result<Vec<(u32, f64)>> {
    if !(temperature.is_finite() && temperature > 0.0) {
        candle_core::bail!("sampling: temperature {temperature} must be > 0 here");
    }
    if let Some(i) = logits.iter().position(|x| x.is_nan()) {
        candle_core::bail!("sampling: NaN logit at id {i}");
    }
    let n = logits.len();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        candle_core::bail!("sampling: no finite logit (max {max})");
    }
    let weight = |i: usize| (f64::from(logits[i] - max) / temperature).exp();
    // Descending logit, ascending id: a total order, so the selected sets are exact.
    let order = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let top = |k: usize| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        if k < n {
            idx.select_nth_unstable_by(k - 1, order);
            idx.truncate(k);
        }
        // The order is total, so an unstable sort is deterministic.
        idx.sort_unstable_by(order);
        idx
    };
    let k = if top_k == 0 { n } else { top_k.min(n) };
    let mut support: Vec<usize>;
    if top_p >= 1.0 {
        // Without a filter the order does not matter for sampling: no sort at all.
        support = if k < n { top(k) } else { (0..n).collect() };
    } else if k < n {
        support = top(k);
        let z: f64 = support.iter().map(|&i| weight(i)).sum();
        cut_to_mass(&mut support, &weight, top_p * z);
    } else {
        let z: f64 = (0..n).map(weight).sum();
        let mut w = n.min(64);
        loop {
            support = top(w);
            let mass: f64 = support.iter().map(|&i| weight(i)).sum();
            if mass >= top_p * z || w == n {
                cut_to_mass(&mut support, &weight, top_p * z);
                break;
            }
            w = (w * 4).min(n);
        }
    }
    let kept: f64 = support.iter().map(|&i| weight(i)).sum();
    Ok(support
        .into_iter()
        .map(|i| (i as u32, weight(i) / kept))
        .filter(|&(_, p)| p > 0.0)
        .collect())
}

/// Keeps the shortest prefix of `sorted` whose weight reaches `target` (at least one token).
fn cut_to_mass(sorted: &mut Vec<usize>, weight: &impl Fn(usize) -> f64, target: f64) {
    let mut acc = 0.0;
    for (pos, &i) in sorted.iter().enumerate() {
        acc += weight(i);
        if acc >= target {
            sorted.truncate(pos + 1);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn ids(s: &[(u32, f64)]) -> Vec<u32> {
        s.iter().map(|&(i, _)| i).collect()
    }

    #[test]
    fn top_k_keeps_exactly_the_k_largest() -> Result<()> {
        let logits = [0.5f32, 3.0, -1.0, 2.0, 2.5, 0.0, 1.0];
        let s = filter_support(&logits, 1.0, 3, 1.0)?;
        assert_eq!(ids(&s), vec![1, 4, 3]);
        // Renormalised over the support only.
        let z: f64 = [3.0f64, 2.5, 2.0].iter().map(|x| (x - 3.0).exp()).sum();
        assert!((s[0].1 - 1.0 / z).abs() < 1e-12);
        assert!((s.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-12);
        // Ties at the boundary go to the lower id.
        let tied = [1.0f32, 2.0, 1.0, 1.0];
        assert_eq!(ids(&filter_support(&tied, 1.0, 2, 1.0)?), vec![1, 0]);
        // k >= vocabulary keeps everything.
        assert_eq!(filter_support(&logits, 1.0, 100, 1.0)?.len(), 7);
        Ok(())
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_p() -> Result<()> {
        // Probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625 (log-space logits).
        let p = [0.0625f64, 0.5, 0.125, 0.25, 0.0625];
        let logits: Vec<f32> = p.iter().map(|x| x.ln() as f32).collect();
        assert_eq!(ids(&filter_support(&logits, 1.0, 0, 0.5)?), vec![1]);
        assert_eq!(ids(&filter_support(&logits, 1.0, 0, 0.6)?), vec![1, 3]);
        assert_eq!(ids(&filter_support(&logits, 1.0, 0, 0.8)?), vec![1, 3, 2]);
        assert_eq!(
            ids(&filter_support(&logits, 1.0, 0, 0.9)?),
            vec![1, 3, 2, 0]
        );
        let s = filter_support(&logits, 1.0, 0, 0.6)?;
        assert!((s[0].1 - 2.0 / 3.0).abs() < 1e-6 && (s[1].1 - 1.0 / 3.0).abs() < 1e-6);
        // top-k first, then top-p on the renormalised top-k: {1: .5/.875, 3: .25/.875, 2: ...}.
        assert_eq!(ids(&filter_support(&logits, 1.0, 3, 0.8)?), vec![1, 3]);
        // Temperature flattens: at T = 1e6 all five are near 0.2 and p = 0.5 needs three.
        assert_eq!(filter_support(&logits, 1e6, 0, 0.5)?.len(), 3);
        Ok(())
    }

    #[test]
    fn top_p_window_grows_past_64_on_a_flat_vocabulary() -> Result<()> {
        let logits = vec![0f32; 1000];
        let s = filter_support(&logits, 1.0, 0, 0.5)?;
        assert_eq!(s.len(), 500);
        assert_eq!(ids(&s), (0..500).collect::<Vec<u32>>());
        Ok(())
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() -> Result<()> {
        let logits = [0.0f32, (3.0f64).ln() as f32, f32::NEG_INFINITY];
        let params = SamplingParams {
            temperature: 1.0,
            ..Default::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = [0usize; 3];
        for _ in 0..4000 {
            counts[sample_token(&logits, &params, &mut rng)? as usize] += 1;
        }
        assert_eq!(counts[2], 0, "a -inf logit is never drawn");
        let share = counts[1] as f64 / 4000.0;
        assert!((share - 0.75).abs() < 0.03, "{share}");
        let draw = |seed| -> Result<Vec<u32>> {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| sample_token(&logits, &params, &mut r))
                .collect()
        };
        assert_eq!(draw(3)?, draw(3)?);
        Ok(())
    }

    #[test]
    fn greedy_and_bad_inputs() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -2.0]).ok(), Some(1));
        assert!(argmax(&[1.0, f32::NAN]).is_err());
        assert!(argmax(&[]).is_err());
        assert!(filter_support(&[f32::NEG_INFINITY; 3], 1.0, 0, 1.0).is_err());
        assert!(filter_support(&[0.0, 1.0], 0.0, 0, 1.0).is_err());
        let bad = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
