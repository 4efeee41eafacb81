//! Every stdlib objective formula, evaluated by `objectives::evaluate_loss` on candle (f64),
//! against an independent float64 reference written from the formulas of methods.md: plain
//! loops for the loss, analytic gradients (themselves checked by central differences for the
//! smooth objectives). Random inputs, random masks (a masked prefix, random lengths, padding
//! filled with NaN), relative error < 1e-6.
//!
//! Two sets of tests share the references: hand-built `Expr`s mirroring methods.md, and the
//! stdlib objectives as the compiler lowers them (`stdlib_*`: a one-stage experiment compiled
//! in memory).

// Index loops mirror the subscripts of the formulas they check.
#![allow(clippy::needless_range_loop)]

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use post_graph::{BinaryOp, Expr, Quantity, Reduce, UnaryOp};
use post_runtime::objectives::{SlotMap, SlotTensors, evaluate_loss};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ------------------------------------------------------------------------------------------
// Reference data and comparison

#[derive(Clone)]
struct RefSlot {
    lp: Vec<Vec<f64>>,
    rf: Vec<Vec<f64>>,
    old: Vec<Vec<f64>>,
    m: Vec<Vec<f64>>,
    r: Vec<f64>,
    g: usize,
    max_tokens: usize,
}

impl RefSlot {
    fn n(&self) -> usize {
        self.lp.len()
    }
    fn t(&self) -> usize {
        self.lp[0].len()
    }
    fn len(&self, i: usize) -> f64 {
        self.m[i].iter().sum()
    }
    fn total(&self) -> f64 {
        (0..self.n()).map(|i| self.len(i)).sum()
    }
    /// Masked sum over a row of a per-token function.
    fn sum_row(&self, i: usize, f: impl Fn(usize) -> f64) -> f64 {
        (0..self.t())
            .filter(|&j| self.m[i][j] > 0.0)
            .map(|j| self.m[i][j] * f(j))
            .sum()
    }
    fn zero_grad(&self) -> Vec<Vec<f64>> {
        vec![vec![0.0; self.t()]; self.n()]
    }
}

/// `n` sequences of `t` slots; each has a masked prefix and random length (some may be empty
/// when `allow_empty`), padding holds NaN.
fn random_slot(rng: &mut ChaCha8Rng, n: usize, t: usize, g: usize, allow_empty: bool) -> RefSlot {
    let mut s = RefSlot {
        lp: vec![vec![f64::NAN; t]; n],
        rf: vec![vec![f64::NAN; t]; n],
        old: vec![vec![f64::NAN; t]; n],
        m: vec![vec![0.0; t]; n],
        r: (0..n)
            .map(|_| f64::from(rng.random_range(0..3u8)) * 0.5)
            .collect(),
        g,
        max_tokens: t + 3,
    };
    for i in 0..n {
        let start = rng.random_range(0..t / 3);
        let end = if allow_empty && i == 1 {
            start
        } else {
            rng.random_range(start + 1..=t)
        };
        for j in start..end {
            s.m[i][j] = 1.0;
            s.lp[i][j] = -3.0 * rng.random::<f64>() - 0.01;
            s.rf[i][j] = s.lp[i][j] + 0.6 * (rng.random::<f64>() - 0.5);
            s.old[i][j] = s.lp[i][j] + 0.8 * (rng.random::<f64>() - 0.5);
        }
    }
    s
}

fn to_tensor(rows: &[Vec<f64>]) -> Tensor {
    let (n, t) = (rows.len(), rows[0].len());
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (n, t), &Device::Cpu).expect("shape matches data")
}

/// Evaluate `expr` on candle (f64) and return (loss, d loss / d logp per slot).
fn candle_loss_and_grads(
    expr: &Expr,
    slots: &[(&str, &RefSlot)],
    hypers: &[(&str, f64)],
) -> (f64, BTreeMap<String, Vec<Vec<f64>>>) {
    let mut map = SlotMap::new();
    let mut vars = Vec::new();
    for (name, s) in slots {
        let var = Var::from_tensor(&to_tensor(&s.lp)).expect("f64 tensor");
        let st = SlotTensors {
            logp: var.as_tensor().clone(),
            ref_logp: Some(to_tensor(&s.rf)),
            old_logp: Some(to_tensor(&s.old)),
            mask: to_tensor(&s.m),
            reward: Some(Tensor::new(s.r.as_slice(), &Device::Cpu).expect("reward")),
            group_size: s.g,
            max_tokens: s.max_tokens,
        };
        map.insert((*name).to_string(), st);
        vars.push(((*name).to_string(), var));
    }
    let hypers: BTreeMap<String, f64> =
        hypers.iter().map(|(k, v)| ((*k).to_string(), *v)).collect();
    let loss = evaluate_loss(expr, &map, &hypers).expect("loss evaluates");
    assert_eq!(loss.dtype(), DType::F64);
    assert_eq!(loss.dims(), &[] as &[usize]);
    let value = loss.to_scalar::<f64>().expect("scalar");
    let grads = loss.backward().expect("backward");
    let mut out = BTreeMap::new();
    for (name, var) in vars {
        let g = match grads.get(var.as_tensor()) {
            Some(g) => g.to_vec2::<f64>().expect("2-d grad"),
            None => vec![vec![0.0; var.dims()[1]]; var.dims()[0]],
        };
        out.insert(name, g);
    }
    (value, out)
}

fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// Norm-wise relative error of gradients: max |a - b| / max |b|.
fn grad_rel_err(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let mut diff: f64 = 0.0;
    let mut scale: f64 = 0.0;
    for (ra, rb) in a.iter().zip(b) {
        for (x, y) in ra.iter().zip(rb) {
            assert!(x.is_finite(), "candle gradient is not finite: {x}");
            diff = diff.max((x - y).abs());
            scale = scale.max(y.abs());
        }
    }
    diff / scale.max(1e-12)
}

type LossFn = dyn Fn(&[RefSlot]) -> f64;
/// A per-pair loss of h and its derivative.
type PairFn = dyn Fn(f64) -> (f64, f64);

/// Fourth-order central differences of the reference loss w.r.t. each unmasked logp.
fn numeric_grads(loss: &LossFn, slots: &[RefSlot]) -> Vec<Vec<Vec<f64>>> {
    let h = 1e-4;
    let mut out = Vec::new();
    for k in 0..slots.len() {
        let mut g = slots[k].zero_grad();
        for i in 0..slots[k].n() {
            for j in 0..slots[k].t() {
                if slots[k].m[i][j] == 0.0 {
                    continue;
                }
                let at = |d: f64| {
                    let mut s = slots.to_vec();
                    s[k].lp[i][j] += d;
                    loss(&s)
                };
                g[i][j] = (-at(2.0 * h) + 8.0 * at(h) - 8.0 * at(-h) + at(-2.0 * h)) / (12.0 * h);
            }
        }
        out.push(g);
    }
    out
}

/// The full check: candle's loss and gradients against the reference's, and (when `smooth`)
/// the reference's analytic gradient against its own central differences.
#[allow(clippy::too_many_arguments)] // one flat call per objective reads best in the tests
fn check(
    what: &str,
    expr: &Expr,
    names: &[&str],
    slots: &[RefSlot],
    hypers: &[(&str, f64)],
    loss: &LossFn,
    grads: &[Vec<Vec<f64>>],
    smooth: bool,
) {
    let named: Vec<(&str, &RefSlot)> = names.iter().copied().zip(slots.iter()).collect();
    let (value, got) = candle_loss_and_grads(expr, &named, hypers);
    let want = loss(slots);
    assert!(want.is_finite(), "{what}: reference loss {want}");
    assert!(
        rel_err(value, want) < 1e-6,
        "{what}: loss {value} vs reference {want}"
    );
    for (k, name) in names.iter().enumerate() {
        let e = grad_rel_err(&got[*name], &grads[k]);
        assert!(e < 1e-6, "{what}: gradient of slot {name} rel. error {e}");
        // Padding carries exactly zero gradient.
        for (i, row) in got[*name].iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                if slots[k].m[i][j] == 0.0 {
                    assert_eq!(*v, 0.0, "{what}: gradient at padding [{i},{j}]");
                }
            }
        }
    }
    if smooth {
        let num = numeric_grads(loss, slots);
        for k in 0..slots.len() {
            let e = grad_rel_err(&grads[k], &num[k]);
            assert!(
                e < 1e-6,
                "{what}: analytic reference vs finite differences {e}"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// Expr builders (as the stdlib lowers the objectives)

fn c(v: f64) -> Expr {
    Expr::constant(v)
}
fn hyper(n: &str) -> Expr {
    Expr::Hyper { name: n.into() }
}
fn inp(q: Quantity, s: &str) -> Expr {
    Expr::input(q, s)
}
fn bin(f: BinaryOp, a: Expr, b: Expr) -> Expr {
    Expr::binary(f, a, b)
}
fn add(a: Expr, b: Expr) -> Expr {
    bin(BinaryOp::Add, a, b)
}
fn sub(a: Expr, b: Expr) -> Expr {
    bin(BinaryOp::Sub, a, b)
}
fn mul(a: Expr, b: Expr) -> Expr {
    bin(BinaryOp::Mul, a, b)
}
fn div(a: Expr, b: Expr) -> Expr {
    bin(BinaryOp::Div, a, b)
}
fn un(f: UnaryOp, a: Expr) -> Expr {
    Expr::unary(f, a)
}
fn red(f: Reduce, a: Expr) -> Expr {
    Expr::reduce(f, a)
}
fn neg(a: Expr) -> Expr {
    un(UnaryOp::Neg, a)
}
fn seq_logratio(s: &str) -> Expr {
    sub(
        red(Reduce::SumTokens, inp(Quantity::Logp, s)),
        red(Reduce::SumTokens, inp(Quantity::RefLogp, s)),
    )
}

/// h = (logp(y_w) - ref(y_w)) - (logp(y_l) - ref(y_l)), summed over completion tokens.
fn pair_h(w: &str, l: &str) -> Expr {
    sub(seq_logratio(w), seq_logratio(l))
}

#[derive(Clone, Copy, Debug)]
enum Scale {
    Group,
    Batch,
    None,
}
#[derive(Clone, Copy, Debug)]
enum Kl {
    K1,
    K2,
    K3,
}
#[derive(Clone, Copy, Debug)]
enum Agg {
    SeqMeanTokenMean,
    TokenMean,
    SeqMeanTokenSumNorm,
}

fn grpo_expr(s: &str, scale: Scale, kl: Kl, agg: Agg) -> Expr {
    let r = inp(Quantity::Reward, s);
    let centred = sub(r.clone(), red(Reduce::GroupMean, r.clone()));
    let adv = match scale {
        Scale::Group => div(centred, add(red(Reduce::GroupStd, r), hyper("adv_eps"))),
        Scale::Batch => div(centred, add(red(Reduce::BatchStd, r), hyper("adv_eps"))),
        Scale::None => centred,
    };
    let lp = inp(Quantity::Logp, s);
    let rho = un(UnaryOp::Exp, sub(lp.clone(), inp(Quantity::OldLogp, s)));
    let clipped = bin(
        BinaryOp::Min,
        bin(BinaryOp::Max, rho.clone(), sub(c(1.0), hyper("eps_low"))),
        add(c(1.0), hyper("eps_high")),
    );
    let surr = bin(BinaryOp::Min, mul(rho, adv.clone()), mul(clipped, adv));
    let d = sub(inp(Quantity::RefLogp, s), lp);
    let klx = match kl {
        Kl::K1 => neg(d),
        Kl::K2 => mul(c(0.5), un(UnaryOp::Square, d)),
        Kl::K3 => sub(sub(un(UnaryOp::Exp, d.clone()), d), c(1.0)),
    };
    let obj = sub(surr, mul(hyper("beta"), klx));
    let total = match agg {
        Agg::SeqMeanTokenMean => red(Reduce::MeanSeqs, red(Reduce::MeanTokens, obj)),
        Agg::TokenMean => red(Reduce::MeanAllTokens, obj),
        Agg::SeqMeanTokenSumNorm => div(
            red(Reduce::SumAllTokens, obj),
            mul(inp(Quantity::NumSeqs, s), inp(Quantity::MaxTokens, s)),
        ),
    };
    neg(total)
}

// ------------------------------------------------------------------------------------------
// References (plain f64, straight from methods.md)

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
fn log_sigmoid(x: f64) -> f64 {
    -(-x).exp().ln_1p()
}

fn seq_ratio(s: &RefSlot, i: usize) -> f64 {
    s.sum_row(i, |j| s.lp[i][j] - s.rf[i][j])
}

/// Per-pair loss f(h) and its derivative, for dpo-like objectives.
fn pair_loss(w: &RefSlot, l: &RefSlot, f: &dyn Fn(f64) -> (f64, f64)) -> (f64, Vec<Vec<Vec<f64>>>) {
    let n = w.n();
    let mut gw = w.zero_grad();
    let mut gl = l.zero_grad();
    let mut total = 0.0;
    for i in 0..n {
        let h = seq_ratio(w, i) - seq_ratio(l, i);
        let (v, dv) = f(h);
        total += v / n as f64;
        for j in 0..w.t() {
            gw[i][j] = w.m[i][j] * dv / n as f64;
        }
        for j in 0..l.t() {
            gl[i][j] = -l.m[i][j] * dv / n as f64;
        }
    }
    (total, vec![gw, gl])
}

fn group_stats(r: &[f64], g: usize) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0; r.len()];
    let mut std = vec![0.0; r.len()];
    for start in (0..r.len()).step_by(g) {
        let grp = &r[start..start + g];
        let mu = grp.iter().sum::<f64>() / g as f64;
        let var = if g > 1 {
            grp.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (g as f64 - 1.0)
        } else {
            0.0
        };
        for k in start..start + g {
            mean[k] = mu;
            std[k] = var.sqrt();
        }
    }
    (mean, std)
}

struct GrpoParams {
    eps_low: f64,
    eps_high: f64,
    beta: f64,
    adv_eps: f64,
}

fn grpo_advantages(s: &RefSlot, scale: Scale, p: &GrpoParams) -> Vec<f64> {
    let (mean, gstd) = group_stats(&s.r, s.g);
    let (_, bstd) = group_stats(&s.r, s.n());
    (0..s.n())
        .map(|i| match scale {
            Scale::Group => (s.r[i] - mean[i]) / (gstd[i] + p.adv_eps),
            Scale::Batch => (s.r[i] - mean[i]) / (bstd[i] + p.adv_eps),
            Scale::None => s.r[i] - mean[i],
        })
        .collect()
}

fn grpo_reference(
    s: &RefSlot,
    scale: Scale,
    kl: Kl,
    agg: Agg,
    p: &GrpoParams,
) -> (f64, Vec<Vec<f64>>) {
    let adv = grpo_advantages(s, scale, p);
    let (n, t) = (s.n(), s.t());
    let mut obj = s.zero_grad();
    let mut dobj = s.zero_grad();
    for i in 0..n {
        for j in 0..t {
            if s.m[i][j] == 0.0 {
                continue;
            }
            let a = adv[i];
            let rho = (s.lp[i][j] - s.old[i][j]).exp();
            let clipped = rho.clamp(1.0 - p.eps_low, 1.0 + p.eps_high);
            // The unclipped term is the minimum (or ties with it): its derivative is rho * A;
            // otherwise the clipped term is a constant in logp.
            let (surr, dsurr) = if rho * a <= clipped * a {
                (rho * a, rho * a)
            } else {
                (clipped * a, 0.0)
            };
            let d = s.rf[i][j] - s.lp[i][j];
            let (k, dk) = match kl {
                Kl::K1 => (-d, 1.0),
                Kl::K2 => (0.5 * d * d, -d),
                Kl::K3 => (d.exp() - d - 1.0, 1.0 - d.exp()),
            };
            obj[i][j] = surr - p.beta * k;
            dobj[i][j] = dsurr - p.beta * dk;
        }
    }
    let mut loss = 0.0;
    let mut grad = s.zero_grad();
    for i in 0..n {
        let len = s.len(i);
        for j in 0..t {
            let m = s.m[i][j];
            if m == 0.0 {
                continue;
            }
            let w = match agg {
                Agg::SeqMeanTokenMean => m / len / n as f64,
                Agg::TokenMean => m / s.total(),
                Agg::SeqMeanTokenSumNorm => m / (n as f64 * s.max_tokens as f64),
            };
            loss -= w * obj[i][j];
            grad[i][j] = -w * dobj[i][j];
        }
    }
    (loss, grad)
}

// ------------------------------------------------------------------------------------------
// Tests

#[test]
fn sft_sequence_sum_and_token_mean() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let s = random_slot(&mut rng, 6, 10, 1, true);
    let n = s.n() as f64;
    // Sum over completion tokens, mean over sequences.
    let expr = neg(red(
        Reduce::MeanSeqs,
        red(Reduce::SumTokens, inp(Quantity::Logp, "y")),
    ));
    let loss = move |v: &[RefSlot]| -> f64 {
        -(0..v[0].n())
            .map(|i| v[0].sum_row(i, |j| v[0].lp[i][j]))
            .sum::<f64>()
            / n
    };
    let mut g = s.zero_grad();
    for i in 0..s.n() {
        for j in 0..s.t() {
            g[i][j] = -s.m[i][j] / n;
        }
    }
    check(
        "sft",
        &expr,
        &["y"],
        std::slice::from_ref(&s),
        &[],
        &loss,
        &[g],
        true,
    );

    // Token mean over the batch (QFFT trains the same loss on prompt-free records).
    let expr = neg(red(Reduce::MeanAllTokens, inp(Quantity::Logp, "y")));
    let total = s.total();
    let loss = move |v: &[RefSlot]| -> f64 {
        -(0..v[0].n())
            .map(|i| v[0].sum_row(i, |j| v[0].lp[i][j]))
            .sum::<f64>()
            / total
    };
    let mut g = s.zero_grad();
    for i in 0..s.n() {
        for j in 0..s.t() {
            g[i][j] = -s.m[i][j] / total;
        }
    }
    check(
        "sft token-mean / qfft",
        &expr,
        &["y"],
        &[s],
        &[],
        &loss,
        &[g],
        true,
    );
}

fn dpo_check(variant: &str, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let w = random_slot(&mut rng, 5, 9, 1, false);
    let l = random_slot(&mut rng, 5, 7, 1, false);
    let beta = 0.3;
    let h = pair_h("chosen", "rejected");
    let (expr, f): (Expr, Box<PairFn>) = match variant {
        "sigmoid" => (
            neg(un(UnaryOp::LogSigmoid, mul(hyper("beta"), h))),
            Box::new(move |h: f64| (-log_sigmoid(beta * h), -beta * sigmoid(-beta * h))),
        ),
        "ipo" => (
            un(
                UnaryOp::Square,
                sub(h, div(c(1.0), mul(c(2.0), hyper("beta")))),
            ),
            Box::new(move |h: f64| {
                let z = h - 1.0 / (2.0 * beta);
                (z * z, 2.0 * z)
            }),
        ),
        "hinge" => (
            un(UnaryOp::Relu, sub(c(1.0), mul(hyper("beta"), h))),
            Box::new(move |h: f64| {
                let z = 1.0 - beta * h;
                if z > 0.0 { (z, -beta) } else { (0.0, 0.0) }
            }),
        ),
        _ => unreachable!("test variants are fixed"),
    };
    let expr = red(Reduce::MeanSeqs, expr);
    let (_, grads) = pair_loss(&w, &l, &f);
    let loss = move |v: &[RefSlot]| pair_loss(&v[0], &v[1], &f).0;
    check(
        &format!("dpo {variant}"),
        &expr,
        &["chosen", "rejected"],
        &[w, l],
        &[("beta", beta)],
        &loss,
        &grads,
        variant != "hinge",
    );
}

#[test]
fn dpo_sigmoid() {
    dpo_check("sigmoid", 21);
}

#[test]
fn dpo_ipo() {
    dpo_check("ipo", 22);
}

#[test]
fn dpo_hinge() {
    dpo_check("hinge", 23);
}

#[test]
fn dpo_at_zero_log_ratio_is_ln2() {
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let mut w = random_slot(&mut rng, 4, 6, 1, false);
    let mut l = random_slot(&mut rng, 4, 6, 1, false);
    for s in [&mut w, &mut l] {
        s.rf = s.lp.clone();
    }
    let beta = 0.1;
    let expr = red(
        Reduce::MeanSeqs,
        neg(un(
            UnaryOp::LogSigmoid,
            mul(hyper("beta"), pair_h("w", "l")),
        )),
    );
    let (value, grads) = candle_loss_and_grads(&expr, &[("w", &w), ("l", &l)], &[("beta", beta)]);
    assert!((value - std::f64::consts::LN_2).abs() < 1e-12, "{value}");
    // d/dlogp_w = -beta * sigmoid(0) / n on every completion token.
    let n = w.n() as f64;
    for (i, row) in grads["w"].iter().enumerate() {
        for (j, g) in row.iter().enumerate() {
            let want = -beta * 0.5 / n * w.m[i][j];
            assert!((g - want).abs() < 1e-15, "{g} vs {want}");
        }
    }
}

fn grpo_case(seed: u64, scale: Scale, kl: Kl, agg: Agg, first_update: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut s = random_slot(&mut rng, 12, 10, 4, true);
    if first_update {
        s.old = s.lp.clone();
    }
    let p = GrpoParams {
        eps_low: 0.2,
        eps_high: 0.28,
        beta: 0.04,
        adv_eps: 1e-4,
    };
    let expr = grpo_expr("y", scale, kl, agg);
    let (_, grad) = grpo_reference(&s, scale, kl, agg, &p);
    let hypers = [
        ("eps_low", p.eps_low),
        ("eps_high", p.eps_high),
        ("beta", p.beta),
        ("adv_eps", p.adv_eps),
    ];
    let loss = move |v: &[RefSlot]| grpo_reference(&v[0], scale, kl, agg, &p).0;
    check(
        &format!("grpo {scale:?} {kl:?} {agg:?} first={first_update}"),
        &expr,
        &["y"],
        &[s],
        &hypers,
        &loss,
        &[grad],
        false,
    );
}

#[test]
fn grpo_every_scale_kl_and_aggregation() {
    let mut seed = 100;
    for scale in [Scale::Group, Scale::Batch, Scale::None] {
        for kl in [Kl::K1, Kl::K2, Kl::K3] {
            for agg in [
                Agg::SeqMeanTokenMean,
                Agg::TokenMean,
                Agg::SeqMeanTokenSumNorm,
            ] {
                seed += 1;
                grpo_case(seed, scale, kl, agg, false);
            }
        }
    }
}

#[test]
fn grpo_first_update_ratio_is_one() {
    grpo_case(7, Scale::Group, Kl::K3, Agg::SeqMeanTokenMean, true);
    grpo_case(8, Scale::None, Kl::K1, Agg::SeqMeanTokenSumNorm, true);
}

#[test]
fn grpo_clipping_is_exercised() {
    // The inputs of the grpo cases must actually hit both clip bounds with both signs of A,
    // else the clipped branch would go untested.
    let mut rng = ChaCha8Rng::seed_from_u64(101);
    let s = random_slot(&mut rng, 12, 10, 4, true);
    let p = GrpoParams {
        eps_low: 0.2,
        eps_high: 0.28,
        beta: 0.0,
        adv_eps: 1e-4,
    };
    let adv = grpo_advantages(&s, Scale::Group, &p);
    let (mut low, mut high) = (0, 0);
    for i in 0..s.n() {
        for j in 0..s.t() {
            if s.m[i][j] == 0.0 {
                continue;
            }
            let rho = (s.lp[i][j] - s.old[i][j]).exp();
            if rho < 0.8 && adv[i] < 0.0 {
                low += 1;
            }
            if rho > 1.2 && adv[i] > 0.0 {
                high += 1;
            }
        }
    }
    assert!(
        low > 0 && high > 0,
        "clipped tokens: {low} low, {high} high"
    );
}

#[test]
fn grpo_identical_rewards_have_zero_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let mut s = random_slot(&mut rng, 8, 7, 4, false);
    s.r = vec![1.0; 8];
    for scale in [Scale::Group, Scale::Batch, Scale::None] {
        let expr = grpo_expr("y", scale, Kl::K3, Agg::TokenMean);
        let hypers = [
            ("eps_low", 0.2),
            ("eps_high", 0.2),
            ("beta", 0.0),
            ("adv_eps", 1e-4),
        ];
        let (value, grads) = candle_loss_and_grads(&expr, &[("y", &s)], &hypers);
        assert_eq!(value, 0.0);
        assert!(grads["y"].iter().flatten().all(|g| *g == 0.0));
    }
}

#[test]
fn dr_grpo_is_grpo_with_no_scaling_and_sum_norm() {
    grpo_case(41, Scale::None, Kl::K1, Agg::SeqMeanTokenSumNorm, false);
}

#[test]
fn rloo_leave_one_out_baseline() {
    let mut rng = ChaCha8Rng::seed_from_u64(51);
    let s = random_slot(&mut rng, 12, 8, 4, false);
    let g = s.g as f64;
    // A_i = r_i - mean_{j != i} r_j = (r_i - mean_G r) * G / (G - 1); REINFORCE on the sequence.
    let r = inp(Quantity::Reward, "y");
    let adv = mul(sub(r.clone(), red(Reduce::GroupMean, r)), c(g / (g - 1.0)));
    let expr = neg(red(
        Reduce::MeanSeqs,
        mul(adv, red(Reduce::SumTokens, inp(Quantity::Logp, "y"))),
    ));
    let loo = |s: &RefSlot| -> Vec<f64> {
        (0..s.n())
            .map(|i| {
                let start = i / s.g * s.g;
                let others: f64 = (start..start + s.g)
                    .filter(|&k| k != i)
                    .map(|k| s.r[k])
                    .sum();
                s.r[i] - others / (s.g as f64 - 1.0)
            })
            .collect()
    };
    let loss = move |v: &[RefSlot]| -> f64 {
        let a = loo(&v[0]);
        -(0..v[0].n())
            .map(|i| a[i] * v[0].sum_row(i, |j| v[0].lp[i][j]))
            .sum::<f64>()
            / v[0].n() as f64
    };
    let a = loo(&s);
    let mut grad = s.zero_grad();
    for i in 0..s.n() {
        for j in 0..s.t() {
            grad[i][j] = -a[i] * s.m[i][j] / s.n() as f64;
        }
    }
    check("rloo", &expr, &["y"], &[s], &[], &loss, &[grad], true);
}

/// f-divergence SFT with u = pi / pi_ref per token; E_D over demonstrations ("demo"), E_ref over
/// samples of the reference ("refs"), both token means.
fn fdiv_check(kind: &str, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = random_slot(&mut rng, 5, 8, 1, false);
    let q = random_slot(&mut rng, 6, 9, 1, false);
    let u = |s: &str| {
        un(
            UnaryOp::Exp,
            sub(inp(Quantity::Logp, s), inp(Quantity::RefLogp, s)),
        )
    };
    let mean = |e: Expr| red(Reduce::MeanAllTokens, e);
    // (f_D(u), f_D'(u) * u, f_ref(u), f_ref'(u) * u): token terms and their d/dlogp.
    type Term = fn(f64) -> (f64, f64);
    let (expr, fd, fq): (Expr, Term, Term) = match kind {
        "chi2" => (
            add(
                mul(c(-2.0), mean(u("demo"))),
                mean(bin(BinaryOp::Pow, u("refs"), c(2.0))),
            ),
            |u| (-2.0 * u, -2.0 * u),
            |u| (u * u, 2.0 * u * u),
        ),
        "hellinger" => (
            add(
                mean(bin(BinaryOp::Pow, u("demo"), c(-0.5))),
                mean(un(UnaryOp::Sqrt, u("refs"))),
            ),
            |u| (u.powf(-0.5), -0.5 * u.powf(-0.5)),
            |u| (u.sqrt(), 0.5 * u.sqrt()),
        ),
        "js" => (
            add(
                neg(mean(un(
                    UnaryOp::Log,
                    div(mul(c(2.0), u("demo")), add(c(1.0), u("demo"))),
                ))),
                mean(un(UnaryOp::Log, div(add(c(1.0), u("refs")), c(2.0)))),
            ),
            |u| (-(2.0 * u / (1.0 + u)).ln(), -1.0 / (1.0 + u)),
            |u| (((1.0 + u) / 2.0).ln(), u / (1.0 + u)),
        ),
        _ => unreachable!("test variants are fixed"),
    };
    let side = |s: &RefSlot, f: Term| -> (f64, Vec<Vec<f64>>) {
        let total = s.total();
        let mut v = 0.0;
        let mut g = s.zero_grad();
        for i in 0..s.n() {
            for j in 0..s.t() {
                if s.m[i][j] > 0.0 {
                    let (a, b) = f((s.lp[i][j] - s.rf[i][j]).exp());
                    v += s.m[i][j] * a / total;
                    g[i][j] = s.m[i][j] * b / total;
                }
            }
        }
        (v, g)
    };
    let (_, gd) = side(&d, fd);
    let (_, gq) = side(&q, fq);
    let loss = move |v: &[RefSlot]| side(&v[0], fd).0 + side(&v[1], fq).0;
    check(
        &format!("f-divergence sft {kind}"),
        &expr,
        &["demo", "refs"],
        &[d, q],
        &[],
        &loss,
        &[gd, gq],
        true,
    );
}

#[test]
fn fdiv_sft_chi2() {
    fdiv_check("chi2", 61);
}

#[test]
fn fdiv_sft_hellinger() {
    fdiv_check("hellinger", 62);
}

#[test]
fn fdiv_sft_js() {
    fdiv_check("js", 63);
}

#[test]
fn irft_demo_beats_self_sample() {
    // -log sigma(beta [(logp(y) - logp_t(y)) - (logp(y') - logp_t(y'))]), mean over pairs.
    let mut rng = ChaCha8Rng::seed_from_u64(71);
    let y = random_slot(&mut rng, 4, 8, 1, false);
    let ys = random_slot(&mut rng, 4, 11, 1, false);
    let beta = 0.1;
    let expr = red(
        Reduce::MeanSeqs,
        neg(un(
            UnaryOp::LogSigmoid,
            mul(hyper("beta"), pair_h("demo", "self")),
        )),
    );
    let f = move |h: f64| (-log_sigmoid(beta * h), -beta * sigmoid(-beta * h));
    let (_, grads) = pair_loss(&y, &ys, &f);
    let loss = move |v: &[RefSlot]| pair_loss(&v[0], &v[1], &f).0;
    check(
        "irft",
        &expr,
        &["demo", "self"],
        &[y, ys],
        &[("beta", beta)],
        &loss,
        &grads,
        true,
    );
}

#[test]
fn ranking_hinge_expert_vs_policy() {
    // max(0, (nll - nll_ref)(y_e) - (nll - nll_ref)(y_p) + m), nll = -sum logp.
    let mut rng = ChaCha8Rng::seed_from_u64(81);
    let e = random_slot(&mut rng, 6, 8, 1, false);
    let p = random_slot(&mut rng, 6, 8, 1, false);
    let margin = 0.5;
    // (nll - nll_ref)(y) = -(logp - ref)(y), so the hinge argument is -h + m.
    let expr = red(
        Reduce::MeanSeqs,
        un(
            UnaryOp::Relu,
            add(neg(pair_h("expert", "policy")), hyper("margin")),
        ),
    );
    let f = move |h: f64| {
        let z = -h + margin;
        if z > 0.0 { (z, -1.0) } else { (0.0, 0.0) }
    };
    let (_, grads) = pair_loss(&e, &p, &f);
    let loss = move |v: &[RefSlot]| pair_loss(&v[0], &v[1], &f).0;
    check(
        "ranking hinge",
        &expr,
        &["expert", "policy"],
        &[e, p],
        &[("margin", margin)],
        &loss,
        &grads,
        false,
    );
}

#[test]
fn group_std_is_sample_std_over_consecutive_groups() {
    use post_runtime::objectives::evaluate_per_seq;
    let mut rng = ChaCha8Rng::seed_from_u64(91);
    let mut s = random_slot(&mut rng, 9, 4, 3, false);
    s.r = vec![1.0, 2.0, 4.0, 0.0, 0.0, 0.0, -1.0, 5.0, 2.5];
    let mut map = SlotMap::new();
    map.insert(
        "y".into(),
        SlotTensors {
            logp: to_tensor(&s.lp),
            ref_logp: None,
            old_logp: None,
            mask: to_tensor(&s.m),
            reward: Some(Tensor::new(s.r.as_slice(), &Device::Cpu).expect("reward")),
            group_size: 3,
            max_tokens: 4,
        },
    );
    let std = evaluate_per_seq(
        &red(Reduce::GroupStd, inp(Quantity::Reward, "y")),
        &map,
        &BTreeMap::new(),
    )
    .expect("evaluates");
    let (_, want) = group_stats(&s.r, 3);
    for (a, b) in std.iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    assert!((std[0] - (7.0f64 / 3.0).sqrt()).abs() < 1e-12);
    assert_eq!(std[3], 0.0);
}

#[test]
fn malformed_inputs_are_errors() {
    let mut rng = ChaCha8Rng::seed_from_u64(92);
    let s = random_slot(&mut rng, 5, 4, 1, false);
    let mut st = SlotTensors::new(to_tensor(&s.lp), to_tensor(&s.m)).expect("2-d");
    let mut map = SlotMap::new();
    map.insert("y".into(), st.clone());
    let h = BTreeMap::new();
    // Not a scalar.
    assert!(evaluate_loss(&inp(Quantity::Logp, "y"), &map, &h).is_err());
    // Missing slot, quantity and hyperparameter.
    let sum = |q, slot: &str| red(Reduce::SumAllTokens, inp(q, slot));
    assert!(evaluate_loss(&sum(Quantity::Logp, "z"), &map, &h).is_err());
    assert!(evaluate_loss(&sum(Quantity::RefLogp, "y"), &map, &h).is_err());
    assert!(evaluate_loss(&hyper("beta"), &map, &h).is_err());
    // 5 sequences do not split into groups of 2.
    st.group_size = 2;
    map.insert("y".into(), st);
    assert!(evaluate_loss(&sum(Quantity::Logp, "y"), &map, &h).is_err());
}

// ------------------------------------------------------------------------------------------
// The stdlib as the compiler lowers it: compile a one-stage experiment in memory, take the
// stage's objective and hyperparameters, and check them against the same references.

struct Compiled {
    loss: Expr,
    slots: Vec<String>,
    hypers: Vec<(String, f64)>,
    /// Group size and max_tokens of each rollout slot (1 and 0 for data slots).
    shapes: Vec<(usize, usize)>,
}

fn compile_objective(objective: &str) -> Compiled {
    use post_compiler::{MemoryFs, compile};
    use post_graph::{SlotSource, StageKind};
    let source = format!(
        r#"use std.objectives.{{grpo, dr_grpo, dpo, rloo, fdiv_sft, sft, qfft, irft, ranking_hinge}}
use std.rollouts.{{explore}}

experiment t {{
  seed = 1
  model policy = preset("tiny")
  model ref = frozen(policy)
  data train = task("arith", split = train, size = 16, difficulty = 2)
  reward correct(s) = if number(answer(s.completion)) == number(s.answer) then 1.0 else 0.0
  stage s {{
    data = train
    steps = 3
    batch = 4 prompts
    objective = {objective}
    reference = ref
    optimizer = adamw(lr = 1e-4)
  }}
}}
"#
    );
    let fs = MemoryFs::new().with("t.post", &source);
    let c = compile(&fs, "t.post");
    let Some(graph) = c.graph else {
        panic!("`{objective}` does not compile: {:#?}", c.diagnostics);
    };
    let StageKind::Train(stage) = &graph.stages[0].kind else {
        panic!("not a training stage");
    };
    let inst = &stage.objective;
    let shapes = inst
        .slots
        .iter()
        .map(|s| match &s.source {
            SlotSource::Rollout { rollout } | SlotSource::Replay { rollout, .. } => {
                let base = graph.rollout(rollout).expect("rollout node").policy.base();
                (base.n, base.max_tokens)
            }
            SlotSource::Data { .. } => (1, 0),
        })
        .collect();
    Compiled {
        loss: inst.loss.clone(),
        slots: inst.slots.iter().map(|s| s.name.clone()).collect(),
        hypers: stage
            .hypers
            .iter()
            .map(|(k, v)| (k.clone(), v.at(0, stage.steps)))
            .collect(),
        shapes,
    }
}

impl Compiled {
    fn hyper(&self, name: &str) -> f64 {
        self.hypers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no hyperparameter `{name}` in {:?}", self.hypers))
    }

    /// Random slots shaped as the compiled objective's slots.
    fn slots(&self, rng: &mut ChaCha8Rng) -> Vec<RefSlot> {
        self.shapes
            .iter()
            .map(|&(g, max_tokens)| {
                let mut s = random_slot(rng, 3 * g.max(2), 9, g, g > 1);
                if max_tokens > 0 {
                    s.max_tokens = max_tokens;
                }
                s
            })
            .collect()
    }

    fn check(
        &self,
        what: &str,
        slots: &[RefSlot],
        loss: &LossFn,
        grads: &[Vec<Vec<f64>>],
        smooth: bool,
    ) {
        let names: Vec<&str> = self.slots.iter().map(String::as_str).collect();
        let hypers: Vec<(&str, f64)> = self.hypers.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        check(
            what, &self.loss, &names, slots, &hypers, loss, grads, smooth,
        );
    }
}

#[test]
fn stdlib_grpo_lowering_matches_the_reference() {
    let mut seed = 500;
    for (scale, sname) in [
        (Scale::Group, "group"),
        (Scale::Batch, "batch"),
        (Scale::None, "none"),
    ] {
        for (kl, kname) in [(Kl::K1, "k1"), (Kl::K2, "k2"), (Kl::K3, "k3")] {
            for (agg, aname) in [
                (Agg::SeqMeanTokenMean, "seq_mean_token_mean"),
                (Agg::TokenMean, "token_mean"),
                (Agg::SeqMeanTokenSumNorm, "seq_mean_token_sum_norm"),
            ] {
                seed += 1;
                let c = compile_objective(&format!(
                    "grpo(explore(policy, n = 4, max_tokens = 24 tokens), correct, eps_low = 0.2, eps_high = 0.28, beta = 0.05, kl = {kname}, scale = {sname}, aggregate = {aname})"
                ));
                let p = GrpoParams {
                    eps_low: c.hyper("eps_low"),
                    eps_high: c.hyper("eps_high"),
                    beta: c.hyper("beta"),
                    // Scale `none` divides by nothing, so no `eps` is lowered.
                    adv_eps: c
                        .hypers
                        .iter()
                        .find(|(k, _)| k == "eps")
                        .map_or(0.0, |(_, v)| *v),
                };
                assert_eq!((p.eps_low, p.eps_high, p.beta), (0.2, 0.28, 0.05));
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let slots = c.slots(&mut rng);
                assert_eq!(slots[0].max_tokens, 24);
                let (_, grad) = grpo_reference(&slots[0], scale, kl, agg, &p);
                let loss = move |v: &[RefSlot]| grpo_reference(&v[0], scale, kl, agg, &p).0;
                c.check(
                    &format!("stdlib grpo {sname} {kname} {aname}"),
                    &slots,
                    &loss,
                    &[grad],
                    false,
                );
            }
        }
    }
}

#[test]
fn stdlib_dr_grpo_is_the_same_graph_as_its_grpo_spelling() {
    let a = compile_objective("dr_grpo(explore(policy, n = 4), correct)");
    let b = compile_objective(
        "grpo(explore(policy, n = 4), correct, scale = none, aggregate = seq_mean_token_sum_norm)",
    );
    assert_eq!(a.loss, b.loss);
    assert_eq!(a.hypers, b.hypers);
    let p = GrpoParams {
        eps_low: a.hyper("eps_low"),
        eps_high: a.hyper("eps_high"),
        beta: 0.0,
        adv_eps: 0.0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(600);
    let slots = a.slots(&mut rng);
    let (_, grad) = grpo_reference(&slots[0], Scale::None, Kl::K3, Agg::SeqMeanTokenSumNorm, &p);
    let loss = move |v: &[RefSlot]| {
        grpo_reference(&v[0], Scale::None, Kl::K3, Agg::SeqMeanTokenSumNorm, &p).0
    };
    a.check("stdlib dr_grpo", &slots, &loss, &[grad], false);
}

#[test]
fn stdlib_grpo_identical_rewards_give_zero_gradient() {
    let c = compile_objective("grpo(explore(policy, n = 4), correct)");
    let mut rng = ChaCha8Rng::seed_from_u64(601);
    let mut slots = c.slots(&mut rng);
    slots[0].r = vec![0.0; slots[0].n()];
    let named: Vec<(&str, &RefSlot)> = c
        .slots
        .iter()
        .map(String::as_str)
        .zip(slots.iter())
        .collect();
    let hypers: Vec<(&str, f64)> = c.hypers.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let (value, grads) = candle_loss_and_grads(&c.loss, &named, &hypers);
    assert_eq!(value, 0.0);
    assert!(grads[&c.slots[0]].iter().flatten().all(|g| *g == 0.0));
}

#[test]
fn stdlib_dpo_variants_match_the_reference() {
    for (variant, seed) in [("sigmoid", 610u64), ("ipo", 611), ("hinge", 612)] {
        let c = compile_objective(&format!(
            "dpo(train.solution, train.rejected, beta = 0.2, loss = {variant})"
        ));
        let beta = c.hyper("beta");
        assert_eq!(beta, 0.2);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let slots = c.slots(&mut rng);
        let f: Box<PairFn> = match variant {
            "sigmoid" => {
                Box::new(move |h: f64| (-log_sigmoid(beta * h), -beta * sigmoid(-beta * h)))
            }
            "ipo" => Box::new(move |h: f64| {
                let z = h - 1.0 / (2.0 * beta);
                (z * z, 2.0 * z)
            }),
            _ => Box::new(move |h: f64| {
                let z = 1.0 - beta * h;
                if z > 0.0 { (z, -beta) } else { (0.0, 0.0) }
            }),
        };
        let (_, grads) = pair_loss(&slots[0], &slots[1], &f);
        let loss = move |v: &[RefSlot]| pair_loss(&v[0], &v[1], &f).0;
        c.check(
            &format!("stdlib dpo {variant}"),
            &slots,
            &loss,
            &grads,
            variant != "hinge",
        );
    }
}

#[test]
fn stdlib_dpo_at_zero_log_ratio_is_ln2() {
    let c = compile_objective("dpo(train.solution, train.rejected)");
    let mut rng = ChaCha8Rng::seed_from_u64(613);
    let mut slots = c.slots(&mut rng);
    for s in &mut slots {
        s.rf = s.lp.clone();
    }
    let named: Vec<(&str, &RefSlot)> = c
        .slots
        .iter()
        .map(String::as_str)
        .zip(slots.iter())
        .collect();
    let hypers: Vec<(&str, f64)> = c.hypers.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let (value, _) = candle_loss_and_grads(&c.loss, &named, &hypers);
    assert!((value - std::f64::consts::LN_2).abs() < 1e-12, "{value}");
}

#[test]
fn stdlib_sft_and_qfft_match_the_reference() {
    for obj in ["sft(train.solution)", "qfft(train.solution)"] {
        let c = compile_objective(obj);
        let mut rng = ChaCha8Rng::seed_from_u64(620);
        let slots = c.slots(&mut rng);
        let total = slots[0].total();
        let loss = move |v: &[RefSlot]| -> f64 {
            -(0..v[0].n())
                .map(|i| v[0].sum_row(i, |j| v[0].lp[i][j]))
                .sum::<f64>()
                / total
        };
        let mut g = slots[0].zero_grad();
        for i in 0..slots[0].n() {
            for j in 0..slots[0].t() {
                g[i][j] = -slots[0].m[i][j] / total;
            }
        }
        c.check(&format!("stdlib {obj}"), &slots, &loss, &[g], true);
    }
}

#[test]
fn stdlib_rloo_matches_the_reference() {
    // The stdlib's rloo: -mean_seqs(mean_tokens(rho * G/(G-1) * (r - mean_G r))).
    let c = compile_objective("rloo(explore(policy, n = 4), correct)");
    let mut rng = ChaCha8Rng::seed_from_u64(630);
    let slots = c.slots(&mut rng);
    let reference = |s: &RefSlot| -> (f64, Vec<Vec<f64>>) {
        let (mean, _) = group_stats(&s.r, s.g);
        let g = s.g as f64;
        let mut loss = 0.0;
        let mut grad = s.zero_grad();
        for i in 0..s.n() {
            let a = g / (g - 1.0) * (s.r[i] - mean[i]);
            let len = s.len(i);
            for j in 0..s.t() {
                if s.m[i][j] == 0.0 {
                    continue;
                }
                let rho = (s.lp[i][j] - s.old[i][j]).exp();
                let w = s.m[i][j] / len / s.n() as f64;
                loss -= w * rho * a;
                grad[i][j] = -w * rho * a;
            }
        }
        (loss, grad)
    };
    let (_, grad) = reference(&slots[0]);
    let loss = move |v: &[RefSlot]| reference(&v[0]).0;
    c.check("stdlib rloo", &slots, &loss, &[grad], true);
}

#[test]
fn stdlib_pairwise_objectives_match_the_reference() {
    // IRFT: the demonstration against a self-sample (dpo sigmoid form).
    let c = compile_objective("irft(train.solution, explore(policy, n = 1), beta = 0.1)");
    let beta = c.hyper("beta");
    let mut rng = ChaCha8Rng::seed_from_u64(640);
    let mut slots = c.slots(&mut rng);
    let n = slots[0].n().min(slots[1].n());
    for s in &mut slots {
        s.lp.truncate(n);
        s.rf.truncate(n);
        s.old.truncate(n);
        s.m.truncate(n);
        s.r.truncate(n);
    }
    let f = move |h: f64| (-log_sigmoid(beta * h), -beta * sigmoid(-beta * h));
    let (_, grads) = pair_loss(&slots[0], &slots[1], &f);
    let loss = move |v: &[RefSlot]| pair_loss(&v[0], &v[1], &f).0;
    c.check("stdlib irft", &slots, &loss, &grads, true);

    // Ranking hinge (Diffusion-DRO).
    let c =
        compile_objective("ranking_hinge(train.solution, explore(policy, n = 1), margin = 0.3)");
    let margin = c.hyper("margin");
    let mut slots = c.slots(&mut rng);
    let n = slots[0].n().min(slots[1].n());
    for s in &mut slots {
        s.lp.truncate(n);
        s.rf.truncate(n);
        s.old.truncate(n);
        s.m.truncate(n);
        s.r.truncate(n);
    }
    let f = move |h: f64| {
        let z = -h + margin;
        if z > 0.0 { (z, -1.0) } else { (0.0, 0.0) }
    };
    let (_, grads) = pair_loss(&slots[0], &slots[1], &f);
    let loss = move |v: &[RefSlot]| pair_loss(&v[0], &v[1], &f).0;
    c.check("stdlib ranking_hinge", &slots, &loss, &grads, false);
}

#[test]
fn stdlib_fdiv_sft_matches_the_reference() {
    for (kind, seed) in [("chi2", 650u64), ("hellinger", 651), ("js", 652)] {
        let c = compile_objective(&format!(
            "fdiv_sft(train.solution, explore(ref, n = 1), divergence = {kind})"
        ));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let slots = c.slots(&mut rng);
        type Term = fn(f64) -> (f64, f64);
        let (fd, fq): (Term, Term) = match kind {
            "chi2" => (|u| (-2.0 * u, -2.0 * u), |u| (u * u, 2.0 * u * u)),
            "hellinger" => (
                |u| (u.powf(-0.5), -0.5 * u.powf(-0.5)),
                |u| (u.sqrt(), 0.5 * u.sqrt()),
            ),
            _ => (
                |u| (-(2.0 * u / (1.0 + u)).ln(), -1.0 / (1.0 + u)),
                |u| (((1.0 + u) / 2.0).ln(), u / (1.0 + u)),
            ),
        };
        let side = |s: &RefSlot, f: Term| -> (f64, Vec<Vec<f64>>) {
            let total = s.total();
            let mut v = 0.0;
            let mut g = s.zero_grad();
            for i in 0..s.n() {
                for j in 0..s.t() {
                    if s.m[i][j] > 0.0 {
                        let (a, b) = f((s.lp[i][j] - s.rf[i][j]).exp());
                        v += s.m[i][j] * a / total;
                        g[i][j] = s.m[i][j] * b / total;
                    }
                }
            }
            (v, g)
        };
        let (_, gd) = side(&slots[0], fd);
        let (_, gq) = side(&slots[1], fq);
        let loss = move |v: &[RefSlot]| side(&v[0], fd).0 + side(&v[1], fq).0;
        c.check(
            &format!("stdlib fdiv_sft {kind}"),
            &slots,
            &loss,
            &[gd, gq],
            true,
        );
    }
}

/// The training step's fused path (`evaluate_loss_fused`: the formula JIT-compiled by
/// Cranelift around candle reductions) gives the loss and the gradient of the unfused
/// evaluator on every stdlib objective, in f32 (the dtype training uses).
#[test]
fn fused_training_path_equals_the_evaluator_on_every_stdlib_objective() {
    use post_runtime::objectives::{FusedLoss, evaluate_loss_fused};
    let objectives = [
        "grpo(explore(policy, n = 4, max_tokens = 24 tokens), correct, eps_high = 0.28, beta = 0.05, kl = k3)",
        "grpo(explore(policy, n = 4), correct, beta = 0.04, kl = k1, scale = batch, aggregate = token_mean)",
        "grpo(explore(policy, n = 4), correct, beta = 0.1, kl = k2, updates = 2)",
        "dr_grpo(explore(policy, n = 4), correct)",
        "rloo(explore(policy, n = 4), correct)",
        "dpo(train.solution, train.rejected, beta = 0.2, loss = sigmoid)",
        "dpo(train.solution, train.rejected, beta = 0.2, loss = ipo)",
        "dpo(train.solution, train.rejected, beta = 0.2, loss = hinge)",
        "sft(train.solution)",
        "qfft(train.solution)",
        "fdiv_sft(train.solution, explore(ref, n = 1), divergence = chi2)",
        "fdiv_sft(train.solution, explore(ref, n = 1), divergence = hellinger)",
        "fdiv_sft(train.solution, explore(ref, n = 1), divergence = js)",
        "irft(train.solution, explore(policy, n = 1), beta = 0.1)",
        "ranking_hinge(train.solution, explore(policy, n = 1), margin = 0.3)",
    ];
    let f32_of = |rows: &[Vec<f64>]| to_tensor(rows).to_dtype(DType::F32).expect("f32");
    for (i, obj) in objectives.iter().enumerate() {
        let c = compile_objective(obj);
        let fused = FusedLoss::new(&c.loss).unwrap_or_else(|e| panic!("{obj}: {e}"));
        let mut rng = ChaCha8Rng::seed_from_u64(9_000 + i as u64);
        let slots = c.slots(&mut rng);
        let hypers: BTreeMap<String, f64> = c.hypers.iter().cloned().collect();
        let mut results = Vec::new();
        for use_fused in [false, true] {
            let mut map = SlotMap::new();
            let mut vars = Vec::new();
            for (name, s) in c.slots.iter().zip(&slots) {
                let var = Var::from_tensor(&f32_of(&s.lp)).expect("var");
                map.insert(
                    name.clone(),
                    SlotTensors {
                        logp: var.as_tensor().clone(),
                        ref_logp: Some(f32_of(&s.rf)),
                        old_logp: Some(f32_of(&s.old)),
                        mask: f32_of(&s.m),
                        reward: Some(
                            Tensor::new(s.r.as_slice(), &Device::Cpu)
                                .and_then(|t| t.to_dtype(DType::F32))
                                .expect("reward"),
                        ),
                        group_size: s.g,
                        max_tokens: s.max_tokens,
                    },
                );
                vars.push(var);
            }
            let loss = if use_fused {
                evaluate_loss_fused(&fused, &c.loss, &map, &hypers)
            } else {
                evaluate_loss(&c.loss, &map, &hypers)
            }
            .unwrap_or_else(|e| panic!("{obj}: {e}"));
            let value = f64::from(loss.to_scalar::<f32>().expect("scalar"));
            let grads = loss.backward().expect("backward");
            let g: Vec<Vec<Vec<f32>>> = vars
                .iter()
                .map(|v| match grads.get(v.as_tensor()) {
                    Some(g) => g.to_vec2::<f32>().expect("grad"),
                    None => v.as_tensor().zeros_like().unwrap().to_vec2().unwrap(),
                })
                .collect();
            results.push((value, g));
        }
        let ((v0, g0), (v1, g1)) = (&results[0], &results[1]);
        assert!(
            (v0 - v1).abs() <= 1e-5 * v0.abs().max(1.0),
            "{obj}: loss {v1} fused vs {v0}"
        );
        let scale = g0
            .iter()
            .flatten()
            .flatten()
            .fold(0f32, |m, x| m.max(x.abs()))
            .max(1e-6);
        for (a, b) in g0
            .iter()
            .flatten()
            .flatten()
            .zip(g1.iter().flatten().flatten())
        {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{obj}: gradient {b} fused vs {a} (max |grad| {scale})"
            );
        }
    }
}
