//! Constant folding uses the shared scalar semantics (`post_graph::scalar`): what the compiler
//! folds is what the runtime and the fused kernels compute, extremes included.

use post_compiler::{MemoryFs, compile_source};
use post_graph::{BinaryOp, Expr, UnaryOp, scalar};

/// The loss of an SFT-shaped experiment whose objective is `mean_seqs(sum_tokens(logp(y))) * (k)`.
fn folded(constant: &str) -> Result<f64, String> {
    let src = format!(
        "objective o(y: seqs) = mean_seqs(sum_tokens(logp(y))) * ({constant})\n\
         experiment e {{\n  model policy = preset(\"tiny\")\n  data train = task(\"arith\")\n  \
         stage s {{\n    data = train\n    steps = 1\n    batch = 2 sequences\n    \
         objective = o(train.solution)\n  }}\n}}\n"
    );
    let c = compile_source(&MemoryFs::new(), "t.post", src);
    if c.has_errors() {
        return Err(format!("{:#?}", c.diagnostics));
    }
    let g = c.graph.expect("a graph");
    let post_graph::StageKind::Train(t) = &g.stages[0].kind else {
        panic!("not a train stage")
    };
    match &t.objective.loss {
        Expr::Binary {
            f: BinaryOp::Mul,
            rhs,
            ..
        } => match **rhs {
            Expr::Const { value } => Ok(value),
            ref other => Err(format!("not folded: {other:?}")),
        },
        other => Err(format!("unexpected loss {other:?}")),
    }
}

#[test]
fn log_sigmoid_of_minus_1000_folds_to_minus_1000() {
    assert_eq!(folded("log_sigmoid(-1000)"), Ok(-1000.0));
    assert_eq!(folded("sigmoid(-1000) + 1"), Ok(1.0));
}

#[test]
fn every_foldable_op_folds_like_the_shared_semantics() {
    let name = |u: UnaryOp| match u {
        UnaryOp::Exp => Some("exp"),
        UnaryOp::Log => Some("log"),
        UnaryOp::Log1p => Some("log1p"),
        UnaryOp::Sigmoid => Some("sigmoid"),
        UnaryOp::LogSigmoid => Some("log_sigmoid"),
        UnaryOp::Relu => Some("relu"),
        UnaryOp::Abs => Some("abs"),
        UnaryOp::Sqrt => Some("sqrt"),
        UnaryOp::Square => Some("square"),
        UnaryOp::Tanh => Some("tanh"),
        UnaryOp::Neg => None,
    };
    for u in scalar::UNARY_OPS {
        let Some(n) = name(u) else { continue };
        for x in scalar::TEST_GRID {
            let want = scalar::unary(u, x);
            let got = folded(&format!("{n}({x})"));
            if want.is_finite() && want != 0.0 {
                assert_eq!(got, Ok(want), "{n}({x})");
            } else if !want.is_finite() {
                assert!(
                    got.is_err(),
                    "{n}({x}) = {want} must be refused, got {got:?}"
                );
            }
        }
    }
    for (op, sym) in [
        (BinaryOp::Add, "+"),
        (BinaryOp::Sub, "-"),
        (BinaryOp::Mul, "*"),
        (BinaryOp::Div, "/"),
        (BinaryOp::Pow, "^"),
    ] {
        for a in scalar::TEST_GRID {
            for b in [-2.0, -0.5, 0.5, 1.0, 3.0] {
                let want = scalar::binary(op, a, b);
                let got = folded(&format!("({a}) {sym} ({b})"));
                if want.is_finite() && want != 0.0 {
                    assert_eq!(got, Ok(want), "({a}) {sym} ({b})");
                } else if !want.is_finite() {
                    assert!(got.is_err(), "({a}) {sym} ({b}) = {want}: got {got:?}");
                }
            }
        }
    }
    for (n, op) in [("min", BinaryOp::Min), ("max", BinaryOp::Max)] {
        for a in scalar::TEST_GRID {
            let want = scalar::binary(op, a, 0.5);
            if want != 0.0 {
                assert_eq!(folded(&format!("{n}({a}, 0.5)")), Ok(want), "{n}({a}, 0.5)");
            }
        }
    }
}
