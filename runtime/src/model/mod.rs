//! Decoder-only transformer of the Llama / Qwen2 family, written with differentiable candle ops.
//!
//! Architecture: token embedding -> N x (RMSNorm -> grouped-query causal self-attention with RoPE
//! -> residual; RMSNorm -> SwiGLU MLP -> residual) -> RMSNorm -> LM head (tied to the embedding or
//! not). Optional q/k/v biases ([`ModelOptions::attention_bias`], Qwen2).
//!
//! Every op used here records a backward pass. candle's fused `rms_norm`, `softmax_last_dim`,
//! `rotary_emb::*` and `RmsNorm::forward` do not (they define no backward), so the
//! reference path composes them from basic ops; a test checks that every parameter receives a
//! gradient. With fusion on ([`crate::fusion`]) and an f32 model, RMSNorm and the attention
//! softmax use the differentiable CustomOps of `post_kernels::ops`, and so does RoPE in the
//! uncached (training) forward; the cached generation path keeps the composed RoPE, because its
//! rotary tables differ per row (left padding). Tests check both paths agree.
//!
//! Variable names are the Hugging Face ones (`model.embed_tokens.weight`,
//! `model.layers.0.self_attn.q_proj.weight`, ..., `lm_head.weight`), so a [`VarMap`] built through
//! [`Transformer::new`] saves directly as a Hugging Face checkpoint (see `crate::hf`).
//!
//! ## Padding convention
//! - Training ([`Transformer::forward`]): batches are **right-padded**. Positions are `0..t` for
//!   every row and the mask is purely causal, so a real token never sees the padding that follows
//!   it; logits at padded positions are meaningless and must be masked out by the loss mask.
//! - Generation ([`Transformer::forward_cached`]): prompts are **left-padded** inside a
//!   [`KvCache`] that records each row's pad count; position ids are counted from each row's
//!   first real token and padded key columns are masked out, so every row's logits equal those of
//!   an unpadded, uncached forward of that row alone (tested).

pub mod presets;

use candle_core::{D, DType, Device, Result, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};
use post_graph::ModelConfig;

use crate::fusion::Fusion;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

/// Added to attention scores of forbidden (future or padded) keys. Finite, so that a query whose
/// keys are all forbidden (a left-pad column) yields a uniform distribution instead of NaN; its
/// output is never read by a real token.
const MASKED: f64 = -1e9;

/// Architecture switches that [`ModelConfig`] does not carry (they only arise for Hugging Face
/// checkpoints; built-in presets use the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelOptions {
    /// Biases on the q, k and v projections (Qwen2; Llama with `attention_bias: true`).
    pub attention_bias: bool,
}

/// Checks the configuration for shapes the model cannot be built with.
pub fn validate_config(cfg: &ModelConfig) -> std::result::Result<(), String> {
    let positive = [
        ("vocab_size", cfg.vocab_size),
        ("hidden_size", cfg.hidden_size),
        ("intermediate_size", cfg.intermediate_size),
        ("num_layers", cfg.num_layers),
        ("num_heads", cfg.num_heads),
        ("num_kv_heads", cfg.num_kv_heads),
        ("max_position_embeddings", cfg.max_position_embeddings),
    ];
    for (name, v) in positive {
        if v == 0 {
            return Err(format!("model config: {name} must be positive"));
        }
    }
    if !cfg.hidden_size.is_multiple_of(cfg.num_heads) {
        return Err(format!(
            "model config: hidden_size {} is not divisible by num_heads {}",
            cfg.hidden_size, cfg.num_heads
        ));
    }
    if !cfg.num_heads.is_multiple_of(cfg.num_kv_heads) {
        return Err(format!(
            "model config: num_heads {} is not divisible by num_kv_heads {}",
            cfg.num_heads, cfg.num_kv_heads
        ));
    }
    if !(cfg.hidden_size / cfg.num_heads).is_multiple_of(2) {
        return Err(format!(
            "model config: head dimension {} must be even for rotary embeddings",
            cfg.hidden_size / cfg.num_heads
        ));
    }
    if !(cfg.rope_theta.is_finite() && cfg.rope_theta > 0.0) {
        return Err(format!(
            "model config: rope_theta {} must be positive",
            cfg.rope_theta
        ));
    }
    if cfg.sliding_window == Some(0) {
        return Err("model config: sliding_window must be positive".into());
    }
    // Checked before anything is allocated: a `config.json` with `hidden_size = 2^20` used to
    // abort allocating the embedding before the memory check ran.
    let limit = presets::MAX_PARAMETERS;
    match presets::checked_parameter_count(cfg, true) {
        Some(n) if n <= limit => {}
        Some(n) => {
            return Err(format!(
                "model config: {n} parameters is more than the limit of {limit} \
                 (vocab_size {}, hidden_size {}, intermediate_size {}, num_layers {})",
                cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
            ));
        }
        None => {
            return Err(format!(
                "model config: the parameter count overflows 64 bits \
                 (vocab_size {}, hidden_size {}, intermediate_size {}, num_layers {})",
                cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
            ));
        }
    }
    if !(cfg.rms_norm_eps.is_finite() && cfg.rms_norm_eps >= 0.0) {
        return Err(format!(
            "model config: rms_norm_eps {} must be >= 0",
            cfg.rms_norm_eps
        ));
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn new(vb: VarBuilder, out_dim: usize, in_dim: usize, bias: bool, init: Init) -> Result<Self> {
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
        let bias = if bias {
            Some(vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// `x`: [n, in] -> [n, out].
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

fn init_normal() -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: 0.02,
    }
}

/// RMSNorm composed from basic ops (candle's fused kernel has no backward).
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(weight)
}

/// `x`: [b, n, t, d]; `cos`, `sin`: broadcastable [b|1, 1, t, d]. Hugging Face's
/// non-interleaved convention: the two halves of the head dimension form the pairs.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// Rotary tables as a forward pass consumes them.
#[derive(Clone, Copy)]
enum RopeTables<'a> {
    /// Composed path: `cos`, `sin` broadcastable to [b, 1, t, d] (both halves repeated).
    Full(&'a Tensor, &'a Tensor),
    /// Fused kernel: `cos`, `sin` [t, d / 2], shared by every row.
    Half(&'a Tensor, &'a Tensor),
}

impl RopeTables<'_> {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            RopeTables::Full(cos, sin) => apply_rope(x, cos, sin),
            RopeTables::Half(cos, sin) => post_kernels::ops::rope(x, cos, sin),
        }
    }
}

/// The model's normalisation and softmax, fused or composed.
#[derive(Clone, Copy)]
struct Kernels {
    fused: bool,
}

impl Kernels {
    fn rms_norm(self, x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
        if self.fused {
            post_kernels::ops::rms_norm(x, weight, eps)
        } else {
            rms_norm(x, weight, eps)
        }
    }

    fn softmax_last_dim(self, x: &Tensor) -> Result<Tensor> {
        if self.fused {
            post_kernels::ops::softmax_last_dim(x)
        } else {
            candle_nn::ops::softmax(x, D::Minus1)
        }
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

/// Per-layer keys and values of a generation batch, preallocated to the cache capacity.
#[derive(Debug, Clone)]
struct LayerKv {
    k: Tensor,
    v: Tensor,
}

impl Attention {
    fn new(cfg: &ModelConfig, opts: &ModelOptions, vb: VarBuilder, init: Init) -> Result<Self> {
        let head_dim = cfg.hidden_size / cfg.num_heads;
        let h = cfg.hidden_size;
        let kv = cfg.num_kv_heads * head_dim;
        Ok(Self {
            q: Linear::new(vb.pp("q_proj"), h, h, opts.attention_bias, init)?,
            k: Linear::new(vb.pp("k_proj"), kv, h, opts.attention_bias, init)?,
            v: Linear::new(vb.pp("v_proj"), kv, h, opts.attention_bias, init)?,
            o: Linear::new(vb.pp("o_proj"), h, h, false, init)?,
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim,
        })
    }

    /// `x`: [b, t, h]; `mask`: additive, broadcastable to [b, 1, 1, t, s] where s is the number
    /// of keys (t, or cache length + t). Returns [b, t, h].
    fn forward(
        &self,
        x: &Tensor,
        rope: RopeTables,
        kernels: Kernels,
        mask: &Tensor,
        cache: Option<(&mut LayerKv, usize)>,
    ) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let x2 = x.reshape((b * t, h))?;
        let q = self
            .q
            .forward(&x2)?
            .reshape((b, t, nh, hd))?
            .transpose(1, 2)?;
        let k = self
            .k
            .forward(&x2)?
            .reshape((b, t, nkv, hd))?
            .transpose(1, 2)?;
        let v = self
            .v
            .forward(&x2)?
            .reshape((b, t, nkv, hd))?
            .transpose(1, 2)?;
        let q = rope.apply(&q)?;
        let k = rope.apply(&k)?;
        let (k, v) = match cache {
            None => (k.contiguous()?, v.contiguous()?),
            Some((kv, offset)) => {
                kv.k.slice_set(&k.contiguous()?, 2, offset)?;
                kv.v.slice_set(&v.contiguous()?, 2, offset)?;
                let s = offset + t;
                (
                    kv.k.narrow(2, 0, s)?.contiguous()?,
                    kv.v.narrow(2, 0, s)?.contiguous()?,
                )
            }
        };
        let s = k.dim(2)?;
        let rep = nh / nkv;
        // Query head j uses kv head j / rep (Hugging Face's repeat_kv order), so grouping the
        // query heads as [nkv, rep * t] lets each kv head serve its group in one matmul without
        // materialising repeated keys.
        let q = q.contiguous()?.reshape((b, nkv, rep * t, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = scores.reshape((b, nkv, rep, t, s))?.broadcast_add(mask)?;
        let probs = kernels.softmax_last_dim(&scores)?;
        let out = probs.reshape((b, nkv, rep * t, s))?.matmul(&v)?;
        let out = out
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b * t, nh * hd))?;
        self.o.forward(&out)?.reshape((b, t, h))
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn new(cfg: &ModelConfig, vb: VarBuilder, init: Init) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate: Linear::new(vb.pp("gate_proj"), i, h, false, init)?,
            up: Linear::new(vb.pp("up_proj"), i, h, false, init)?,
            down: Linear::new(vb.pp("down_proj"), h, i, false, init)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let x2 = x.reshape((b * t, h))?;
        let g = self.gate.forward(&x2)?.silu()?;
        let u = self.up.forward(&x2)?;
        self.down.forward(&(g * u)?)?.reshape((b, t, h))
    }
}

#[derive(Debug, Clone)]
struct Block {
    attn: Attention,
    mlp: Mlp,
    ln1: Tensor,
    ln2: Tensor,
}

/// The KV cache of one generation batch: kept outside the model so that the training path never
/// touches it. Rows are left-padded: row `r`'s first `left_pad[r]` columns are padding.
/// Not `Clone`: the buffers are written in place, so a shallow copy would alias; use
/// [`KvCache::fork`] or [`KvCache::select_rows`].
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    left_pad: Vec<usize>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Columns filled so far (prompt columns including padding, plus generated ones).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of columns.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn batch_size(&self) -> usize {
        self.left_pad.len()
    }

    /// Left-padding of each row.
    pub fn left_pad(&self) -> &[usize] {
        &self.left_pad
    }

    /// An independent deep copy (for look-ahead rollouts that must not disturb this cache).
    pub fn fork(&self) -> Result<KvCache> {
        self.select_rows(&(0..self.batch_size()).collect::<Vec<_>>())
    }

    /// A new cache holding copies of the given rows (repeats allowed), e.g. to branch several
    /// continuations from one prefix.
    pub fn select_rows(&self, rows: &[usize]) -> Result<KvCache> {
        if let Some(&r) = rows.iter().find(|&&r| r >= self.batch_size()) {
            candle_core::bail!(
                "row {r} out of range for a cache of {} rows",
                self.batch_size()
            );
        }
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let idx = Tensor::from_vec(idx.clone(), rows.len(), l.k.device())?;
            layers.push(LayerKv {
                k: l.k.index_select(&idx, 0)?.contiguous()?,
                v: l.v.index_select(&idx, 0)?.contiguous()?,
            });
        }
        Ok(KvCache {
            layers,
            left_pad: rows.iter().map(|&r| self.left_pad[r]).collect(),
            len: self.len,
            capacity: self.capacity,
        })
    }
}

/// The model. Cheap to clone (tensors are reference counted); a clone shares the variables.
#[derive(Debug, Clone)]
pub struct Transformer {
    cfg: ModelConfig,
    opts: ModelOptions,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    /// `None` when tied to the embedding.
    lm_head: Option<Tensor>,
    /// Rotary tables, [max_position_embeddings, head_dim]; constants, not parameters.
    cos: Tensor,
    sin: Tensor,
    /// `None`: follow the process-wide setting ([`crate::fusion::kernels_enabled`]).
    fusion: Option<Fusion>,
}

impl Transformer {
    /// Builds the model, creating (in a `VarMap`-backed builder) or reading its parameters under
    /// their Hugging Face names. Compute dtype and device are the builder's.
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Self::with_options(cfg, ModelOptions::default(), vb)
    }

    pub fn with_options(cfg: &ModelConfig, opts: ModelOptions, vb: VarBuilder) -> Result<Self> {
        Self::build(cfg, opts, vb, init_normal())
    }

    /// `weight_init`: how a `VarMap`-backed builder fills new weight matrices.
    pub(crate) fn build(
        cfg: &ModelConfig,
        opts: ModelOptions,
        vb: VarBuilder,
        weight_init: Init,
    ) -> Result<Self> {
        validate_config(cfg).map_err(candle_core::Error::Msg)?;
        let m = vb.pp("model");
        let h = cfg.hidden_size;
        let embed = m.get_with_hints((cfg.vocab_size, h), "embed_tokens.weight", weight_init)?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let l = m.pp("layers").pp(i);
            blocks.push(Block {
                attn: Attention::new(cfg, &opts, l.pp("self_attn"), weight_init)?,
                mlp: Mlp::new(cfg, l.pp("mlp"), weight_init)?,
                ln1: l.get_with_hints(h, "input_layernorm.weight", Init::Const(1.0))?,
                ln2: l.get_with_hints(h, "post_attention_layernorm.weight", Init::Const(1.0))?,
            });
        }
        let norm = m.get_with_hints(h, "norm.weight", Init::Const(1.0))?;
        let lm_head = if cfg.tie_embeddings {
            None
        } else {
            Some(vb.get_with_hints((cfg.vocab_size, h), "lm_head.weight", weight_init)?)
        };
        let (cos, sin) = rope_tables(cfg, vb.dtype(), vb.device())?;
        Ok(Self {
            cfg: cfg.clone(),
            opts,
            embed,
            blocks,
            norm,
            lm_head,
            cos,
            sin,
            fusion: None,
        })
    }

    /// A freshly initialised model whose parameters live in a new [`VarMap`], drawn from
    /// `seed` (ChaCha8) so that runs are reproducible: weights ~ N(0, 0.02), norms 1, biases 0.
    pub fn init_random(
        cfg: &ModelConfig,
        opts: ModelOptions,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        let varmap = VarMap::new();
        // Const init is cheap; the values are replaced below with seeded draws (candle's own
        // Randn init uses an unseeded thread RNG).
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        let model = Self::build(cfg, opts, vb, Init::Const(0.0))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let var = &data[name];
            if name.ends_with("norm.weight") || name.ends_with(".bias") {
                continue; // keeps the constant init (ones / zeros)
            }
            let n = var.elem_count();
            let values: Vec<f32> = (0..n).map(|_| 0.02 * standard_normal(&mut rng)).collect();
            let t = Tensor::from_vec(values, var.shape(), device)?.to_dtype(dtype)?;
            var.set(&t)?;
        }
        drop(data);
        Ok((model, varmap))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn options(&self) -> ModelOptions {
        self.opts
    }

    /// Pins this model (and its clones made afterwards) to fused or composed kernels; `None`
    /// follows the process-wide setting (see [`crate::fusion`]).
    pub fn set_fusion(&mut self, fusion: Option<Fusion>) {
        self.fusion = fusion;
    }

    /// The setting this model's forward passes use now.
    pub fn fusion(&self) -> Fusion {
        self.fusion.unwrap_or_else(Fusion::current)
    }

    /// Fused kernels compute in f32, so other dtypes keep the composed (reference) path.
    fn kernels(&self) -> Kernels {
        Kernels {
            fused: self.fusion().is_on() && self.dtype() == DType::F32,
        }
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// Every parameter under its Hugging Face name (the tied head is not listed separately).
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed.clone())];
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let lin = |out: &mut Vec<(String, Tensor)>, name: &str, l: &Linear| {
                out.push((format!("{p}.{name}.weight"), l.weight.clone()));
                if let Some(bias) = &l.bias {
                    out.push((format!("{p}.{name}.bias"), bias.clone()));
                }
            };
            lin(&mut out, "self_attn.q_proj", &b.attn.q);
            lin(&mut out, "self_attn.k_proj", &b.attn.k);
            lin(&mut out, "self_attn.v_proj", &b.attn.v);
            lin(&mut out, "self_attn.o_proj", &b.attn.o);
            lin(&mut out, "mlp.gate_proj", &b.mlp.gate);
            lin(&mut out, "mlp.up_proj", &b.mlp.up);
            lin(&mut out, "mlp.down_proj", &b.mlp.down);
            out.push((format!("{p}.input_layernorm.weight"), b.ln1.clone()));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                b.ln2.clone(),
            ));
        }
        out.push(("model.norm.weight".to_string(), self.norm.clone()));
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), h.clone()));
        }
        out
    }

    /// A copy with detached, independent weights: a frozen reference model (no gradients flow
    /// into it and later optimiser steps on `self` do not change it).
    pub fn frozen_copy(&self) -> Result<Self> {
        let mut ts = std::collections::HashMap::new();
        for (name, t) in self.named_parameters() {
            ts.insert(name, t.copy()?.detach());
        }
        let vb = VarBuilder::from_tensors(ts, self.dtype(), self.device());
        let mut copy = Self::with_options(&self.cfg, self.opts, vb)?;
        copy.fusion = self.fusion;
        Ok(copy)
    }

    /// Training forward: `ids` [b, t] u32 -> logits [b, t, vocab]. Right-padded batches; see the
    /// module docs. Differentiable; no cache.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let h = self.hidden(ids)?;
        self.head(&h)
    }

    /// Final hidden states [b, t, hidden] (after the last norm), for callers that apply the head
    /// themselves (e.g. a fused log-probability kernel).
    pub fn hidden(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        self.check_len(t)?;
        let kernels = self.kernels();
        let mask = causal_mask(
            t,
            0,
            &[0],
            self.cfg.sliding_window,
            self.dtype(),
            self.device(),
        )?;
        if kernels.fused {
            // The tables repeat the frequencies over both halves; the kernel takes one half.
            let half = self.cos.dim(1)? / 2;
            let cos = self.cos.narrow(0, 0, t)?.narrow(1, 0, half)?;
            let sin = self.sin.narrow(0, 0, t)?.narrow(1, 0, half)?;
            self.run_blocks(ids, RopeTables::Half(&cos, &sin), kernels, &mask, None)
        } else {
            let cos = self.cos.narrow(0, 0, t)?.unsqueeze(0)?.unsqueeze(0)?;
            let sin = self.sin.narrow(0, 0, t)?.unsqueeze(0)?.unsqueeze(0)?;
            self.run_blocks(ids, RopeTables::Full(&cos, &sin), kernels, &mask, None)
        }
    }

    /// The LM head applied to hidden states [b, t, hidden] -> [b, t, vocab].
    pub fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        let (b, t, h) = hidden.dims3()?;
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        hidden
            .reshape((b * t, h))?
            .matmul(&w.t()?)?
            .reshape((b, t, self.cfg.vocab_size))
    }

    /// An empty cache for a generation batch. `left_pad[r]` is the number of padding columns at
    /// the start of row `r`; `capacity` bounds the total columns (padded prompt + new tokens).
    pub fn new_cache(&self, left_pad: Vec<usize>, capacity: usize) -> Result<KvCache> {
        let b = left_pad.len();
        let hd = self.cfg.hidden_size / self.cfg.num_heads;
        let shape = (b, self.cfg.num_kv_heads, capacity, hd);
        let mut layers = Vec::with_capacity(self.blocks.len());
        for _ in &self.blocks {
            layers.push(LayerKv {
                k: Tensor::zeros(shape, self.dtype(), self.device())?,
                v: Tensor::zeros(shape, self.dtype(), self.device())?,
            });
        }
        Ok(KvCache {
            layers,
            left_pad,
            len: 0,
            capacity,
        })
    }

    /// Generation forward: appends the next `s` columns `ids` [b, s] to the cache and returns
    /// their logits [b, s, vocab]. Not meant for training (the cache is written in place).
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let h = self.hidden_cached(ids, cache)?;
        self.head(&h)
    }

    /// Like [`forward_cached`](Self::forward_cached) but returns only the last column's logits
    /// [b, vocab], skipping the head on the others (prefill of long prompts).
    pub fn forward_cached_last(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let h = self.hidden_cached(ids, cache)?;
        let s = h.dim(1)?;
        let last = h.narrow(1, s - 1, 1)?;
        self.head(&last)?.squeeze(1)
    }

    fn hidden_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        if b != cache.batch_size() {
            candle_core::bail!("cache holds {} rows, ids have {b}", cache.batch_size());
        }
        if s == 0 {
            candle_core::bail!("forward_cached needs at least one new column");
        }
        let start = cache.len;
        if start + s > cache.capacity {
            candle_core::bail!(
                "KV cache capacity {} exceeded ({} + {s} columns)",
                cache.capacity,
                start
            );
        }
        // Position of column c in row r: c - left_pad[r] (padding columns clamp to 0; their
        // outputs are never attended to by real tokens).
        let mut pos = Vec::with_capacity(b * s);
        for &p in &cache.left_pad {
            for c in start..start + s {
                pos.push(c.saturating_sub(p) as u32);
            }
        }
        let max_pos = pos.iter().copied().max().unwrap_or(0) as usize;
        self.check_len(max_pos + 1)?;
        let pos = Tensor::from_vec(pos, b * s, self.device())?;
        let hd = self.cfg.hidden_size / self.cfg.num_heads;
        let cos = self.cos.index_select(&pos, 0)?.reshape((b, 1, s, hd))?;
        let sin = self.sin.index_select(&pos, 0)?.reshape((b, 1, s, hd))?;
        let mask = causal_mask(
            s,
            start,
            &cache.left_pad,
            self.cfg.sliding_window,
            self.dtype(),
            self.device(),
        )?;
        let out = self.run_blocks(
            ids,
            RopeTables::Full(&cos, &sin),
            self.kernels(),
            &mask,
            Some(cache),
        )?;
        cache.len = start + s;
        Ok(out)
    }

    fn check_len(&self, t: usize) -> Result<()> {
        if t > self.cfg.max_position_embeddings {
            candle_core::bail!(
                "sequence of {t} positions exceeds the model's context of {}",
                self.cfg.max_position_embeddings
            );
        }
        Ok(())
    }

    fn run_blocks(
        &self,
        ids: &Tensor,
        rope: RopeTables,
        kernels: Kernels,
        mask: &Tensor,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let ids = ids.to_dtype(DType::U32)?;
        let vocab = self.cfg.vocab_size;
        if b * t > 0 {
            let max = ids.flatten_all()?.max(0)?.to_vec0::<u32>()?;
            if max as usize >= vocab {
                candle_core::bail!("token id {max} out of range for vocabulary of {vocab}");
            }
        }
        let eps = self.cfg.rms_norm_eps;
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((
            b,
            t,
            self.cfg.hidden_size,
        ))?;
        for (i, blk) in self.blocks.iter().enumerate() {
            let kv = match cache.as_deref_mut() {
                Some(c) => {
                    let offset = c.len;
                    Some((&mut c.layers[i], offset))
                }
                None => None,
            };
            let a = blk.attn.forward(
                &kernels.rms_norm(&x, &blk.ln1, eps)?,
                rope,
                kernels,
                mask,
                kv,
            )?;
            x = (x + a)?;
            let m = blk.mlp.forward(&kernels.rms_norm(&x, &blk.ln2, eps)?)?;
            x = (x + m)?;
        }
        kernels.rms_norm(&x, &self.norm, eps)
    }
}

/// Additive mask [b', 1, 1, t, start + t] (b' = 1 when there is no padding): query i (absolute
/// column start + i) may see key column j iff j <= start + i and j >= left_pad of its row.
/// Additive mask [rows, 1, 1, t, start + t]: query column `start + i` sees key column `j` when
/// `j <= start + i`, `j` is not padding, and (with a sliding window `w`) `start + i - j < w`.
/// Padding is a contiguous run on the left, so column distances equal position distances.
fn causal_mask(
    t: usize,
    start: usize,
    left_pad: &[usize],
    window: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let window = window.unwrap_or(usize::MAX);
    let s = start + t;
    let rows: &[usize] = if left_pad.iter().all(|&p| p == 0) {
        &[0]
    } else {
        left_pad
    };
    let mut m = Vec::with_capacity(rows.len() * t * s);
    for &p in rows {
        for i in 0..t {
            for j in 0..s {
                let ok = j <= start + i && j >= p && start + i - j < window;
                m.push(if ok { 0f32 } else { MASKED as f32 });
            }
        }
    }
    Tensor::from_vec(m, (rows.len(), 1, 1, t, s), device)?.to_dtype(dtype)
}

/// cos / sin tables [max_pos, head_dim] with the frequencies repeated over both halves.
fn rope_tables(cfg: &ModelConfig, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let hd = cfg.hidden_size / cfg.num_heads;
    let half = hd / 2;
    let n = cfg.max_position_embeddings;
    let mut cos = Vec::with_capacity(n * hd);
    let mut sin = Vec::with_capacity(n * hd);
    // Computed in f64 so that f64 gradient checks see exact tables.
    let inv: Vec<f64> = (0..half)
        .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / hd as f64))
        .collect();
    for p in 0..n {
        for _ in 0..2 {
            for f in &inv {
                let a = p as f64 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    let cos = Tensor::from_vec(cos, (n, hd), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (n, hd), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// One N(0, 1) draw by Box-Muller (rand 0.9 without rand_distr).
fn standard_normal(rng: &mut ChaCha8Rng) -> f32 {
    // 1 - u lies in (0, 1], so the log is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}
