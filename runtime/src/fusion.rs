//! The runtime-wide switch for the hand-written fused kernels of `post-kernels`.
//!
//! With fusion on, the training forward of [`crate::model::Transformer`] uses
//! `post_kernels::ops::{rms_norm, rope, softmax_last_dim}` and [`crate::logprob::token_logprobs`]
//! uses `post_kernels::ops::token_logprobs`, and the trainer evaluates each stage's objective
//! through `post_kernels::formula::FusedLoss` (its formula JIT-compiled once per stage); with it
//! off, all of them use the composed candle ops, which stay as the reference implementation. The fused kernels compute in f32, so any other dtype
//! (f64 gradient checks, bf16) always takes the composed path.
//!
//! The process default is read once from the environment variable `POST_FUSED`: `0`, `off`,
//! `false` or `no` (any case) turn fusion off; unset or anything else leaves it on.
//! [`set_kernels_enabled`] overrides it for the rest of the process (benchmarks), and a model can
//! pin its own setting with [`crate::model::Transformer::set_fusion`].

use std::sync::atomic::{AtomicU8, Ordering};

/// Whether to use the fused kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fusion {
    On,
    Off,
}

impl Fusion {
    pub fn is_on(self) -> bool {
        self == Fusion::On
    }

    /// The process-wide setting (see the module docs).
    pub fn current() -> Fusion {
        if kernels_enabled() {
            Fusion::On
        } else {
            Fusion::Off
        }
    }
}

/// 0: not read yet; 1: on; 2: off.
static STATE: AtomicU8 = AtomicU8::new(0);

fn from_env() -> bool {
    match std::env::var("POST_FUSED") {
        Ok(v) => !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "off" | "false" | "no"
        ),
        Err(_) => true,
    }
}

/// The process-wide fusion setting: `POST_FUSED` read on first use (default on), unless
/// [`set_kernels_enabled`] was called.
pub fn kernels_enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = from_env();
            // A racing set_kernels_enabled wins: only replace the "not read yet" state.
            let _ = STATE.compare_exchange(
                0,
                if on { 1 } else { 2 },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            STATE.load(Ordering::Relaxed) == 1
        }
    }
}

/// Overrides the process-wide setting (and the environment) from now on.
pub fn set_kernels_enabled(on: bool) {
    STATE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}
