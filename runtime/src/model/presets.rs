//! Built-in architecture presets (`tiny`, `20m`): the table lives in `post_graph::presets` (shared
//! with the checker); this module adds what only the runtime needs, such as parameter counts.

use post_graph::ModelConfig;
pub use post_graph::presets::{NAMES, config, m20, tiny};

/// Number of trainable parameters of a configuration (tied head counted once).
/// Most parameters a model may have (2^38, 1 TiB in f32): a configuration beyond this is a
/// mistake (or a hostile `config.json`), refused before anything is allocated.
pub const MAX_PARAMETERS: u64 = 1 << 38;

/// [`parameter_count`] in checked arithmetic: `None` when it overflows `u64`, so a
/// `config.json` with absurd dimensions is refused rather than wrapping to a small count.
pub fn checked_parameter_count(cfg: &ModelConfig, attention_bias: bool) -> Option<u64> {
    let n = |x: usize| u64::try_from(x).ok();
    let h = n(cfg.hidden_size)?;
    let hd = h.checked_div(n(cfg.num_heads)?).unwrap_or(0);
    let kv = n(cfg.num_kv_heads)?.checked_mul(hd)?;
    let hh = h.checked_mul(h)?;
    let attn = hh
        .checked_mul(2)?
        .checked_add(h.checked_mul(kv)?.checked_mul(2)?)?
        .checked_add(if attention_bias {
            h.checked_add(kv.checked_mul(2)?)?
        } else {
            0
        })?;
    let mlp = h.checked_mul(n(cfg.intermediate_size)?)?.checked_mul(3)?;
    let layer = attn.checked_add(mlp)?.checked_add(h.checked_mul(2)?)?;
    let embed = n(cfg.vocab_size)?.checked_mul(h)?;
    let head = if cfg.tie_embeddings { 0 } else { embed };
    embed
        .checked_add(n(cfg.num_layers)?.checked_mul(layer)?)?
        .checked_add(h)?
        .checked_add(head)
}

/// The number of parameters. Only for configurations [`crate::model::validate_config`]
/// accepted (which bounds [`checked_parameter_count`]), so it cannot overflow.
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
    fn checked_count_agrees_and_refuses_overflow() {
        for name in ["tiny", "20m"] {
            let c = config(name).unwrap();
            for bias in [false, true] {
                assert_eq!(
                    checked_parameter_count(&c, bias),
                    Some(parameter_count(&c, bias) as u64)
                );
            }
        }
        let mut c = config("tiny").unwrap();
        c.hidden_size = 1 << 40;
        c.num_heads = 1;
        c.num_kv_heads = 1;
        assert_eq!(checked_parameter_count(&c, false), None);
    }

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
