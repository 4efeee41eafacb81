//! Rollouts: grouped sampling and BREAD's branched rollouts. This module owns what is sampled
//! and how it is scored; it returns data ([`RolloutBatch`]) and never builds tensors or calls
//! the executor (`crate::exec` turns a batch into an objective's slot tensors).
//!
//! [`RolloutState::run`] samples one group of `n` completions per record for a lowered
//! [`Rollout`] and scores them with the rewards resolved beforehand ([`Scoring`]). The state
//! persists across steps (and in checkpoints): it holds BREAD's per-problem prefix memory and
//! the expert-token accounting.
//!
//! BREAD ([`Rollout::Branched`]), per group:
//! 1. sample `n` completions from the prompt; if any succeeds (the rollout's reward is above
//!    `success_threshold`) the group is an ordinary GRPO group;
//! 2. otherwise split the record's expert trace at `step_delimiter` into steps `e_1..e_L` and
//!    search the shortest prefix length `k` in `1..L` (the last step, the answer, is never
//!    given) for which `n` continuations sampled from `prompt e_1..e_k` hold a success. Binary
//!    search assumes success grows with `k`; it costs about log2(L) extra groups. With
//!    `remember`, the `k` found is stored per problem (keyed by prompt) and the next search
//!    first probes it: a success there bounds the search to `1..=k` (the prefix shrinks as the
//!    model improves: the curriculum), a failure moves it to `k+1..L`;
//! 3. the group trained on is the `n` continuations at the shortest successful `k` (if no
//!    prefix succeeds, the original group, whose equal rewards give zero advantage). Its
//!    context is prompt + prefix: the prefix tokens are context and carry no loss. When every
//!    continuation at `k` succeeds, equal rewards give zero advantage. `anchor` decides what
//!    happens then: `none` keeps the group as it is (no update from it); `boundary` keeps the
//!    first `ceil(n/2)` successes and fills the group with failures of the longest failing
//!    probe (or of the original rollouts), `original` fills it with the original failed
//!    rollouts: groups with mixed contexts, whose advantage pushes up the anchored successes
//!    and down what the model wrote elsewhere. The default is `none` (why: `NOTES.md`).
//!
//! A batch thus mixes contexts (prompt only, prompt + prefixes of various lengths, within and
//! across groups); advantages are computed within each group, over consecutive runs of `n`
//! sequences. Rewards of branched samples are computed on prefix + completion text, so answer
//! and format checks see the whole solution.
//!
//! Accounting: a group "uses" the tokens of the prefix it trains with; the expert tokens
//! "available" are the whole trace of every group's problem. The cumulative ratio is BREAD's
//! "fraction of expert-trace tokens used" (SFT on the traces uses all of them).

use std::collections::BTreeMap;

use candle_core::{Result, bail};
use post_graph::{BranchAnchor, Graph, PrefixSearch, RExpr, Rollout, Sampling};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::generate::{Generation, SamplingParams, generate_n, prompt_contexts};
use crate::model::Transformer;
use crate::record::Record;
use crate::rewards::{counted, score};
use crate::tokenizer::Tokenizer;

/// One sampled sequence of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSeq {
    /// Index of the record (in the slice given to [`RolloutState::run`]) it answers.
    pub record: usize,
    /// `[bos] prompt` plus the expert prefix tokens, if branched: context, no loss.
    pub context: Vec<u32>,
    /// The sampled tokens (ending with eos when the model stopped there).
    pub completion: Vec<u32>,
    /// The text the rewards saw: expert prefix text + decoded completion.
    pub text: String,
    /// The slot's reward (what the objective reads as `reward`).
    pub reward: f64,
    /// Whether the success criterion of a branched rollout held (false for plain sampling).
    pub success: bool,
    /// Hit `max_tokens` (or the context) without stopping.
    pub truncated: bool,
    /// Expert steps spliced into the context (0 = not branched).
    pub prefix_steps: usize,
    /// Tokens of that expert prefix.
    pub prefix_tokens: usize,
}

/// What one call of [`RolloutState::run`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutStats {
    pub groups: usize,
    /// Groups whose `n` base rollouts all failed (BREAD only).
    pub all_failed: usize,
    /// Groups trained with an expert prefix.
    pub branched: usize,
    /// Sum of the prefix lengths (in steps) of branched groups.
    pub prefix_steps: usize,
    /// Expert tokens in the training contexts of this batch.
    pub expert_tokens_used: usize,
    /// Tokens of the full expert traces of this batch's problems.
    pub expert_tokens_available: usize,
    /// Extra groups sampled by the prefix search.
    pub search_groups: usize,
    /// Groups where no prefix gave a success.
    pub unsolved: usize,
}

/// The sequences of one rollout call, `group_size` consecutive per record.
#[derive(Debug, Clone)]
pub struct RolloutBatch {
    pub seqs: Vec<RolloutSeq>,
    pub group_size: usize,
    pub max_tokens: usize,
    pub stats: RolloutStats,
}

/// State that outlives one step: BREAD's prefix memory and cumulative accounting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// Shortest successful prefix length (steps) last found per problem, keyed by prompt.
    pub memory: BTreeMap<String, usize>,
    pub expert_tokens_used: u64,
    pub expert_tokens_available: u64,
    pub groups: u64,
    pub branched_groups: u64,
}

/// A group of generations for one context.
struct Group {
    context: Vec<u32>,
    prefix_text: String,
    prefix_steps: usize,
    prefix_tokens: usize,
    gens: Vec<Generation>,
    rewards: Vec<f64>,
    success: Vec<bool>,
}

impl Group {
    fn any_success(&self) -> bool {
        self.success.iter().any(|s| *s)
    }

    fn into_seqs(self, record: usize) -> Vec<RolloutSeq> {
        let mut out = Vec::with_capacity(self.gens.len());
        for ((g, reward), success) in self.gens.into_iter().zip(self.rewards).zip(self.success) {
            out.push(RolloutSeq {
                record,
                context: self.context.clone(),
                text: format!("{}{}", self.prefix_text, g.text.as_deref().unwrap_or("")),
                completion: g.tokens,
                reward,
                success,
                truncated: g.truncated,
                prefix_steps: self.prefix_steps,
                prefix_tokens: self.prefix_tokens,
            });
        }
        out
    }
}

/// Prefix-search progress of one all-failed group.
struct Search {
    group: usize,
    steps: Vec<String>,
    /// Every k < lo failed.
    lo: usize,
    /// Smallest k known to succeed; `limit` when none is known yet.
    hi: usize,
    /// Exclusive upper bound of k (the answer step is never given).
    limit: usize,
    /// A remembered k to probe before bisecting.
    first: Option<usize>,
    best: Option<Group>,
    /// The failing probe with the longest prefix (the boundary the model cannot yet cross).
    below: Option<Group>,
    linear: bool,
    done: bool,
}

impl Search {
    /// The next prefix length to try, or None when the search is over.
    fn next_probe(&mut self) -> Option<usize> {
        if self.done {
            return None;
        }
        if let Some(k) = self.first.take() {
            return Some(k);
        }
        if self.lo >= self.hi {
            self.done = true;
            return None;
        }
        Some(if self.linear {
            // Linear: walk down from a known success, else up from the last failure.
            if self.hi < self.limit {
                self.hi - 1
            } else {
                self.lo
            }
        } else {
            (self.lo + self.hi) / 2
        })
    }

    fn record(&mut self, k: usize, group: Group) {
        if group.any_success() {
            self.hi = k;
            self.best = Some(group);
            if self.linear && k <= self.lo {
                self.done = true;
            }
        } else {
            self.lo = k + 1;
            if self.below.as_ref().is_none_or(|b| b.prefix_steps < k) {
                self.below = Some(group);
            }
            // Linear search walking down stops at the first failure below a success.
            if self.linear && self.hi < self.limit {
                self.done = true;
            }
        }
    }
}

/// Split an expert trace into steps; a trailing delimiter does not make an empty step.
pub fn split_steps(trace: &str, delimiter: &str) -> Vec<String> {
    if delimiter.is_empty() {
        return vec![trace.to_string()];
    }
    let mut steps: Vec<String> = trace.split(delimiter).map(str::to_string).collect();
    if steps.last().is_some_and(String::is_empty) {
        steps.pop();
    }
    steps
}

/// The context text of a `k`-step prefix: the steps, each followed by the delimiter.
pub fn prefix_text(steps: &[String], k: usize, delimiter: &str) -> String {
    steps[..k.min(steps.len())]
        .iter()
        .map(|s| format!("{s}{delimiter}"))
        .collect()
}

impl RolloutState {
    /// Restore from a checkpoint's `rollout_state` (null = fresh).
    pub fn from_json(v: &serde_json::Value) -> std::result::Result<Self, String> {
        if v.is_null() {
            return Ok(Self::default());
        }
        serde_json::from_value(v.clone()).map_err(|e| format!("malformed rollout state: {e}"))
    }

    pub fn to_json(&self) -> serde_json::Value {
        // Plain maps and integers always serialise.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Cumulative share of expert-trace tokens used so far (0 before any expert use).
    pub fn expert_token_fraction(&self) -> f64 {
        if self.expert_tokens_available == 0 {
            0.0
        } else {
            self.expert_tokens_used as f64 / self.expert_tokens_available as f64
        }
    }

    /// Per-step metrics for `metrics.jsonl` (the `extra` map), prefixed `rollout/`.
    pub fn metrics(&self, batch: &RolloutBatch) -> BTreeMap<String, f64> {
        let s = &batch.stats;
        let groups = s.groups.max(1) as f64;
        let mut m = BTreeMap::new();
        let mean_reward = batch.seqs.iter().map(|q| counted(q.reward)).sum::<f64>()
            / batch.seqs.len().max(1) as f64;
        m.insert("rollout/reward_mean".into(), mean_reward);
        m.insert(
            "rollout/truncated_frac".into(),
            batch.seqs.iter().filter(|q| q.truncated).count() as f64
                / batch.seqs.len().max(1) as f64,
        );
        if s.expert_tokens_available > 0 || s.all_failed > 0 {
            m.insert(
                "rollout/all_failed_frac".into(),
                s.all_failed as f64 / groups,
            );
            m.insert("rollout/branched_frac".into(), s.branched as f64 / groups);
            m.insert(
                "rollout/mean_prefix_steps".into(),
                if s.branched > 0 {
                    s.prefix_steps as f64 / s.branched as f64
                } else {
                    0.0
                },
            );
            m.insert("rollout/search_groups".into(), s.search_groups as f64);
            m.insert(
                "rollout/expert_token_frac".into(),
                self.expert_token_fraction(),
            );
            m.insert(
                "rollout/expert_tokens_used".into(),
                self.expert_tokens_used as f64,
            );
        }
        m
    }

    /// Sample and score one group per record with `rollout`, scoring with `scoring` (resolved
    /// for this rollout by [`Scoring::resolve`]).
    pub fn run(
        &mut self,
        rollout: &Rollout,
        scoring: &Scoring,
        model: &Transformer,
        tok: &Tokenizer,
        records: &[&Record],
        rng: &mut ChaCha8Rng,
    ) -> Result<RolloutBatch> {
        match rollout {
            Rollout::Sample(base) => {
                let groups = sample_groups(model, tok, records, base, scoring, rng)?;
                let stats = RolloutStats {
                    groups: groups.len(),
                    ..RolloutStats::default()
                };
                self.groups += groups.len() as u64;
                let seqs = groups
                    .into_iter()
                    .enumerate()
                    .map(|(ri, g)| g.into_seqs(ri))
                    .collect();
                Ok(batch_of(seqs, base, stats))
            }
            Rollout::Branched {
                base,
                expert_field,
                step_delimiter,
                search,
                remember,
                anchor,
                ..
            } => self.branched(
                BranchedSpec {
                    base,
                    expert_field,
                    delimiter: step_delimiter,
                    search: *search,
                    remember: *remember,
                    anchor: *anchor,
                },
                scoring,
                model,
                tok,
                records,
                rng,
            ),
            Rollout::Guided { .. } => {
                bail!("guided (Transfer-Q*) decoding is not supported by this runtime")
            }
            Rollout::VerifierStopped { .. } => {
                bail!("verifier-stopped decoding is not supported by this runtime")
            }
        }
    }

    fn branched(
        &mut self,
        spec: BranchedSpec,
        scorer: &Scoring,
        model: &Transformer,
        tok: &Tokenizer,
        records: &[&Record],
        rng: &mut ChaCha8Rng,
    ) -> Result<RolloutBatch> {
        let groups = sample_groups(model, tok, records, spec.base, scorer, rng)?;
        let mut stats = RolloutStats {
            groups: groups.len(),
            ..RolloutStats::default()
        };
        let mut searches = Vec::new();
        for (gi, group) in groups.iter().enumerate() {
            let record = records[gi];
            let trace = record.get(spec.expert_field).unwrap_or("");
            let steps = split_steps(trace, spec.delimiter);
            stats.expert_tokens_available += tok
                .encode(trace)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?
                .len();
            if group.any_success() {
                continue;
            }
            stats.all_failed += 1;
            if steps.len() < 2 {
                // Nothing to splice without giving the answer away.
                stats.unsolved += 1;
                continue;
            }
            let limit = steps.len();
            let key = record.get("prompt").unwrap_or("").to_string();
            let first = if spec.remember {
                self.memory.get(&key).map(|&k| k.clamp(1, limit - 1))
            } else {
                None
            };
            searches.push(Search {
                group: gi,
                steps,
                lo: 1,
                hi: limit,
                limit,
                first,
                best: None,
                below: None,
                linear: spec.search == PrefixSearch::Linear,
                done: false,
            });
        }
        // Probe every searching group in lockstep so each round is one batched generation.
        loop {
            let mut probes: Vec<(usize, usize)> = Vec::new();
            for (si, s) in searches.iter_mut().enumerate() {
                if let Some(k) = s.next_probe() {
                    probes.push((si, k));
                }
            }
            if probes.is_empty() {
                break;
            }
            let contexts = probes
                .iter()
                .map(|&(si, k)| {
                    let s = &searches[si];
                    let text = prefix_text(&s.steps, k, spec.delimiter);
                    (s.group, k, text)
                })
                .collect::<Vec<_>>();
            let probe_groups =
                sample_prefixed(model, tok, records, spec.base, scorer, &contexts, rng)?;
            stats.search_groups += probe_groups.len();
            for ((si, k), g) in probes.into_iter().zip(probe_groups) {
                searches[si].record(k, g);
            }
        }
        let mut out: Vec<Vec<RolloutSeq>> = groups
            .into_iter()
            .enumerate()
            .map(|(ri, g)| g.into_seqs(ri))
            .collect();
        for s in searches {
            let key = records[s.group].get("prompt").unwrap_or("").to_string();
            match s.best {
                Some(best) => {
                    if spec.remember {
                        self.memory.insert(key, best.prefix_steps);
                    }
                    stats.branched += 1;
                    stats.prefix_steps += best.prefix_steps;
                    stats.expert_tokens_used += best.prefix_tokens;
                    let all_succeed = !best.success.contains(&false);
                    let mut seqs = best.into_seqs(s.group);
                    if all_succeed && seqs.len() >= 2 && spec.anchor != BranchAnchor::None {
                        // Equal rewards would give zero advantage: anchor the group on
                        // failures, a group with mixed contexts.
                        let failed = match (spec.anchor, s.below) {
                            (BranchAnchor::Boundary, Some(b)) => b.into_seqs(s.group),
                            _ => std::mem::take(&mut out[s.group]),
                        };
                        let keep = seqs.len().div_ceil(2);
                        let fill = seqs.len() - keep;
                        seqs.truncate(keep);
                        seqs.extend(failed.into_iter().take(fill));
                    }
                    out[s.group] = seqs;
                }
                None => {
                    stats.unsolved += 1;
                    if spec.remember {
                        // Start next time from the longest prefix: one probe if still unsolved.
                        self.memory.insert(key, s.limit - 1);
                    }
                }
            }
        }
        self.groups += stats.groups as u64;
        self.branched_groups += stats.branched as u64;
        self.expert_tokens_used += stats.expert_tokens_used as u64;
        self.expert_tokens_available += stats.expert_tokens_available as u64;
        Ok(batch_of(out, spec.base, stats))
    }
}

struct BranchedSpec<'a> {
    base: &'a Sampling,
    expert_field: &'a str,
    delimiter: &'a str,
    search: PrefixSearch,
    remember: bool,
    anchor: BranchAnchor,
}

/// How a rollout's samples are scored: the slot's reward (what the objective reads) and, for
/// BREAD, the success criterion, both resolved from the graph once, before the run.
#[derive(Debug, Clone, Copy)]
pub struct Scoring<'g> {
    reward: Option<&'g RExpr>,
    success: Option<&'g RExpr>,
    /// The success criterion is the slot's reward: score once.
    same: bool,
    threshold: f64,
}

impl<'g> Scoring<'g> {
    /// Resolve the rewards of `rollout` for a slot reading `reward`: a sampling rollout scores
    /// with the slot's reward (or none); a branched rollout also tests success with its own
    /// reward, which is the slot's reward when the slot names none. Errors name an unknown
    /// reward, or a rollout this runtime does not run.
    pub fn resolve(
        graph: &'g Graph,
        rollout: &Rollout,
        reward: Option<&str>,
    ) -> std::result::Result<Self, String> {
        let find = |name: &str| -> std::result::Result<&'g RExpr, String> {
            graph
                .reward(name)
                .map(|r| &r.expr)
                .ok_or_else(|| format!("unknown reward `{name}`"))
        };
        let (reward, success, threshold) = match rollout {
            Rollout::Sample(_) => (reward, None, 0.0),
            Rollout::Branched {
                reward: success,
                success_threshold,
                ..
            } => (
                Some(reward.unwrap_or(success.as_str())),
                Some(success.as_str()),
                *success_threshold,
            ),
            Rollout::Guided { .. } => {
                return Err(
                    "guided (Transfer-Q*) decoding is not supported by this runtime".into(),
                );
            }
            Rollout::VerifierStopped { .. } => {
                return Err("verifier-stopped decoding is not supported by this runtime".into());
            }
        };
        Ok(Scoring {
            reward: reward.map(find).transpose()?,
            success: success.map(find).transpose()?,
            same: reward.is_some() && reward == success,
            threshold,
        })
    }

    /// The slot's reward expression, if it reads one.
    pub fn reward(&self) -> Option<&'g RExpr> {
        self.reward
    }

    /// (reward, success) of a sample.
    fn score(&self, text: &str, tokens: usize, record: &Record) -> (f64, bool) {
        let reward = self.reward.map_or(0.0, |e| score(e, text, tokens, record));
        let success = match self.success {
            Some(_) if self.same => reward > self.threshold,
            Some(e) => score(e, text, tokens, record) > self.threshold,
            None => false,
        };
        (reward, success)
    }
}

fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    tok.encode(text)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))
}

fn score_group(
    scorer: &Scoring,
    record: &Record,
    context: Vec<u32>,
    prefix: (String, usize, usize),
    gens: Vec<Generation>,
) -> Group {
    let (prefix_text, prefix_steps, prefix_tokens) = prefix;
    let mut rewards = Vec::with_capacity(gens.len());
    let mut success = Vec::with_capacity(gens.len());
    for g in &gens {
        let text = format!("{prefix_text}{}", g.text.as_deref().unwrap_or(""));
        let (r, s) = scorer.score(&text, g.tokens.len(), record);
        rewards.push(r);
        success.push(s);
    }
    Group {
        context,
        prefix_text,
        prefix_steps,
        prefix_tokens,
        gens,
        rewards,
        success,
    }
}

/// One group of `base.n` completions per record, from its prompt.
fn sample_groups(
    model: &Transformer,
    tok: &Tokenizer,
    records: &[&Record],
    base: &Sampling,
    scorer: &Scoring,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Group>> {
    let n = base.n.max(1);
    let params = SamplingParams::from_graph(base);
    let contexts = prompt_contexts(tok, records.iter().map(|r| r.get("prompt").unwrap_or("")))?;
    let gens = generate_n(model, tok, &contexts, n, &params, rng)?;
    let mut groups = Vec::with_capacity(records.len());
    let mut it = gens.into_iter();
    for (r, ctx) in records.iter().zip(contexts) {
        let g: Vec<Generation> = it.by_ref().take(n).collect();
        groups.push(score_group(scorer, r, ctx, (String::new(), 0, 0), g));
    }
    Ok(groups)
}

/// One group of `base.n` completions per (record index, k, prefix text).
fn sample_prefixed(
    model: &Transformer,
    tok: &Tokenizer,
    records: &[&Record],
    base: &Sampling,
    scorer: &Scoring,
    contexts: &[(usize, usize, String)],
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Group>> {
    let n = base.n.max(1);
    let params = SamplingParams::from_graph(base);
    let mut ids = Vec::with_capacity(contexts.len());
    let mut prefix_lens = Vec::with_capacity(contexts.len());
    for (ri, _, text) in contexts {
        let mut c = tok
            .encode_prompt(records[*ri].get("prompt").unwrap_or(""))
            .map_err(candle_core::Error::Msg)?;
        // Encoded apart from the prompt, as the data path encodes prompt and completion.
        let p = encode(tok, text)?;
        prefix_lens.push(p.len());
        c.extend(p);
        ids.push(c);
    }
    let gens = generate_n(model, tok, &ids, n, &params, rng)?;
    let mut it = gens.into_iter();
    let mut out = Vec::with_capacity(contexts.len());
    for (((ri, k, text), ctx), plen) in contexts.iter().zip(ids).zip(prefix_lens) {
        let g: Vec<Generation> = it.by_ref().take(n).collect();
        out.push(score_group(
            scorer,
            records[*ri],
            ctx,
            (text.clone(), *k, plen),
            g,
        ));
    }
    Ok(out)
}

fn batch_of(groups: Vec<Vec<RolloutSeq>>, base: &Sampling, stats: RolloutStats) -> RolloutBatch {
    RolloutBatch {
        seqs: groups.into_iter().flatten().collect(),
        group_size: base.n.max(1),
        max_tokens: base.max_tokens,
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive a search against an oracle "success iff k >= need"; returns (k found, probes).
    fn run_search(
        limit: usize,
        need: usize,
        first: Option<usize>,
        linear: bool,
    ) -> (Option<usize>, usize) {
        let mut s = Search {
            group: 0,
            steps: Vec::new(),
            lo: 1,
            hi: limit,
            limit,
            first,
            best: None,
            below: None,
            linear,
            done: false,
        };
        let mut probes = 0;
        while let Some(k) = s.next_probe() {
            assert!((1..limit).contains(&k), "probe {k} outside 1..{limit}");
            probes += 1;
            let ok = k >= need;
            s.record(
                k,
                Group {
                    context: Vec::new(),
                    prefix_text: String::new(),
                    prefix_steps: k,
                    prefix_tokens: 0,
                    gens: Vec::new(),
                    rewards: Vec::new(),
                    success: vec![ok],
                },
            );
            assert!(probes <= limit + 1, "search does not terminate");
        }
        (s.best.map(|g| g.prefix_steps), probes)
    }

    #[test]
    fn binary_search_finds_the_shortest_prefix_in_log_probes() {
        for limit in 2..20 {
            for need in 1..limit {
                let (k, probes) = run_search(limit, need, None, false);
                assert_eq!(k, Some(need), "limit {limit} need {need}");
                let bound = (usize::BITS - (limit - 1).leading_zeros()) as usize;
                assert!(probes <= bound, "limit {limit}: {probes} probes > {bound}");
            }
            // Unsolvable: every probe fails, the search ends.
            assert_eq!(run_search(limit, limit, None, false).0, None);
        }
    }

    #[test]
    fn remembered_prefix_is_probed_first_and_bounds_the_search() {
        // Remembered 5, now only 3 is needed: the search stays in 1..=5.
        let (k, probes) = run_search(12, 3, Some(5), false);
        assert_eq!(k, Some(3));
        assert!(probes <= 1 + 3);
        // Remembered 5 still exactly right: 5 succeeds, then 1..5 bisected.
        assert_eq!(run_search(12, 5, Some(5), false).0, Some(5));
        // Remembered 5 but 8 is needed now: the search moves above it.
        assert_eq!(run_search(12, 8, Some(5), false).0, Some(8));
        // The memory says "unsolved at the longest prefix" and that still holds: one probe.
        assert_eq!(run_search(12, 12, Some(11), false), (None, 1));
    }

    #[test]
    fn linear_search_walks_to_the_boundary() {
        for need in 1..9 {
            assert_eq!(run_search(9, need, None, true).0, Some(need));
            assert_eq!(run_search(9, need, Some(4), true).0, Some(need));
        }
        assert_eq!(run_search(9, 9, None, true).0, None);
    }

    #[test]
    fn steps_and_prefixes() {
        let steps = split_steps("a=1\nb=2\n#### 3\n", "\n");
        assert_eq!(steps, vec!["a=1", "b=2", "#### 3"]);
        assert_eq!(prefix_text(&steps, 2, "\n"), "a=1\nb=2\n");
        assert_eq!(prefix_text(&steps, 0, "\n"), "");
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut st = RolloutState::default();
        st.memory.insert("12+34=".into(), 3);
        st.expert_tokens_used = 10;
        st.expert_tokens_available = 40;
        let back = RolloutState::from_json(&st.to_json()).expect("round trip");
        assert_eq!(back, st);
        assert_eq!(back.expert_token_fraction(), 0.25);
        assert_eq!(
            RolloutState::from_json(&serde_json::Value::Null).expect("null"),
            RolloutState::default()
        );
    }
}
