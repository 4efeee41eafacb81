use std::collections::BTreeMap;
use std::time::Instant;
use candle_core::{Device, Tensor, Var};
use post_graph::{BinaryOp as B, Expr, Quantity as Q, Reduce as R, UnaryOp as U};
use post_kernels::formula::{FusedLoss, SlotInputs, evaluate_unfused};
fn main() {
    let margin = |s: &str| Expr::binary(B::Sub, Expr::reduce(R::SumTokens, Expr::input(Q::Logp, s)), Expr::reduce(R::SumTokens, Expr::input(Q::RefLogp, s)));
    let z = Expr::binary(B::Mul, Expr::Hyper { name: "beta".into() }, Expr::binary(B::Sub, margin("chosen"), margin("rejected")));
    let e = Expr::unary(U::Neg, Expr::reduce(R::MeanSeqs, Expr::unary(U::LogSigmoid, z)));
    let (b, t) = (256, 1024);
    let mk = || {
        let lp = Tensor::rand(-3f32, -0.1, (b, t), &Device::Cpu).unwrap();
        let v = Var::from_tensor(&lp).unwrap();
        let s = SlotInputs { logp: v.as_tensor().clone(), ref_logp: Some((&lp * 1.1).unwrap()), old_logp: None, mask: Tensor::ones((b, t), candle_core::DType::F32, &Device::Cpu).unwrap(), reward: None, max_tokens: None, group_size: 1 };
        (v, s)
    };
    let (vc, c) = mk();
    let (vr, r) = mk();
    let slots = BTreeMap::from([("chosen".to_string(), c), ("rejected".to_string(), r)]);
    let hypers = BTreeMap::from([("beta".to_string(), 0.1)]);
    let f = FusedLoss::new(&e).unwrap();
    if std::env::var("ONLY_FUSED").is_ok() { for _ in 0..300 { let l = f.evaluate(&slots, &hypers).unwrap(); let _ = l.backward().unwrap(); } return; }
    for _ in 0..3 {
        let t0 = Instant::now();
        let l = f.evaluate(&slots, &hypers).unwrap();
        let t1 = Instant::now();
        let g = l.backward().unwrap();
        let t2 = Instant::now();
        let _ = (g.get(&vc), g.get(&vr));
        let lu = evaluate_unfused(&e, &slots, &hypers).unwrap();
        let t3 = Instant::now();
        let _ = lu.backward().unwrap();
        let t4 = Instant::now();
        println!("fused fwd {:?} bwd {:?} | unfused fwd {:?} bwd {:?}", t1 - t0, t2 - t1, t3 - t2, t4 - t3);
    }
}
