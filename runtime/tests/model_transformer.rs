//! The transformer against an independent float64 reference, gradient checks, the KV-cache path,
//! generation, and Hugging Face save/load round trips.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;
use post_graph::ModelConfig;
use post_runtime::generate::{SamplingParams, StopReason, argmax, generate};
use post_runtime::hf;
use post_runtime::logprob::token_logprobs;
use post_runtime::model::{ModelOptions, Transformer, presets};
use post_runtime::tokenizer::Tokenizer;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

/// Small enough for finite differences, but with GQA (2 query heads per kv head), 2 layers and
/// a context that RoPE visibly rotates.
fn small_cfg(tie: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: 13,
        hidden_size: 16,
        intermediate_size: 24,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        max_position_embeddings: 32,
        rope_theta: 100.0,
        rms_norm_eps: 1e-5,
        tie_embeddings: tie,
        sliding_window: None,
    }
}

/// A model whose every parameter (norm weights and biases included) is random, so that the
/// reference comparison exercises all of them.
fn random_model(
    cfg: &ModelConfig,
    bias: bool,
    dtype: DType,
    seed: u64,
) -> Result<(Transformer, VarMap)> {
    let opts = ModelOptions {
        attention_bias: bias,
    };
    let (model, varmap) = Transformer::init_random(cfg, opts, seed, dtype, &Device::Cpu)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xabc);
    let data = varmap.data().lock().expect("not poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let n = var.elem_count();
        let base = if name.ends_with("norm.weight") {
            1.0
        } else {
            0.0
        };
        let vals: Vec<f64> = (0..n).map(|_| base + rng.random_range(-0.5..0.5)).collect();
        var.set(&Tensor::from_vec(vals, var.shape(), &Device::Cpu)?.to_dtype(dtype)?)?;
    }
    drop(data);
    Ok((model, varmap))
}

fn params_f64(model: &Transformer) -> Result<HashMap<String, Vec<f64>>> {
    let mut out = HashMap::new();
    for (name, t) in model.named_parameters() {
        out.insert(name, t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?);
    }
    Ok(out)
}

/// Plain-loop float64 Llama forward of one unpadded sequence: the independent reference.
fn reference_logits(
    cfg: &ModelConfig,
    bias: bool,
    p: &HashMap<String, Vec<f64>>,
    ids: &[u32],
) -> Vec<Vec<f64>> {
    let h = cfg.hidden_size;
    let nh = cfg.num_heads;
    let nkv = cfg.num_kv_heads;
    let hd = h / nh;
    let t = ids.len();
    let lin = |w: &[f64], b: Option<&Vec<f64>>, x: &[f64], out_dim: usize| -> Vec<f64> {
        (0..out_dim)
            .map(|o| {
                let s: f64 = (0..x.len()).map(|i| w[o * x.len() + i] * x[i]).sum();
                s + b.map_or(0.0, |b| b[o])
            })
            .collect()
    };
    let norm = |x: &[f64], w: &[f64]| -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let inv = 1.0 / (ms + cfg.rms_norm_eps).sqrt();
        x.iter().zip(w).map(|(v, w)| v * inv * w).collect()
    };
    let rope = |v: &mut [f64], pos: usize| {
        let half = hd / 2;
        for i in 0..half {
            let a = pos as f64 / cfg.rope_theta.powf(2.0 * i as f64 / hd as f64);
            let (x1, x2) = (v[i], v[i + half]);
            v[i] = x1 * a.cos() - x2 * a.sin();
            v[i + half] = x2 * a.cos() + x1 * a.sin();
        }
    };
    let emb = &p["model.embed_tokens.weight"];
    let mut x: Vec<Vec<f64>> = ids
        .iter()
        .map(|&i| emb[i as usize * h..(i as usize + 1) * h].to_vec())
        .collect();
    for l in 0..cfg.num_layers {
        let g = |n: &str| &p[&format!("model.layers.{l}.{n}")];
        let gb = |n: &str| {
            if bias {
                Some(&p[&format!("model.layers.{l}.{n}")])
            } else {
                None
            }
        };
        let n1: Vec<Vec<f64>> = x
            .iter()
            .map(|r| norm(r, g("input_layernorm.weight")))
            .collect();
        let mut q: Vec<Vec<f64>> = n1
            .iter()
            .map(|r| {
                lin(
                    g("self_attn.q_proj.weight"),
                    gb("self_attn.q_proj.bias"),
                    r,
                    h,
                )
            })
            .collect();
        let mut k: Vec<Vec<f64>> = n1
            .iter()
            .map(|r| {
                lin(
                    g("self_attn.k_proj.weight"),
                    gb("self_attn.k_proj.bias"),
                    r,
                    nkv * hd,
                )
            })
            .collect();
        let v: Vec<Vec<f64>> = n1
            .iter()
            .map(|r| {
                lin(
                    g("self_attn.v_proj.weight"),
                    gb("self_attn.v_proj.bias"),
                    r,
                    nkv * hd,
                )
            })
            .collect();
        for pos in 0..t {
            for head in 0..nh {
                rope(&mut q[pos][head * hd..(head + 1) * hd], pos);
            }
            for head in 0..nkv {
                rope(&mut k[pos][head * hd..(head + 1) * hd], pos);
            }
        }
        let mut attn = vec![vec![0.0; h]; t];
        for head in 0..nh {
            let kvh = head / (nh / nkv);
            for i in 0..t {
                let qi = &q[i][head * hd..(head + 1) * hd];
                // A sliding window of w keeps the keys i + 1 - w ..= i.
                let lo = cfg.sliding_window.map_or(0, |w| (i + 1).saturating_sub(w));
                let scores: Vec<f64> = (lo..=i)
                    .map(|j| {
                        let kj = &k[j][kvh * hd..(kvh + 1) * hd];
                        qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                for (j, s) in (lo..=i).zip(&scores) {
                    let w = (s - m).exp() / z;
                    for d in 0..hd {
                        attn[i][head * hd + d] += w * v[j][kvh * hd + d];
                    }
                }
            }
        }
        for i in 0..t {
            let o = lin(g("self_attn.o_proj.weight"), None, &attn[i], h);
            for d in 0..h {
                x[i][d] += o[d];
            }
            let n2 = norm(&x[i], g("post_attention_layernorm.weight"));
            let gate = lin(g("mlp.gate_proj.weight"), None, &n2, cfg.intermediate_size);
            let up = lin(g("mlp.up_proj.weight"), None, &n2, cfg.intermediate_size);
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = lin(g("mlp.down_proj.weight"), None, &act, h);
            for d in 0..h {
                x[i][d] += down[d];
            }
        }
    }
    let head = if cfg.tie_embeddings {
        emb
    } else {
        &p["lm_head.weight"]
    };
    x.iter()
        .map(|r| {
            lin(
                head,
                None,
                &norm(r, &p["model.norm.weight"]),
                cfg.vocab_size,
            )
        })
        .collect()
}

fn ids_tensor(rows: &[Vec<u32>]) -> Result<Tensor> {
    let t = rows[0].len();
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_vec0()
}

#[test]
fn forward_matches_float64_reference() -> Result<()> {
    for (tie, bias, window) in [
        (true, false, None),
        (false, true, None),
        (true, true, Some(3)),
    ] {
        let cfg = ModelConfig {
            sliding_window: window,
            ..small_cfg(tie)
        };
        let (model, _vm) = random_model(&cfg, bias, DType::F64, 1)?;
        let p = params_f64(&model)?;
        let seqs = vec![
            vec![1u32, 5, 7, 2, 12, 0, 3, 3, 9],
            vec![4, 4, 4, 11, 10, 2, 1, 0, 8],
        ];
        let logits = model.forward(&ids_tensor(&seqs)?)?;
        for (r, s) in seqs.iter().enumerate() {
            let want = reference_logits(&cfg, bias, &p, s);
            let got: Vec<Vec<f64>> = logits.get(r)?.to_vec2()?;
            for (gw, ww) in got.iter().zip(&want) {
                for (g, w) in gw.iter().zip(ww) {
                    assert!(
                        (g - w).abs() < 1e-10,
                        "tie={tie} bias={bias} window={window:?}: {g} vs {w}"
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn every_parameter_gets_a_nonzero_gradient() -> Result<()> {
    for (cfg, bias) in [(presets::tiny(), false), (small_cfg(false), true)] {
        let (model, varmap) = Transformer::init_random(
            &cfg,
            ModelOptions {
                attention_bias: bias,
            },
            3,
            DType::F32,
            &Device::Cpu,
        )?;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let ids: Vec<Vec<u32>> = (0..2)
            .map(|_| {
                (0..12)
                    .map(|_| rng.random_range(0..cfg.vocab_size as u32))
                    .collect()
            })
            .collect();
        let ids = ids_tensor(&ids)?;
        let logits = model.forward(&ids.narrow(1, 0, 11)?)?;
        let loss = token_logprobs(&logits, &ids.narrow(1, 1, 11)?)?
            .mean_all()?
            .neg()?;
        let grads = loss.backward()?;
        let vars = varmap.data().lock().expect("not poisoned");
        let expected = model.named_parameters().len();
        assert_eq!(vars.len(), expected);
        for (name, var) in vars.iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} received no gradient"));
            let norm: f32 = g.abs()?.sum_all()?.to_vec0()?;
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name}: gradient norm {norm}"
            );
        }
    }
    Ok(())
}

#[test]
fn finite_difference_gradient_check() -> Result<()> {
    let cfg = small_cfg(false);
    let (model, varmap) = random_model(&cfg, true, DType::F64, 11)?;
    let seqs = vec![vec![1u32, 5, 7, 2, 12, 0, 3], vec![4, 4, 11, 10, 2, 1, 8]];
    let ids = ids_tensor(&seqs)?;
    let inputs = ids.narrow(1, 0, 6)?;
    let targets = ids.narrow(1, 1, 6)?;
    // A weighted sum, so that every position's gradient matters differently.
    let weights = Tensor::from_vec(
        (0..12).map(|i| 0.3 + 0.1 * i as f64).collect::<Vec<_>>(),
        (2, 6),
        &Device::Cpu,
    )?;
    let loss_of = |m: &Transformer| -> Result<Tensor> {
        (token_logprobs(&m.forward(&inputs)?, &targets)? * &weights)?.sum_all()
    };
    let grads = loss_of(&model)?.backward()?;
    let vars: Vec<(String, Var)> = {
        let d = varmap.data().lock().expect("not poisoned");
        let mut v: Vec<(String, Var)> = d.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let eps = 1e-5;
    let mut checked = 0;
    for (name, var) in &vars {
        let analytic: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"))
            .flatten_all()?
            .to_vec1()?;
        let orig: Vec<f64> = var.as_tensor().flatten_all()?.to_vec1()?;
        let n = orig.len();
        for k in [0, n / 3, n - 1] {
            let at = |delta: f64| -> Result<f64> {
                let mut v = orig.clone();
                v[k] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu)?)?;
                loss_of(&model)?.to_vec0::<f64>()
            };
            let numeric = (at(eps)? - at(-eps)?) / (2.0 * eps);
            var.set(&Tensor::from_vec(orig.clone(), var.shape(), &Device::Cpu)?)?;
            let a = analytic[k];
            let tol = 1e-6 * (1.0 + a.abs());
            assert!(
                (a - numeric).abs() < tol,
                "{name}[{k}]: analytic {a} vs numeric {numeric}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * vars.len());
    Ok(())
}

#[test]
fn right_padding_does_not_change_real_positions() -> Result<()> {
    let cfg = small_cfg(true);
    let (model, _vm) = random_model(&cfg, false, DType::F64, 2)?;
    let short = vec![3u32, 8, 1, 6];
    let alone = model.forward(&ids_tensor(std::slice::from_ref(&short))?)?;
    let padded = model.forward(&ids_tensor(&[
        vec![3, 8, 1, 6, 0, 0, 0],
        vec![1, 2, 3, 4, 5, 6, 7],
    ])?)?;
    let d = max_abs_diff(&alone.get(0)?, &padded.get(0)?.narrow(0, 0, 4)?)?;
    assert!(d < 1e-12, "{d}");
    Ok(())
}

#[test]
fn cached_left_padded_forward_equals_uncached() -> Result<()> {
    cached_equals_uncached(small_cfg(false))?;
    // The window (3) is shorter than the longest prompt plus continuation (8), so cached keys
    // fall out of it during generation.
    cached_equals_uncached(ModelConfig {
        sliding_window: Some(3),
        ..small_cfg(false)
    })
}

/// With a sliding window of w, no token at or before position i - layers * (w - 1) reaches
/// position i's logits (each layer looks w - 1 tokens back), and one just inside does.
#[test]
fn sliding_window_bounds_the_receptive_field() -> Result<()> {
    let w = 3;
    let cfg = ModelConfig {
        sliding_window: Some(w),
        ..small_cfg(true)
    };
    let full = small_cfg(true);
    let (model, vm) = random_model(&cfg, false, DType::F64, 9)?;
    let (unwindowed, vm_full) = random_model(&full, false, DType::F64, 9)?;
    drop((vm, vm_full));
    let seq = vec![1u32, 5, 7, 2, 12, 0, 3, 3, 9, 4, 6];
    let last = seq.len() - 1;
    let reach = cfg.num_layers * (w - 1); // 4: positions 7..=10 reach position 10
    let changed = |at: usize| {
        let mut s = seq.clone();
        s[at] = (s[at] + 1) % 13;
        s
    };
    let logits_at_last = |m: &Transformer, s: &[u32]| -> Result<Tensor> {
        m.forward(&ids_tensor(&[s.to_vec()])?)?.get(0)?.get(last)
    };
    let base = logits_at_last(&model, &seq)?;
    let outside = logits_at_last(&model, &changed(last - reach - 1))?;
    assert!(max_abs_diff(&base, &outside)? < 1e-12);
    let inside = logits_at_last(&model, &changed(last - reach))?;
    assert!(max_abs_diff(&base, &inside)? > 1e-6);
    // Without the window the same change does reach it.
    let base = logits_at_last(&unwindowed, &seq)?;
    let outside = logits_at_last(&unwindowed, &changed(last - reach - 1))?;
    assert!(max_abs_diff(&base, &outside)? > 1e-6);
    Ok(())
}

fn cached_equals_uncached(cfg: ModelConfig) -> Result<()> {
    let (model, _vm) = random_model(&cfg, true, DType::F64, 4)?;
    let prompts = [vec![5u32, 1, 9, 2, 7], vec![3u32, 12], vec![8u32, 8, 8, 4]];
    let cont = [[6u32, 2, 11], [0, 10, 5], [7, 7, 1]];
    let width = 5;
    let pads: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
    let mut cache = model.new_cache(pads.clone(), width + cont[0].len())?;
    let padded: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&pads)
        .map(|(p, &n)| {
            std::iter::repeat_n(0u32, n)
                .chain(p.iter().copied())
                .collect()
        })
        .collect();
    let prefill = model.forward_cached(&ids_tensor(&padded)?, &mut cache)?;
    let mut steps = vec![prefill.narrow(1, width - 1, 1)?.squeeze(1)?];
    for s in 0..cont[0].len() {
        let col: Vec<Vec<u32>> = cont.iter().map(|c| vec![c[s]]).collect();
        steps.push(model.forward_cached_last(&ids_tensor(&col)?, &mut cache)?);
    }
    assert_eq!(cache.len(), width + 3);
    for (r, p) in prompts.iter().enumerate() {
        let full: Vec<u32> = p.iter().chain(&cont[r]).copied().collect();
        let reference = model.forward(&ids_tensor(&[full])?)?.get(0)?;
        // Prefill: every real prompt position.
        let d = max_abs_diff(
            &prefill.get(r)?.narrow(0, pads[r], p.len())?,
            &reference.narrow(0, 0, p.len())?,
        )?;
        assert!(d < 1e-10, "row {r} prefill: {d}");
        for (s, step) in steps.iter().enumerate() {
            let d = max_abs_diff(&step.get(r)?, &reference.get(p.len() - 1 + s)?)?;
            assert!(d < 1e-10, "row {r} step {s}: {d}");
        }
    }
    // Capacity and context are enforced.
    assert!(
        model
            .forward_cached(&ids_tensor(&[vec![1], vec![1], vec![1]])?, &mut cache)
            .is_err()
    );
    Ok(())
}

#[test]
fn frozen_copy_is_independent() -> Result<()> {
    let cfg = small_cfg(true);
    let (model, varmap) = random_model(&cfg, false, DType::F32, 6)?;
    let frozen = model.frozen_copy()?;
    let ids = ids_tensor(&[vec![1, 2, 3]])?;
    let before = frozen.forward(&ids)?;
    assert_eq!(max_abs_diff(&before, &model.forward(&ids)?)?, 0.0);
    for var in varmap.all_vars() {
        var.set(&var.as_tensor().affine(2.0, 0.1)?)?;
    }
    assert_eq!(max_abs_diff(&before, &frozen.forward(&ids)?)?, 0.0);
    assert!(max_abs_diff(&before, &model.forward(&ids)?)? > 1e-3);
    Ok(())
}

fn gen_model() -> Result<Transformer> {
    // The tiny preset's shape with large random weights, so that logits are well separated.
    let cfg = presets::tiny();
    Ok(random_model(&cfg, false, DType::F32, 8)?.0)
}

#[test]
fn generation_is_seeded_and_greedy_is_argmax_of_the_uncached_forward() -> Result<()> {
    let model = gen_model()?;
    let tok = Tokenizer::builtin_char();
    let prompts: Vec<Vec<u32>> = ["12+9=", "3+4=", "100+250="]
        .iter()
        .map(|s| tok.encode(s).expect("char encoding never fails"))
        .collect();
    let sampled = SamplingParams {
        temperature: 1.0,
        top_k: 20,
        top_p: 0.9,
        max_tokens: 12,
        ..Default::default()
    };
    let run = |seed| {
        generate(
            &model,
            Some(&tok),
            &prompts,
            &sampled,
            &mut ChaCha8Rng::seed_from_u64(seed),
        )
    };
    let (a, b, c) = (run(1)?, run(1)?, run(2)?);
    assert_eq!(a, b);
    assert_ne!(a, c);
    let greedy = SamplingParams {
        max_tokens: 10,
        ..Default::default()
    };
    let out = generate(
        &model,
        None,
        &prompts,
        &greedy,
        &mut ChaCha8Rng::seed_from_u64(0),
    )?;
    for (p, g) in prompts.iter().zip(&out) {
        assert_eq!(g.tokens.len(), 10);
        assert!(g.truncated && g.stop_reason == StopReason::MaxTokens && g.text.is_none());
        let full: Vec<u32> = p.iter().chain(&g.tokens).copied().collect();
        let logits = model.forward(&ids_tensor(&[full])?)?.get(0)?;
        for (s, &t) in g.tokens.iter().enumerate() {
            let row: Vec<f32> = logits.get(p.len() - 1 + s)?.to_vec1()?;
            assert_eq!(argmax(&row)?, t, "step {s}");
        }
    }
    Ok(())
}

#[test]
fn generation_stops_at_eos_stop_strings_and_context() -> Result<()> {
    let model = gen_model()?;
    let tok = Tokenizer::builtin_char();
    let prompts = vec![tok.encode("7*8=").expect("encodable")];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let base = SamplingParams {
        max_tokens: 30,
        ..Default::default()
    };
    let free = generate(&model, Some(&tok), &prompts, &base, &mut rng)?.remove(0);
    // Every id ends a row: exactly one token, kept, reason Eos.
    let all_eos = SamplingParams {
        eos_ids: (0..64).collect(),
        ..base.clone()
    };
    let g = generate(&model, Some(&tok), &prompts, &all_eos, &mut rng)?.remove(0);
    assert_eq!(
        (g.tokens.len(), g.truncated, &g.stop_reason),
        (1, false, &StopReason::Eos)
    );
    assert_eq!(g.tokens[0], free.tokens[0]);
    // A stop string taken from the free-running text ends the row where it first appears.
    let text = free.text.clone().expect("tokenizer given");
    let chars: Vec<char> = text.chars().collect();
    if chars.len() >= 4 {
        let stop: String = chars[2..4].iter().collect();
        let with_stop = SamplingParams {
            stop: vec![stop.clone()],
            ..base.clone()
        };
        let g = generate(&model, Some(&tok), &prompts, &with_stop, &mut rng)?.remove(0);
        let t = g.text.expect("tokenizer given");
        assert!(
            t.ends_with(&stop) && text.starts_with(&t),
            "{t:?} / {text:?}"
        );
        assert_eq!(t.matches(&stop).count(), 1);
        assert_eq!(g.stop_reason, StopReason::Stop(stop));
        assert!(!g.truncated);
    }
    // The context (512) caps the completion before max_tokens.
    let long = vec![vec![4u32; 508]];
    let g = generate(&model, None, &long, &base, &mut rng)?.remove(0);
    assert_eq!(
        (g.tokens.len(), g.truncated, &g.stop_reason),
        (4, true, &StopReason::Context)
    );
    assert!(generate(&model, None, &[vec![4u32; 512]], &base, &mut rng).is_err());
    assert!(generate(&model, None, &[vec![]], &base, &mut rng).is_err());
    let needs_tok = SamplingParams {
        stop: vec!["x".into()],
        ..base
    };
    assert!(generate(&model, None, &prompts, &needs_tok, &mut rng).is_err());
    Ok(())
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("post-model-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir is writable");
    d
}

#[test]
fn hf_save_load_round_trip_gives_identical_logits() -> std::result::Result<(), hf::HfError> {
    let tok = Tokenizer::builtin_char();
    // A window saves as Mistral (no biases) or as Qwen2 windowed in every layer.
    for (tie, bias, window, model_type) in [
        (true, false, None, "llama"),
        (false, true, None, "qwen2"),
        (true, false, Some(4), "mistral"),
        (false, true, Some(4), "qwen2"),
    ] {
        let mut cfg = small_cfg(tie);
        cfg.vocab_size = 64; // holds the char tokenizer
        cfg.sliding_window = window;
        let (model, _vm) = random_model(&cfg, bias, DType::F32, 9)?;
        let dir = tempdir(&format!("rt{tie}{bias}{window:?}"));
        hf::save(&dir, &model, Some(&tok))?;
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(json["model_type"], model_type);
        let loaded = hf::load(&dir, DType::F32, &Device::Cpu)?;
        assert_eq!(loaded.config, cfg);
        assert_eq!(loaded.options.attention_bias, bias);
        let ids = ids_tensor(&[vec![1, 20, 30, 40, 5, 6]])?;
        let d = max_abs_diff(&model.forward(&ids)?, &loaded.model.forward(&ids)?)?;
        assert_eq!(d, 0.0);
        let t = loaded.tokenizer.expect("tokenizer saved");
        assert_eq!(t.encode("12+3=15\n").ok(), tok.encode("12+3=15\n").ok());
        assert_eq!(t.eos_id(), tok.eos_id());
        // Trained variables are the loaded ones.
        assert_eq!(
            loaded.varmap.all_vars().len(),
            model.named_parameters().len()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Writes `tensors` as the shards of a `model.safetensors.index.json`, split by name parity.
fn write_sharded(dir: &std::path::Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let mut shards: [HashMap<String, Tensor>; 2] = [HashMap::new(), HashMap::new()];
    let mut map = serde_json::Map::new();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for (i, n) in names.into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
        shards[i % 2].insert(n.clone(), tensors[n].clone());
        map.insert(n.clone(), serde_json::Value::String(file));
    }
    for (i, s) in shards.iter().enumerate() {
        candle_core::safetensors::save(
            s,
            dir.join(format!("model-0000{}-of-00002.safetensors", i + 1)),
        )?;
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string())?;
    Ok(())
}

#[test]
fn hf_sharded_bf16_checkpoint_loads_converted() -> std::result::Result<(), hf::HfError> {
    let cfg = small_cfg(false);
    let (model, _vm) = random_model(&cfg, true, DType::F32, 10)?;
    let dir = tempdir("shard");
    hf::save(&dir, &model, None)?;
    std::fs::remove_file(dir.join("model.safetensors")).expect("just written");
    let mut bf16 = HashMap::new();
    let mut rounded = HashMap::new();
    for (n, t) in model.named_parameters() {
        let b = t.to_dtype(DType::BF16)?;
        rounded.insert(n.clone(), b.to_dtype(DType::F32)?);
        bf16.insert(n, b);
    }
    write_sharded(&dir, &bf16)?;
    let loaded = hf::load(&dir, DType::F32, &Device::Cpu)?;
    let want = Transformer::with_options(
        &cfg,
        ModelOptions {
            attention_bias: true,
        },
        candle_nn::VarBuilder::from_tensors(rounded, DType::F32, &Device::Cpu),
    )?;
    let ids = ids_tensor(&[vec![1, 2, 3, 4, 5]])?;
    assert_eq!(
        max_abs_diff(&want.forward(&ids)?, &loaded.model.forward(&ids)?)?,
        0.0
    );
    // bf16 rounding is visible, so the conversion really happened on bf16 data.
    assert!(max_abs_diff(&model.forward(&ids)?, &loaded.model.forward(&ids)?)? > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn hf_errors_name_the_file_and_the_problem() -> std::result::Result<(), hf::HfError> {
    let cfg = small_cfg(true);
    let (model, _vm) = random_model(&cfg, false, DType::F32, 12)?;
    let dir = tempdir("err");
    let load_err = |dir: &std::path::Path| -> String {
        match hf::load(dir, DType::F32, &Device::Cpu) {
            Ok(_) => panic!("load should fail"),
            Err(e) => e.to_string(),
        }
    };
    assert!(load_err(&dir).contains("config.json"));
    hf::save(&dir, &model, None)?;
    let params: HashMap<String, Tensor> = model.named_parameters().into_iter().collect();
    let weights = dir.join("model.safetensors");

    let mut missing = params.clone();
    missing.remove("model.layers.1.mlp.up_proj.weight");
    candle_core::safetensors::save(&missing, &weights)?;
    let e = load_err(&dir);
    assert!(
        e.contains("model.safetensors")
            && e.contains("missing tensor model.layers.1.mlp.up_proj.weight"),
        "{e}"
    );

    let mut wrong = params.clone();
    wrong.insert(
        "model.norm.weight".into(),
        Tensor::ones(7, DType::F32, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&wrong, &weights)?;
    let e = load_err(&dir);
    assert!(
        e.contains("model.norm.weight has shape [7], config.json implies [16]"),
        "{e}"
    );

    let mut extra = params.clone();
    extra.insert(
        "model.layers.0.mlp.gate_proj.bias".into(),
        Tensor::ones(24, DType::F32, &Device::Cpu)?,
    );
    // Rotary caches of old checkpoints are recomputed, not an error.
    extra.insert(
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        Tensor::ones(2, DType::F32, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&extra, &weights)?;
    let e = load_err(&dir);
    assert!(
        e.contains("unexpected tensor model.layers.0.mlp.gate_proj.bias (1 unexpected"),
        "{e}"
    );

    candle_core::safetensors::save(&params, &weights)?;
    assert!(hf::load(&dir, DType::F32, &Device::Cpu).is_ok());
    let cfg_path = dir.join("config.json");
    let good = std::fs::read_to_string(&cfg_path).expect("written by save");
    std::fs::write(&cfg_path, good.replace("\"llama\"", "\"gpt2\"")).expect("writable");
    assert!(load_err(&dir).contains("model_type \"gpt2\" is not supported"));
    std::fs::write(
        &cfg_path,
        good.replace(
            "\"rope_scaling\": null",
            "\"rope_scaling\": {\"rope_type\": \"yarn\"}",
        ),
    )
    .expect("writable");
    assert!(load_err(&dir).contains("rope_scaling of type \"yarn\""));
    // Qwen2 windowing only some layers has no counterpart here.
    let mut partial: serde_json::Value = serde_json::from_str(&good).expect("valid JSON");
    partial["model_type"] = "qwen2".into();
    partial["use_sliding_window"] = true.into();
    partial["sliding_window"] = 4.into();
    partial["max_window_layers"] = 1.into();
    std::fs::write(&cfg_path, partial.to_string()).expect("writable");
    assert!(load_err(&dir).contains("max_window_layers = 1"));
    std::fs::write(&cfg_path, &good).expect("writable");

    std::fs::remove_file(&weights).expect("exists");
    assert!(load_err(&dir).contains("no weights"));
    write_sharded(&dir, &params)?;
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).expect("exists");
    assert!(load_err(&dir).contains("missing shard"));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn forked_and_selected_caches_are_independent() -> Result<()> {
    let cfg = small_cfg(true);
    let (model, _vm) = random_model(&cfg, false, DType::F64, 13)?;
    let mut cache = model.new_cache(vec![1, 0], 8)?;
    model.forward_cached(&ids_tensor(&[vec![0, 3, 4], vec![5, 6, 7]])?, &mut cache)?;
    let mut fork = cache.fork()?;
    let mut second = cache.select_rows(&[1, 1])?;
    let a = model.forward_cached_last(&ids_tensor(&[vec![9], vec![10]])?, &mut fork)?;
    // The original still continues from its own state: a different token, same position.
    let b = model.forward_cached_last(&ids_tensor(&[vec![9], vec![11]])?, &mut cache)?;
    assert_eq!(max_abs_diff(&a.get(0)?, &b.get(0)?)?, 0.0);
    assert!(max_abs_diff(&a.get(1)?, &b.get(1)?)? > 1e-6);
    let c = model.forward_cached_last(&ids_tensor(&[vec![10], vec![11]])?, &mut second)?;
    assert!(max_abs_diff(&c.get(0)?, &a.get(1)?)? < 1e-12);
    assert!(max_abs_diff(&c.get(1)?, &b.get(1)?)? < 1e-12);
    assert!(cache.select_rows(&[2]).is_err());
    Ok(())
}
