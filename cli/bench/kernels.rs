//! `post bench kernels`: fused vs unfused time and peak extra memory per kernel at realistic
//! sizes. Unfused = the candle op composition a model or objective would otherwise run.
//!
//! Time: the median of `--reps` runs after one warm-up, fused and unfused runs alternating so
//! both see the same load. Peak memory: the high-water mark of
//! heap bytes allocated during one run above what was live when it started, counted by a global
//! allocator wrapper that only counts while this benchmark runs (one relaxed atomic load per
//! allocation otherwise).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use candle_core::{D, Device, Tensor, Var};
use post_graph::{BinaryOp as B, Expr, Quantity as Q, Reduce as R, UnaryOp as U};
use post_kernels::formula::{FusedLoss, SlotTensors, evaluate_unfused};
use post_kernels::ops;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Timed runs per figure (the median is printed), after one warm-up run.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only the kernels whose name contains this text.
    #[arg(long)]
    pub only: Option<String>,
}

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            // Frees of blocks allocated before counting began may underflow: saturate at 0.
            let _ = LIVE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(layout.size()))
            });
        }
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

type BenchResult<T> = Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Peak bytes allocated above the starting point while `f` runs once.
fn peak_bytes(f: &mut dyn FnMut() -> BenchResult<()>) -> BenchResult<usize> {
    LIVE.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let r = f();
    COUNTING.store(false, Ordering::Relaxed);
    r?;
    Ok(PEAK.load(Ordering::Relaxed))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median milliseconds of `fused` and `unfused`, alternating runs so both see the same machine
/// load (the benchmark shares its cores), after one warm-up run of each.
fn paired_ms(
    reps: usize,
    fused: &mut dyn FnMut() -> BenchResult<()>,
    unfused: &mut dyn FnMut() -> BenchResult<()>,
) -> BenchResult<(f64, f64)> {
    fused()?;
    unfused()?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        fused()?;
        a.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        unfused()?;
        b.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(a), median(b)))
}

struct Row {
    kernel: String,
    fused_ms: f64,
    unfused_ms: f64,
    fused_peak: usize,
    unfused_peak: usize,
}

fn measure(
    kernel: &str,
    reps: usize,
    fused: &mut dyn FnMut() -> BenchResult<()>,
    unfused: &mut dyn FnMut() -> BenchResult<()>,
) -> BenchResult<Row> {
    let fused_peak = peak_bytes(fused)?;
    let unfused_peak = peak_bytes(unfused)?;
    let (fused_ms, unfused_ms) = paired_ms(reps, fused, unfused)?;
    Ok(Row {
        kernel: kernel.to_string(),
        fused_ms,
        unfused_ms,
        fused_peak,
        unfused_peak,
    })
}

fn randn(rng: &mut ChaCha8Rng, shape: &[usize], scale: f32) -> BenchResult<Tensor> {
    let n: usize = shape.iter().product();
    // Sum of two uniforms: cheap, centred, enough spread for logits.
    let v: Vec<f32> = (0..n)
        .map(|_| (rng.random::<f32>() + rng.random::<f32>() - 1.0) * scale)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).map_err(err)
}

fn ids(rng: &mut ChaCha8Rng, n: usize, vocab: usize) -> BenchResult<Tensor> {
    let v: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab as u32)).collect();
    Tensor::from_vec(v, n, &Device::Cpu).map_err(err)
}

fn unfused_logprobs(logits: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::log_softmax(logits, D::Minus1)?
        .gather(&t.unsqueeze(1)?, 1)?
        .squeeze(1)
}

fn unfused_rms(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let r = (x.sqr()?.mean_keepdim(D::Minus1)? + 1e-6)?
        .sqrt()?
        .recip()?;
    x.broadcast_mul(&r)?.broadcast_mul(w)
}

fn unfused_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let d = x.dim(3)?;
    let (x1, x2) = (x.narrow(3, 0, d / 2)?, x.narrow(3, d / 2, d / 2)?);
    let (c, s) = (
        cos.unsqueeze(0)?.unsqueeze(0)?,
        sin.unsqueeze(0)?.unsqueeze(0)?,
    );
    let y1 = (x1.broadcast_mul(&c)? - x2.broadcast_mul(&s)?)?;
    let y2 = (x1.broadcast_mul(&s)? + x2.broadcast_mul(&c)?)?;
    Tensor::cat(&[y1, y2], 3)
}

/// `f(x)` then the backward of `sum(f(x) * w)`, dropping the gradients.
fn fwd_bwd(
    vars: &[&Var],
    w: &Tensor,
    f: impl Fn() -> candle_core::Result<Tensor>,
) -> BenchResult<()> {
    let y = f().map_err(err)?;
    let g = (y * w)
        .map_err(err)?
        .sum_all()
        .map_err(err)?
        .backward()
        .map_err(err)?;
    for v in vars {
        if g.get(v).is_none() {
            return Err("a benchmarked op recorded no gradient".into());
        }
    }
    Ok(())
}

pub fn grpo() -> Expr {
    let s = "y";
    let inp = Expr::input;
    let c = Expr::constant;
    let r = inp(Q::Reward, s);
    let adv = Expr::binary(
        B::Div,
        Expr::binary(B::Sub, r.clone(), Expr::reduce(R::GroupMean, r.clone())),
        Expr::binary(B::Add, Expr::reduce(R::GroupStd, r), c(1e-4)),
    );
    let ratio = Expr::unary(
        U::Exp,
        Expr::binary(B::Sub, inp(Q::Logp, s), inp(Q::OldLogp, s)),
    );
    let clip = Expr::Hyper {
        name: "clip".into(),
    };
    let clipped = Expr::binary(
        B::Min,
        Expr::binary(
            B::Max,
            ratio.clone(),
            Expr::binary(B::Sub, c(1.0), clip.clone()),
        ),
        Expr::binary(B::Add, c(1.0), clip),
    );
    let surrogate = Expr::unary(
        U::Neg,
        Expr::binary(
            B::Min,
            Expr::binary(B::Mul, ratio, adv.clone()),
            Expr::binary(B::Mul, clipped, adv),
        ),
    );
    let d = Expr::binary(B::Sub, inp(Q::RefLogp, s), inp(Q::Logp, s));
    let kl = Expr::binary(
        B::Sub,
        Expr::binary(B::Sub, Expr::unary(U::Exp, d.clone()), d),
        c(1.0),
    );
    let beta = Expr::Hyper {
        name: "beta".into(),
    };
    let per_token = Expr::binary(B::Add, surrogate, Expr::binary(B::Mul, beta, kl));
    Expr::reduce(R::MeanSeqs, Expr::reduce(R::MeanTokens, per_token))
}

pub fn dpo() -> Expr {
    let margin = |s: &str| {
        Expr::binary(
            B::Sub,
            Expr::reduce(R::SumTokens, Expr::input(Q::Logp, s)),
            Expr::reduce(R::SumTokens, Expr::input(Q::RefLogp, s)),
        )
    };
    let z = Expr::binary(
        B::Mul,
        Expr::Hyper {
            name: "beta".into(),
        },
        Expr::binary(B::Sub, margin("chosen"), margin("rejected")),
    );
    Expr::unary(
        U::Neg,
        Expr::reduce(R::MeanSeqs, Expr::unary(U::LogSigmoid, z)),
    )
}

fn slot(rng: &mut ChaCha8Rng, b: usize, t: usize, group: usize) -> BenchResult<(Var, SlotTensors)> {
    let lp = (randn(rng, &[b, t], 1.0).map_err(err)?.abs().map_err(err)? * -1.0).map_err(err)?;
    let noise = randn(rng, &[b, t], 0.2)?;
    let noise2 = randn(rng, &[b, t], 0.2)?;
    let mask: Vec<f32> = (0..b)
        .flat_map(|_| {
            let len = rng.random_range(t / 2..=t);
            (0..t).map(move |j| if j < len { 1.0 } else { 0.0 })
        })
        .collect();
    let reward: Vec<f32> = (0..b).map(|_| rng.random_range(0..2) as f32).collect();
    let v = Var::from_tensor(&lp).map_err(err)?;
    let s = SlotTensors {
        logp: v.as_tensor().clone(),
        old_logp: Some((&lp + &noise).map_err(err)?),
        ref_logp: Some((&lp + &noise2).map_err(err)?),
        mask: Tensor::from_vec(mask, (b, t), &Device::Cpu).map_err(err)?,
        reward: Some(Tensor::from_vec(reward, b, &Device::Cpu).map_err(err)?),
        max_tokens: t,
        group_size: group,
    };
    Ok((v, s))
}

fn loss_step(vars: &[&Var], f: impl Fn() -> candle_core::Result<Tensor>) -> BenchResult<()> {
    let g = f().map_err(err)?.backward().map_err(err)?;
    if vars.iter().any(|v| g.get(v).is_none()) {
        return Err("a benchmarked loss gave no gradient to logp".into());
    }
    Ok(())
}

fn rows(reps: usize, only: Option<&str>) -> BenchResult<Vec<Row>> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut out = Vec::new();
    let want = |k: &str| only.is_none_or(|o| k.contains(o));

    if want("logprobs_4096x32000") {
        let (n, v) = (4096, 32000);
        let logits = randn(&mut rng, &[n, v], 4.0)?;
        let t = ids(&mut rng, n, v)?;
        out.push(measure(
            "logprobs_4096x32000_fwd",
            reps,
            &mut || ops::token_logprobs(&logits, &t).map(drop).map_err(err),
            &mut || unfused_logprobs(&logits, &t).map(drop).map_err(err),
        )?);
    }
    if want("logprobs_1024x32000_fwd_bwd") {
        let (n, v) = (1024, 32000);
        let x = Var::from_tensor(&randn(&mut rng, &[n, v], 4.0)?).map_err(err)?;
        let t = ids(&mut rng, n, v)?;
        let w = randn(&mut rng, &[n], 1.0)?;
        out.push(measure(
            "logprobs_1024x32000_fwd_bwd",
            reps,
            &mut || fwd_bwd(&[&x], &w, || ops::token_logprobs(x.as_tensor(), &t)),
            &mut || fwd_bwd(&[&x], &w, || unfused_logprobs(x.as_tensor(), &t)),
        )?);
    }
    if want("linear_logprobs") {
        let (n, h, v) = (512, 256, 32000);
        let hid = Var::from_tensor(&randn(&mut rng, &[n, h], 1.0)?).map_err(err)?;
        let wt = Var::from_tensor(&randn(&mut rng, &[v, h], 0.1)?).map_err(err)?;
        let t = ids(&mut rng, n, v)?;
        let w = randn(&mut rng, &[n], 1.0)?;
        out.push(measure(
            "linear_logprobs_512x256x32000_fwd_bwd",
            reps,
            &mut || {
                fwd_bwd(&[&hid, &wt], &w, || {
                    ops::fused_linear_token_logprobs(hid.as_tensor(), wt.as_tensor(), &t, Some(128))
                })
            },
            &mut || {
                fwd_bwd(&[&hid, &wt], &w, || {
                    unfused_logprobs(&hid.as_tensor().matmul(&wt.as_tensor().t()?)?, &t)
                })
            },
        )?);
    }
    if want("rms_norm") {
        let (n, d) = (4096, 1024);
        let x = Var::from_tensor(&randn(&mut rng, &[n, d], 1.0)?).map_err(err)?;
        let wv = Var::from_tensor(&randn(&mut rng, &[d], 1.0)?).map_err(err)?;
        let g = randn(&mut rng, &[n, d], 1.0)?;
        out.push(measure(
            "rms_norm_4096x1024_fwd_bwd",
            reps,
            &mut || {
                fwd_bwd(&[&x, &wv], &g, || {
                    ops::rms_norm(x.as_tensor(), wv.as_tensor(), 1e-6)
                })
            },
            &mut || {
                fwd_bwd(&[&x, &wv], &g, || {
                    unfused_rms(x.as_tensor(), wv.as_tensor())
                })
            },
        )?);
    }
    if want("softmax") {
        let (n, d) = (4096, 1024);
        let x = Var::from_tensor(&randn(&mut rng, &[n, d], 3.0)?).map_err(err)?;
        let g = randn(&mut rng, &[n, d], 1.0)?;
        out.push(measure(
            "softmax_4096x1024_fwd_bwd",
            reps,
            &mut || fwd_bwd(&[&x], &g, || ops::softmax_last_dim(x.as_tensor())),
            &mut || {
                fwd_bwd(&[&x], &g, || {
                    candle_nn::ops::softmax(x.as_tensor(), D::Minus1)
                })
            },
        )?);
    }
    if want("rope") {
        let (b, h, t, d) = (8, 16, 512, 64);
        let x = Var::from_tensor(&randn(&mut rng, &[b, h, t, d], 1.0)?).map_err(err)?;
        let ang = randn(&mut rng, &[t, d / 2], 3.0)?;
        let (cos, sin) = (ang.cos().map_err(err)?, ang.sin().map_err(err)?);
        let g = randn(&mut rng, &[b, h, t, d], 1.0)?;
        out.push(measure(
            "rope_8x16x512x64_fwd_bwd",
            reps,
            &mut || fwd_bwd(&[&x], &g, || ops::rope(x.as_tensor(), &cos, &sin)),
            &mut || fwd_bwd(&[&x], &g, || unfused_rope(x.as_tensor(), &cos, &sin)),
        )?);
    }
    let hypers: BTreeMap<String, f64> =
        [("beta".to_string(), 0.04), ("clip".to_string(), 0.2)].into();
    if want("grpo") {
        let (v, s) = slot(&mut rng, 256, 1024, 8)?;
        let slots = BTreeMap::from([("y".to_string(), s)]);
        let e = grpo();
        let fused = FusedLoss::new(&e).map_err(err)?;
        out.push(measure(
            "grpo_formula_256x1024_fwd_bwd",
            reps,
            &mut || loss_step(&[&v], || fused.evaluate(&slots, &hypers)),
            &mut || loss_step(&[&v], || evaluate_unfused(&e, &slots, &hypers)),
        )?);
    }
    if want("dpo") {
        let (vc, c) = slot(&mut rng, 256, 1024, 1)?;
        let (vr, r) = slot(&mut rng, 256, 1024, 1)?;
        let slots = BTreeMap::from([("chosen".to_string(), c), ("rejected".to_string(), r)]);
        let e = dpo();
        let fused = FusedLoss::new(&e).map_err(err)?;
        out.push(measure(
            "dpo_formula_2x256x1024_fwd_bwd",
            reps,
            &mut || loss_step(&[&vc, &vr], || fused.evaluate(&slots, &hypers)),
            &mut || loss_step(&[&vc, &vr], || evaluate_unfused(&e, &slots, &hypers)),
        )?);
    }
    Ok(out)
}

pub fn run(args: Args) -> ExitCode {
    if !args.json {
        println!("{}", post_kernels::backend_note());
    }
    let rows = match rows(args.reps, args.only.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    if !args.json {
        println!(
            "{:<40} {:>10} {:>11} {:>8} {:>13} {:>15}",
            "kernel", "fused ms", "unfused ms", "speedup", "fused peak", "unfused peak"
        );
    }
    for r in rows {
        if args.json {
            println!(
                "{}",
                json!({
                    "kernel": r.kernel,
                    "fused_ms": r.fused_ms,
                    "unfused_ms": r.unfused_ms,
                    "fused_peak_bytes": r.fused_peak,
                    "unfused_peak_bytes": r.unfused_peak,
                })
            );
        } else {
            println!(
                "{:<40} {:>10.2} {:>11.2} {:>7.2}x {:>9.1} MiB {:>11.1} MiB",
                r.kernel,
                r.fused_ms,
                r.unfused_ms,
                r.unfused_ms / r.fused_ms.max(1e-9),
                mib(r.fused_peak),
                mib(r.unfused_peak)
            );
        }
    }
    ExitCode::SUCCESS
}
