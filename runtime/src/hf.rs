//! Hugging Face checkpoints: load and save `config.json` + `model.safetensors` (or a sharded
//! `model.safetensors.index.json`) + tokenizer files, for the Llama and Qwen2 families.
//!
//! Loading reads each tensor through a memory map, converts bf16/f16/f64 to the compute dtype
//! and sets it into a fresh [`VarMap`] (candle's `VarMap::load` neither converts dtypes nor
//! reports missing tensors). Every problem names the file and the tensor or key: a missing
//! tensor, a shape that disagrees with `config.json`, a tensor the architecture has no place for
//! (rather than silently ignoring weights), an unsupported `model_type`, `rope_scaling`, or
//! activation.
//!
//! Saving writes float32 tensors under Hugging Face names with the `{"format": "pt"}` metadata
//! that `transformers` requires, each file written to a temporary name and then renamed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use post_graph::ModelConfig;
use serde_json::{Value, json};

use crate::files::{tmp_path, write_atomic};
use crate::model::{ModelOptions, Transformer, validate_config};
use crate::tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn err(path: &Path, message: impl std::fmt::Display) -> HfError {
    HfError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// A loaded checkpoint: the model, the variables it trains (Hugging Face names) and, when the
/// directory has one, its tokenizer.
pub struct HfModel {
    pub config: ModelConfig,
    pub options: ModelOptions,
    pub model: Transformer,
    pub varmap: VarMap,
    pub tokenizer: Option<Tokenizer>,
}

/// Reads `config.json` (Llama or Qwen2 keys) into a [`ModelConfig`] and [`ModelOptions`].
pub fn load_config(dir: &Path) -> Result<(ModelConfig, ModelOptions), HfError> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(err(
            &path,
            "missing (a Hugging Face model directory needs config.json)",
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| err(&path, e))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| err(&path, format!("invalid JSON: {e}")))?;
    parse_config(&v).map_err(|m| err(&path, m))
}

fn parse_config(v: &Value) -> Result<(ModelConfig, ModelOptions), String> {
    let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
    let qwen2 = match model_type {
        "llama" | "mistral" => false,
        "qwen2" => true,
        other => {
            return Err(format!(
                "model_type {other:?} is not supported (supported: \"llama\", \"mistral\", \"qwen2\")"
            ));
        }
    };
    let usize_key = |k: &str| -> Result<Option<usize>, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| format!("{k} must be a non-negative integer, found {x}")),
        }
    };
    let req = |k: &str| -> Result<usize, String> {
        usize_key(k)?.ok_or_else(|| format!("missing key {k}"))
    };
    let f64_key = |k: &str, default: f64| -> Result<f64, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x
                .as_f64()
                .ok_or_else(|| format!("{k} must be a number, found {x}")),
        }
    };
    let bool_key = |k: &str, default: bool| -> Result<bool, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x
                .as_bool()
                .ok_or_else(|| format!("{k} must be a boolean, found {x}")),
        }
    };
    let num_heads = req("num_attention_heads")?;
    let cfg = ModelConfig {
        vocab_size: req("vocab_size")?,
        hidden_size: req("hidden_size")?,
        intermediate_size: req("intermediate_size")?,
        num_layers: req("num_hidden_layers")?,
        num_heads,
        num_kv_heads: usize_key("num_key_value_heads")?.unwrap_or(num_heads),
        max_position_embeddings: req("max_position_embeddings")?,
        rope_theta: f64_key("rope_theta", 10000.0)?,
        rms_norm_eps: f64_key("rms_norm_eps", 1e-6)?,
        tie_embeddings: bool_key("tie_word_embeddings", false)?,
        // Mistral's window applies to every layer; Qwen2 ships a `sliding_window` value that
        // only counts when `use_sliding_window` is set (checked below). Llama has none.
        sliding_window: match model_type {
            "mistral" => usize_key("sliding_window")?,
            "qwen2" if bool_key("use_sliding_window", false)? => usize_key("sliding_window")?,
            _ => None,
        },
    };
    validate_config(&cfg)?;
    if let Some(hd) = usize_key("head_dim")?
        && hd * cfg.num_heads != cfg.hidden_size
    {
        return Err(format!(
            "head_dim {hd} differs from hidden_size / num_attention_heads = {}: unsupported",
            cfg.hidden_size / cfg.num_heads
        ));
    }
    let act = v
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("silu");
    if act != "silu" {
        return Err(format!(
            "hidden_act {act:?} is not supported (only \"silu\")"
        ));
    }
    match v.get("rope_scaling") {
        None | Some(Value::Null) => {}
        Some(s) => {
            let kind = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            if kind != "default" {
                return Err(format!("rope_scaling of type {kind:?} is not supported"));
            }
        }
    }
    if bool_key("mlp_bias", false)? {
        return Err("mlp_bias = true is not supported".into());
    }
    // Qwen2 windows the layers from `max_window_layers` on; only "all of them" is supported.
    if qwen2 && bool_key("use_sliding_window", false)? {
        let from = usize_key("max_window_layers")?.unwrap_or(cfg.num_layers);
        if from != 0 {
            return Err(format!(
                "use_sliding_window with max_window_layers = {from} (full attention below layer \
                 {from}) is not supported: only a window in every layer (max_window_layers = 0)"
            ));
        }
        if cfg.sliding_window.is_none() {
            return Err("use_sliding_window = true needs a sliding_window size".into());
        }
    }
    let options = ModelOptions {
        attention_bias: qwen2 || bool_key("attention_bias", false)?,
    };
    Ok((cfg, options))
}

/// The `config.json` that [`save`] writes (Llama unless the options need Qwen2's biases).
pub fn config_json(cfg: &ModelConfig, opts: &ModelOptions, tokenizer: Option<&Tokenizer>) -> Value {
    let (arch, model_type) = match (opts.attention_bias, cfg.sliding_window) {
        (true, _) => ("Qwen2ForCausalLM", "qwen2"),
        (false, Some(_)) => ("MistralForCausalLM", "mistral"),
        (false, None) => ("LlamaForCausalLM", "llama"),
    };
    let mut v = json!({
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.hidden_size / cfg.num_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": opts.attention_bias,
        "mlp_bias": false,
        "rope_scaling": null,
        "torch_dtype": "float32",
        "use_cache": true,
    });
    if let Some(w) = cfg.sliding_window {
        v["sliding_window"] = json!(w);
        if opts.attention_bias {
            v["use_sliding_window"] = json!(true);
            v["max_window_layers"] = json!(0);
        }
    }
    if let Some(t) = tokenizer {
        v["eos_token_id"] = json!(t.eos_id());
        v["pad_token_id"] = json!(t.pad_id());
        if let Some(b) = t.bos_id() {
            v["bos_token_id"] = json!(b);
        }
    }
    v
}

/// Shard paths, and for an index, the shard each tensor name is listed in.
type WeightFiles = (Vec<PathBuf>, Option<HashMap<String, PathBuf>>);

/// The safetensors files of a checkpoint directory: the shards of
/// `model.safetensors.index.json` when present, else `model.safetensors`. For shards, also
/// where the index says each tensor lives.
fn weight_files(dir: &Path) -> Result<WeightFiles, HfError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| err(&index, e))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| err(&index, format!("invalid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| err(&index, "no weight_map object"))?;
        let mut files: Vec<PathBuf> = Vec::new();
        let mut routing = HashMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| {
                err(
                    &index,
                    format!("weight_map entry {name} is not a file name"),
                )
            })?;
            let p = dir.join(file);
            if !files.contains(&p) {
                if !p.is_file() {
                    return Err(err(
                        &p,
                        format!("missing shard (listed for {name} in {})", index.display()),
                    ));
                }
                files.push(p.clone());
            }
            routing.insert(name.clone(), p);
        }
        files.sort();
        return Ok((files, Some(routing)));
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok((vec![single], None));
    }
    Err(err(
        &single,
        "missing (nor model.safetensors.index.json): no weights in this directory",
    ))
}

/// Tensors a checkpoint may hold that this architecture recomputes or ignores.
fn ignorable(name: &str, cfg: &ModelConfig) -> bool {
    name.ends_with(".rotary_emb.inv_freq") || (cfg.tie_embeddings && name == "lm_head.weight")
}

/// Loads a whole directory: config, weights (converted to `dtype`) and, if present, the
/// tokenizer (whose vocabulary must fit the model's).
pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<HfModel, HfError> {
    let (config, options) = load_config(dir)?;
    // The run's memory check comes after loading; parameters that cannot fit in memory would
    // abort the process while being allocated, so they are refused here, naming config.json.
    let bytes = crate::model::presets::checked_parameter_count(&config, options.attention_bias)
        .and_then(|n| n.checked_mul(dtype.size_in_bytes() as u64));
    if let (Some(bytes), Some(available)) = (bytes, crate::memory::available_memory_bytes())
        && bytes > available
    {
        return Err(err(
            &dir.join("config.json"),
            format!(
                "the model's parameters alone need {} but only {} is available (vocab_size {}, \
                 hidden_size {}, intermediate_size {}, num_hidden_layers {})",
                crate::memory::human_bytes(bytes),
                crate::memory::human_bytes(available),
                config.vocab_size,
                config.hidden_size,
                config.intermediate_size,
                config.num_layers
            ),
        ));
    }
    let varmap = VarMap::new();
    // Zero-filled variables: every one is overwritten from the files below (a missing one is
    // an error), so drawing random values first would only cost time.
    let model = Transformer::build(
        &config,
        options,
        VarBuilder::from_varmap(&varmap, dtype, device),
        candle_nn::Init::Const(0.0),
    )?;
    load_weights_into(dir, &config, &varmap, dtype, device)?;
    let tokenizer = if dir.join("tokenizer.json").is_file() {
        let t = Tokenizer::from_dir(dir)?;
        if t.vocab_size() > config.vocab_size {
            return Err(err(
                &dir.join("tokenizer.json"),
                format!(
                    "tokenizer has {} ids but config.json's vocab_size is {}",
                    t.vocab_size(),
                    config.vocab_size
                ),
            ));
        }
        Some(t)
    } else {
        None
    };
    Ok(HfModel {
        config,
        options,
        model,
        varmap,
        tokenizer,
    })
}

/// Sets every variable of `varmap` from the checkpoint's safetensors files.
pub fn load_weights_into(
    dir: &Path,
    cfg: &ModelConfig,
    varmap: &VarMap,
    dtype: DType,
    device: &Device,
) -> Result<(), HfError> {
    let (files, routing) = weight_files(dir)?;
    let mut maps = Vec::with_capacity(files.len());
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        // SAFETY: the file is mapped read-only for the duration of this function and only read
        // through safetensors' bounds-checked views; a concurrent writer truncating the file is
        // outside what the loader supports (as in every mmap-based loader).
        let m = unsafe { MmapedSafetensors::new(f) }.map_err(|e| err(f, e))?;
        for (name, _) in m.tensors() {
            if let Some(prev) = owner.insert(name.clone(), i) {
                return Err(err(
                    f,
                    format!("tensor {name} also appears in {}", files[prev].display()),
                ));
            }
        }
        maps.push(m);
    }
    if let Some(routing) = &routing {
        for (name, file) in routing {
            match owner.get(name) {
                Some(&i) if &files[i] == file => {}
                _ => {
                    return Err(err(
                        file,
                        format!("tensor {name} listed in the index is not in this file"),
                    ));
                }
            }
        }
    }
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
    let mut used = HashSet::new();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let Some(&i) = owner.get(name) else {
            let where_ = if files.len() == 1 {
                files[0].clone()
            } else {
                dir.join("model.safetensors.index.json")
            };
            return Err(err(&where_, format!("missing tensor {name}")));
        };
        let t = maps[i]
            .load(name, device)
            .map_err(|e| err(&files[i], format!("tensor {name}: {e}")))?;
        if t.dims() != var.dims() {
            return Err(err(
                &files[i],
                format!(
                    "tensor {name} has shape {:?}, config.json implies {:?}",
                    t.dims(),
                    var.dims()
                ),
            ));
        }
        match t.dtype() {
            DType::F32 | DType::F16 | DType::BF16 | DType::F64 => {}
            other => {
                return Err(err(
                    &files[i],
                    format!("tensor {name} has dtype {other:?}, expected a float type"),
                ));
            }
        }
        var.set(&t.to_dtype(dtype)?)?;
        used.insert(name.clone());
    }
    let mut extra: Vec<&String> = owner
        .keys()
        .filter(|n| !used.contains(*n) && !ignorable(n, cfg))
        .collect();
    extra.sort();
    if let Some(name) = extra.first() {
        let f = &files[owner[*name]];
        return Err(err(
            f,
            format!(
                "unexpected tensor {name} ({} unexpected in all): the architecture in config.json \
                 has no place for it",
                extra.len()
            ),
        ));
    }
    Ok(())
}

/// Saves `model` (float32) + `config.json` (+ tokenizer files) into `dir`, creating it.
pub fn save(dir: &Path, model: &Transformer, tokenizer: Option<&Tokenizer>) -> Result<(), HfError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let weights = dir.join("model.safetensors");
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, t) in model.named_parameters() {
        let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.insert(name, (t.dims().to_vec(), bytes));
    }
    let mut views = Vec::with_capacity(tensors.len());
    for (name, (shape, bytes)) in &tensors {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map_err(|e| err(&weights, format!("tensor {name}: {e}")))?;
        views.push((name.clone(), view));
    }
    // transformers refuses safetensors files without this metadata.
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = tmp_path(&weights);
    safetensors::tensor::serialize_to_file(views, Some(meta), &tmp).map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, &weights).map_err(|e| err(&weights, e))?;
    let cfg = config_json(model.config(), &model.options(), tokenizer);
    let cfg_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| err(&cfg_path, e))?;
    write_atomic(&cfg_path, text.as_bytes()).map_err(|e| err(&cfg_path, e))?;
    if let Some(t) = tokenizer {
        t.save(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hidden_size = 2^20` aborted the process allocating the embedding; the parameter count is
    /// now checked (without overflow) before anything is allocated, naming the sizes.
    #[test]
    fn absurd_dimensions_are_refused_before_allocation() {
        let mut v = json!({
            "model_type": "llama", "vocab_size": 32000, "hidden_size": 1u64 << 20,
            "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "max_position_embeddings": 2048,
        });
        let e = parse_config(&v).unwrap_err();
        assert!(
            e.contains("more than the limit") && e.contains("hidden_size 1048576"),
            "{e}"
        );
        v["hidden_size"] = json!(1u64 << 40);
        v["num_attention_heads"] = json!(1);
        let e = parse_config(&v).unwrap_err();
        assert!(e.contains("overflows 64 bits"), "{e}");
        v["hidden_size"] = json!(4096);
        v["num_attention_heads"] = json!(32);
        assert!(parse_config(&v).is_ok());
    }
}
