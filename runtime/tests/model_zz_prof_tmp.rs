use candle_core::{DType, Device, Tensor, D};
use post_runtime::model::{ModelOptions, Transformer, presets};
use post_runtime::logprob::next_token_logprobs;
use std::time::Instant;

fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

#[test]
#[ignore]
fn prof() {
    let cfg = presets::config(&std::env::var("M").unwrap_or("20m".into())).unwrap();
    let (b, t) = (4usize, 256usize);
    let (model, _vm) = Transformer::init_random(&cfg, ModelOptions::default(), 0, DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::from_vec((0..b*t).map(|i| (i * 7 % cfg.vocab_size) as u32).collect::<Vec<_>>(), (b, t), &Device::Cpu).unwrap();
    for _ in 0..2 {
        let (c0, w0) = (cpu(), Instant::now());
        let h = model.hidden(&ids).unwrap();
        let (c1, w1) = (cpu(), Instant::now());
        let logits = model.head(&h).unwrap();
        let (c2, w2) = (cpu(), Instant::now());
        let loss = next_token_logprobs(&logits, &ids).unwrap().mean_all().unwrap();
        let (c3, w3) = (cpu(), Instant::now());
        let _g = loss.backward().unwrap();
        let (c4, w4) = (cpu(), Instant::now());
        println!("hidden cpu {:.2} wall {:.2} | head {:.2} {:.2} | lp {:.2} {:.2} | bwd {:.2} {:.2}", c1-c0, (w1-w0).as_secs_f64(), c2-c1, (w2-w1).as_secs_f64(), c3-c2, (w3-w2).as_secs_f64(), c4-c3, (w4-w3).as_secs_f64());
    }
    // raw matmul rate
    let x = Tensor::randn(0f32, 1., (b*t, 384), &Device::Cpu).unwrap();
    let w = Tensor::randn(0f32, 1., (1024, 384), &Device::Cpu).unwrap();
    let (c0, w0) = (cpu(), Instant::now());
    for _ in 0..10 { let _ = x.matmul(&w.t().unwrap()).unwrap(); }
    let fl = 10.0 * 2.0 * (b*t*384*1024) as f64;
    println!("matmul wt: cpu {:.2} wall {:.2} GFLOP/s(cpu) {:.1}", cpu()-c0, w0.elapsed().as_secs_f64(), fl/(cpu()-c0)/1e9);
    let wt = w.t().unwrap().contiguous().unwrap();
    let c0 = cpu();
    for _ in 0..10 { let _ = x.matmul(&wt).unwrap(); }
    println!("matmul contiguous: GFLOP/s(cpu) {:.1}", fl/(cpu()-c0)/1e9);
    let q = Tensor::randn(0f32, 1., (b, t, 6, 64), &Device::Cpu).unwrap().transpose(1,2).unwrap();
    let cos = Tensor::randn(0f32, 1., (1, 1, t, 64), &Device::Cpu).unwrap();
    let c0 = cpu();
    for _ in 0..10 { let _ = q.broadcast_mul(&cos).unwrap(); }
    println!("bmul noncontig x10 cpu {:.3}", cpu()-c0);
    let qc = q.contiguous().unwrap();
    let c0 = cpu();
    for _ in 0..10 { let _ = qc.broadcast_mul(&cos).unwrap(); }
    println!("bmul contig x10 cpu {:.3}", cpu()-c0);
    let c0 = cpu();
    for _ in 0..10 { let _ = Tensor::cat(&[&q.narrow(D::Minus1, 0, 32).unwrap(), &q.narrow(D::Minus1, 32, 32).unwrap()], D::Minus1).unwrap(); }
    println!("cat noncontig x10 cpu {:.3}", cpu()-c0);
}
