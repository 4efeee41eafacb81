//! The files a Hugging Face model directory must hold: the single list the checker (which
//! reports a missing file at the path's span) and the runtime's loader both read.

/// The model configuration.
pub const CONFIG: &str = "config.json";
/// The weights: a shard index, or one file. Either is enough.
pub const WEIGHTS: &[&str] = &["model.safetensors.index.json", "model.safetensors"];
/// The tokenizer (needed when no other model of the experiment brings one).
pub const TOKENIZER: &str = "tokenizer.json";

/// What is missing from a directory for it to load as a model (`None`: nothing is), given a
/// predicate telling whether a file inside it exists. `needs_config` is false for initial
/// weights of a preset, whose configuration comes from the preset.
pub fn missing(needs_config: bool, has: impl Fn(&str) -> bool) -> Option<String> {
    if needs_config && !has(CONFIG) {
        return Some(CONFIG.to_string());
    }
    if !WEIGHTS.iter().any(|w| has(w)) {
        return Some(format!("{} (or {})", WEIGHTS[1], WEIGHTS[0]));
    }
    None
}
