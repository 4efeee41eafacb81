//! End to end: the GRPO loss on rollouts of the tiny model, differentiated by candle's autograd
//! through `evaluate_loss`, the log-softmax and the whole transformer, against central finite
//! differences of the loss in the model's parameters (float64 model).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use post_graph::{
    BinaryOp, Expr, GRAPH_VERSION, Graph, Quantity, RExpr, RFunc, Reduce, RewardNode, Rollout,
    Sampling, UnaryOp,
};
use post_runtime::data::Record;
use post_runtime::exec::rollout_slot;
use post_runtime::model::{ModelOptions, Transformer, presets};
use post_runtime::objectives::{SlotMap, SlotTensors, evaluate_loss};
use post_runtime::rollouts::{RolloutBatch, RolloutState, Scoring};
use post_runtime::tasks::{self, TaskSplit};
use post_runtime::tokenizer::Tokenizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn grpo_loss() -> Expr {
    let y = "y";
    let r = Expr::input(Quantity::Reward, y);
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
    let lp = Expr::input(Quantity::Logp, y);
    let rho = Expr::unary(
        UnaryOp::Exp,
        Expr::binary(BinaryOp::Sub, lp.clone(), Expr::input(Quantity::OldLogp, y)),
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
    let d = Expr::binary(BinaryOp::Sub, Expr::input(Quantity::RefLogp, y), lp);
    let k3 = Expr::binary(
        BinaryOp::Sub,
        Expr::binary(BinaryOp::Sub, Expr::unary(UnaryOp::Exp, d.clone()), d),
        Expr::constant(1.0),
    );
    let obj = Expr::binary(
        BinaryOp::Sub,
        surr,
        Expr::binary(
            BinaryOp::Mul,
            Expr::Hyper {
                name: "beta".into(),
            },
            k3,
        ),
    );
    Expr::unary(
        UnaryOp::Neg,
        Expr::reduce(Reduce::MeanSeqs, Expr::reduce(Reduce::MeanTokens, obj)),
    )
}

/// The loss at the model's current parameters with `old`/`ref` log-probabilities held fixed.
fn loss_at(
    batch: &RolloutBatch,
    model: &Transformer,
    fixed: &SlotTensors,
    tok: &Tokenizer,
) -> candle_core::Result<Tensor> {
    let mut st = rollout_slot(batch, model, None, tok.pad_id(), &Device::Cpu, false)?;
    st.logp = st.logp.to_dtype(DType::F64)?;
    st.old_logp = fixed.old_logp.clone();
    st.ref_logp = fixed.ref_logp.clone();
    st.reward = fixed.reward.clone();
    let mut slots = SlotMap::new();
    slots.insert("y".into(), st);
    let hypers = BTreeMap::from([("beta".to_string(), 0.04)]);
    evaluate_loss(&grpo_loss(), &slots, &hypers)
}

#[test]
fn grpo_gradient_through_the_model_matches_finite_differences() {
    let cfg = presets::tiny();
    let dev = Device::Cpu;
    let (model, varmap) =
        Transformer::init_random(&cfg, ModelOptions::default(), 4, DType::F64, &dev)
            .expect("model");
    let (reference, _) =
        Transformer::init_random(&cfg, ModelOptions::default(), 5, DType::F64, &dev).expect("ref");
    let tok = Tokenizer::builtin_char();
    let graph = Graph {
        version: GRAPH_VERSION,
        experiment: "t".into(),
        seed: 1,
        models: vec![],
        datasets: vec![],
        rewards: vec![RewardNode {
            name: "len".into(),
            expr: RExpr::Call {
                func: RFunc::Len,
                args: vec![RExpr::Completion],
            },
        }],
        rollouts: vec![],
        stages: vec![],
        defaults_applied: vec![],
        prerequisites: vec![],
    };
    let recs = tasks::generate("arith", TaskSplit::Train, 2, 2, 3).expect("task");
    let refs: Vec<&Record> = recs.iter().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let rollout = Rollout::Sample(Sampling {
        model: "policy".into(),
        n: 4,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        max_tokens: 8,
        stop: vec!["\n".into()],
    });
    let batch = RolloutState::default()
        .run(
            &rollout,
            &Scoring::resolve(&graph, &rollout, Some("len")).expect("rewards"),
            &model,
            &tok,
            &refs,
            &mut rng,
        )
        .expect("rollout");
    let rewards: Vec<f64> = batch.seqs.iter().map(|s| s.reward).collect();
    assert!(
        rewards.windows(2).any(|w| w[0] != w[1]),
        "rewards must differ for a non-zero advantage: {rewards:?}"
    );

    // Fixed inputs: the reference's log-probabilities and a sampler that differs from the
    // policy (as on a later update), so ratios and clipping are exercised.
    let mut fixed =
        rollout_slot(&batch, &model, Some(&reference), tok.pad_id(), &dev, false).expect("slot");
    let lp = fixed.logp.detach().to_dtype(DType::F64).expect("f64");
    let noise: Vec<f64> = (0..lp.elem_count())
        .map(|_| 0.3 * (rng.random::<f64>() - 0.5))
        .collect();
    let noise = Tensor::from_vec(noise, lp.dims(), &dev).expect("noise");
    fixed.old_logp = Some((&lp + noise).expect("old"));
    fixed.ref_logp = fixed.ref_logp.map(|t| t.to_dtype(DType::F64).expect("f64"));
    fixed.reward = fixed.reward.map(|t| t.to_dtype(DType::F64).expect("f64"));

    let loss = loss_at(&batch, &model, &fixed, &tok).expect("loss");
    let grads = loss.backward().expect("backward");

    let data = varmap.data().lock().expect("var map");
    // Every parameter gets a gradient (no op on the path silently cut the graph).
    for (name, var) in data.iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g
            .sqr()
            .and_then(|t| t.sum_all())
            .and_then(|t| t.to_scalar::<f64>())
            .expect("norm");
        assert!(norm > 0.0, "zero gradient for {name}");
    }
    let checks = [
        ("model.embed_tokens.weight", 7 * 128 + 3),
        ("model.layers.0.self_attn.q_proj.weight", 5),
        ("model.layers.1.self_attn.v_proj.weight", 77),
        ("model.layers.2.mlp.down_proj.weight", 1000),
        ("model.layers.3.input_layernorm.weight", 11),
        ("model.norm.weight", 40),
    ];
    let h = 1e-4;
    for (name, index) in checks {
        let var: &Var = data.get(name).unwrap_or_else(|| panic!("parameter {name}"));
        let original = var.as_tensor().detach();
        let values: Vec<f64> = original
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .expect("values");
        let analytic: f64 = grads
            .get(var.as_tensor())
            .expect("grad")
            .flatten_all()
            .and_then(|t| t.to_vec1::<f64>())
            .expect("grad values")[index];
        let at = |delta: f64| -> f64 {
            let mut v = values.clone();
            v[index] += delta;
            var.set(&Tensor::from_vec(v, original.dims(), &dev).expect("shape"))
                .expect("set");
            loss_at(&batch, &model, &fixed, &tok)
                .and_then(|l| l.to_scalar::<f64>())
                .expect("loss")
        };
        let numeric = (-at(2.0 * h) + 8.0 * at(h) - 8.0 * at(-h) + at(-2.0 * h)) / (12.0 * h);
        var.set(&Tensor::from_vec(values.clone(), original.dims(), &dev).expect("shape"))
            .expect("restore");
        let rel = (analytic - numeric).abs() / numeric.abs().max(1e-12);
        assert!(
            rel < 1e-6,
            "{name}[{index}]: autograd {analytic:e} vs finite differences {numeric:e} (rel {rel:e})"
        );
    }
}
