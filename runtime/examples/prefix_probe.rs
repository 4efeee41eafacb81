// Temporary probe: success rate vs expert prefix length for a checkpoint.
use std::path::Path;

use candle_core::{DType, Device};
use post_runtime::exec::encode_prompt;
use post_runtime::generate::{SamplingParams, generate};
use post_runtime::rollouts::prefix_text;
use post_runtime::tasks::{TaskKind, TaskSplit, check, generate as gen_task};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(&args[1]);
    let task = &args[2];
    let diff: u32 = args[3].parse().unwrap();
    let problems: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(40);
    let n: usize = args.get(5).map(|s| s.parse().unwrap()).unwrap_or(8);
    let temp: f64 = args.get(6).map(|s| s.parse().unwrap()).unwrap_or(1.0);
    let m = post_runtime::hf::load(dir, DType::F32, &Device::Cpu).unwrap();
    let tok = m
        .tokenizer
        .clone()
        .unwrap_or_else(post_runtime::tokenizer::Tokenizer::builtin_char);
    let recs = gen_task(task, TaskSplit::Test, problems, diff, 3).unwrap();
    let kind = TaskKind::parse(task).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let params = SamplingParams {
        temperature: temp,
        max_tokens: 200,
        ..Default::default()
    };
    let steps0: Vec<String> = recs[0]
        .get("solution")
        .unwrap()
        .split('\n')
        .map(|s| s.to_string())
        .collect();
    for k in 0..steps0.len() {
        let mut prompts = Vec::new();
        let mut idx = Vec::new();
        for (ri, r) in recs.iter().enumerate() {
            let steps: Vec<String> = r
                .get("solution")
                .unwrap()
                .split('\n')
                .map(|s| s.to_string())
                .collect();
            if k >= steps.len() {
                continue;
            }
            let pre = prefix_text(&steps, k, "\n");
            let mut ids = encode_prompt(&tok, r.get("prompt").unwrap()).unwrap();
            ids.extend(tok.encode(&pre).unwrap());
            for _ in 0..n {
                prompts.push(ids.clone());
                idx.push((ri, pre.clone()));
            }
        }
        let gens = generate(&m.model, Some(&tok), &prompts, &params, &mut rng).unwrap();
        let mut ok = 0;
        let mut group_ok = vec![false; recs.len()];
        for (g, (ri, pre)) in gens.iter().zip(&idx) {
            let text = format!("{pre}{}", g.text.as_deref().unwrap_or(""));
            if check(kind, &recs[*ri], &text) {
                ok += 1;
                group_ok[*ri] = true;
            }
        }
        let ex = &gens[0];
        println!(
            "k={k} success={:.3} groups_with_success={:.3}  e.g. {:?}",
            ok as f64 / gens.len() as f64,
            group_ok.iter().filter(|x| **x).count() as f64 / recs.len() as f64,
            format!("{}{}", idx[0].1, ex.text.as_deref().unwrap_or(""))
        );
    }
}
