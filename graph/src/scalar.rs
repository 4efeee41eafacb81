//! The scalar semantics of every [`UnaryOp`] and [`BinaryOp`]: the one definition that constant
//! folding (the compiler), host evaluation of constant sub-formulas (the runtime's candle
//! interpreter) and the fused kernels' reference interpreter and constant folder (`post-kernels`,
//! which calls it through `f64` and rounds to `f32` once) all use.
//!
//! Numerically safe forms, so no value overflows where the true result is finite:
//! - `sigmoid(x)`: `1 / (1 + e^-x)` for `x >= 0`, `e^x / (1 + e^x)` below, so `e^|x|` never
//!   overflows into `inf / inf`;
//! - `log_sigmoid(x)`: `min(x, 0) - log1p(e^-|x|)`, so `log_sigmoid(-1000) = -1000` (not `-inf`)
//!   and `log_sigmoid(1000) = 0`;
//! - `log1p(x)` is `ln_1p` (exact for tiny `x`, where `ln(1 + x)` rounds to 0);
//! - `pow(a, b)` is `powf`: exact for negative bases with integer exponents, NaN for negative
//!   bases with fractional ones;
//! - comparisons yield 1 or 0 (0 when either side is NaN); `min`/`max` ignore a NaN operand
//!   (IEEE `minNum`/`maxNum`, like Rust's `f64::min`).
//!
//! Tensor evaluators (candle ops, Cranelift and CUDA kernels) implement the same forms; the
//! parity tests check each against this module on a grid of inputs including extremes.

use crate::{BinaryOp, UnaryOp};

/// `f(x)` for one number.
pub fn unary(f: UnaryOp, x: f64) -> f64 {
    match f {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Log1p => x.ln_1p(),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::LogSigmoid => log_sigmoid(x),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Square => x * x,
        UnaryOp::Tanh => x.tanh(),
    }
}

/// `f(a, b)` for two numbers.
pub fn binary(f: BinaryOp, a: f64, b: f64) -> f64 {
    let flag = |c: bool| if c { 1.0 } else { 0.0 };
    match f {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Pow => a.powf(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::Max => a.max(b),
        BinaryOp::Gt => flag(a > b),
        BinaryOp::Ge => flag(a >= b),
        BinaryOp::Lt => flag(a < b),
        BinaryOp::Le => flag(a <= b),
    }
}

/// `1 / (1 + e^-x)`, one branch per sign so `e^|x|` never overflows.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `log(sigmoid(x)) = min(x, 0) - log1p(e^-|x|)`: finite for every finite `x`.
pub fn log_sigmoid(x: f64) -> f64 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

/// Every unary op, for tests that sweep them all.
pub const UNARY_OPS: [UnaryOp; 11] = [
    UnaryOp::Neg,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Log1p,
    UnaryOp::Sigmoid,
    UnaryOp::LogSigmoid,
    UnaryOp::Relu,
    UnaryOp::Abs,
    UnaryOp::Sqrt,
    UnaryOp::Square,
    UnaryOp::Tanh,
];

/// Every binary op, for tests that sweep them all.
pub const BINARY_OPS: [BinaryOp; 11] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Pow,
    BinaryOp::Min,
    BinaryOp::Max,
    BinaryOp::Gt,
    BinaryOp::Ge,
    BinaryOp::Lt,
    BinaryOp::Le,
];

/// Inputs the agreement tests sweep: extremes (±1e3), zero, tiny values, ordinary ones.
pub const TEST_GRID: [f64; 15] = [
    -1000.0, -88.0, -20.0, -2.0, -1.0, -0.5, -1e-7, 0.0, 1e-7, 0.5, 1.0, 2.0, 20.0, 88.0, 1000.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sigmoid_is_finite_at_the_extremes() {
        assert_eq!(unary(UnaryOp::LogSigmoid, -1000.0), -1000.0);
        assert_eq!(unary(UnaryOp::LogSigmoid, 1000.0), 0.0);
        assert!((unary(UnaryOp::LogSigmoid, 0.0) + std::f64::consts::LN_2).abs() < 1e-15);
        assert_eq!(unary(UnaryOp::Sigmoid, -1000.0), 0.0);
        assert_eq!(unary(UnaryOp::Sigmoid, 1000.0), 1.0);
    }

    #[test]
    fn safe_forms_match_the_textbook_ones_where_those_are_exact() {
        for x in [-30.0, -3.0, -0.1, 0.0, 0.1, 3.0, 30.0] {
            let s = 1.0 / (1.0 + f64::exp(-x));
            assert!((sigmoid(x) - s).abs() <= 1e-15 * s.max(1e-300));
            assert!((log_sigmoid(x) - s.ln()).abs() <= 1e-13);
        }
        assert_eq!(unary(UnaryOp::Log1p, 1e-20), 1e-20);
        assert_eq!(binary(BinaryOp::Pow, -2.0, 3.0), -8.0);
        assert!(binary(BinaryOp::Pow, -2.0, 0.5).is_nan());
        assert_eq!(binary(BinaryOp::Gt, f64::NAN, 0.0), 0.0);
    }
}
