//! Grouped sampling and BREAD's branched rollouts through the real tiny model and generator.
//!
//! A random model essentially never writes a given line of an expert trace, so a reward "the
//! text contains step j of the trace" succeeds exactly when the spliced prefix holds step j:
//! an oracle with a known shortest prefix, driven through generation, scoring, the search, the
//! memory and the slot tensors.

use candle_core::{DType, Device};
use post_graph::{
    BranchAnchor, GRAPH_VERSION, Graph, PrefixSearch, RExpr, RFunc, RewardNode, Rollout, Sampling,
};
use post_runtime::data::Record;
use post_runtime::exec::rollout_slot;
use post_runtime::model::{ModelOptions, Transformer, presets};
use post_runtime::rollouts::{RolloutBatch, RolloutState, Scoring, prefix_text, split_steps};
use post_runtime::tasks::{self, TaskSplit};
use post_runtime::tokenizer::Tokenizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn graph_with_reward(name: &str, expr: RExpr) -> Graph {
    Graph {
        version: GRAPH_VERSION,
        experiment: "t".into(),
        seed: 1,
        models: vec![],
        datasets: vec![],
        rewards: vec![RewardNode {
            name: name.into(),
            expr,
        }],
        rollouts: vec![],
        stages: vec![],
        defaults_applied: vec![],
        prerequisites: vec![],
    }
}

fn sampling(n: usize, max_tokens: usize) -> Sampling {
    Sampling {
        model: "policy".into(),
        n,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        max_tokens,
        stop: vec![],
    }
}

/// Records of 3-digit additions with a `needle` field: step `need` (1-based) of the trace.
fn records(need: usize) -> Vec<Record> {
    let mut recs = tasks::generate("arith", TaskSplit::Train, 3, 3, 5).expect("task");
    for r in &mut recs {
        let steps = split_steps(r.get("solution").expect("solution"), "\n");
        assert!(steps.len() > need, "trace too short: {steps:?}");
        let needle = format!("{}\n", steps[need - 1]);
        r.insert("needle", needle);
    }
    recs
}

fn contains_needle() -> RExpr {
    let hit = RExpr::Call {
        func: RFunc::Contains,
        args: vec![
            RExpr::Completion,
            RExpr::Field {
                name: "needle".into(),
            },
        ],
    };
    RExpr::If {
        cond: Box::new(hit),
        then: Box::new(RExpr::Num { value: 1.0 }),
        otherwise: Box::new(RExpr::Num { value: 0.0 }),
    }
}

fn tiny() -> Transformer {
    let cfg = presets::tiny();
    Transformer::init_random(&cfg, ModelOptions::default(), 3, DType::F32, &Device::Cpu)
        .expect("tiny model")
        .0
}

fn bread(n: usize, search: PrefixSearch) -> Rollout {
    bread_anchored(n, search, BranchAnchor::Boundary)
}

fn bread_anchored(n: usize, search: PrefixSearch, anchor: BranchAnchor) -> Rollout {
    Rollout::Branched {
        base: sampling(n, 10),
        reward: "hit".into(),
        success_threshold: 0.5,
        expert_field: "solution".into(),
        step_delimiter: "\n".into(),
        search,
        remember: true,
        anchor,
    }
}

/// One BREAD rollout (binary search, seed 9) of `n` samples over `refs` with the "hit" reward.
fn run_branched(
    model: &Transformer,
    tok: &Tokenizer,
    refs: &[&Record],
    anchor: BranchAnchor,
    n: usize,
) -> (RolloutState, RolloutBatch) {
    let graph = graph_with_reward("hit", contains_needle());
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut state = RolloutState::default();
    let batch = state
        .run(
            &bread_anchored(n, PrefixSearch::Binary, anchor),
            &Scoring::resolve(
                &graph,
                &bread_anchored(n, PrefixSearch::Binary, anchor),
                None,
            )
            .expect("rewards"),
            model,
            tok,
            refs,
            &mut rng,
        )
        .expect("rollout");
    (state, batch)
}

#[test]
fn anchor_decides_what_fills_a_group_that_always_succeeded() {
    let model = tiny();
    let tok = Tokenizer::builtin_char();
    let recs = records(3);
    let refs: Vec<&Record> = recs.iter().collect();
    let n = 4;
    for anchor in [BranchAnchor::None, BranchAnchor::Original] {
        let (_, batch) = run_branched(&model, &tok, &refs, anchor, n);
        assert_eq!(batch.stats.branched, 3);
        for (i, r) in refs.iter().enumerate() {
            let steps = split_steps(r.get("solution").expect("solution"), "\n");
            let prefix = prefix_text(&steps, 3, "\n");
            let group = &batch.seqs[i * n..(i + 1) * n];
            let kept = if anchor == BranchAnchor::None {
                n
            } else {
                n / 2
            };
            for s in &group[..kept] {
                assert_eq!(s.prefix_steps, 3);
                assert!(s.text.starts_with(&prefix) && s.success);
            }
            // `original`: the prompt-only rollouts that all failed fill the rest.
            for s in &group[kept..] {
                assert_eq!(s.prefix_steps, 0);
                assert_eq!(s.prefix_tokens, 0);
                assert!(!s.success && s.reward == 0.0);
            }
        }
    }
}

#[test]
fn branched_rollouts_splice_the_shortest_successful_prefix() {
    let model = tiny();
    let tok = Tokenizer::builtin_char();
    let recs = records(3);
    let refs: Vec<&Record> = recs.iter().collect();
    let n = 4;
    let (state, batch) = run_branched(&model, &tok, &refs, BranchAnchor::Boundary, n);
    assert_eq!(batch.group_size, n);
    assert_eq!(batch.seqs.len(), refs.len() * n);
    assert_eq!(batch.stats.groups, 3);
    assert_eq!(batch.stats.all_failed, 3);
    assert_eq!(batch.stats.branched, 3);
    assert_eq!(batch.stats.prefix_steps, 9);
    let mut used = 0;
    let mut available = 0;
    for (i, r) in refs.iter().enumerate() {
        let trace = r.get("solution").expect("solution");
        available += tok.encode(trace).expect("encode").len();
        let steps = split_steps(trace, "\n");
        let prefix = prefix_text(&steps, 3, "\n");
        let mut context = tok
            .encode_prompt(r.get("prompt").expect("prompt"))
            .expect("prompt");
        let prefix_ids = tok.encode(&prefix).expect("encode");
        used += prefix_ids.len();
        context.extend(&prefix_ids);
        // Every continuation of the 3-step prefix succeeds, so the group is anchored on the
        // failures of the longest failing probe (2 steps): half and half, mixed contexts.
        let group = &batch.seqs[i * n..(i + 1) * n];
        for s in &group[..n / 2] {
            assert_eq!(s.record, i);
            assert_eq!(s.prefix_steps, 3);
            assert_eq!(s.prefix_tokens, prefix_ids.len());
            assert_eq!(s.context, context);
            assert!(s.text.starts_with(&prefix));
            assert_eq!(s.reward, 1.0);
            assert!(s.success);
        }
        let shorter = prefix_text(&steps, 2, "\n");
        for s in &group[n / 2..] {
            assert_eq!(s.record, i);
            assert_eq!(s.prefix_steps, 2);
            assert!(s.text.starts_with(&shorter));
            assert_eq!(s.reward, 0.0);
            assert!(!s.success);
        }
        assert_eq!(state.memory[r.get("prompt").expect("prompt")], 3);
    }
    assert_eq!(batch.stats.expert_tokens_used, used);
    assert_eq!(batch.stats.expert_tokens_available, available);
    assert!((state.expert_token_fraction() - used as f64 / available as f64).abs() < 1e-12);
    let metrics = state.metrics(&batch);
    assert_eq!(metrics["rollout/branched_frac"], 1.0);
    assert_eq!(metrics["rollout/mean_prefix_steps"], 3.0);
    assert!(batch.stats.search_groups >= 2);

    // The slot: prefix tokens are context (mask 0); exactly the sampled tokens carry loss.
    let st = rollout_slot(&batch, &model, None, tok.pad_id(), &Device::Cpu, false).expect("slot");
    assert_eq!(st.group_size, n);
    assert_eq!(st.max_tokens, 10);
    let mask: Vec<Vec<f32>> = st.mask.to_vec2().expect("mask");
    for (row, s) in mask.iter().zip(&batch.seqs) {
        let start = s.context.len();
        for (pos, m) in row.iter().enumerate() {
            // Position pos predicts token pos + 1.
            let target = pos + 1;
            let want = target >= start && target < start + s.completion.len();
            assert_eq!(*m == 1.0, want, "position {pos}, context {start}");
        }
    }
    let rewards: Vec<f32> = st.reward.as_ref().expect("reward").to_vec1().expect("1-d");
    for (r, s) in rewards.iter().zip(&batch.seqs) {
        assert_eq!(f64::from(*r), s.reward);
    }
}

#[test]
fn memory_bounds_later_searches_and_the_prefix_shrinks() {
    let model = tiny();
    let tok = Tokenizer::builtin_char();
    let graph = graph_with_reward("hit", contains_needle());
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let mut state = RolloutState::default();
    // First the model "needs" 3 steps; later (it improved) only 1.
    let first = records(3);
    let refs: Vec<&Record> = first.iter().collect();
    state
        .run(
            &bread(2, PrefixSearch::Binary),
            &Scoring::resolve(&graph, &bread(2, PrefixSearch::Binary), None).expect("rewards"),
            &model,
            &tok,
            &refs,
            &mut rng,
        )
        .expect("rollout");
    let later = records(1);
    let refs: Vec<&Record> = later.iter().collect();
    let batch = state
        .run(
            &bread(2, PrefixSearch::Binary),
            &Scoring::resolve(&graph, &bread(2, PrefixSearch::Binary), None).expect("rewards"),
            &model,
            &tok,
            &refs,
            &mut rng,
        )
        .expect("rollout");
    // Probes per group: 3 (remembered, success), then 1..3 bisected: 2, then 1.
    assert_eq!(batch.stats.search_groups, 3 * 3);
    // No probe failed, so the anchoring failures are the original rollouts (no prefix).
    for group in batch.seqs.chunks(2) {
        assert_eq!((group[0].prefix_steps, group[0].reward), (1, 1.0));
        assert_eq!((group[1].prefix_steps, group[1].reward), (0, 0.0));
    }
    assert!(state.memory.values().all(|k| *k == 1));
    // The linear search finds the same prefix.
    let mut fresh = RolloutState::default();
    let batch = fresh
        .run(
            &bread(2, PrefixSearch::Linear),
            &Scoring::resolve(&graph, &bread(2, PrefixSearch::Linear), None).expect("rewards"),
            &model,
            &tok,
            &refs,
            &mut rng,
        )
        .expect("rollout");
    assert!(batch.seqs.chunks(2).all(|g| g[0].prefix_steps == 1));
}

#[test]
fn groups_with_a_success_are_not_branched() {
    let model = tiny();
    let tok = Tokenizer::builtin_char();
    // Every completion "succeeds": nothing is spliced, no expert token is used.
    let graph = graph_with_reward("hit", RExpr::Num { value: 1.0 });
    let recs = records(2);
    let refs: Vec<&Record> = recs.iter().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut state = RolloutState::default();
    let batch = state
        .run(
            &bread(3, PrefixSearch::Binary),
            &Scoring::resolve(&graph, &bread(3, PrefixSearch::Binary), None).expect("rewards"),
            &model,
            &tok,
            &refs,
            &mut rng,
        )
        .expect("rollout");
    assert_eq!(batch.stats.branched, 0);
    assert_eq!(batch.stats.search_groups, 0);
    assert_eq!(state.expert_tokens_used, 0);
    assert!(state.expert_tokens_available > 0);
    assert!(batch.seqs.iter().all(|s| s.prefix_steps == 0));
}

#[test]
fn plain_sampling_gives_consecutive_groups_and_masks_truncation() {
    let model = tiny();
    let tok = Tokenizer::builtin_char();
    let len = RExpr::Call {
        func: RFunc::Len,
        args: vec![RExpr::Completion],
    };
    let graph = graph_with_reward("len", len);
    let recs = records(2);
    let refs: Vec<&Record> = recs.iter().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut state = RolloutState::default();
    let batch = state
        .run(
            &Rollout::Sample(sampling(4, 6)),
            &Scoring::resolve(&graph, &Rollout::Sample(sampling(4, 6)), Some("len"))
                .expect("rewards"),
            &model,
            &tok,
            &refs,
            &mut rng,
        )
        .expect("rollout");
    assert_eq!(batch.seqs.len(), 12);
    for (i, s) in batch.seqs.iter().enumerate() {
        assert_eq!(s.record, i / 4);
        assert_eq!(s.reward, s.text.chars().count() as f64);
        assert!(s.completion.len() <= 6);
    }
    let st = rollout_slot(&batch, &model, None, tok.pad_id(), &Device::Cpu, true).expect("slot");
    let mask: Vec<Vec<f32>> = st.mask.to_vec2().expect("mask");
    for (row, s) in mask.iter().zip(&batch.seqs) {
        let carried: f32 = row.iter().sum();
        let want = if s.truncated { 0 } else { s.completion.len() };
        assert_eq!(carried as usize, want);
    }
    // Unknown rewards are errors, not panics.
    assert!(Scoring::resolve(&graph, &Rollout::Sample(sampling(2, 4)), Some("nope")).is_err());
}
