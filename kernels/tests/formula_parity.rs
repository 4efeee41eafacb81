//! Fused formulas equal the unfused candle evaluation of the same `Expr`, forward and backward
//! (gradient with respect to every slot's `logp`), and both equal an independent float64
//! reference for GRPO and DPO.

mod common;

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use common::{Rng, assert_close};
use post_graph::{BinaryOp as B, Expr, Quantity as Q, Reduce as R, UnaryOp as U};
use post_kernels::formula::{FusedLoss, SlotTensors, evaluate_unfused};

const TOL: f32 = 1e-5;

fn inp(q: Q, s: &str) -> Expr {
    Expr::input(q, s)
}
fn c(v: f64) -> Expr {
    Expr::constant(v)
}
fn hyper(n: &str) -> Expr {
    Expr::Hyper { name: n.into() }
}
fn un(f: U, a: Expr) -> Expr {
    Expr::unary(f, a)
}
fn bin(f: B, a: Expr, b: Expr) -> Expr {
    Expr::binary(f, a, b)
}
fn red(f: R, a: Expr) -> Expr {
    Expr::reduce(f, a)
}
fn detach(a: Expr) -> Expr {
    Expr::Detach { arg: Box::new(a) }
}

/// GRPO with PPO clipping and a k3 KL term, sequence-mean of token-means.
fn grpo() -> Expr {
    let s = "y";
    let r = inp(Q::Reward, s);
    let adv = bin(
        B::Div,
        bin(B::Sub, r.clone(), red(R::GroupMean, r.clone())),
        bin(B::Add, red(R::GroupStd, r), c(1e-4)),
    );
    let ratio = un(U::Exp, bin(B::Sub, inp(Q::Logp, s), inp(Q::OldLogp, s)));
    let clipped = bin(
        B::Min,
        bin(B::Max, ratio.clone(), bin(B::Sub, c(1.0), hyper("clip"))),
        bin(B::Add, c(1.0), hyper("clip")),
    );
    let surrogate = un(
        U::Neg,
        bin(
            B::Min,
            bin(B::Mul, ratio, adv.clone()),
            bin(B::Mul, clipped, adv),
        ),
    );
    let d = bin(B::Sub, inp(Q::RefLogp, s), inp(Q::Logp, s));
    let kl = bin(B::Sub, bin(B::Sub, un(U::Exp, d.clone()), d), c(1.0));
    let per_token = bin(B::Add, surrogate, bin(B::Mul, hyper("beta"), kl));
    red(R::MeanSeqs, red(R::MeanTokens, per_token))
}

/// DPO over summed sequence log-probabilities of two slots.
fn dpo() -> Expr {
    let margin = |s: &str| {
        bin(
            B::Sub,
            red(R::SumTokens, inp(Q::Logp, s)),
            red(R::SumTokens, inp(Q::RefLogp, s)),
        )
    };
    let z = bin(
        B::Mul,
        hyper("beta"),
        bin(B::Sub, margin("chosen"), margin("rejected")),
    );
    un(U::Neg, red(R::MeanSeqs, un(U::LogSigmoid, z)))
}

struct Case {
    slots: BTreeMap<String, SlotTensors>,
    vars: BTreeMap<String, Var>,
    hypers: BTreeMap<String, f64>,
}

fn case(rng: &mut Rng, names: &[&str], b: usize, t: usize, group: usize) -> Case {
    let mut slots = BTreeMap::new();
    let mut vars = BTreeMap::new();
    for &n in names {
        // Log-probabilities are negative; old/ref differ from logp by small noise (no exact ties).
        let lp: Vec<f32> = (0..b * t).map(|_| -(rng.uniform() * 3.0 + 0.01)).collect();
        let old: Vec<f32> = lp.iter().map(|v| v + rng.normal() * 0.2).collect();
        let rf: Vec<f32> = lp.iter().map(|v| v + rng.normal() * 0.3).collect();
        let mut mask = vec![0.0f32; b * t];
        for row in 0..b {
            // Every row keeps at least one token; lengths vary, row 0 uses the whole width.
            let len = if row == 0 { t } else { 1 + rng.below(t) };
            mask[row * t..row * t + len].fill(1.0);
        }
        let reward: Vec<f32> = (0..b)
            .map(|_| (rng.below(3) as f32) * 0.5 + rng.uniform() * 0.1)
            .collect();
        let dev = &Device::Cpu;
        let logp = Var::from_vec(lp, (b, t), dev).unwrap();
        slots.insert(
            n.to_string(),
            SlotTensors {
                logp: logp.as_tensor().clone(),
                ref_logp: Some(Tensor::from_vec(rf, (b, t), dev).unwrap()),
                old_logp: Some(Tensor::from_vec(old, (b, t), dev).unwrap()),
                mask: Tensor::from_vec(mask, (b, t), dev).unwrap(),
                reward: Some(Tensor::from_vec(reward, b, dev).unwrap()),
                max_tokens: t,
                group_size: group,
            },
        );
        vars.insert(n.to_string(), logp);
    }
    let hypers = [("beta", 0.1), ("clip", 0.2), ("tau", 0.7)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Case {
        slots,
        vars,
        hypers,
    }
}

fn check(name: &str, e: &Expr, cs: &Case) {
    let fused = FusedLoss::new(e).unwrap_or_else(|err| panic!("{name}: {err}"));
    assert!(fused.fused_regions() > 0, "{name}: nothing was fused");
    let lf = fused.evaluate(&cs.slots, &cs.hypers).unwrap();
    let lu = evaluate_unfused(e, &cs.slots, &cs.hypers).unwrap();
    assert_close(&format!("{name} loss"), &lf, &lu, TOL);
    let gf = lf.backward().unwrap();
    let gu = lu.backward().unwrap();
    for (slot, v) in &cs.vars {
        match (gf.get(v), gu.get(v)) {
            (Some(a), Some(b)) => assert_close(&format!("{name} dlogp[{slot}]"), a, b, TOL),
            (None, None) => {}
            (a, b) => panic!(
                "{name}: gradient presence differs for {slot}: fused {} unfused {}",
                a.is_some(),
                b.is_some()
            ),
        }
    }
}

#[test]
fn grpo_fused_equals_unfused() {
    let mut rng = Rng::new(11);
    for &(b, t) in &[(8usize, 13usize), (12, 64), (4, 3)] {
        check("grpo", &grpo(), &case(&mut rng, &["y"], b, t, 4));
    }
}

#[test]
fn dpo_fused_equals_unfused() {
    let mut rng = Rng::new(12);
    for &(b, t) in &[(6usize, 17usize), (3, 1), (16, 100)] {
        check(
            "dpo",
            &dpo(),
            &case(&mut rng, &["chosen", "rejected"], b, t, 1),
        );
    }
}

/// Every unary and binary operator, `where`, `detach`, hyperparameters and every reduction, in
/// token and sequence regions.
#[test]
fn every_operator_fused_equals_unfused() {
    let lp = || inp(Q::Logp, "y");
    let old = || inp(Q::OldLogp, "y");
    let r = || inp(Q::Reward, "y");
    let unaries = [
        U::Neg,
        U::Exp,
        U::Sigmoid,
        U::LogSigmoid,
        U::Relu,
        U::Abs,
        U::Square,
        U::Tanh,
    ];
    let mut formulas: Vec<(String, Expr)> = Vec::new();
    for f in unaries {
        // Centred near zero so relu/abs/tanh see both signs and both tanh branches.
        let x = bin(B::Mul, bin(B::Sub, lp(), old()), c(3.0));
        formulas.push((
            format!("{f:?}"),
            red(R::MeanSeqs, red(R::MeanTokens, un(f, x))),
        ));
    }
    // log, log1p and sqrt need arguments above their poles.
    for f in [U::Log, U::Log1p, U::Sqrt] {
        let x = un(U::Exp, lp());
        formulas.push((
            format!("{f:?}"),
            red(R::MeanAllTokens, un(f, bin(B::Add, x, c(0.5)))),
        ));
    }
    for f in [
        B::Add,
        B::Sub,
        B::Mul,
        B::Div,
        B::Min,
        B::Max,
        B::Gt,
        B::Ge,
        B::Lt,
        B::Le,
    ] {
        let e = bin(B::Mul, bin(f, lp(), bin(B::Mul, old(), c(0.9))), lp());
        formulas.push((format!("{f:?}"), red(R::SumSeqs, red(R::SumTokens, e))));
    }
    formulas.push((
        "pow const".into(),
        red(
            R::SumAllTokens,
            bin(B::Pow, bin(B::Sub, c(0.0), lp()), c(2.5)),
        ),
    ));
    formulas.push((
        "pow int".into(),
        red(R::SumAllTokens, bin(B::Pow, lp(), c(3.0))),
    ));
    formulas.push((
        "pow var".into(),
        red(
            R::SumAllTokens,
            bin(B::Pow, un(U::Exp, lp()), bin(B::Add, r(), c(0.5))),
        ),
    ));
    formulas.push((
        "where".into(),
        red(
            R::MeanSeqs,
            red(
                R::MeanTokens,
                Expr::Where {
                    cond: Box::new(bin(B::Sub, lp(), old())),
                    then: Box::new(un(U::Exp, lp())),
                    otherwise: Box::new(bin(B::Mul, lp(), hyper("tau"))),
                },
            ),
        ),
    ));
    formulas.push((
        "detach ratio".into(),
        red(
            R::MeanSeqs,
            red(
                R::MeanTokens,
                bin(B::Mul, un(U::Exp, bin(B::Sub, lp(), detach(lp()))), r()),
            ),
        ),
    ));
    formulas.push((
        "seq region over token sums".into(),
        red(
            R::MeanSeqs,
            bin(
                B::Mul,
                un(U::Tanh, red(R::MeanTokens, lp())),
                bin(B::Sub, red(R::GroupMean, r()), inp(Q::Length, "y")),
            ),
        ),
    ));
    formulas.push((
        "batch stats and max_tokens".into(),
        red(
            R::SumSeqs,
            bin(
                B::Div,
                red(R::SumTokens, bin(B::Mul, lp(), red(R::BatchStd, r()))),
                bin(
                    B::Mul,
                    inp(Q::MaxTokens, "y"),
                    red(R::BatchMean, bin(B::Add, r(), c(1.0))),
                ),
            ),
        ),
    ));
    formulas.push((
        "uniform leaf carrying gradient (falls back)".into(),
        red(
            R::MeanSeqs,
            red(
                R::MeanTokens,
                un(U::Square, bin(B::Sub, lp(), red(R::MeanTokens, lp()))),
            ),
        ),
    ));
    let mut rng = Rng::new(13);
    for (name, e) in &formulas {
        for &(b, t) in &[(4usize, 9usize), (8, 40)] {
            check(name, e, &case(&mut rng, &["y"], b, t, 4));
        }
    }
}

fn to64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// GRPO computed in float64 from first principles: loss and d loss / d logp.
fn grpo_f64(s: &SlotTensors, beta: f64, clip: f64) -> (f64, Vec<f64>) {
    let (b, t) = s.mask.dims2().unwrap();
    let (lp, old, rf, m) = (
        to64(&s.logp),
        to64(s.old_logp.as_ref().unwrap()),
        to64(s.ref_logp.as_ref().unwrap()),
        to64(&s.mask),
    );
    let r = to64(s.reward.as_ref().unwrap());
    let g = s.group_size;
    let mut adv = vec![0.0; b];
    for grp in 0..b / g {
        let xs = &r[grp * g..(grp + 1) * g];
        let mean = xs.iter().sum::<f64>() / g as f64;
        let std = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (g as f64 - 1.0)).sqrt();
        for i in 0..g {
            adv[grp * g + i] = (xs[i] - mean) / (std + 1e-4);
        }
    }
    let mut loss = 0.0;
    let mut grad = vec![0.0; b * t];
    for i in 0..b {
        let len: f64 = m[i * t..(i + 1) * t].iter().sum::<f64>().max(1.0);
        let mut acc = 0.0;
        for j in 0..t {
            let k = i * t + j;
            let ratio = (lp[k] - old[k]).exp();
            let cl = ratio.clamp(1.0 - clip, 1.0 + clip);
            let (u, v) = (ratio * adv[i], cl * adv[i]);
            let sur = -u.min(v);
            // The unclipped branch is active when it is the smaller one, or when clipping did
            // not change the ratio (then both branches are the same function).
            let unclipped_active = u < v || ratio == cl;
            let dsur = if unclipped_active {
                -adv[i] * ratio
            } else {
                0.0
            };
            let d = rf[k] - lp[k];
            let kl = d.exp() - d - 1.0;
            let dkl = -d.exp() + 1.0;
            acc += m[k] * (sur + beta * kl);
            grad[k] = m[k] * (dsur + beta * dkl) / len / b as f64;
        }
        loss += acc / len / b as f64;
    }
    (loss, grad)
}

fn dpo_f64(ch: &SlotTensors, rj: &SlotTensors, beta: f64) -> (f64, Vec<f64>, Vec<f64>) {
    let (b, t) = ch.mask.dims2().unwrap();
    let sums = |s: &SlotTensors| -> Vec<(f64, f64)> {
        let (lp, rf, m) = (
            to64(&s.logp),
            to64(s.ref_logp.as_ref().unwrap()),
            to64(&s.mask),
        );
        (0..b)
            .map(|i| {
                (0..t).fold((0.0, 0.0), |(a, r), j| {
                    (
                        a + m[i * t + j] * lp[i * t + j],
                        r + m[i * t + j] * rf[i * t + j],
                    )
                })
            })
            .collect()
    };
    let (sc, sr) = (sums(ch), sums(rj));
    let (mc, mr) = (to64(&ch.mask), to64(&rj.mask));
    let mut loss = 0.0;
    let mut gc = vec![0.0; b * t];
    let mut gr = vec![0.0; b * t];
    for i in 0..b {
        let z = beta * ((sc[i].0 - sc[i].1) - (sr[i].0 - sr[i].1));
        let sig = 1.0 / (1.0 + (-z).exp());
        loss += -(sig.ln()) / b as f64;
        // d(-logsigmoid(z))/dz = -(1 - sigmoid(z))
        let dz = -(1.0 - sig) / b as f64;
        for j in 0..t {
            gc[i * t + j] = dz * beta * mc[i * t + j];
            gr[i * t + j] = -dz * beta * mr[i * t + j];
        }
    }
    (loss, gc, gr)
}

fn close64(what: &str, got: &Tensor, want: &[f64]) {
    let want_t = Tensor::from_vec(
        want.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        got.dims(),
        &Device::Cpu,
    )
    .unwrap();
    assert_close(what, got, &want_t, TOL);
}

#[test]
fn grpo_and_dpo_match_float64_references() {
    let mut rng = Rng::new(14);
    let cs = case(&mut rng, &["y"], 8, 21, 4);
    let (want, wgrad) = grpo_f64(&cs.slots["y"], 0.1, 0.2);
    for (label, loss) in [
        (
            "fused",
            FusedLoss::new(&grpo())
                .unwrap()
                .evaluate(&cs.slots, &cs.hypers)
                .unwrap(),
        ),
        (
            "unfused",
            evaluate_unfused(&grpo(), &cs.slots, &cs.hypers).unwrap(),
        ),
    ] {
        close64(&format!("grpo {label} loss"), &loss, &[want]);
        let g = loss.backward().unwrap();
        close64(
            &format!("grpo {label} grad"),
            g.get(&cs.vars["y"]).unwrap(),
            &wgrad,
        );
    }
    let cs = case(&mut rng, &["chosen", "rejected"], 6, 15, 1);
    let (want, gc, gr) = dpo_f64(&cs.slots["chosen"], &cs.slots["rejected"], 0.1);
    for (label, loss) in [
        (
            "fused",
            FusedLoss::new(&dpo())
                .unwrap()
                .evaluate(&cs.slots, &cs.hypers)
                .unwrap(),
        ),
        (
            "unfused",
            evaluate_unfused(&dpo(), &cs.slots, &cs.hypers).unwrap(),
        ),
    ] {
        close64(&format!("dpo {label} loss"), &loss, &[want]);
        let g = loss.backward().unwrap();
        close64(
            &format!("dpo {label} dchosen"),
            g.get(&cs.vars["chosen"]).unwrap(),
            &gc,
        );
        close64(
            &format!("dpo {label} drejected"),
            g.get(&cs.vars["rejected"]).unwrap(),
            &gr,
        );
    }
}

#[test]
fn first_update_ties_get_one_gradient() {
    // On the first update old_logp == logp, so PPO's two branches tie at ratio 1: the gradient
    // must be the branch's, not twice it.
    let mut rng = Rng::new(15);
    let mut cs = case(&mut rng, &["y"], 8, 10, 4);
    let s = cs.slots.get_mut("y").unwrap();
    s.old_logp = Some(s.logp.detach());
    let (want, wgrad) = grpo_f64(&cs.slots["y"], 0.1, 0.2);
    let loss = FusedLoss::new(&grpo())
        .unwrap()
        .evaluate(&cs.slots, &cs.hypers)
        .unwrap();
    close64("loss", &loss, &[want]);
    close64(
        "grad",
        loss.backward().unwrap().get(&cs.vars["y"]).unwrap(),
        &wgrad,
    );
}

#[test]
fn kernels_are_cached_by_formula() {
    let a = FusedLoss::new(&grpo()).unwrap();
    let b = FusedLoss::new(&grpo()).unwrap();
    assert_eq!(a.describe(), b.describe());
    let text = a.describe();
    assert!(
        text.contains("f32x4"),
        "Cranelift IR should be vectorised:\n{text}"
    );
    assert!(text.contains("__global__"), "CUDA C missing:\n{text}");
}

#[test]
fn bad_inputs_are_errors() {
    let mut rng = Rng::new(16);
    let cs = case(&mut rng, &["y"], 4, 5, 4);
    let f = FusedLoss::new(&grpo()).unwrap();
    assert!(
        f.evaluate(&cs.slots, &BTreeMap::new())
            .unwrap_err()
            .to_string()
            .contains("clip")
    );
    assert!(f.evaluate(&BTreeMap::new(), &cs.hypers).is_err());
    let not_scalar = red(R::MeanTokens, inp(Q::Logp, "y"));
    assert!(FusedLoss::new(&not_scalar).is_err());
}

#[test]
fn padding_garbage_never_reaches_loss_or_gradient() {
    let mut rng = Rng::new(17);
    let mut cs = case(&mut rng, &["y"], 8, 12, 4);
    let s = cs.slots.get_mut("y").unwrap();
    // Poison every padded position of the constant inputs with NaN and -inf.
    let keep = s.mask.gt(0.0).unwrap();
    let nan = s.mask.ones_like().unwrap().affine(0.0, f64::NAN).unwrap();
    let ninf = s
        .mask
        .ones_like()
        .unwrap()
        .affine(0.0, f64::NEG_INFINITY)
        .unwrap();
    s.old_logp = Some(keep.where_cond(s.old_logp.as_ref().unwrap(), &nan).unwrap());
    s.ref_logp = Some(
        keep.where_cond(s.ref_logp.as_ref().unwrap(), &ninf)
            .unwrap(),
    );
    let loss = FusedLoss::new(&grpo())
        .unwrap()
        .evaluate(&cs.slots, &cs.hypers)
        .unwrap();
    assert!(loss.to_scalar::<f32>().unwrap().is_finite());
    let g = loss.backward().unwrap();
    let g = g
        .get(&cs.vars["y"])
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(g.iter().all(|v| v.is_finite()));
    check("grpo with poisoned padding", &grpo(), &cs);
}

#[test]
fn large_integer_powers_of_negative_bases() {
    let e = red(R::SumAllTokens, bin(B::Pow, inp(Q::Logp, "y"), c(7.0)));
    let mut rng = Rng::new(18);
    check("x^7", &e, &case(&mut rng, &["y"], 3, 5, 1));
}
