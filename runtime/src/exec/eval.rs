//! `eval` blocks: generate with a metric's rollout on the eval data's prompts and score the
//! completions with the metric's reward. Randomness comes from a generator derived from the
//! seed, the stage and the step, so evaluating never disturbs the training stream and a resumed
//! run evaluates exactly as an uninterrupted one.

use std::collections::BTreeMap;

use candle_core::Result;
use post_graph::{Eval, Graph, MetricKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{Dataset, Record};
use crate::generate::{Generation, SamplingParams, generate};
use crate::model::Transformer;
use crate::rewards::{Sample, eval_reward};
use crate::tokenizer::Tokenizer;

use super::slots::encode_prompt;

/// Prompts generated per call (bounds the KV cache).
const GEN_CHUNK: usize = 64;

/// Generate `n` completions for each record's prompt (consecutive per record).
pub fn sample_completions(
    model: &Transformer,
    tok: &Tokenizer,
    records: &[&Record],
    n: usize,
    params: &SamplingParams,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Generation>> {
    let mut prompts = Vec::with_capacity(records.len() * n);
    for r in records {
        let p =
            encode_prompt(tok, r.get("prompt").unwrap_or("")).map_err(candle_core::Error::Msg)?;
        for _ in 0..n {
            prompts.push(p.clone());
        }
    }
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(GEN_CHUNK) {
        out.extend(generate(model, Some(tok), chunk, params, rng)?);
    }
    Ok(out)
}

/// Score one completion with a named reward of the graph.
pub fn reward_of(graph: &Graph, reward: &str, record: &Record, g: &Generation) -> Result<f64> {
    let node = graph
        .reward(reward)
        .ok_or_else(|| candle_core::Error::Msg(format!("unknown reward `{reward}`")))?;
    let text = g.text.as_deref().unwrap_or("");
    Ok(eval_reward(
        &node.expr,
        &Sample {
            completion: text,
            fields: record.fields(),
            completion_tokens: g.tokens.len(),
        },
    ))
}

/// Unbiased pass@k from `n` samples with `c` successes (Chen et al. 2021).
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n < k || n - c < k {
        return if c > 0 { 1.0 } else { 0.0 };
    }
    // 1 - C(n - c, k) / C(n, k) as a product, stable for large n.
    let mut prod = 1.0;
    for i in (n - c + 1)..=n {
        prod *= 1.0 - k as f64 / i as f64;
    }
    1.0 - prod
}

/// Evaluate every metric of `eval`; `model_of` gives the current model for a model name.
pub fn run_eval<'m>(
    graph: &Graph,
    eval: &Eval,
    data: &Dataset,
    tok: &Tokenizer,
    model_of: &dyn Fn(&str) -> Option<&'m Transformer>,
    rng_seed: u64,
) -> Result<BTreeMap<String, f64>> {
    let limit = eval
        .limit
        .unwrap_or(data.records.len())
        .min(data.records.len());
    let records: Vec<&Record> = data.records[..limit].iter().collect();
    let mut cache: BTreeMap<String, (usize, Vec<Generation>)> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for metric in &eval.metrics {
        let rollout = graph.rollout(&metric.rollout).ok_or_else(|| {
            candle_core::Error::Msg(format!("unknown rollout `{}`", metric.rollout))
        })?;
        let base = rollout.policy.base();
        if !cache.contains_key(&metric.rollout) {
            let model = model_of(&base.model).ok_or_else(|| {
                candle_core::Error::Msg(format!("unknown model `{}`", base.model))
            })?;
            let mut rng =
                ChaCha8Rng::seed_from_u64(rng_seed ^ super::fnv1a(metric.rollout.as_bytes()));
            let params = SamplingParams::from_graph(base);
            let n = base.n.max(1);
            let gens = sample_completions(model, tok, &records, n, &params, &mut rng)?;
            cache.insert(metric.rollout.clone(), (n, gens));
        }
        let (n, gens) = &cache[&metric.rollout];
        let value = match &metric.kind {
            MetricKind::MeanReward { reward } => {
                let mut sum = 0.0;
                for (i, g) in gens.iter().enumerate() {
                    let r = reward_of(graph, reward, records[i / n], g)?;
                    // An unparsable completion scores NaN in the reward language; as a metric
                    // it is a failure, not a poisoned average.
                    sum += if r.is_finite() { r } else { 0.0 };
                }
                sum / gens.len().max(1) as f64
            }
            MetricKind::PassAtK { reward, k } => {
                let mut total = 0.0;
                for (p, rec) in records.iter().enumerate() {
                    let mut c = 0;
                    for g in &gens[p * n..(p + 1) * n] {
                        // A success is a reward above one half (rewards are 0/1 checks).
                        if reward_of(graph, reward, rec, g)? > 0.5 {
                            c += 1;
                        }
                    }
                    total += pass_at_k(*n, c, *k);
                }
                total / records.len().max(1) as f64
            }
            MetricKind::MeanLength => {
                gens.iter().map(|g| g.tokens.len() as f64).sum::<f64>() / gens.len().max(1) as f64
            }
        };
        out.insert(metric.name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_matches_definition() {
        assert_eq!(pass_at_k(4, 0, 1), 0.0);
        assert!((pass_at_k(4, 1, 1) - 0.25).abs() < 1e-12);
        // 1 - C(2,2)/C(4,2) = 1 - 1/6
        assert!((pass_at_k(4, 2, 2) - (1.0 - 1.0 / 6.0)).abs() < 1e-12);
        assert_eq!(pass_at_k(4, 3, 2), 1.0);
    }
}
