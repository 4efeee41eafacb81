//! Fused kernels (`post_kernels::ops`) against the composed reference path of the model and of
//! token log-probabilities: same logits, same gradient for every parameter, same RoPE layout, and
//! the KV-cache path still equal to the uncached forward in both modes.

use candle_core::{D, DType, Device, Result, Tensor};
use post_runtime::fusion::Fusion;
use post_runtime::logprob::token_logprobs_with;
use post_runtime::model::{ModelOptions, Transformer, presets};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

fn ids_tensor(rows: &[Vec<u32>]) -> Result<Tensor> {
    let t = rows[0].len();
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu)
}

/// max |a - b| / max |b|: the error relative to the tensor's scale (elementwise relative errors
/// are meaningless for entries that are nearly zero).
fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F64)?.flatten_all()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?;
    let diff: f64 = (&a - &b)?.abs()?.max(0)?.to_vec0()?;
    let scale: f64 = b.abs()?.max(0)?.to_vec0()?;
    Ok(diff / scale.max(1e-30))
}

/// The tiny preset with norm weights randomised too, so that their gradients are exercised.
fn tiny_model(seed: u64) -> Result<Transformer> {
    let cfg = presets::tiny();
    let (model, varmap) = Transformer::init_random(
        &cfg,
        ModelOptions::default(),
        seed,
        DType::F32,
        &Device::Cpu,
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (name, var) in varmap.data().lock().expect("not poisoned").iter() {
        if name.ends_with("norm.weight") {
            let n = var.elem_count();
            let v: Vec<f32> = (0..n).map(|_| 1.0 + rng.random_range(-0.3..0.3)).collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu)?)?;
        }
    }
    Ok(model)
}

/// A right-padded batch (pad id 0) and its loss mask over next-token targets.
fn padded_batch() -> Result<(Tensor, Tensor)> {
    let lens = [23usize, 9, 16];
    let t = 23;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut rows = Vec::new();
    let mut mask = Vec::new();
    for &n in &lens {
        let row: Vec<u32> = (0..t)
            .map(|i| if i < n { rng.random_range(1..64) } else { 0 })
            .collect();
        rows.push(row);
        // Target i + 1 counts iff it is a real token.
        mask.extend((0..t - 1).map(|i| if i + 1 < n { 1f32 } else { 0.0 }));
    }
    Ok((
        ids_tensor(&rows)?,
        Tensor::from_vec(mask, (lens.len(), t - 1), &Device::Cpu)?,
    ))
}

/// Masked mean next-token NLL, with log-probabilities fused or composed as `fusion` says.
fn sft_loss(logits: &Tensor, ids: &Tensor, mask: &Tensor, fusion: Fusion) -> Result<Tensor> {
    let t = ids.dim(1)?;
    let lp = token_logprobs_with(
        &logits.narrow(1, 0, t - 1)?,
        &ids.narrow(1, 1, t - 1)?,
        fusion,
    )?;
    (lp * mask)?.sum_all()?.neg()? / mask.sum_all()?.to_vec0::<f32>()? as f64
}

#[test]
fn fused_and_composed_models_agree_on_logits_and_every_gradient() -> Result<()> {
    let model = tiny_model(3)?;
    let (ids, mask) = padded_batch()?;
    let mut results = Vec::new();
    for fusion in [Fusion::On, Fusion::Off] {
        let mut m = model.clone();
        m.set_fusion(Some(fusion));
        assert_eq!(m.fusion(), fusion);
        let logits = m.forward(&ids)?;
        let loss = sft_loss(&logits, &ids, &mask, fusion)?;
        let grads = loss.backward()?;
        let mut g = Vec::new();
        for (name, p) in m.named_parameters() {
            let gp = grads
                .get(&p)
                .unwrap_or_else(|| panic!("{fusion:?}: {name} receives no gradient"))
                .clone();
            g.push((name, gp));
        }
        results.push((logits, loss.to_vec0::<f32>()?, g));
    }
    let (on, off) = (&results[0], &results[1]);
    let e = rel_err(&on.0, &off.0)?;
    assert!(e < 1e-4, "logits differ: rel err {e}");
    // Different kernels round differently: bit-identical logits would mean the switch did nothing.
    assert!(e > 0.0, "fused and composed logits are bit-identical");
    assert!(
        ((on.1 - off.1) / off.1).abs() < 1e-5,
        "loss {} vs {}",
        on.1,
        off.1
    );
    assert_eq!(on.2.len(), off.2.len());
    for ((name, a), (_, b)) in on.2.iter().zip(&off.2) {
        let scale: f64 = b
            .to_dtype(DType::F64)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_vec0()?;
        assert!(scale > 0.0, "{name}: zero gradient");
        let e = rel_err(a, b)?;
        assert!(e < 1e-4, "{name}: gradient rel err {e}");
    }
    Ok(())
}

/// The model's RoPE convention (Hugging Face "rotate half", frequencies repeated over both halves)
/// written out directly, against the fused kernel fed one half of the tables.
#[test]
fn fused_rope_matches_the_rotate_half_layout() -> Result<()> {
    let (b, h, t, d) = (2usize, 3usize, 7usize, 8usize);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let xv: Vec<f32> = (0..b * h * t * d)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let x = Tensor::from_vec(xv, (b, h, t, d), &Device::Cpu)?;
    let theta = 10000f64;
    let mut cos = Vec::new();
    let mut sin = Vec::new();
    for p in 0..t {
        for i in 0..d / 2 {
            let a = p as f64 / theta.powf(2.0 * i as f64 / d as f64);
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    let cos_h = Tensor::from_vec(cos, (t, d / 2), &Device::Cpu)?;
    let sin_h = Tensor::from_vec(sin, (t, d / 2), &Device::Cpu)?;
    let cos_f = Tensor::cat(&[&cos_h, &cos_h], 1)?;
    let sin_f = Tensor::cat(&[&sin_h, &sin_h], 1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let reference = (x.broadcast_mul(&cos_f)? + rotated.broadcast_mul(&sin_f)?)?;
    let fused = post_kernels::ops::rope(&x, &cos_h, &sin_h)?;
    let e = rel_err(&fused, &reference)?;
    assert!(e < 1e-6, "rope layouts differ: rel err {e}");
    Ok(())
}

#[test]
fn fused_and_composed_token_logprobs_agree() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (b, t, v) = (3usize, 5usize, 50usize);
    let lv: Vec<f32> = (0..b * t * v)
        .map(|_| rng.random_range(-4.0..4.0))
        .collect();
    let tv: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..v as u32)).collect();
    let targets = Tensor::from_vec(tv, (b, t), &Device::Cpu)?;
    let mut out = Vec::new();
    for fusion in [Fusion::On, Fusion::Off] {
        let logits = candle_core::Var::from_vec(lv.clone(), (b, t, v), &Device::Cpu)?;
        let lp = token_logprobs_with(logits.as_tensor(), &targets, fusion)?;
        assert_eq!(lp.dims(), [b, t]);
        assert_eq!(lp.dtype(), DType::F32);
        let w = Tensor::arange(0f32, (b * t) as f32, &Device::Cpu)?.reshape((b, t))?;
        let g = (&lp * w)?.sum_all()?.backward()?;
        let gl = g
            .get(logits.as_tensor())
            .expect("logits get a gradient")
            .clone();
        out.push((lp, gl));
    }
    let e = rel_err(&out[0].0, &out[1].0)?;
    assert!(e < 1e-5, "log-probabilities: rel err {e}");
    let e = rel_err(&out[0].1, &out[1].1)?;
    assert!(e < 1e-5, "gradients: rel err {e}");
    Ok(())
}

#[test]
fn cached_forward_equals_uncached_in_both_modes() -> Result<()> {
    let prompts = [vec![5u32, 1, 9, 2, 7], vec![3u32, 12], vec![8u32, 8, 8, 4]];
    let cont = [[6u32, 2, 11], [4, 10, 5], [7, 7, 1]];
    let width = 5;
    let pads: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
    let padded: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&pads)
        .map(|(p, &n)| {
            std::iter::repeat_n(0u32, n)
                .chain(p.iter().copied())
                .collect()
        })
        .collect();
    for fusion in [Fusion::On, Fusion::Off] {
        let mut model = tiny_model(4)?;
        model.set_fusion(Some(fusion));
        let mut cache = model.new_cache(pads.clone(), width + cont[0].len())?;
        let prefill = model.forward_cached(&ids_tensor(&padded)?, &mut cache)?;
        let mut steps = vec![prefill.narrow(1, width - 1, 1)?.squeeze(1)?];
        for s in 0..cont[0].len() {
            let col: Vec<Vec<u32>> = cont.iter().map(|c| vec![c[s]]).collect();
            steps.push(model.forward_cached_last(&ids_tensor(&col)?, &mut cache)?);
        }
        for (r, p) in prompts.iter().enumerate() {
            let full: Vec<u32> = p.iter().chain(&cont[r]).copied().collect();
            let reference = model.forward(&ids_tensor(&[full])?)?.get(0)?;
            let e = rel_err(
                &prefill.get(r)?.narrow(0, pads[r], p.len())?,
                &reference.narrow(0, 0, p.len())?,
            )?;
            assert!(e < 1e-4, "{fusion:?} row {r} prefill: rel err {e}");
            for (s, step) in steps.iter().enumerate() {
                let e = rel_err(&step.get(r)?, &reference.get(p.len() - 1 + s)?)?;
                assert!(e < 1e-4, "{fusion:?} row {r} step {s}: rel err {e}");
            }
        }
    }
    Ok(())
}
