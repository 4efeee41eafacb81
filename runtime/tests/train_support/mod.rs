//! Graph builders shared by the training tests: an SFT experiment on a built-in task with a
//! greedy accuracy eval, written directly as a `post_graph::Graph` (no compiler involved).

#![allow(dead_code)]

use std::collections::BTreeMap;

use post_graph::*;

pub fn tiny_config() -> ModelConfig {
    post_runtime::model::presets::tiny()
}

/// reward correct = answer(completion) == answer field
pub fn correct_reward() -> RewardNode {
    RewardNode {
        name: "correct".into(),
        expr: RExpr::If {
            cond: Box::new(RExpr::Binary {
                op: RBinary::Eq,
                lhs: Box::new(RExpr::Call {
                    func: RFunc::Answer {
                        marker: "####".into(),
                    },
                    args: vec![RExpr::Completion],
                }),
                rhs: Box::new(RExpr::Field {
                    name: "answer".into(),
                }),
            }),
            then: Box::new(RExpr::Num { value: 1.0 }),
            otherwise: Box::new(RExpr::Num { value: 0.0 }),
        },
    }
}

/// sft token_mean: mean over all completion tokens of -logp.
pub fn sft_loss(slot: &str) -> Expr {
    Expr::reduce(
        Reduce::MeanAllTokens,
        Expr::unary(UnaryOp::Neg, Expr::input(Quantity::Logp, slot)),
    )
}

pub struct SftSpec {
    pub task: &'static str,
    pub difficulty: u32,
    pub train_size: usize,
    pub test_size: usize,
    pub steps: u64,
    pub batch: usize,
    pub grad_accum: usize,
    pub lr: Schedule,
    pub eval_every: u64,
    pub eval_limit: Option<usize>,
    pub max_tokens: usize,
    pub checkpoint_every: u64,
    pub keep_checkpoints: u64,
    pub seed: u64,
}

impl Default for SftSpec {
    fn default() -> Self {
        SftSpec {
            task: "arith",
            difficulty: 2,
            train_size: 2000,
            test_size: 100,
            steps: 100,
            batch: 16,
            grad_accum: 1,
            lr: Schedule {
                shape: Shape::Cosine {
                    from: 1e-3,
                    to: 1e-4,
                },
                warmup: 5,
            },
            eval_every: 50,
            eval_limit: Some(50),
            max_tokens: 48,
            checkpoint_every: 0,
            keep_checkpoints: DEFAULT_KEEP_CHECKPOINTS,
            seed: 7,
        }
    }
}

pub fn sft_graph(spec: &SftSpec) -> Graph {
    let data = |name: &str, split, size| DataNode {
        name: name.into(),
        source: DataSource::Task {
            task: spec.task.into(),
            split,
            size,
            difficulty: spec.difficulty,
            min_difficulty: None,
        },
        transforms: vec![],
    };
    Graph {
        version: GRAPH_VERSION,
        experiment: "sft_test".into(),
        seed: spec.seed,
        models: vec![ModelNode {
            name: "policy".into(),
            source: ModelSource::Preset {
                preset: "tiny".into(),
                config: tiny_config(),
                init: None,
                trained: None,
            },
        }],
        datasets: vec![
            data("train", Split::Train, spec.train_size),
            data("test", Split::Test, spec.test_size),
        ],
        rewards: vec![correct_reward()],
        rollouts: vec![RolloutNode {
            name: "greedy".into(),
            policy: Rollout::Sample(Sampling {
                model: "policy".into(),
                n: 1,
                temperature: 0.0,
                top_k: 0,
                top_p: 1.0,
                max_tokens: spec.max_tokens,
                stop: vec![],
            }),
        }],
        stages: vec![Stage {
            name: "sft".into(),
            kind: StageKind::Train(TrainStage {
                model: "policy".into(),
                data: "train".into(),
                steps: spec.steps,
                batch: Batch {
                    size: spec.batch,
                    unit: BatchUnit::Sequences,
                },
                objective: ObjectiveInstance {
                    name: "sft".into(),
                    args: BTreeMap::new(),
                    slots: vec![Slot {
                        name: "y".into(),
                        source: SlotSource::Data {
                            field: "solution".into(),
                        },
                        reward: None,
                    }],
                    loss: sft_loss("y"),
                    reference: None,
                    mask_truncated: false,
                    updates_per_batch: 1,
                },
                optimizer: Optimizer::AdamW {
                    lr: spec.lr.clone(),
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: 0.0,
                },
                grad_clip: Some(1.0),
                grad_accum: spec.grad_accum,
                hypers: BTreeMap::new(),
                evals: vec![Eval {
                    data: "test".into(),
                    every: spec.eval_every,
                    limit: spec.eval_limit,
                    metrics: vec![Metric {
                        name: "accuracy".into(),
                        rollout: "greedy".into(),
                        kind: MetricKind::MeanReward {
                            reward: "correct".into(),
                        },
                    }],
                }],
                checkpoint_every: spec.checkpoint_every,
                keep_checkpoints: spec.keep_checkpoints,
            }),
        }],
        defaults_applied: vec![],
        prerequisites: vec![],
    }
}

pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("post-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// GRPO (no KL, no clipping) on the SFT graph's data: `n` samples per prompt from the policy
/// with the `correct` reward; advantage = reward - group mean; seq-mean-token-mean.
pub fn grpo_graph(spec: &SftSpec, n: usize, branched: bool) -> Graph {
    let mut g = sft_graph(spec);
    let base = Sampling {
        model: "policy".into(),
        n,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        max_tokens: spec.max_tokens,
        stop: vec![],
    };
    g.rollouts.push(RolloutNode {
        name: "explore".into(),
        policy: if branched {
            Rollout::Branched {
                base,
                reward: "correct".into(),
                success_threshold: 0.5,
                expert_field: "solution".into(),
                step_delimiter: "\n".into(),
                search: PrefixSearch::Binary,
                remember: true,
                anchor: BranchAnchor::Boundary,
            }
        } else {
            Rollout::Sample(base)
        },
    });
    let reward = Expr::input(Quantity::Reward, "y");
    let adv = Expr::binary(
        BinaryOp::Sub,
        reward.clone(),
        Expr::reduce(Reduce::GroupMean, reward),
    );
    let ratio = Expr::unary(
        UnaryOp::Exp,
        Expr::binary(
            BinaryOp::Sub,
            Expr::input(Quantity::Logp, "y"),
            Expr::input(Quantity::OldLogp, "y"),
        ),
    );
    let loss = Expr::unary(
        UnaryOp::Neg,
        Expr::reduce(
            Reduce::MeanSeqs,
            Expr::reduce(Reduce::MeanTokens, Expr::binary(BinaryOp::Mul, ratio, adv)),
        ),
    );
    if let StageKind::Train(t) = &mut g.stages[0].kind {
        t.batch = Batch {
            size: spec.batch,
            unit: BatchUnit::Prompts,
        };
        t.objective = ObjectiveInstance {
            name: "grpo".into(),
            args: BTreeMap::new(),
            slots: vec![Slot {
                name: "y".into(),
                source: SlotSource::Rollout {
                    rollout: "explore".into(),
                },
                reward: Some("correct".into()),
            }],
            loss,
            reference: None,
            mask_truncated: true,
            updates_per_batch: 2,
        };
    }
    g
}
