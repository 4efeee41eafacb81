//! Built-in architecture presets (`tiny`, `20m`): the single table both the checker (context
//! length, vocabulary) and the runtime (model construction) read, so they cannot disagree.
//! `20m` matches the peer PyTorch baseline so benchmark figures compare like with like.

use crate::ModelConfig;

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
        sliding_window: None,
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
        sliding_window: None,
    }
}
