//! Built-in architecture presets (`tiny`, `20m`): the table lives in `post_graph::presets` (shared
//! with the checker); this module adds what only the runtime needs, such as parameter counts.

use post_graph::ModelConfig;
pub use post_graph::presets::{NAMES, config, m20, tiny};

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
