//! The reduced BREAD reproduction that runs in CI: on a problem whose success probability from
//! the bare prompt is exponentially small, GRPO never sees a success (every group has equal
//! rewards, so zero advantage and no update), while BREAD's expert prefixes give every update a
//! success and its curriculum walks the prefix back to the prompt. Asserts that BREAD ends with
//! a higher held-out accuracy than GRPO, from the same initial model, seeds and step budget,
//! while using only part of the expert-trace tokens.
//!
//! The problem: every answer is the 4-step trace `x\ny\nz\nw`. As in the real reproduction both
//! runs start from one base model, here SFT-ed on traces of the same format with random letters
//! (it knows the format, not the answer), which writes the trace with probability about 26^-4
//! per sample. The training loop is the executor's, reduced: sample, score, build the slot,
//! evaluate the GRPO loss, step AdamW.

use std::collections::BTreeMap;

use candle_core::{DType, Device};
use post_graph::{
    BinaryOp, Expr, GRAPH_VERSION, Graph, ModelConfig, Optimizer as OptSpec, PrefixSearch,
    Quantity, RExpr, RFunc, Reduce, RewardNode, Rollout, Sampling, Schedule, UnaryOp,
};
use post_runtime::data::Record;
use post_runtime::exec::encode_prompt;
use post_runtime::generate::{SamplingParams, generate};
use post_runtime::model::{ModelOptions, Transformer};
use post_runtime::objectives::{SlotMap, evaluate_loss};
use post_runtime::optim::{Grads, Optimizer, Params};
use post_runtime::rewards::{Sample, eval_reward};
use post_runtime::rollouts::{RolloutBatch, RolloutSeq, RolloutState, slot_tensors};
use post_runtime::tokenizer::Tokenizer;
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TRACE: &str = "x\ny\nz\nw";

fn small_config() -> ModelConfig {
    ModelConfig {
        vocab_size: 64,
        hidden_size: 64,
        intermediate_size: 128,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        max_position_embeddings: 64,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-6,
        tie_embeddings: true,
    }
}

/// 1 when the text (expert prefix + completion) starts with the whole trace.
fn solved() -> RExpr {
    let hit = RExpr::Call {
        func: RFunc::StartsWith,
        args: vec![
            RExpr::Call {
                func: RFunc::Trim,
                args: vec![RExpr::Completion],
            },
            RExpr::Field {
                name: "solution".into(),
            },
        ],
    };
    RExpr::If {
        cond: Box::new(hit),
        then: Box::new(RExpr::Num { value: 1.0 }),
        otherwise: Box::new(RExpr::Num { value: 0.0 }),
    }
}

fn records(range: std::ops::Range<usize>) -> Vec<Record> {
    range
        .map(|i| {
            let mut f = BTreeMap::new();
            f.insert("prompt".to_string(), format!("p{i}:"));
            f.insert("solution".to_string(), TRACE.to_string());
            Record::new(f)
        })
        .collect()
}

/// GRPO, group-std advantages, no KL, sequence-mean of token means.
fn grpo_loss() -> Expr {
    let r = Expr::input(Quantity::Reward, "y");
    let adv = Expr::binary(
        BinaryOp::Div,
        Expr::binary(
            BinaryOp::Sub,
            r.clone(),
            Expr::reduce(Reduce::GroupMean, r.clone()),
        ),
        Expr::binary(
            BinaryOp::Add,
            Expr::reduce(Reduce::GroupStd, r),
            Expr::constant(1e-6),
        ),
    );
    let rho = Expr::unary(
        UnaryOp::Exp,
        Expr::binary(
            BinaryOp::Sub,
            Expr::input(Quantity::Logp, "y"),
            Expr::input(Quantity::OldLogp, "y"),
        ),
    );
    let clipped = Expr::binary(
        BinaryOp::Min,
        Expr::binary(BinaryOp::Max, rho.clone(), Expr::constant(0.8)),
        Expr::constant(1.2),
    );
    let surr = Expr::binary(
        BinaryOp::Min,
        Expr::binary(BinaryOp::Mul, rho, adv.clone()),
        Expr::binary(BinaryOp::Mul, clipped, adv),
    );
    Expr::unary(
        UnaryOp::Neg,
        Expr::reduce(Reduce::MeanSeqs, Expr::reduce(Reduce::MeanTokens, surr)),
    )
}

struct Outcome {
    accuracy: f64,
    expert_fraction: f64,
    successes_seen: usize,
}

/// A fresh model holding a copy of `base`'s parameters.
fn copy_of(base: &VarMap) -> (Transformer, VarMap) {
    let (model, varmap) = Transformer::init_random(
        &small_config(),
        ModelOptions::default(),
        0,
        DType::F32,
        &Device::Cpu,
    )
    .expect("model");
    let src = base.data().lock().expect("base parameters");
    let dst = varmap.data().lock().expect("parameters");
    for (name, var) in dst.iter() {
        let value = src[name].as_tensor().copy().expect("copy");
        var.set(&value).expect("set");
    }
    drop(dst);
    (model, varmap)
}

/// The base model: SFT on 4-step traces of random letters (the format, not the answer).
fn base_model() -> VarMap {
    let dev = Device::Cpu;
    let (model, varmap) = Transformer::init_random(
        &small_config(),
        ModelOptions::default(),
        21,
        DType::F32,
        &dev,
    )
    .expect("model");
    let tok = Tokenizer::builtin_char();
    let params = Params::from_varmap(&varmap);
    let mut opt = Optimizer::new(&adamw(), params.clone()).expect("optimizer");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let sft = Expr::unary(
        UnaryOp::Neg,
        Expr::reduce(Reduce::MeanAllTokens, Expr::input(Quantity::Logp, "y")),
    );
    let letters: Vec<char> = "abcdefghijklmnopqrstuvwxyz".chars().collect();
    for step in 0..60 {
        let seqs = (0..16)
            .map(|i| {
                let trace: Vec<String> = (0..4)
                    .map(|_| letters[rng.random_range(0..letters.len())].to_string())
                    .collect();
                let context = encode_prompt(&tok, &format!("p{}:", step * 16 + i)).expect("prompt");
                let mut completion = tok.encode(&trace.join("\n")).expect("encode");
                completion.push(tok.eos_id());
                RolloutSeq {
                    record: i,
                    context,
                    completion,
                    text: String::new(),
                    reward: 0.0,
                    success: false,
                    truncated: false,
                    prefix_steps: 0,
                    prefix_tokens: 0,
                }
            })
            .collect();
        let batch = RolloutBatch {
            seqs,
            group_size: 1,
            max_tokens: 8,
            stats: Default::default(),
        };
        let st = slot_tensors(&batch, &model, None, &tok, &dev, false).expect("slot");
        let mut slots = SlotMap::new();
        slots.insert("y".into(), st);
        let loss = evaluate_loss(&sft, &slots, &BTreeMap::new()).expect("loss");
        let grads = Grads::from_store(&params, &loss.backward().expect("backward"));
        opt.step(&grads, 1e-2).expect("step");
    }
    varmap
}

fn adamw() -> OptSpec {
    OptSpec::AdamW {
        lr: Schedule::constant(1e-2),
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.0,
    }
}

fn train(base_params: &VarMap, policy: Rollout, steps: usize) -> Outcome {
    let dev = Device::Cpu;
    let (model, varmap) = copy_of(base_params);
    let tok = Tokenizer::builtin_char();
    let graph = Graph {
        version: GRAPH_VERSION,
        experiment: "toy".into(),
        seed: 1,
        models: vec![],
        datasets: vec![],
        rewards: vec![RewardNode {
            name: "solved".into(),
            expr: solved(),
        }],
        rollouts: vec![],
        stages: vec![],
        defaults_applied: vec![],
    };
    let params = Params::from_varmap(&varmap);
    let mut opt = Optimizer::new(&adamw(), params.clone()).expect("optimizer");
    let train_recs = records(0..64);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut state = RolloutState::default();
    let loss_expr = grpo_loss();
    let hypers = BTreeMap::new();
    let per_step = 16;
    let mut successes_seen = 0;
    for step in 0..steps {
        let start = (step * per_step) % train_recs.len();
        let batch_recs: Vec<&Record> = train_recs[start..start + per_step].iter().collect();
        let batch = state
            .run(&graph, &policy, Some("solved"), &model, &tok, &batch_recs, &mut rng)
            .expect("rollout");
        successes_seen += batch.seqs.iter().filter(|s| s.reward > 0.5).count();
        eprintln!("DBG step {step} {:?} succ {}", batch.stats, batch.seqs.iter().filter(|s| s.reward > 0.5).count());
        let st = slot_tensors(&batch, &model, None, &tok, &dev, false).expect("slot");
        let mut slots = SlotMap::new();
        slots.insert("y".into(), st);
        let loss = evaluate_loss(&loss_expr, &slots, &hypers).expect("loss");
        let store = loss.backward().expect("backward");
        let mut grads = Grads::from_store(&params, &store);
        grads.clip_global_norm(1.0).expect("clip");
        opt.step(&grads, 1e-2).expect("step");
    }
    // Held-out prompts, greedy decoding from the bare prompt.
    let test_recs = records(1000..1032);
    let prompts: Vec<Vec<u32>> = test_recs
        .iter()
        .map(|r| encode_prompt(&tok, r.get("prompt").unwrap_or("")).expect("prompt"))
        .collect();
    let params = SamplingParams {
        max_tokens: 10,
        ..SamplingParams::default()
    };
    let gens = generate(&model, Some(&tok), &prompts, &params, &mut rng).expect("generate");
    let reward = solved();
    let correct = gens
        .iter()
        .zip(&test_recs)
        .filter(|(g, r)| {
            let sample = Sample {
                completion: g.text.as_deref().unwrap_or(""),
                fields: r.fields(),
                completion_tokens: g.tokens.len(),
            };
            eval_reward(&reward, &sample) > 0.5
        })
        .count();
    Outcome {
        accuracy: correct as f64 / test_recs.len() as f64,
        expert_fraction: state.expert_token_fraction(),
        successes_seen,
    }
}

fn base() -> Sampling {
    Sampling {
        model: "policy".into(),
        n: 8,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        max_tokens: 8,
        stop: vec![],
    }
}

#[test]
fn bread_beats_grpo_when_success_is_exponentially_rare() {
    let steps = 40;
    let base_params = base_model();
    let grpo = train(&base_params, Rollout::Sample(base()), steps);
    let bread = train(
        &base_params,
        Rollout::Branched {
            base: base(),
            reward: "solved".into(),
            success_threshold: 0.5,
            expert_field: "solution".into(),
            step_delimiter: "\n".into(),
            search: PrefixSearch::Binary,
            remember: true,
        },
        steps,
    );
    eprintln!(
        "GRPO: accuracy {:.3}, successes seen {}; BREAD: accuracy {:.3}, successes seen {}, expert-token fraction {:.3}",
        grpo.accuracy, grpo.successes_seen, bread.accuracy, bread.successes_seen, bread.expert_fraction
    );
    assert_eq!(grpo.expert_fraction, 0.0);
    assert!(bread.successes_seen > grpo.successes_seen);
    assert!(
        bread.accuracy > grpo.accuracy,
        "BREAD {} vs GRPO {}",
        bread.accuracy,
        grpo.accuracy
    );
    assert!(bread.expert_fraction < 1.0);
}
