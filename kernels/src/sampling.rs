//! Sampling kernels: temperature, top-k and top-p (nucleus) without sorting the vocabulary.
//!
//! Top-k is a partial selection (`select_nth_unstable`, expected O(vocab)); top-p is a recursive
//! partition that finds the smallest high-probability prefix reaching mass `p` (also expected
//! O(vocab)); only the kept tokens are sorted, so that a uniform draw maps to the same token as a
//! reference that sorts everything. Ties are broken by the lower token id everywhere.

use std::cmp::Ordering;

use candle_core::{DType, Device, Result, Tensor, bail};

/// How one row of logits becomes a token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// `<= 0` means greedy (argmax).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; `>= 1` keeps all.
    pub top_p: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

/// Probability-descending, then id-ascending: a total order, so selections are deterministic.
fn by_prob_desc(a: &(f64, u32), b: &(f64, u32)) -> Ordering {
    b.0.partial_cmp(&a.0)
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

/// Samples one token id for each row of `logits` (`[rows * vocab]`, row-major) with `uniforms[r]`
/// in `[0, 1)` as the row's random draw.
pub fn sample_rows(
    logits: &[f32],
    vocab: usize,
    params: &SamplingParams,
    uniforms: &[f32],
) -> Result<Vec<u32>> {
    if vocab == 0 || !logits.len().is_multiple_of(vocab) {
        bail!(
            "sample_rows: {} logits do not split into rows of {vocab}",
            logits.len()
        )
    }
    let rows = logits.len() / vocab;
    if uniforms.len() != rows {
        bail!("sample_rows: {} uniforms for {rows} rows", uniforms.len())
    }
    if params.top_p.is_nan() || params.top_p <= 0.0 {
        bail!("sample_rows: top_p must be positive, got {}", params.top_p)
    }
    if vocab > u32::MAX as usize {
        bail!("sample_rows: vocabulary of {vocab} does not fit u32 ids")
    }
    logits
        .chunks(vocab)
        .zip(uniforms)
        .map(|(row, &u)| sample_row(row, params, u))
        .collect()
}

fn sample_row(row: &[f32], p: &SamplingParams, u: f32) -> Result<u32> {
    if row.iter().any(|v| v.is_nan()) {
        bail!("sample_rows: logits contain NaN")
    }
    if !(0.0..1.0).contains(&u) {
        bail!("sample_rows: uniform draw {u} is outside [0, 1)")
    }
    if p.temperature <= 0.0 {
        let mut best = 0usize;
        for (i, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = i;
            }
        }
        return Ok(best as u32);
    }
    let inv_t = 1.0 / p.temperature as f64;
    let mut items: Vec<(f64, u32)> = row
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 * inv_t, i as u32))
        .collect();
    if p.top_k > 0 && p.top_k < items.len() {
        items.select_nth_unstable_by(p.top_k - 1, by_prob_desc);
        items.truncate(p.top_k);
    }
    let m = items.iter().map(|x| x.0).fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        bail!("sample_rows: every logit is -inf")
    }
    let mut total = 0.0;
    for it in items.iter_mut() {
        it.0 = (it.0 - m).exp();
        total += it.0;
    }
    for it in items.iter_mut() {
        it.0 /= total;
    }
    let keep = if p.top_p < 1.0 {
        nucleus_len(&mut items, p.top_p as f64)
    } else {
        items.len()
    };
    let kept = &mut items[..keep];
    kept.sort_unstable_by(by_prob_desc);
    let mass: f64 = kept.iter().map(|x| x.0).sum();
    let target = u as f64 * mass;
    let mut acc = 0.0;
    for &(pr, id) in kept.iter() {
        acc += pr;
        if acc > target {
            return Ok(id);
        }
    }
    // Rounding can leave `acc` a hair below `target` at the end: the last kept token is right.
    Ok(kept[kept.len() - 1].1)
}

/// Reorders `items` so its first `n` entries are the smallest prefix (in probability-descending
/// order) whose mass reaches `p`, and returns `n`. Expected O(len) by repeated partitioning.
fn nucleus_len(items: &mut [(f64, u32)], p: f64) -> usize {
    let (mut lo, mut hi, mut need) = (0usize, items.len(), p);
    while hi > lo {
        let mid = (hi - lo) / 2;
        items[lo..hi].select_nth_unstable_by(mid, by_prob_desc);
        let before: f64 = items[lo..lo + mid].iter().map(|x| x.0).sum();
        if mid > 0 && before >= need {
            hi = lo + mid;
            continue;
        }
        let with_pivot = before + items[lo + mid].0;
        if with_pivot >= need {
            return lo + mid + 1;
        }
        need -= with_pivot;
        lo += mid + 1;
    }
    lo.max(1)
}

/// Tensor form of [`sample_rows`]: `logits` `[rows, vocab]`, `uniforms` `[rows]` f32; returns u32
/// `[rows]` on the logits' device.
pub fn sample(logits: &Tensor, params: &SamplingParams, uniforms: &Tensor) -> Result<Tensor> {
    let (rows, vocab) = logits.dims2()?;
    let l = logits
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let u = uniforms
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    let ids = sample_rows(&l, vocab, params, &u)?;
    Tensor::from_vec(ids, rows, logits.device())
}
