//! `post bench model`: SFT step time (forward + backward + global-norm clip + AdamW step) and
//! tokens/s, with the fused kernels of `post-kernels` on (the figure) and off (the composed
//! reference path; the ratio is printed as the fused speedup), sampling tokens/s with the KV cache, and token log-probabilities from logits, for
//! the `tiny` and `20m` presets, with the process's peak memory.
//!
//! Settings follow a PyTorch CPU baseline (see `NOTES.md`) so the figures compare: SFT on
//! tiny at batch 32 x 128 tokens and on 20m at 8 x 256; sampling 64 new tokens after 16-token
//! prompts, temperature 1, top-p 0.95, for 32 (tiny) and 8 (20m) rows; each figure is the median
//! of `--reps` runs after one warm-up. Peak RSS is the process's high-water mark when the row
//! finishes, so it only grows from row to row.

use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use post_graph::{Optimizer as OptimizerSpec, Schedule};
use post_runtime::fusion::Fusion;
use post_runtime::generate::{SamplingParams, generate};
use post_runtime::logprob::token_logprobs_with;
use post_runtime::memory::{self, MemoryPlan};
use post_runtime::model::{ModelOptions, Transformer, presets};
use post_runtime::optim::{Grads, Optimizer, Params};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Args {
    /// Presets to measure, comma separated.
    #[arg(long, default_value = "tiny,20m", value_delimiter = ',')]
    pub models: Vec<String>,
    /// Timed runs per figure (the median is printed), after one warm-up run.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also time token log-probabilities on 4096 x 32000 logits (about 2 GB of memory).
    #[arg(long)]
    pub logprobs: bool,
}

type BenchResult<T> = Result<T, String>;

fn median_secs(reps: usize, mut f: impl FnMut() -> BenchResult<()>) -> BenchResult<f64> {
    f()?; // warm-up
    let mut times = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn random_ids(rng: &mut ChaCha8Rng, rows: usize, len: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..rows)
        .map(|_| {
            (0..len)
                .map(|_| rng.random_range(0..vocab as u32))
                .collect()
        })
        .collect()
}

fn settings(name: &str) -> (usize, usize, usize) {
    // (SFT batch, SFT sequence, sampling rows), as in the torch baseline.
    if name == "tiny" {
        (32, 128, 32)
    } else {
        (8, 256, 8)
    }
}

fn sft_row(name: &str, reps: usize) -> BenchResult<Value> {
    let cfg = presets::config(name).ok_or_else(|| {
        format!(
            "unknown preset {name:?} (known: {})",
            presets::NAMES.join(", ")
        )
    })?;
    let (batch, seq, _) = settings(name);
    let dev = Device::Cpu;
    let e = |e: candle_core::Error| e.to_string();
    let (mut model, varmap) =
        Transformer::init_random(&cfg, ModelOptions::default(), 0, DType::F32, &dev).map_err(e)?;
    let params = Params::from_varmap(&varmap);
    let n_params = params.numel();
    let spec = OptimizerSpec::AdamW {
        lr: Schedule::constant(1e-3),
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let mut opt = Optimizer::new(&spec, params).map_err(e)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let rows = random_ids(&mut rng, batch, seq, cfg.vocab_size);
    let flat: Vec<u32> = rows.into_iter().flatten().collect();
    let ids = Tensor::from_vec(flat, (batch, seq), &dev).map_err(e)?;
    // The same model and optimiser take the steps of both modes (weights keep moving, which
    // does not change the work per step).
    let mut time_mode = |fusion: Fusion| -> BenchResult<f64> {
        model.set_fusion(Some(fusion));
        let mut step = || -> candle_core::Result<()> {
            let logits = model.forward(&ids)?;
            let lp = token_logprobs_with(
                &logits.narrow(1, 0, seq - 1)?,
                &ids.narrow(1, 1, seq - 1)?,
                fusion,
            )?;
            let loss = lp.mean_all()?.neg()?;
            let store = loss.backward()?;
            let mut grads = Grads::from_store(opt.params(), &store);
            grads.clip_global_norm(1.0)?;
            opt.step(&grads, 1e-3)
        };
        median_secs(reps, || step().map_err(e))
    };
    let s_off = time_mode(Fusion::Off)?;
    let s = time_mode(Fusion::On)?;
    let plan = MemoryPlan {
        batch,
        seq_len: seq,
        trainable: true,
        frozen_copies: 0,
        gen_batch: 0,
        gen_len: 0,
        dtype_bytes: 4,
    };
    let est = memory::estimate(&cfg, false, &plan);
    Ok(json!({
        "bench": "sft_step", "model": name, "params": n_params, "batch": batch, "seq": seq,
        "step_ms": s * 1e3, "tokens_per_s": (batch * seq) as f64 / s,
        "step_ms_unfused": s_off * 1e3, "fusion_speedup": s_off / s,
        "optimizer": "post_runtime::optim AdamW",
        "estimate_bytes": est.total,
        "peak_rss_bytes": memory::peak_rss_bytes(),
    }))
}

fn sampling_row(name: &str, reps: usize) -> BenchResult<Value> {
    let cfg = presets::config(name).ok_or_else(|| format!("unknown preset {name:?}"))?;
    let (_, _, rows) = settings(name);
    let (prompt, new) = (16, 64);
    let e = |e: candle_core::Error| e.to_string();
    let (model, _varmap) =
        Transformer::init_random(&cfg, ModelOptions::default(), 0, DType::F32, &Device::Cpu)
            .map_err(e)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let prompts = random_ids(&mut rng, rows, prompt, cfg.vocab_size);
    // No tokenizer and no eos ids: every row runs the full 64 tokens, as in the baseline
    // (min_new_tokens = max_new_tokens).
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 0.95,
        max_tokens: new,
        ..Default::default()
    };
    let s = median_secs(reps, || {
        let out = generate(&model, None, &prompts, &params, &mut rng).map_err(e)?;
        let produced: usize = out.iter().map(|g| g.tokens.len()).sum();
        if produced != rows * new {
            return Err(format!("expected {} tokens, got {produced}", rows * new));
        }
        Ok(())
    })?;
    Ok(json!({
        "bench": "sampling", "model": name, "batch": rows, "prompt": prompt, "new_tokens": new,
        "ms": s * 1e3, "tokens_per_s": (rows * new) as f64 / s,
        "peak_rss_bytes": memory::peak_rss_bytes(),
    }))
}

fn logprob_row(reps: usize) -> BenchResult<Value> {
    let (n, vocab) = (4096usize, 32000usize);
    let e = |e: candle_core::Error| e.to_string();
    let dev = Device::Cpu;
    let logits = Tensor::randn(0f32, 1.0, (1, n, vocab), &dev).map_err(e)?;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let tgt: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab as u32)).collect();
    let tgt = Tensor::from_vec(tgt, (1, n), &dev).map_err(e)?;
    let full = median_secs(reps, || {
        let ls = candle_nn::ops::log_softmax(&logits, 2).map_err(e)?;
        ls.gather(&tgt.unsqueeze(2).map_err(e)?, 2).map_err(e)?;
        Ok(())
    })?;
    // The composed selective log-softmax, whatever the fusion setting: this row compares the two
    // unfused formulations (`post bench kernels` times the fused kernel).
    let selective = median_secs(reps, || {
        token_logprobs_with(&logits, &tgt, Fusion::Off)
            .map(|_| ())
            .map_err(e)
    })?;
    Ok(json!({
        "bench": "logprobs_from_logits", "tokens": n, "vocab": vocab,
        "log_softmax_gather_ms": full * 1e3, "selective_ms": selective * 1e3,
        "peak_rss_bytes": memory::peak_rss_bytes(),
    }))
}

fn print_table_row(v: &Value) {
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    let mb = f("peak_rss_bytes").map_or("?".to_string(), |b| format!("{:.0}", b / 1048576.0));
    match v["bench"].as_str() {
        Some("sft_step") => println!(
            "sft_step   {:<5} params {:>10}  batch {:>2} x seq {:>3}  {:>9.1} ms/step  {:>9.0} tok/s  \
             (unfused {:.1} ms/step, fused speedup {:.2}x)  peak RSS {mb} MiB (estimate {:.0} MiB)",
            v["model"].as_str().unwrap_or("?"),
            v["params"],
            v["batch"],
            v["seq"],
            f("step_ms").unwrap_or(f64::NAN),
            f("tokens_per_s").unwrap_or(f64::NAN),
            f("step_ms_unfused").unwrap_or(f64::NAN),
            f("fusion_speedup").unwrap_or(f64::NAN),
            f("estimate_bytes").unwrap_or(f64::NAN) / 1048576.0,
        ),
        Some("sampling") => println!(
            "sampling   {:<5} rows {:>2}  prompt {} + {} new  {:>9.1} ms  {:>9.0} tok/s  peak RSS {mb} MiB",
            v["model"].as_str().unwrap_or("?"),
            v["batch"],
            v["prompt"],
            v["new_tokens"],
            f("ms").unwrap_or(f64::NAN),
            f("tokens_per_s").unwrap_or(f64::NAN),
        ),
        _ => println!(
            "logprobs   {} x {}  log_softmax+gather {:.1} ms  selective {:.1} ms  peak RSS {mb} MiB",
            v["tokens"],
            v["vocab"],
            f("log_softmax_gather_ms").unwrap_or(f64::NAN),
            f("selective_ms").unwrap_or(f64::NAN),
        ),
    }
}

pub fn run(args: Args) -> ExitCode {
    for m in &args.models {
        if presets::config(m).is_none() {
            eprintln!(
                "error: unknown preset {m:?} (known: {})",
                presets::NAMES.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    // candle's CPU worker pool spins while it waits, so other busy processes inflate the
    // figures far beyond their share of the CPU: the load is printed with them.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.json {
        println!(
            "{}",
            json!({"bench": "machine", "threads": threads, "load_avg_1m": load})
        );
    } else {
        println!(
            "post bench model: median of {} runs after a warm-up; {threads} CPU threads; \
             1-minute load average {load} (figures are only comparable on an idle machine)",
            args.reps
        );
    }
    let mut jobs: Vec<Box<dyn Fn() -> BenchResult<Value>>> = Vec::new();
    for m in &args.models {
        let (a, b) = (m.clone(), args.reps);
        jobs.push(Box::new(move || sft_row(&a, b)));
    }
    for m in &args.models {
        let (a, b) = (m.clone(), args.reps);
        jobs.push(Box::new(move || sampling_row(&a, b)));
    }
    if args.logprobs {
        let reps = args.reps;
        jobs.push(Box::new(move || logprob_row(reps)));
    }
    for job in jobs {
        match job() {
            Ok(v) if args.json => println!("{v}"),
            Ok(v) => print_table_row(&v),
            Err(msg) => {
                eprintln!("error: {msg}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}
