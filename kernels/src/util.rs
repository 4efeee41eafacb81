//! Small helpers shared by the kernels: typed access to CPU storage, row-parallel loops, and a
//! vectorisable polynomial `exp`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, bail};

/// The contiguous f32 slice of a CPU storage seen through `layout`.
pub(crate) fn f32_data<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{what}: expected an f32 tensor, found {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{what}: expected a contiguous tensor"),
    }
}

/// The contiguous u32 slice of a CPU storage seen through `layout`.
pub(crate) fn u32_data<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [u32]> {
    let CpuStorage::U32(v) = s else {
        bail!("{what}: expected a u32 tensor, found {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{what}: expected a contiguous tensor"),
    }
}

/// Whether `work` scalar operations are worth spreading over candle's worker pool: small jobs
/// stay on the caller's thread because waking workers costs more than it saves.
pub(crate) fn threads_for(work: usize) -> usize {
    threads_above(work, 1 << 18)
}

/// Like [`threads_for`] with an explicit threshold. Waking a pool worker costs microseconds on an
/// idle machine but can cost a scheduler time slice (milliseconds) on a busy one, so cheap
/// memory-bound loops (the fused formulas) use a high threshold.
pub(crate) fn threads_above(work: usize, threshold: usize) -> usize {
    if work < threshold {
        return 1;
    }
    candle_core::utils::get_num_threads()
}

/// A pointer shared across candle's pool workers, each writing a disjoint range of rows.
struct RowsPtr(*mut f32);
// SAFETY: only used by `par_rows`, whose workers write disjoint row ranges.
unsafe impl Sync for RowsPtr {}

/// Runs `f(first_row, rows_out)` over disjoint row blocks of `out` (rows of `row_len` values) on
/// candle's persistent CPU worker pool, so the kernels share threads with candle's own ops
/// instead of competing with its spinning workers.
pub(crate) fn par_rows<F>(out: &mut [f32], row_len: usize, threads: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let rows = out.len().checked_div(row_len).unwrap_or(0);
    if threads <= 1 || rows < 2 {
        f(0, out);
        return;
    }
    let base = RowsPtr(out.as_mut_ptr());
    let base = &base;
    candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
        // SAFETY: `execute_chunked` hands each call a distinct sub-range of `0..rows`, so the
        // slices never overlap, and `range.end <= rows` keeps them inside `out`, which outlives
        // this call.
        let chunk = unsafe {
            std::slice::from_raw_parts_mut(base.0.add(range.start * row_len), range.len() * row_len)
        };
        f(range.start, chunk)
    });
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `exp(x)` by Cephes' range reduction and degree-6 polynomial (about 2 ulp), written so LLVM
/// vectorises loops over it on baseline x86-64 (no `round` call: magic-number rounding).
/// Inputs below -87.3 give the smallest normal float instead of a subnormal or zero.
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
    let x = x.clamp(-87.336_54, 88.376_26);
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    y * scale
}

/// Log-sum-exp of a row in one streaming pass: blocks of `BLOCK` values update a running maximum
/// and a rescaled running sum, so each value is read from memory once.
pub(crate) fn row_logsumexp(row: &[f32]) -> f32 {
    const BLOCK: usize = 512;
    const L: usize = 8;
    let mut m = f32::NEG_INFINITY;
    let mut s = 0.0f32;
    for block in row.chunks(BLOCK) {
        let mut mx = [f32::NEG_INFINITY; L];
        let mut it = block.chunks_exact(L);
        for c in &mut it {
            for k in 0..L {
                mx[k] = mx[k].max(c[k]);
            }
        }
        let mut bm = mx.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for &v in it.remainder() {
            bm = bm.max(v);
        }
        // A NaN is skipped by `max` but reaches the sum below through `fast_exp`, so the result
        // is NaN, as log_softmax's would be.
        if bm > m {
            s *= fast_exp(m - bm);
            m = bm;
        }
        if m == f32::NEG_INFINITY {
            continue;
        }
        let mut acc = [0.0f32; L];
        let mut it = block.chunks_exact(L);
        for c in &mut it {
            for k in 0..L {
                acc[k] += fast_exp(c[k] - m);
            }
        }
        let mut bs: f32 = acc.iter().sum();
        for &v in it.remainder() {
            bs += fast_exp(v - m);
        }
        s += bs;
    }
    if m == f32::INFINITY {
        return f32::INFINITY;
    }
    m + s.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let want = (x as f64).exp();
            let got = fast_exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.013;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }

    #[test]
    fn logsumexp_matches_f64() {
        let row: Vec<f32> = (0..3001)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.02 - 10.0)
            .collect();
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let want = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        let got = row_logsumexp(&row) as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn logsumexp_propagates_nan_and_handles_infinities() {
        assert!(row_logsumexp(&[0.0, f32::NAN, 1.0]).is_nan());
        assert_eq!(row_logsumexp(&[f32::NEG_INFINITY, 0.0]), 0.0);
        assert_eq!(row_logsumexp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
    }
}
