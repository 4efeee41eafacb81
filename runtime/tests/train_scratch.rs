mod train_support;
use train_support::*;
use post_runtime::exec::{run, RunOptions, RunOutcome};

#[test]
fn scratch() {
    let steps: u64 = std::env::var("STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let d: u32 = std::env::var("DIFF").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let lr: f64 = std::env::var("LR").ok().and_then(|s| s.parse().ok()).unwrap_or(1e-3);
    let batch: usize = std::env::var("BATCH").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
    let spec = SftSpec { steps, difficulty: d, batch, eval_every: steps / 4, lr: post_graph::Schedule{shape: post_graph::Shape::Cosine{from: lr, to: lr/10.0}, warmup: 10}, ..SftSpec::default() };
    let g = sft_graph(&spec);
    let out = temp_dir("scratch");
    let mut o = RunOptions::new(&out);
    o.quiet = false;
    let t = std::time::Instant::now();
    let r = run(&g, &o).unwrap();
    eprintln!("took {:?}", t.elapsed());
    if let RunOutcome::Finished(s) = r { eprintln!("{}", serde_json::to_string(&s).unwrap()); }
    let m = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    for l in m.lines().step_by(10) { eprintln!("{l}"); }
}

#[test]
fn profile() {
    use candle_core::{Device, DType, Tensor};
    use post_runtime::model::Transformer;
    let cfg = tiny_config();
    let dev = Device::Cpu;
    let (model, vm) = Transformer::init_random(&cfg, Default::default(), 1, DType::F32, &dev).unwrap();
    let params = post_runtime::optim::Params::from_varmap(&vm);
    let ids = Tensor::from_vec((0..16*40).map(|i| (i % 50 + 4) as u32).collect::<Vec<_>>(), (16, 40), &dev).unwrap();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let logits = model.forward(&ids).unwrap();
        let lp = post_runtime::logprob::next_token_logprobs(&logits, &ids).unwrap();
        let loss = lp.mean_all().unwrap().neg().unwrap();
        let t1 = t.elapsed();
        let g = loss.backward().unwrap();
        let t2 = t.elapsed();
        let grads = post_runtime::optim::Grads::from_store(&params, &g);
        let n = grads.global_norm().unwrap();
        let t3 = t.elapsed();
        eprintln!("fwd {t1:?} bwd {:?} norm {:?} {n}", t2 - t1, t3 - t2);
    }
}
