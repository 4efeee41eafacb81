//! `eval` blocks: generate with a metric's rollout on the eval data's prompts and score the
//! completions with the metric's reward. Randomness comes from a generator derived from the
//! seed, the stage and the step, so evaluating never disturbs the training stream and a resumed
//! run evaluates exactly as an uninterrupted one.

use std::collections::BTreeMap;

use candle_core::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::plan::{EvalPlan, MetricValue};
use crate::data::{Dataset, Record};
use crate::generate::{Generation, SamplingParams, generate_n, prompt_contexts};
use crate::hash::fnv1a;
use crate::model::Transformer;
use crate::rewards::{counted, score};
use crate::tokenizer::Tokenizer;

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

/// Evaluate every metric of `eval` with the current `models`.
pub fn run_eval(
    eval: &EvalPlan,
    data: &Dataset,
    tok: &Tokenizer,
    models: &BTreeMap<String, Transformer>,
    rng_seed: u64,
) -> Result<BTreeMap<String, f64>> {
    let limit = eval
        .eval
        .limit
        .unwrap_or(data.records.len())
        .min(data.records.len());
    let records: Vec<&Record> = data.records[..limit].iter().collect();
    let mut cache: BTreeMap<&str, (usize, Vec<Generation>)> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for metric in &eval.metrics {
        let base = metric.sampling;
        if !cache.contains_key(metric.rollout) {
            let mut rng = ChaCha8Rng::seed_from_u64(rng_seed ^ fnv1a(metric.rollout.as_bytes()));
            let params = SamplingParams::from_graph(base);
            let n = base.n.max(1);
            let contexts =
                prompt_contexts(tok, records.iter().map(|r| r.get("prompt").unwrap_or("")))?;
            let gens = generate_n(&models[&base.model], tok, &contexts, n, &params, &mut rng)?;
            cache.insert(metric.rollout, (n, gens));
        }
        let (n, gens) = &cache[metric.rollout];
        let reward_of = |expr, record: &Record, g: &Generation| {
            score(
                expr,
                g.text.as_deref().unwrap_or(""),
                g.tokens.len(),
                record,
            )
        };
        let value = match metric.value {
            MetricValue::MeanReward(expr) => {
                let mut sum = 0.0;
                for (i, g) in gens.iter().enumerate() {
                    sum += counted(reward_of(expr, records[i / n], g));
                }
                sum / gens.len().max(1) as f64
            }
            MetricValue::PassAtK(expr, k) => {
                let mut total = 0.0;
                for (p, rec) in records.iter().enumerate() {
                    // A success is a reward above one half (rewards are 0/1 checks).
                    let c = gens[p * n..(p + 1) * n]
                        .iter()
                        .filter(|g| reward_of(expr, rec, g) > 0.5)
                        .count();
                    total += pass_at_k(*n, c, k);
                }
                total / records.len().max(1) as f64
            }
            MetricValue::MeanLength => {
                gens.iter().map(|g| g.tokens.len() as f64).sum::<f64>() / gens.len().max(1) as f64
            }
        };
        out.insert(metric.name.to_string(), value);
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
