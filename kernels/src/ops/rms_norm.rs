//! RMSNorm with a backward for both the input and the weight:
//! `y = x * w / sqrt(mean(x^2) + eps)` over the last dimension.
//! candle's fast `rms_norm` records no backward (candle issue #2168); this one does.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};

use crate::util::{f32_data, par_rows, threads_for};

/// `x` `[..., D]`, `weight` `[D]`; returns f32 with `x`'s shape. Differentiable in both inputs.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dims = x.dims();
    let Some(&d) = dims.last() else {
        bail!("rms_norm: x must have a feature dimension, got a scalar")
    };
    if weight.dims() != [d] {
        bail!(
            "rms_norm: weight has shape {:?}, expected [{d}]",
            weight.dims()
        )
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        bail!("rms_norm: eps must be a finite non-negative number, got {eps}")
    }
    let rows = x.elem_count() / d.max(1);
    let x2 = super::f32_contiguous(&x.reshape((rows, d))?)?;
    let w = super::f32_contiguous(weight)?;
    if !x2.device().is_cpu() {
        return super::composed::rms_norm(&x2, &w, eps)?.reshape(dims);
    }
    x2.apply_op2(&w, RmsNorm { eps: eps as f32 })?.reshape(dims)
}

struct RmsNorm {
    eps: f32,
}

fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ss: f32 = row.iter().map(|v| v * v).sum();
    1.0 / (ss / row.len() as f32 + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "post-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, d) = l1.shape().dims2()?;
        let x = f32_data(s1, l1, "rms_norm x")?;
        let w = f32_data(s2, l2, "rms_norm weight")?;
        let mut out = vec![0.0f32; rows * d];
        if d > 0 {
            par_rows(&mut out, d, threads_for(rows * d), |r0, o| {
                for (k, orow) in o.chunks_mut(d).enumerate() {
                    let row = &x[(r0 + k) * d..(r0 + k + 1) * d];
                    let r = inv_rms(row, self.eps);
                    for ((o, &v), &wv) in orow.iter_mut().zip(row).zip(w) {
                        *o = v * r * wv;
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, d))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, d) = x.dims2()?;
        let g = grad.detach().contiguous()?;
        let packed = x
            .detach()
            .apply_op3_no_bwd(&w.detach(), &g, &RmsNormBwd { eps: self.eps })?;
        let gx = packed.narrow(0, 0, rows * d)?.reshape((rows, d))?;
        let gw = packed.narrow(0, rows * d, d)?;
        Ok((Some(gx), Some(gw)))
    }
}

/// Output: the flat `[rows * D + D]` concatenation of the input gradient and the weight gradient.
struct RmsNormBwd {
    eps: f32,
}

impl CustomOp3 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "post-rms-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, d) = l1.shape().dims2()?;
        let x = f32_data(s1, l1, "rms_norm x")?;
        let w = f32_data(s2, l2, "rms_norm weight")?;
        let g = f32_data(s3, l3, "rms_norm grad")?;
        let mut out = vec![0.0f32; rows * d + d];
        if d == 0 {
            return Ok((CpuStorage::F32(out), Shape::from(0)));
        }
        let (gx, gw) = out.split_at_mut(rows * d);
        // Each block of rows sums its own weight gradient; the partial sums are added afterwards.
        let partials = std::sync::Mutex::new(Vec::<Vec<f32>>::new());
        par_rows(gx, d, threads_for(rows * d), |r0, chunk| {
            let mut gw = vec![0.0f32; d];
            for (k, orow) in chunk.chunks_mut(d).enumerate() {
                let a = (r0 + k) * d;
                let (row, grow) = (&x[a..a + d], &g[a..a + d]);
                let r = inv_rms(row, self.eps);
                let mut dot = 0.0f32;
                for j in 0..d {
                    let xhat = row[j] * r;
                    dot += grow[j] * w[j] * xhat;
                    gw[j] += grow[j] * xhat;
                }
                let mean = dot / d as f32;
                for j in 0..d {
                    orow[j] = r * (grow[j] * w[j] - row[j] * r * mean);
                }
            }
            // A poisoned lock means another block panicked; that panic propagates anyway.
            if let Ok(mut p) = partials.lock() {
                p.push(gw);
            }
        });
        let partials = partials
            .into_inner()
            .map_err(|_| candle_core::Error::Msg("rms_norm backward: a worker panicked".into()))?;
        for p in partials {
            for (a, b) in gw.iter_mut().zip(p) {
                *a += b;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(rows * d + d)))
    }
}
