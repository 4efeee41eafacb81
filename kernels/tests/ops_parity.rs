//! Every hand-written fused op equals the unfused candle composition, forward and backward, on
//! fresh random inputs (f32, relative error < 1e-5), on every backend this build has (the CPU).

mod common;

use candle_core::{D, DType, Device, Tensor, Var};
use common::{Rng, assert_close};
use post_kernels::ops;

const TOL: f32 = 1e-5;

fn targets(rng: &mut Rng, n: usize, vocab: usize) -> Tensor {
    let t: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
    Tensor::from_vec(t, n, &Device::Cpu).unwrap()
}

fn ref_logprobs(logits: &Tensor, t: &Tensor) -> Tensor {
    let ls = candle_nn::ops::log_softmax(logits, D::Minus1).unwrap();
    ls.gather(&t.unsqueeze(1).unwrap(), 1)
        .unwrap()
        .squeeze(1)
        .unwrap()
}

/// Gradients of `sum(out * w)` for random weights `w`, so every output's gradient differs.
fn weighted(out: &Tensor, w: &Tensor) -> Tensor {
    (out * w).unwrap().sum_all().unwrap()
}

#[test]
fn token_logprobs_matches_log_softmax_gather() {
    let mut rng = Rng::new(1);
    for &(n, vocab) in &[(1usize, 1usize), (5, 7), (33, 1000), (64, 4099)] {
        let x = Var::from_tensor(&rng.tensor(&[n, vocab], 3.0)).unwrap();
        let t = targets(&mut rng, n, vocab);
        let w = rng.tensor(&[n], 1.0);
        let fused = ops::token_logprobs(x.as_tensor(), &t).unwrap();
        let reference = ref_logprobs(x.as_tensor(), &t);
        assert_close("logp", &fused, &reference, TOL);
        let gf = weighted(&fused, &w).backward().unwrap();
        let gr = weighted(&reference, &w).backward().unwrap();
        assert_close("dlogits", gf.get(&x).unwrap(), gr.get(&x).unwrap(), TOL);
    }
}

#[test]
fn token_logprobs_handles_leading_dims_and_rejects_bad_ids() {
    let mut rng = Rng::new(2);
    let x = rng.tensor(&[2, 3, 11], 1.0);
    let t = targets(&mut rng, 6, 11).reshape((2, 3)).unwrap();
    let fused = ops::token_logprobs(&x, &t).unwrap();
    let reference = ref_logprobs(&x.reshape((6, 11)).unwrap(), &t.flatten_all().unwrap())
        .reshape((2, 3))
        .unwrap();
    assert_close("logp [2,3]", &fused, &reference, TOL);
    let bad = Tensor::from_vec(vec![0u32, 11, 1, 2, 3, 4], (2, 3), &Device::Cpu).unwrap();
    let err = ops::token_logprobs(&x, &bad).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    let wrong_shape = Tensor::zeros(5, DType::U32, &Device::Cpu).unwrap();
    assert!(ops::token_logprobs(&x, &wrong_shape).is_err());
}

#[test]
fn fused_linear_logprobs_matches_matmul_then_log_softmax() {
    let mut rng = Rng::new(3);
    for &(n, h, vocab, chunk) in &[
        (37usize, 16usize, 53usize, Some(7usize)),
        (8, 32, 300, None),
        (3, 4, 5, Some(1)),
    ] {
        let hid = Var::from_tensor(&rng.tensor(&[n, h], 1.0)).unwrap();
        let wt = Var::from_tensor(&rng.tensor(&[vocab, h], 0.5)).unwrap();
        let t = targets(&mut rng, n, vocab);
        let w = rng.tensor(&[n], 1.0);
        let fused =
            ops::fused_linear_token_logprobs(hid.as_tensor(), wt.as_tensor(), &t, chunk).unwrap();
        let logits = hid
            .as_tensor()
            .matmul(&wt.as_tensor().t().unwrap())
            .unwrap();
        let reference = ref_logprobs(&logits, &t);
        assert_close("logp", &fused, &reference, TOL);
        let gf = weighted(&fused, &w).backward().unwrap();
        let gr = weighted(&reference, &w).backward().unwrap();
        assert_close("dhidden", gf.get(&hid).unwrap(), gr.get(&hid).unwrap(), TOL);
        assert_close("dweight", gf.get(&wt).unwrap(), gr.get(&wt).unwrap(), TOL);
    }
}

fn ref_rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let r = (ms + eps).unwrap().sqrt().unwrap().recip().unwrap();
    x.broadcast_mul(&r).unwrap().broadcast_mul(w).unwrap()
}

#[test]
fn rms_norm_matches_composition_and_trains_both_inputs() {
    let mut rng = Rng::new(4);
    for &(shape, d) in &[
        (&[3usize, 5, 24][..], 24usize),
        (&[7, 3][..], 3),
        (&[300, 128][..], 128),
    ] {
        let x = Var::from_tensor(&rng.tensor(shape, 2.0)).unwrap();
        let w = Var::from_tensor(&rng.tensor(&[d], 1.0)).unwrap();
        let g = rng.tensor(shape, 1.0);
        let fused = ops::rms_norm(x.as_tensor(), w.as_tensor(), 1e-6).unwrap();
        let reference = ref_rms_norm(x.as_tensor(), w.as_tensor(), 1e-6);
        assert_close("y", &fused, &reference, TOL);
        let gf = weighted(&fused, &g).backward().unwrap();
        let gr = weighted(&reference, &g).backward().unwrap();
        let (gx, gw) = (gf.get(&x).unwrap(), gf.get(&w).unwrap());
        assert_close("dx", gx, gr.get(&x).unwrap(), TOL);
        assert_close("dw", gw, gr.get(&w).unwrap(), TOL);
        assert!(
            gw.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
    }
}

#[test]
fn softmax_matches_candle_softmax() {
    let mut rng = Rng::new(5);
    for shape in [&[4usize, 9][..], &[2, 3, 513][..], &[1, 1][..]] {
        let x = Var::from_tensor(&rng.tensor(shape, 3.0)).unwrap();
        let g = rng.tensor(shape, 1.0);
        let fused = ops::softmax_last_dim(x.as_tensor()).unwrap();
        let reference = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
        assert_close("softmax", &fused, &reference, TOL);
        let gf = weighted(&fused, &g).backward().unwrap();
        let gr = weighted(&reference, &g).backward().unwrap();
        assert_close("dx", gf.get(&x).unwrap(), gr.get(&x).unwrap(), TOL);
    }
}

fn ref_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let d = x.dim(3).unwrap();
    let x1 = x.narrow(3, 0, d / 2).unwrap();
    let x2 = x.narrow(3, d / 2, d / 2).unwrap();
    let (c, s) = (
        cos.unsqueeze(0).unwrap().unsqueeze(0).unwrap(),
        sin.unsqueeze(0).unwrap().unsqueeze(0).unwrap(),
    );
    let y1 = (x1.broadcast_mul(&c).unwrap() - x2.broadcast_mul(&s).unwrap()).unwrap();
    let y2 = (x1.broadcast_mul(&s).unwrap() + x2.broadcast_mul(&c).unwrap()).unwrap();
    Tensor::cat(&[y1, y2], 3).unwrap()
}

#[test]
fn rope_matches_composition_and_candle() {
    let mut rng = Rng::new(6);
    let (b, h, t, d) = (2, 3, 5, 8);
    let x = Var::from_tensor(&rng.tensor(&[b, h, t, d], 1.0)).unwrap();
    let ang: Vec<f32> = (0..t * d / 2).map(|i| (i as f32) * 0.37).collect();
    let ang = Tensor::from_vec(ang, (t, d / 2), &Device::Cpu).unwrap();
    let (cos, sin) = (ang.cos().unwrap(), ang.sin().unwrap());
    let g = rng.tensor(&[b, h, t, d], 1.0);
    let fused = ops::rope(x.as_tensor(), &cos, &sin).unwrap();
    let reference = ref_rope(x.as_tensor(), &cos, &sin);
    assert_close("rope", &fused, &reference, TOL);
    let candle = candle_nn::rotary_emb::rope(x.as_tensor(), &cos, &sin).unwrap();
    assert_close("rope vs candle", &fused, &candle, TOL);
    let gf = weighted(&fused, &g).backward().unwrap();
    let gr = weighted(&reference, &g).backward().unwrap();
    assert_close("dx", gf.get(&x).unwrap(), gr.get(&x).unwrap(), TOL);
    assert!(ops::rope(x.as_tensor(), &cos.narrow(0, 0, 4).unwrap(), &sin).is_err());
}

#[test]
fn backend_note_is_one_line() {
    let note = post_kernels::backend_note();
    assert!(!note.contains('\n') && note.contains("CPU"), "{note}");
}
