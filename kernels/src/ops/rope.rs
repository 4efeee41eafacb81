//! Rotary position embedding (the non-interleaved "rotate half" form of Llama and Qwen2, like
//! `candle_nn::rotary_emb::rope`) with a backward: the gradient is the inverse rotation of the
//! incoming gradient, i.e. the same kernel with `sin` negated.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};

use crate::util::{f32_data, par_rows, threads_for};

/// `x` `[batch, heads, seq, head_dim]`, `cos` and `sin` `[seq, head_dim / 2]`. Returns f32 with
/// `x`'s shape, differentiable with respect to `x` (`cos`/`sin` are treated as constants).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (_b, _h, t, d) = x.dims4()?;
    if d % 2 != 0 {
        bail!("rope: head_dim must be even, got {d}")
    }
    for (name, c) in [("cos", cos), ("sin", sin)] {
        if c.dims() != [t, d / 2] {
            bail!(
                "rope: {name} has shape {:?}, expected [{t}, {}]",
                c.dims(),
                d / 2
            )
        }
    }
    let x = super::f32_contiguous(x)?;
    let cos = super::f32_contiguous(&cos.detach())?;
    let sin = super::f32_contiguous(&sin.detach())?;
    if !x.device().is_cpu() {
        return super::composed::rope(&x, &cos, &sin);
    }
    x.apply_op3(&cos, &sin, Rope { inverse: false })
}

/// `inverse` rotates by minus the angle (the transpose of the forward rotation).
struct Rope {
    inverse: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "post-rope"
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
        let (b, h, t, d) = l1.shape().dims4()?;
        let x = f32_data(s1, l1, "rope x")?;
        let cos = f32_data(s2, l2, "rope cos")?;
        let sin = f32_data(s3, l3, "rope sin")?;
        let half = d / 2;
        let sign = if self.inverse { -1.0f32 } else { 1.0 };
        let mut out = vec![0.0f32; b * h * t * d];
        if d > 0 {
            par_rows(&mut out, d, threads_for(out_len(b, h, t, d)), |r0, o| {
                for (k, orow) in o.chunks_mut(d).enumerate() {
                    let r = r0 + k;
                    let pos = r % t;
                    let row = &x[r * d..(r + 1) * d];
                    let (c, s) = (&cos[pos * half..], &sin[pos * half..]);
                    for i in 0..half {
                        let (x1, x2) = (row[i], row[i + half]);
                        let (cv, sv) = (c[i], sign * s[i]);
                        orow[i] = x1 * cv - x2 * sv;
                        orow[i + half] = x1 * sv + x2 * cv;
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, h, t, d))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let gx = g.apply_op3(
            cos,
            sin,
            Rope {
                inverse: !self.inverse,
            },
        )?;
        Ok((Some(gx), None, None))
    }
}

fn out_len(b: usize, h: usize, t: usize, d: usize) -> usize {
    b * h * t * d
}
