//! Optimisers whose state can be checkpointed: AdamW (decoupled weight decay, PyTorch semantics)
//! and SGD with momentum; gradient clipping by global norm; gradient accumulation.
//!
//! `candle_nn::AdamW` hides its moment buffers, so it cannot be resumed exactly; this one keeps
//! them as named tensors (`m.<param>`, `v.<param>`, `buf.<param>`) plus a step counter.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor, Var};
use post_graph::{Optimizer as OptimizerSpec, Schedule};

/// The trainable parameters, sorted by name so every traversal order is reproducible.
#[derive(Clone)]
pub struct Params {
    pub entries: Vec<(String, Var)>,
}

impl Params {
    pub fn new(mut entries: Vec<(String, Var)>) -> Self {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Params { entries }
    }

    /// From a candle `VarMap` (a HashMap inside, hence the sort).
    pub fn from_varmap(varmap: &candle_nn::VarMap) -> Self {
        // A poisoned lock means another thread panicked mid-update; the data is still the
        // last consistent map, so recover it rather than propagate a panic.
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        Params::new(data.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn numel(&self) -> usize {
        self.entries.iter().map(|(_, v)| v.elem_count()).sum()
    }
}

/// Gradients aligned with [`Params::entries`]; `None` where a parameter got no gradient.
pub struct Grads(pub Vec<Option<Tensor>>);

impl Grads {
    pub fn from_store(params: &Params, store: &candle_core::backprop::GradStore) -> Self {
        Grads(
            params
                .entries
                .iter()
                .map(|(_, v)| store.get(v.as_tensor()).cloned())
                .collect(),
        )
    }

    /// Accumulate `other` into `self` (gradient accumulation over micro-batches).
    pub fn add(&mut self, other: Grads) -> Result<()> {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = match (a.take(), b) {
                (Some(x), Some(y)) => Some((x + y)?),
                (x, y) => x.or(y),
            };
        }
        Ok(())
    }

    pub fn scale(&mut self, factor: f64) -> Result<()> {
        for g in self.0.iter_mut().flatten() {
            *g = g.affine(factor, 0.0)?;
        }
        Ok(())
    }

    /// The global L2 norm over every gradient, computed in f64 for a reproducible sum.
    pub fn global_norm(&self) -> Result<f64> {
        let mut total = 0f64;
        for g in self.0.iter().flatten() {
            let sq = g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
            total += sq;
        }
        Ok(total.sqrt())
    }

    /// Scale so the global norm is at most `max_norm`; returns the norm before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.global_norm()?;
        if norm.is_finite() && norm > max_norm {
            self.scale(max_norm / (norm + 1e-6))?;
        }
        Ok(norm)
    }

    /// How many parameters received a gradient.
    pub fn present(&self) -> usize {
        self.0.iter().filter(|g| g.is_some()).count()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    Sgd {
        momentum: f64,
    },
}

/// An optimiser over [`Params`], with its learning-rate schedule.
pub struct Optimizer {
    kind: Kind,
    lr: Schedule,
    params: Params,
    /// AdamW: first moments; SGD: momentum buffers.
    m: Vec<Tensor>,
    /// AdamW: second moments (unused by SGD).
    v: Vec<Tensor>,
    step: u64,
}

impl Optimizer {
    pub fn new(spec: &OptimizerSpec, params: Params) -> Result<Self> {
        let (kind, lr) = match spec {
            OptimizerSpec::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => (
                Kind::AdamW {
                    beta1: *beta1,
                    beta2: *beta2,
                    eps: *eps,
                    weight_decay: *weight_decay,
                },
                lr.clone(),
            ),
            OptimizerSpec::Sgd { lr, momentum } => (
                Kind::Sgd {
                    momentum: *momentum,
                },
                lr.clone(),
            ),
        };
        let zeros = |p: &Params| -> Result<Vec<Tensor>> {
            p.entries
                .iter()
                .map(|(_, v)| v.as_tensor().zeros_like())
                .collect()
        };
        let m = zeros(&params)?;
        let v = match kind {
            Kind::AdamW { .. } => zeros(&params)?,
            Kind::Sgd { .. } => Vec::new(),
        };
        Ok(Optimizer {
            kind,
            lr,
            params,
            m,
            v,
            step: 0,
        })
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Optimiser steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The learning rate at 0-based stage step `step` of `total`.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        self.lr.at(step, total)
    }

    /// Apply one update with learning rate `lr`. Parameters without a gradient are left alone
    /// (their moments do not decay either, matching PyTorch, which skips `grad is None`).
    pub fn step(&mut self, grads: &Grads, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        for (i, ((_, var), g)) in self.params.entries.iter().zip(&grads.0).enumerate() {
            let Some(g) = g else { continue };
            let p = var.as_tensor();
            match self.kind {
                Kind::AdamW {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let m = ((&self.m[i] * beta1)? + (g * (1.0 - beta1))?)?;
                    let v = ((&self.v[i] * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
                    let bc1 = 1.0 - beta1.powi(t);
                    let bc2 = 1.0 - beta2.powi(t);
                    let denom = ((&v / bc2)?.sqrt()? + eps)?;
                    let update = ((&m / bc1)? / denom)?;
                    let decayed = (p * (1.0 - lr * weight_decay))?;
                    var.set(&(decayed - (update * lr)?)?)?;
                    self.m[i] = m;
                    self.v[i] = v;
                }
                Kind::Sgd { momentum } => {
                    let buf = if momentum > 0.0 {
                        ((&self.m[i] * momentum)? + g)?
                    } else {
                        g.clone()
                    };
                    var.set(&(p - (&buf * lr)?)?)?;
                    self.m[i] = buf;
                }
            }
        }
        Ok(())
    }

    /// The state as named tensors (for safetensors) plus the step counter.
    pub fn state(&self) -> (HashMap<String, Tensor>, u64) {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.params.entries.iter().enumerate() {
            let (mk, vk) = match self.kind {
                Kind::AdamW { .. } => ("m", Some("v")),
                Kind::Sgd { .. } => ("buf", None),
            };
            out.insert(format!("{mk}.{name}"), self.m[i].clone());
            if let Some(vk) = vk {
                out.insert(format!("{vk}.{name}"), self.v[i].clone());
            }
        }
        (out, self.step)
    }

    /// Restore a state written by [`Optimizer::state`]; every buffer must be present with the
    /// parameter's shape.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        let device = self
            .params
            .entries
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        for (i, (name, var)) in self.params.entries.iter().enumerate() {
            let fetch = |key: String| -> Result<Tensor> {
                let t = tensors.get(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state has no `{key}`"))
                })?;
                if t.dims() != var.dims() {
                    candle_core::bail!(
                        "optimizer state `{key}` has shape {:?}, the parameter has {:?}",
                        t.dims(),
                        var.dims()
                    );
                }
                t.to_device(&device)?.to_dtype(var.dtype())
            };
            match self.kind {
                Kind::AdamW { .. } => {
                    self.m[i] = fetch(format!("m.{name}"))?;
                    self.v[i] = fetch(format!("v.{name}"))?;
                }
                Kind::Sgd { .. } => self.m[i] = fetch(format!("buf.{name}"))?,
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use post_graph::Schedule;

    /// A float64 reference AdamW on plain vectors, written from the PyTorch formula.
    fn reference_adamw(p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], t: i32, lr: f64) {
        let (b1, b2, eps, wd) = (0.9, 0.999, 1e-8, 0.1);
        for i in 0..p.len() {
            p[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let mh = m[i] / (1.0 - b1.powi(t));
            let vh = v[i] / (1.0 - b2.powi(t));
            p[i] -= lr * mh / (vh.sqrt() + eps);
        }
    }

    fn spec() -> OptimizerSpec {
        OptimizerSpec::AdamW {
            lr: Schedule::constant(0.01),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }

    #[test]
    fn adamw_matches_f64_reference_and_resumes() {
        let dev = Device::Cpu;
        let init = [0.5f64, -1.0, 2.0, 0.0];
        let var = Var::from_vec(init.to_vec(), 4, &dev).unwrap();
        let params = Params::new(vec![("w".into(), var.clone())]);
        let mut opt = Optimizer::new(&spec(), params.clone()).unwrap();
        let (mut p, mut m, mut v) = (init.to_vec(), vec![0.0; 4], vec![0.0; 4]);
        let grads_at =
            |s: usize| -> Vec<f64> { (0..4).map(|i| ((s * 7 + i * 3) % 5) as f64 - 2.0).collect() };
        for s in 0..5 {
            let g = grads_at(s);
            let gt = Tensor::from_vec(g.clone(), 4, &dev).unwrap();
            opt.step(&Grads(vec![Some(gt)]), 0.01).unwrap();
            reference_adamw(&mut p, &mut m, &mut v, &g, s as i32 + 1, 0.01);
        }
        let got: Vec<f64> = var.as_tensor().to_vec1().unwrap();
        for (a, b) in got.iter().zip(&p) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        // Save, restore into a fresh optimiser over a copy, continue both: identical.
        let (state, step) = opt.state();
        let var2 = Var::from_tensor(var.as_tensor()).unwrap();
        let mut opt2 =
            Optimizer::new(&spec(), Params::new(vec![("w".into(), var2.clone())])).unwrap();
        opt2.load_state(&state, step).unwrap();
        for s in 5..8 {
            let gt = Tensor::from_vec(grads_at(s), 4, &dev).unwrap();
            opt.step(&Grads(vec![Some(gt.clone())]), 0.01).unwrap();
            opt2.step(&Grads(vec![Some(gt)]), 0.01).unwrap();
        }
        let a: Vec<f64> = var.as_tensor().to_vec1().unwrap();
        let b: Vec<f64> = var2.as_tensor().to_vec1().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn clipping_by_global_norm() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[3.0f64, 0.0], &dev).unwrap();
        let b = Tensor::new(&[4.0f64], &dev).unwrap();
        let mut g = Grads(vec![Some(a), None, Some(b)]);
        let norm = g.clip_global_norm(1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-12);
        assert!((g.global_norm().unwrap() - 1.0).abs() < 1e-6);
        let mut acc = Grads(vec![Some(Tensor::new(&[1.0f64], &dev).unwrap()), None]);
        acc.add(Grads(vec![
            Some(Tensor::new(&[2.0f64], &dev).unwrap()),
            Some(Tensor::new(&[5.0f64], &dev).unwrap()),
        ]))
        .unwrap();
        acc.scale(0.5).unwrap();
        assert_eq!(
            acc.0[0].as_ref().unwrap().to_vec1::<f64>().unwrap(),
            vec![1.5]
        );
        assert_eq!(
            acc.0[1].as_ref().unwrap().to_vec1::<f64>().unwrap(),
            vec![2.5]
        );
    }
}
