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
