//! Training that cannot learn: detectors fed once per step, which stop the run (or warn) with
//! the detector, the step and the likely cause, instead of letting it finish with exit 0 and a
//! model that never changed.
//!
//! Each detector needs [`WINDOW`] consecutive steps of evidence within one stage (a stage
//! shorter than that is never stopped: a few steps near a fresh model's loss are not evidence).
//! The counts restart with each stage and on resume.
//!
//! - `zero-gradient`: the global gradient norm (before clipping) below [`ZERO_GRAD`]: the
//!   weights no longer move. Stops, unless tied rewards explain it (below).
//! - `uniform-loss`: for a token-mean NLL objective (`sft`'s `token_mean` or
//!   `seq_mean_token_mean`), the loss within [`UNIFORM_TOL`] of ln(vocabulary), the loss of a
//!   uniform prediction: the model predicts nothing. A freshly initialised model sits
//!   measurably above it (its logits are small but not zero), so only a broken one stays on
//!   it. Stops.
//! - `identical-samples`: the rollout samples deterministically (temperature 0 or top_k 1)
//!   and every group (n >= 2) holds n identical completions, so every group-relative advantage
//!   is zero: a setup mistake. Stops.
//! - `tied-rewards`: every group's rewards are equal (sampling is random): the advantage is
//!   zero, but the cause is the task's difficulty for this policy (every sample fails alike, or
//!   succeeds alike) or a policy that has converged, which is a result worth measuring, not a
//!   setup mistake (the GRPO baseline of the BREAD comparison is such a run). Warns once.

/// Consecutive steps of evidence a detector needs.
pub const WINDOW: u64 = 20;
/// A gradient norm below this is no gradient (f32 underflow, not signal).
pub const ZERO_GRAD: f64 = 1e-12;
/// How close to ln(vocabulary) a loss counts as uniform.
pub const UNIFORM_TOL: f64 = 1e-3;

/// Group statistics of one step's rollouts (slots with groups of 2 or more).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Groups {
    pub groups: usize,
    /// Groups whose rewards are all equal.
    pub tied: usize,
    /// Groups whose completions are all identical.
    pub identical: usize,
}

impl Groups {
    /// Count the groups of consecutive `group_size` samples.
    pub fn count<T: PartialEq>(samples: &[(f64, T)], group_size: usize) -> Groups {
        let mut g = Groups::default();
        if group_size < 2 {
            return g;
        }
        for group in samples.chunks(group_size) {
            g.groups += 1;
            let (r0, c0) = &group[0];
            g.tied += usize::from(group.iter().all(|(r, _)| r == r0));
            g.identical += usize::from(group.iter().all(|(_, c)| c == c0));
        }
        g
    }

    pub fn add(&mut self, other: Groups) {
        self.groups += other.groups;
        self.tied += other.tied;
        self.identical += other.identical;
    }
}

/// What one step measured, as the detectors read it.
#[derive(Debug, Clone, Copy)]
pub struct Signals {
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub groups: Groups,
    /// The mean reward of the step's rollouts, when it has any.
    pub reward_mean: Option<f64>,
}

/// A run that cannot learn: which detector, and the message for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Collapse {
    pub detector: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Continue,
    Warn(String),
    Stop(Collapse),
}

/// The detectors of one stage.
#[derive(Debug, Clone)]
pub struct Detectors {
    window: u64,
    /// ln(vocabulary) when the objective is a token-mean NLL.
    uniform: Option<f64>,
    grad_clip: Option<f64>,
    /// A rollout of the stage samples deterministically (temperature 0 or top_k 1).
    deterministic: bool,
    zero_grad: u64,
    at_uniform: u64,
    identical: u64,
    tied: u64,
    warned_tied: bool,
}

impl Detectors {
    /// `nll_vocab`: the vocabulary size when the loss is a token-mean NLL (else `None`).
    /// `deterministic`: a rollout of the stage samples with temperature 0 or top_k 1.
    pub fn new(
        window: u64,
        nll_vocab: Option<usize>,
        grad_clip: Option<f64>,
        deterministic: bool,
    ) -> Self {
        Detectors {
            window: window.max(1),
            uniform: nll_vocab.map(|v| (v as f64).ln()),
            grad_clip,
            deterministic,
            zero_grad: 0,
            at_uniform: 0,
            identical: 0,
            tied: 0,
            warned_tied: false,
        }
    }

    /// Feed step `step` (global, 1-based) of stage `stage`.
    pub fn observe(&mut self, stage: &str, step: u64, s: &Signals) -> Verdict {
        let bump = |n: &mut u64, hit: bool| *n = if hit { *n + 1 } else { 0 };
        let g = s.groups;
        let all = |k: usize| g.groups > 0 && k == g.groups;
        bump(&mut self.identical, all(g.identical));
        bump(&mut self.tied, all(g.tied));
        let tied_now = all(g.tied);
        // Tied rewards zero the advantage, hence the gradient: that is the reward detectors'
        // finding, reported with its own cause.
        bump(&mut self.zero_grad, s.grad_norm < ZERO_GRAD && !tied_now);
        let uniform = self.uniform;
        bump(
            &mut self.at_uniform,
            uniform.is_some_and(|u| (s.loss - u).abs() < UNIFORM_TOL),
        );
        let w = self.window;
        let since = step + 1 - w.min(step);
        let lr = format!("{:.3e}", s.lr);
        let clip = match self.grad_clip {
            Some(c) => format!("grad_clip = {c}"),
            None => "no grad_clip".to_string(),
        };
        if self.deterministic && self.identical >= w {
            return Verdict::Stop(Collapse {
                detector: "identical-samples",
                message: format!(
                    "stage `{stage}`: every group's completions were identical for {w} steps (steps {since}-{step}), so every group-relative advantage is zero and nothing is learned. Cause: the rollout samples deterministically (temperature 0 or top_k = 1); sample with temperature > 0"
                ),
            });
        }
        if self.at_uniform >= w {
            let u = uniform.unwrap_or_default();
            return Verdict::Stop(Collapse {
                detector: "uniform-loss",
                message: format!(
                    "stage `{stage}`: the loss stayed at ln(vocabulary) = {u:.4} (a uniform prediction) for {w} steps (steps {since}-{step}, last {:.6}): the model predicts nothing. Likely cause: a learning rate too high (lr {lr} at step {step}, {clip}) broke the weights",
                    s.loss
                ),
            });
        }
        if self.zero_grad >= w {
            return Verdict::Stop(Collapse {
                detector: "zero-gradient",
                message: format!(
                    "stage `{stage}`: the gradient norm was 0 for {w} steps (steps {since}-{step}): the weights no longer change. Likely cause: a learning rate too high (lr {lr} at step {step}, {clip}) saturated the model, or a loss that does not depend on the trained weights"
                ),
            });
        }
        if self.tied >= w && !self.warned_tied {
            self.warned_tied = true;
            let mean = s
                .reward_mean
                .map(|r| format!(" (mean reward {r:.3})"))
                .unwrap_or_default();
            let why = if self.identical >= w {
                "Every group's samples were identical too: the policy puts nearly all its mass on one completion per prompt"
            } else {
                "The samples differ, so the task is likely too hard (or too easy) for this policy"
            };
            return Verdict::Warn(format!(
                "warning: stage `{stage}`: the rewards were equal within every group for {w} steps (steps {since}-{step}){mean}: group-relative advantages are zero and the policy is not learning from them. {why}"
            ));
        }
        Verdict::Continue
    }
}

/// Whether `loss` is a token-mean negative log-likelihood, whose value for a uniform
/// prediction is ln(vocabulary): `mean_all_tokens(-logp(y))` or
/// `mean_seqs(mean_tokens(-logp(y)))` (the minus sign inside or outside the means).
pub fn is_token_mean_nll(loss: &post_graph::Expr) -> bool {
    use post_graph::{BinaryOp, Expr, Quantity, Reduce, UnaryOp};
    fn neg(e: &Expr) -> Option<&Expr> {
        match e {
            Expr::Unary {
                f: UnaryOp::Neg,
                arg,
            } => Some(arg),
            Expr::Binary {
                f: BinaryOp::Mul,
                lhs,
                rhs,
            } => match (lhs.as_ref(), rhs.as_ref()) {
                (Expr::Const { value }, x) | (x, Expr::Const { value }) if *value == -1.0 => {
                    Some(x)
                }
                _ => None,
            },
            _ => None,
        }
    }
    fn logp(e: &Expr) -> bool {
        matches!(
            e,
            Expr::Input {
                quantity: Quantity::Logp,
                ..
            }
        )
    }
    fn token_mean(e: &Expr, negated: bool) -> bool {
        let inner = |x: &Expr| match neg(x) {
            Some(y) => !negated && logp(y),
            None => negated && logp(x),
        };
        match e {
            Expr::Reduce {
                f: Reduce::MeanAllTokens,
                arg,
            } => inner(arg),
            Expr::Reduce {
                f: Reduce::MeanSeqs,
                arg,
            } => matches!(arg.as_ref(), Expr::Reduce { f: Reduce::MeanTokens, arg } if inner(arg)),
            _ => false,
        }
    }
    match neg(loss) {
        Some(x) => token_mean(x, true),
        None => token_mean(loss, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use post_graph::{Expr, Quantity, Reduce, UnaryOp};

    fn sig(loss: f64, grad_norm: f64) -> Signals {
        Signals {
            loss,
            grad_norm,
            lr: 1e3,
            groups: Groups::default(),
            reward_mean: None,
        }
    }

    /// Feed `signals` from step 1; the step and verdict of the first non-`Continue`.
    fn first(d: &mut Detectors, signals: &[Signals]) -> Option<(u64, Verdict)> {
        for (i, s) in signals.iter().enumerate() {
            let step = i as u64 + 1;
            match d.observe("s", step, s) {
                Verdict::Continue => {}
                v => return Some((step, v)),
            }
        }
        None
    }

    fn stop_of(v: Option<(u64, Verdict)>) -> (u64, &'static str, String) {
        match v {
            Some((step, Verdict::Stop(c))) => (step, c.detector, c.message),
            other => panic!("expected a stop, got {other:?}"),
        }
    }

    #[test]
    fn zero_gradients_stop_after_the_window() {
        let mut d = Detectors::new(5, None, Some(1.0), false);
        let mut s: Vec<Signals> = (0..3).map(|_| sig(2.0, 0.5)).collect();
        s.extend((0..10).map(|_| sig(2.0, 0.0)));
        let (step, det, msg) = stop_of(first(&mut d, &s));
        assert_eq!((step, det), (8, "zero-gradient"));
        assert!(
            msg.contains("steps 4-8") && msg.contains("learning rate"),
            "{msg}"
        );
    }

    #[test]
    fn a_gradient_between_zeros_restarts_the_count() {
        let mut d = Detectors::new(5, None, None, false);
        let mut s: Vec<Signals> = (0..4).map(|_| sig(2.0, 0.0)).collect();
        s.push(sig(2.0, 1e-3));
        s.extend((0..4).map(|_| sig(2.0, 0.0)));
        assert_eq!(first(&mut d, &s), None);
    }

    #[test]
    fn a_loss_stuck_at_ln_vocab_stops_only_for_nll() {
        let u = 64f64.ln();
        let s: Vec<Signals> = (0..6).map(|i| sig(u + 1e-5 * i as f64, 0.3)).collect();
        let mut d = Detectors::new(5, Some(64), Some(1.0), false);
        let (step, det, msg) = stop_of(first(&mut d, &s));
        assert_eq!((step, det), (5, "uniform-loss"));
        assert!(msg.contains("4.1589"), "{msg}");
        // Not an NLL objective: the same numbers mean nothing.
        let mut d = Detectors::new(5, None, Some(1.0), false);
        assert_eq!(first(&mut d, &s), None);
        // A fresh model's loss a little above uniform is not stuck.
        let s: Vec<Signals> = (0..10).map(|_| sig(u + 0.01, 0.3)).collect();
        let mut d = Detectors::new(5, Some(64), Some(1.0), false);
        assert_eq!(first(&mut d, &s), None);
    }

    fn grouped(tied: usize, identical: usize) -> Signals {
        Signals {
            groups: Groups {
                groups: 4,
                tied,
                identical,
            },
            reward_mean: Some(0.0),
            ..sig(0.0, 0.0)
        }
    }

    #[test]
    fn identical_groups_stop_and_tied_ones_warn_once() {
        let s: Vec<Signals> = (0..6).map(|_| grouped(4, 4)).collect();
        let mut d = Detectors::new(5, None, None, true);
        let (step, det, msg) = stop_of(first(&mut d, &s));
        assert_eq!((step, det), (5, "identical-samples"));
        assert!(msg.contains("temperature"), "{msg}");
        // Sampled at temperature 1, identical groups are a converged policy: a warning.
        let mut d = Detectors::new(5, None, None, false);
        match first(&mut d, &s) {
            Some((5, Verdict::Warn(m))) => assert!(m.contains("identical too"), "{m}"),
            other => panic!("{other:?}"),
        }

        // Tied but diverse: a warning, once, and the zero gradient is not blamed.
        let s: Vec<Signals> = (0..20).map(|_| grouped(4, 1)).collect();
        let mut d = Detectors::new(5, None, None, false);
        match first(&mut d, &s) {
            Some((5, Verdict::Warn(m))) => assert!(m.contains("too hard"), "{m}"),
            other => panic!("{other:?}"),
        }
        for (i, x) in s.iter().enumerate() {
            assert_eq!(d.observe("s", 6 + i as u64, x), Verdict::Continue);
        }
        // One group with a spread of rewards: there is a signal.
        let s: Vec<Signals> = (0..10)
            .map(|_| Signals {
                grad_norm: 0.2,
                ..grouped(3, 0)
            })
            .collect();
        let mut d = Detectors::new(5, None, None, false);
        assert_eq!(first(&mut d, &s), None);
    }

    #[test]
    fn groups_are_counted_per_group() {
        let samples = [
            (1.0, "a"),
            (1.0, "a"),
            (0.0, "b"),
            (1.0, "c"),
            (0.0, "d"),
            (0.0, "e"),
        ];
        assert_eq!(
            Groups::count(&samples, 2),
            Groups {
                groups: 3,
                tied: 2,
                identical: 1
            }
        );
        assert_eq!(Groups::count(&samples, 1), Groups::default());
    }

    #[test]
    fn token_mean_nll_is_recognised() {
        let lp = || Expr::input(Quantity::Logp, "y");
        let neg = |e| Expr::unary(UnaryOp::Neg, e);
        assert!(is_token_mean_nll(&Expr::reduce(
            Reduce::MeanAllTokens,
            neg(lp())
        )));
        assert!(is_token_mean_nll(&neg(Expr::reduce(
            Reduce::MeanAllTokens,
            lp()
        ))));
        assert!(is_token_mean_nll(&Expr::reduce(
            Reduce::MeanSeqs,
            Expr::reduce(Reduce::MeanTokens, neg(lp()))
        )));
        // A per-sequence sum's uniform value depends on the lengths; a plain logp is no loss.
        assert!(!is_token_mean_nll(&Expr::reduce(
            Reduce::MeanSeqs,
            Expr::reduce(Reduce::SumTokens, neg(lp()))
        )));
        assert!(!is_token_mean_nll(&Expr::reduce(
            Reduce::MeanAllTokens,
            lp()
        )));
    }
}
