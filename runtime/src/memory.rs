//! Memory: the process's peak resident set (for `summary.json` and benchmarks), the memory
//! available on the machine, and an up-front estimate of what a training plan needs, so a run
//! can print it and refuse a plan that cannot fit before doing any work.
//!
//! The estimate counts, in the compute dtype: parameters; gradients and AdamW's two moments for
//! trainable models; frozen copies (reference models); activations kept for the backward pass;
//! the logits and their softmax intermediates; and the generation KV cache. Activation terms
//! count what the candle graph of `crate::model` keeps alive per layer and token, doubled for
//! the gradients that backward holds at its peak: 24 hidden-sized tensors (norms, q/k/v,
//! rotary intermediates, attention output, residuals), 8 intermediate-sized ones (gate, silu,
//! up, product) and 8 score-sized rows per head (scores, masked scores, exponentials,
//! probabilities). Calibrated on `post bench model`'s peak RSS: tiny at 32 x 128 measured
//! 690 MiB (estimate 667 MiB), 20m at 8 x 256 measured 2399 MiB (estimate 2.4 GiB).

use std::fmt;

use post_graph::ModelConfig;

use crate::model::presets::parameter_count;

/// What a run will hold in memory at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Sequences per forward/backward (the micro-batch).
    pub batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Whether the model is trained (gradients and optimizer state).
    pub trainable: bool,
    /// Frozen copies of the model (reference, snapshot, lagged sampler).
    pub frozen_copies: usize,
    /// Rows sampled at once, and their prompt + completion length (0 = no sampling).
    pub gen_batch: usize,
    pub gen_len: usize,
    /// Bytes per element of the compute dtype (4 for f32).
    pub dtype_bytes: usize,
}

/// Bytes per item of a [`MemoryPlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub parameters: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub frozen: u64,
    pub activations: u64,
    pub kv_cache: u64,
    pub total: u64,
}

/// Estimates the memory of `plan` for a model of configuration `cfg`.
pub fn estimate(cfg: &ModelConfig, attention_bias: bool, plan: &MemoryPlan) -> MemoryEstimate {
    let e = plan.dtype_bytes as u64;
    let params = parameter_count(cfg, attention_bias) as u64 * e;
    let (gradients, optimizer) = if plan.trainable {
        (params, 2 * params)
    } else {
        (0, 0)
    };
    let frozen = plan.frozen_copies as u64 * params;
    let (b, t) = (plan.batch as u64, plan.seq_len as u64);
    let (h, i, nh) = (
        cfg.hidden_size as u64,
        cfg.intermediate_size as u64,
        cfg.num_heads as u64,
    );
    let per_layer = b * t * (24 * h + 8 * i + 8 * nh * t);
    // Embedding output, final norm, and logits with the log-softmax intermediates.
    let outer = b * t * (3 * h + 3 * cfg.vocab_size as u64);
    let activations = (cfg.num_layers as u64 * per_layer + outer) * e;
    let head_dim = cfg.hidden_size.checked_div(cfg.num_heads).unwrap_or(0) as u64;
    let kv_cache = 2
        * cfg.num_layers as u64
        * plan.gen_batch as u64
        * cfg.num_kv_heads as u64
        * plan.gen_len as u64
        * head_dim
        * e;
    let total = params + gradients + optimizer + frozen + activations + kv_cache;
    MemoryEstimate {
        parameters: params,
        gradients,
        optimizer,
        frozen,
        activations,
        kv_cache,
        total,
    }
}

impl MemoryEstimate {
    /// `Err` with the numbers when the estimate exceeds `available` bytes.
    pub fn check_fits(&self, available: u64) -> Result<(), String> {
        if self.total > available {
            Err(format!(
                "the plan needs about {} but only {} is available ({self})",
                human_bytes(self.total),
                human_bytes(available)
            ))
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "parameters {}, gradients {}, optimizer {}, frozen copies {}, activations {}, \
             KV cache {}, total {}",
            human_bytes(self.parameters),
            human_bytes(self.gradients),
            human_bytes(self.optimizer),
            human_bytes(self.frozen),
            human_bytes(self.activations),
            human_bytes(self.kv_cache),
            human_bytes(self.total)
        )
    }
}

/// `1536` -> `"1.5 KiB"`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Peak resident set size of this process (`VmHWM`), in bytes; `None` where /proc is absent.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|k| k * 1024)
}

/// Current resident set size (`VmRSS`), in bytes.
pub fn current_rss_bytes() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|k| k * 1024)
}

/// Memory available for new allocations (`MemAvailable` of /proc/meminfo), in bytes.
pub fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&text, "MemAvailable:").map(|k| k * 1024)
}

fn proc_status_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&text, key)
}

/// The number of a `Key:   1234 kB` line.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::presets;

    #[test]
    fn estimate_adds_up_and_scales() {
        let cfg = presets::tiny();
        let plan = MemoryPlan {
            batch: 8,
            seq_len: 64,
            trainable: true,
            frozen_copies: 1,
            gen_batch: 4,
            gen_len: 100,
            dtype_bytes: 4,
        };
        let e = estimate(&cfg, false, &plan);
        assert_eq!(e.parameters, 734_336 * 4);
        assert_eq!(e.optimizer, 2 * e.parameters);
        assert_eq!(e.frozen, e.parameters);
        // 2 (k, v) * 4 layers * 4 rows * 2 kv heads * 100 positions * 32 dims * 4 bytes.
        assert_eq!(e.kv_cache, 2 * 4 * 4 * 2 * 100 * 32 * 4);
        let sum = e.parameters + e.gradients + e.optimizer + e.frozen + e.activations + e.kv_cache;
        assert_eq!(e.total, sum);
        let double = estimate(&cfg, false, &MemoryPlan { batch: 16, ..plan });
        assert_eq!(double.activations, 2 * e.activations);
        assert!(e.check_fits(e.total).is_ok());
        let msg = e.check_fits(e.total - 1).expect_err("one byte short");
        assert!(msg.contains("KV cache"), "{msg}");
    }

    #[test]
    fn proc_fields_parse() {
        assert_eq!(
            kib_field("VmPeak:\t 10 kB\nVmHWM:\t  2048 kB\n", "VmHWM:"),
            Some(2048)
        );
        assert_eq!(kib_field("nothing", "VmHWM:"), None);
        assert_eq!(human_bytes(1536), "1.5 KiB");
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().is_some_and(|b| b > 0));
            assert!(current_rss_bytes().is_some_and(|b| b > 0));
            // Other test threads allocate and free concurrently, so two separate reads need not
            // agree; within one snapshot the kernel reports VmHWM >= VmRSS.
            let status = std::fs::read_to_string("/proc/self/status").expect("linux has /proc");
            let peak = kib_field(&status, "VmHWM:").expect("VmHWM present");
            let current = kib_field(&status, "VmRSS:").expect("VmRSS present");
            assert!(peak >= current);
        }
    }
}
