//! Softmax over the last dimension with a backward (`dx = y * (g - sum(g * y))`); candle's
//! `softmax_last_dim` records none.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};

use crate::util::{f32_data, fast_exp, par_rows, threads_for};

/// Softmax of `x` over its last dimension; f32, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let Some(&d) = dims.last() else {
        bail!("softmax_last_dim: x must have at least one dimension")
    };
    let rows = x.elem_count() / d.max(1);
    let x2 = super::f32_contiguous(&x.reshape((rows, d))?)?;
    if !x2.device().is_cpu() {
        return super::composed::softmax(&x2)?.reshape(dims);
    }
    x2.apply_op1(Softmax)?.reshape(dims)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "post-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, d) = l.shape().dims2()?;
        let x = f32_data(s, l, "softmax x")?;
        let mut out = vec![0.0f32; rows * d];
        if d > 0 {
            par_rows(&mut out, d, threads_for(rows * d), |r0, o| {
                for (k, orow) in o.chunks_mut(d).enumerate() {
                    let row = &x[(r0 + k) * d..(r0 + k + 1) * d];
                    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0f32;
                    for (o, &v) in orow.iter_mut().zip(row) {
                        *o = fast_exp(v - m);
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    for o in orow.iter_mut() {
                        *o *= inv;
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, d))))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.detach().contiguous()?;
        Ok(Some(res.detach().apply_op2_no_bwd(&g, &SoftmaxBwd)?))
    }
}

struct SoftmaxBwd;

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "post-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, d) = l1.shape().dims2()?;
        let y = f32_data(s1, l1, "softmax result")?;
        let g = f32_data(s2, l2, "softmax grad")?;
        let mut out = vec![0.0f32; rows * d];
        if d > 0 {
            par_rows(&mut out, d, threads_for(rows * d), |r0, o| {
                for (k, orow) in o.chunks_mut(d).enumerate() {
                    let a = (r0 + k) * d;
                    let (yr, gr) = (&y[a..a + d], &g[a..a + d]);
                    let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                    for ((o, &yv), &gv) in orow.iter_mut().zip(yr).zip(gr) {
                        *o = yv * (gv - dot);
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, d))))
    }
}
