//! Built-in architecture presets (`tiny`, `20m`) as [`ModelConfig`] values.
//!
//! The numbers are fixed by the team brief; `20m` matches the peer PyTorch baseline
//! (`/work/shared/peer/torch_cpu_baseline.py`) so benchmark figures compare like with like.

use post_graph::ModelConfig;

/// Names accepted by [`config`], in a stable order (for error messages and help texts).
pub const NAMES: &[&str] = &["tiny", "20m"];

/// The configuration of a built-in preset, or `None` for an unknown name.
pub fn config(name: &str) -> Option<ModelConfig> {
    match name {
        "tiny" => Some(tiny()),
        "20m" => Some(m20()),
        _ => None,
    }
}

/// The `tiny` preset: char tokenizer (vocab 64), 734,336 parameters.
pub fn tiny() -> ModelConfig {
    ModelConfig {
        vocab_size: 64,
        hidden_size: 128,
        intermediate_size: 344,
        num_layers: 4,
        num_heads: 4,
        num_kv_heads: 2,
        max_position_embeddings: 512,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-6,
        tie_embeddings: true,
    }
}

/// The `20m` preset (benchmarks): vocab 8192, 15.7M parameters (tied head; 18.9M untied).
pub fn m20() -> ModelConfig {
    ModelConfig {
        vocab_size: 8192,
        hidden_size: 384,
        intermediate_size: 1024,
        num_layers: 8,
        num_heads: 6,
        num_kv_heads: 2,
        max_position_embeddings: 1024,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-6,
        tie_embeddings: true,
    }
}

/// Number of trainable parameters of a configuration (tied head counted once).
pub fn parameter_count(cfg: &ModelConfig, attention_bias: bool) -> usize {
    let h = cfg.hidden_size;
    let hd = h.checked_div(cfg.num_heads).unwrap_or(0);
    let kv = cfg.num_kv_heads * hd;
    let attn = h * h + 2 * h * kv + h * h + if attention_bias { h + 2 * kv } else { 0 };
    let mlp = 3 * h * cfg.intermediate_size;
    let layer = attn + mlp + 2 * h;
    let embed = cfg.vocab_size * h;
    let head = if cfg.tie_embeddings {
        0
    } else {
        cfg.vocab_size * h
    };
    embed + cfg.num_layers * layer + h + head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_briefed_sizes() {
        let t = config("tiny").expect("tiny is a preset");
        assert_eq!((t.vocab_size, t.hidden_size, t.num_layers), (64, 128, 4));
        assert_eq!(
            (t.num_heads, t.num_kv_heads, t.intermediate_size),
            (4, 2, 344)
        );
        let m = config("20m").expect("20m is a preset");
        assert_eq!((m.vocab_size, m.hidden_size, m.num_layers), (8192, 384, 8));
        // Embeddings 8192*384 + 8 layers of (attention 393,216 + MLP 1,179,648 + norms 768)
        // + final norm 384, counted by hand.
        assert_eq!(parameter_count(&m, false), 15_735_168);
        assert!(config("huge").is_none());
    }
}
