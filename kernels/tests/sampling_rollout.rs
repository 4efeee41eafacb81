//! Sampling without a full sort equals a full-sort reference; rollout bookkeeping equals float64
//! references and hand-checked layouts.

mod common;

use common::Rng;
use post_kernels::rollout::{
    Branch, all_fail_flags, branched_layout, group_advantages, group_stats,
};
use post_kernels::sampling::{SamplingParams, sample_rows};

/// Sorts the whole row, then applies temperature, top-k and top-p (the textbook procedure).
fn reference(row: &[f32], p: &SamplingParams, u: f32) -> u32 {
    if p.temperature <= 0.0 {
        let mut best = 0;
        for (i, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let mut items: Vec<(f64, u32)> = row
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 / p.temperature as f64, i as u32))
        .collect();
    // partial_cmp: -0.0 and 0.0 are the same logit (ties go to the lower id).
    items.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
    if p.top_k > 0 {
        items.truncate(p.top_k);
    }
    let m = items[0].0;
    let total: f64 = items.iter().map(|x| (x.0 - m).exp()).sum();
    let probs: Vec<f64> = items.iter().map(|x| (x.0 - m).exp() / total).collect();
    let mut keep = probs.len();
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        for (i, pr) in probs.iter().enumerate() {
            acc += pr;
            if acc >= p.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
    }
    let mass: f64 = probs[..keep].iter().sum();
    let target = u as f64 * mass;
    let mut acc = 0.0;
    for i in 0..keep {
        acc += probs[i];
        if acc > target {
            return items[i].1;
        }
    }
    items[keep - 1].1
}

#[test]
fn sampling_equals_full_sort_reference() {
    let mut rng = Rng::new(21);
    let settings = [
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        },
        SamplingParams {
            temperature: 0.7,
            top_k: 5,
            top_p: 1.0,
        },
        SamplingParams {
            temperature: 1.3,
            top_k: 0,
            top_p: 0.9,
        },
        SamplingParams {
            temperature: 0.5,
            top_k: 40,
            top_p: 0.5,
        },
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
        },
        SamplingParams {
            temperature: 1.0,
            top_k: 1,
            top_p: 0.3,
        },
    ];
    for p in &settings {
        for &vocab in &[1usize, 2, 17, 500] {
            let rows = 40;
            // Coarse logits so ties occur and the tie-break is exercised.
            let logits: Vec<f32> = (0..rows * vocab)
                .map(|_| (rng.normal() * 4.0).round() * 0.5)
                .collect();
            let u: Vec<f32> = (0..rows).map(|_| rng.uniform()).collect();
            let got = sample_rows(&logits, vocab, p, &u).unwrap();
            for r in 0..rows {
                let want = reference(&logits[r * vocab..(r + 1) * vocab], p, u[r]);
                assert_eq!(
                    got[r],
                    want,
                    "{p:?} vocab {vocab} row {r} u {} logits {:?}",
                    u[r],
                    &logits[r * vocab..(r + 1) * vocab]
                );
            }
        }
    }
}

#[test]
fn sampling_rejects_bad_input() {
    let p = SamplingParams::default();
    assert!(sample_rows(&[0.0; 6], 4, &p, &[0.5]).is_err());
    assert!(sample_rows(&[0.0; 4], 4, &p, &[1.0]).is_err());
    assert!(sample_rows(&[f32::NAN; 4], 4, &p, &[0.5]).is_err());
    assert!(sample_rows(&[0.0; 4], 4, &SamplingParams { top_p: 0.0, ..p }, &[0.5]).is_err());
}

#[test]
fn group_statistics_match_float64() {
    let mut rng = Rng::new(22);
    let g = 6;
    let r: Vec<f32> = (0..g * 9).map(|_| rng.normal()).collect();
    let st = group_stats(&r, g).unwrap();
    let adv = group_advantages(&r, g, 1e-4, true).unwrap();
    let centred = group_advantages(&r, g, 1e-4, false).unwrap();
    for (k, grp) in r.chunks(g).enumerate() {
        let x: Vec<f64> = grp.iter().map(|&v| v as f64).collect();
        let m = x.iter().sum::<f64>() / g as f64;
        let s = (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (g - 1) as f64).sqrt();
        assert!((st.mean[k] as f64 - m).abs() < 1e-6);
        assert!((st.std[k] as f64 - s).abs() < 1e-6);
        for i in 0..g {
            let a = (x[i] - m) / (s + 1e-4);
            assert!((adv[k * g + i] as f64 - a).abs() < 1e-5 * a.abs().max(1.0));
            assert!((centred[k * g + i] as f64 - (x[i] - m)).abs() < 1e-5);
        }
    }
    assert!(group_stats(&r, 5).is_err());
    assert!(group_stats(&r, 0).is_err());
    assert_eq!(group_stats(&[2.0], 1).unwrap().std, vec![0.0]);
}

#[test]
fn all_fail_flags_mark_groups_without_success() {
    let r = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5];
    assert_eq!(all_fail_flags(&r, 3, 0.5).unwrap(), vec![false, true, true]);
    assert_eq!(
        all_fail_flags(&r, 3, 0.0).unwrap(),
        vec![false, true, false]
    );
}

#[test]
fn branched_layout_masks_only_sampled_tokens() {
    let branches = [
        Branch {
            group: 1,
            prompt_len: 2,
            prefix_len: 0,
            completion_len: 3,
        },
        Branch {
            group: 0,
            prompt_len: 1,
            prefix_len: 2,
            completion_len: 1,
        },
        Branch {
            group: 1,
            prompt_len: 2,
            prefix_len: 1,
            completion_len: 2,
        },
    ];
    let l = branched_layout(&branches, 0).unwrap();
    assert_eq!(l.width, 5);
    #[rustfmt::skip]
    let want_mask = vec![
        0., 0., 1., 1., 1.,
        0., 0., 0., 1., 0.,
        0., 0., 0., 1., 1.,
    ];
    assert_eq!(l.loss_mask, want_mask);
    assert_eq!(l.attention_mask[5..10], [1., 1., 1., 1., 0.]);
    assert_eq!(l.loss_index, vec![2, 3, 4, 8, 13, 14]);
    assert_eq!(l.group_of_row, vec![1, 0, 1]);
    assert_eq!(l.group_offsets, vec![0, 1, 3]);
    assert_eq!(l.rows_by_group, vec![1, 0, 2]);
    assert!(branched_layout(&branches, 4).is_err());
}
