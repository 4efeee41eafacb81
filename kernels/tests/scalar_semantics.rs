//! Every unary and binary op computes the shared scalar semantics (`post_graph::scalar`, also
//! the compiler's constant folding) in each evaluator: the JIT reference (`ir::eval1`/`eval2`
//! and the DAG's constant folder), the Cranelift kernels, and the candle interpreter in f64
//! and f32, on a grid that includes the extremes (±1e3, 0, tiny values).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use post_graph::{BinaryOp, Expr, Quantity as Q, UnaryOp, scalar};
use post_kernels::formula::ir::{Dag, Fn1, Fn2};
use post_kernels::formula::jit::{KernelSpec, compile};
use post_kernels::formula::{SlotMap, SlotTensors, evaluate_per_seq, evaluate_unfused};

const FN1: [Fn1; 10] = [
    Fn1::Neg,
    Fn1::Exp,
    Fn1::Log,
    Fn1::Log1p,
    Fn1::Sigmoid,
    Fn1::LogSigmoid,
    Fn1::Abs,
    Fn1::Sqrt,
    Fn1::Tanh,
    Fn1::Relu,
];
const FN2: [Fn2; 11] = [
    Fn2::Add,
    Fn2::Sub,
    Fn2::Mul,
    Fn2::Div,
    Fn2::Min,
    Fn2::Max,
    Fn2::Pow,
    Fn2::Gt,
    Fn2::Ge,
    Fn2::Lt,
    Fn2::Le,
];

/// `got` equals `want` within `rel` (or 1e-30 absolute), NaN and infinities exactly.
fn agree(what: &str, got: f64, want: f64, rel: f64) {
    if want.is_nan() {
        assert!(got.is_nan(), "{what} = {got}, want NaN");
    } else if want.is_infinite() {
        assert_eq!(got, want, "{what}");
    } else {
        let err = (got - want).abs();
        assert!(
            err <= rel * want.abs() || err < 1e-30,
            "{what} = {got}, want {want} (err {err:e})"
        );
    }
}

fn grid32() -> Vec<f32> {
    scalar::TEST_GRID.iter().map(|&x| x as f32).collect()
}

/// Runs a compiled kernel `out = f(col0, col1)` over `n` elements (padded to lanes of 4).
fn jit_run(dag: &Dag, root: u32, a: &[f32], b: &[f32]) -> Vec<f32> {
    let spec = KernelSpec {
        n_cols: 2,
        n_uni: 0,
        outputs: vec![root],
        reduce: None,
    };
    let k = compile(
        dag,
        &spec,
        &format!("scalar_semantics_{root}_{}", dag.len()),
    )
    .unwrap();
    let n = a.len().div_ceil(4) * 4;
    let pad = |v: &[f32]| {
        let mut p = v.to_vec();
        p.resize(n, 1.0);
        p
    };
    let (pa, pb) = (pad(a), pad(b));
    let mut out = vec![0.0f32; n];
    // SAFETY: two columns and one output of `n` values, a multiple of 4.
    unsafe { k.call(n, &[pa.as_ptr(), pb.as_ptr()], &[], &[out.as_mut_ptr()]) };
    out.truncate(a.len());
    out
}

#[test]
fn log_sigmoid_of_minus_1000_is_minus_1000_everywhere() {
    assert_eq!(scalar::unary(UnaryOp::LogSigmoid, -1000.0), -1000.0);
    assert_eq!(
        post_kernels::formula::ir::eval1(Fn1::LogSigmoid, -1000.0),
        -1000.0
    );
    let mut d = Dag::default();
    let c = d.constant(-1000.0);
    let folded = d.un(Fn1::LogSigmoid, c);
    assert_eq!(d.const_value(folded), Some(-1000.0));
    let x = d.col(0);
    let root = d.un(Fn1::LogSigmoid, x);
    assert_eq!(jit_run(&d, root, &[-1000.0], &[0.0]), vec![-1000.0]);
    for dtype in [DType::F64, DType::F32] {
        let v = per_seq(
            &Expr::unary(UnaryOp::LogSigmoid, reward()),
            &[-1000.0],
            &[0.0],
            dtype,
        );
        assert_eq!(v, vec![-1000.0], "{dtype:?}");
        let loss = Expr::reduce(
            post_graph::Reduce::SumSeqs,
            Expr::unary(UnaryOp::LogSigmoid, reward()),
        );
        let l = evaluate_unfused(&loss, &slots(&[-1000.0], &[0.0], dtype), &BTreeMap::new())
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(l, -1000.0, "{dtype:?}");
    }
}

#[test]
fn jit_reference_and_dag_folding_are_the_shared_semantics() {
    for f in FN1 {
        for &x in &grid32() {
            let want = scalar::unary(f.op(), x as f64) as f32;
            let got = post_kernels::formula::ir::eval1(f, x);
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()));
            let mut d = Dag::default();
            let c = d.constant(x);
            let y = d.un(f, c);
            if let Some(v) = d.const_value(y) {
                assert!(v == want || (v.is_nan() && want.is_nan()), "{f:?}({x})");
            }
        }
    }
    for f in FN2 {
        for &a in &grid32() {
            for &b in &grid32() {
                let want = scalar::binary(f.op(), a as f64, b as f64) as f32;
                let got = post_kernels::formula::ir::eval2(f, a, b);
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{f:?}({a}, {b}) = {got}, want {want}"
                );
            }
        }
    }
}

#[test]
fn jit_kernels_compute_the_shared_semantics() {
    let xs = grid32();
    for f in FN1 {
        let mut d = Dag::default();
        let x = d.col(0);
        let root = d.un(f, x);
        let got = jit_run(&d, root, &xs, &xs);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = scalar::unary(f.op(), x as f64) as f32;
            agree(&format!("jit {f:?}({x})"), g as f64, want as f64, 2e-6);
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for &x in &xs {
        for &y in &xs {
            a.push(x);
            b.push(y);
        }
    }
    for f in FN2 {
        let mut d = Dag::default();
        let (x, y) = (d.col(0), d.col(1));
        let root = d.bin(f, x, y);
        let got = jit_run(&d, root, &a, &b);
        for ((&x, &y), &g) in a.iter().zip(&b).zip(&got) {
            // A variable exponent is exp(y * ln x) in the kernels: powf's value for x > 0 (negative
            // bases with integer exponents are exact only for constant exponents, expanded into
            // products when the DAG is built).
            if f == Fn2::Pow && x <= 0.0 {
                continue;
            }
            let want = scalar::binary(f.op(), x as f64, y as f64) as f32;
            agree(&format!("jit {f:?}({x}, {y})"), g as f64, want as f64, 2e-5);
        }
    }
    // Constant integer exponents: exact for negative bases too.
    for e in [2.0f32, 3.0, -1.0] {
        let mut d = Dag::default();
        let x = d.col(0);
        let c = d.constant(e);
        let root = d.bin(Fn2::Pow, x, c);
        let got = jit_run(&d, root, &xs, &xs);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = scalar::binary(BinaryOp::Pow, x as f64, e as f64) as f32;
            agree(&format!("jit {x}^{e}"), g as f64, want as f64, 1e-6);
        }
    }
}

fn reward() -> Expr {
    Expr::input(Q::Reward, "y")
}

/// One slot of `a.len()` sequences of one token: `reward = a`, `logp = ref_logp = b`.
fn slots(a: &[f64], b: &[f64], dtype: DType) -> SlotMap {
    let n = a.len();
    let dev = &Device::Cpu;
    let t = |v: &[f64], shape: &[usize]| {
        Tensor::from_vec(v.to_vec(), shape, dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    };
    let mut s = SlotTensors::new(t(b, &[n, 1]), t(&vec![1.0; n], &[n, 1])).unwrap();
    s.ref_logp = Some(t(b, &[n, 1]));
    s.reward = Some(t(a, &[n]));
    SlotMap::from([("y".to_string(), s)])
}

fn per_seq(e: &Expr, a: &[f64], b: &[f64], dtype: DType) -> Vec<f64> {
    evaluate_per_seq(e, &slots(a, b, dtype), &BTreeMap::new()).unwrap()
}

#[test]
fn candle_interpreter_computes_the_shared_semantics() {
    let xs = scalar::TEST_GRID.to_vec();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for &x in &xs {
        for &y in &xs {
            a.push(x);
            b.push(y);
        }
    }
    let second = Expr::reduce(post_graph::Reduce::SumTokens, Expr::input(Q::RefLogp, "y"));
    for (dtype, rel, round) in [(DType::F64, 1e-12, false), (DType::F32, 2e-6, true)] {
        let r = |v: f64| if round { v as f32 as f64 } else { v };
        for f in scalar::UNARY_OPS {
            let got = per_seq(&Expr::unary(f, reward()), &xs, &xs, dtype);
            for (&x, &g) in xs.iter().zip(&got) {
                let want = r(scalar::unary(f, r(x)));
                agree(&format!("{dtype:?} {f:?}({x})"), g, want, rel);
            }
        }
        for f in scalar::BINARY_OPS {
            let e = Expr::binary(f, reward(), second.clone());
            let got = per_seq(&e, &a, &b, dtype);
            for ((&x, &y), &g) in a.iter().zip(&b).zip(&got) {
                // A tensor exponent is exp(y * ln x), powf's value for x > 0 (see the JIT test).
                if f == BinaryOp::Pow && x <= 0.0 {
                    continue;
                }
                let want = r(scalar::binary(f, r(x), r(y)));
                agree(&format!("{dtype:?} {f:?}({x}, {y})"), g, want, rel * 10.0);
            }
        }
        // A host exponent is powf: exact for negative bases.
        for e in [2.0, 3.0, -1.0, 0.5] {
            let got = per_seq(
                &Expr::binary(BinaryOp::Pow, reward(), Expr::constant(e)),
                &xs,
                &xs,
                dtype,
            );
            for (&x, &g) in xs.iter().zip(&got) {
                let want = r(scalar::binary(BinaryOp::Pow, r(x), e));
                agree(&format!("{dtype:?} {x}^{e}"), g, want, rel);
            }
        }
    }
}
