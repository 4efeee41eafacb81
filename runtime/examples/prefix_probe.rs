//! Success rate of a checkpoint from each expert-prefix length on held-out problems of a built-in
//! task: the curve that decides whether BREAD's branched rollouts can help (a slope lets the
//! prefix shrink as the model learns; a cliff leaves nothing to learn from below it).
//!   cargo run --release -p post-runtime --example prefix_probe -- \
//!     MODEL_DIR TASK DIFFICULTY [PROBLEMS=30] [SAMPLES=8] [TEMPERATURE=1] [SHOW_FAILURES=0]
//! `PROBE_FIELD` names the record field holding the expert trace (default `solution`);
//! For `climb`, `valid` counts the successes whose every line is a climbing step (expert lines
//! may jump up to `PROBE_JUMP` steps, default 2): the rest are guesses near the target.
//! `PROBE_MAX_TOKENS` bounds each completion (default 160); `PROBE_STRIDE=s` keeps every `s`-th line of it (and the answer line), to try a sparser expert.
use std::path::Path;

use candle_core::{DType, Device};
use post_runtime::generate::{SamplingParams, generate};
use post_runtime::rollouts::{prefix_text, split_steps};
use post_runtime::tasks::{TaskKind, TaskSplit, check, climb_trace_valid, generate as gen_task};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err(
            "usage: prefix_probe MODEL_DIR TASK DIFFICULTY [PROBLEMS] [SAMPLES] [TEMPERATURE]"
                .into(),
        );
    }
    let dir = Path::new(&args[1]);
    let task = &args[2];
    let difficulty: u32 = args[3].parse()?;
    let problems: usize = args.get(4).map_or(Ok(30), |s| s.parse())?;
    let samples: usize = args.get(5).map_or(Ok(8), |s| s.parse())?;
    let temperature: f64 = args.get(6).map_or(Ok(1.0), |s| s.parse())?;
    let show: usize = args.get(7).map_or(Ok(0), |s| s.parse())?;
    let m = post_runtime::hf::load(dir, DType::F32, &Device::Cpu)?;
    let tok = m.tokenizer.ok_or("no tokenizer.json")?;
    let kind = TaskKind::parse(task)?;
    let records = gen_task(task, TaskSplit::Test, problems, difficulty, 1)?;
    let max_tokens: usize = std::env::var("PROBE_MAX_TOKENS").map_or(Ok(160), |s| s.parse())?;
    let params = SamplingParams {
        temperature,
        max_tokens,
        ..SamplingParams::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let field = std::env::var("PROBE_FIELD").unwrap_or_else(|_| "solution".to_string());
    let jump: usize = std::env::var("PROBE_JUMP").map_or(Ok(2), |s| s.parse())?;
    let stride = std::env::var("PROBE_STRIDE")
        .map_or(Ok(1), |s| s.parse::<usize>())?
        .max(1);
    let trace = |r: &post_runtime::data::Record| -> String {
        let lines: Vec<&str> = r.get(&field).unwrap_or("").lines().collect();
        let Some((last, body)) = lines.split_last() else {
            return String::new();
        };
        let mut kept: Vec<&str> = body
            .iter()
            .skip(stride - 1)
            .step_by(stride)
            .copied()
            .collect();
        kept.push(last);
        kept.join("\n")
    };
    // Each record's expert steps, split once for every prefix length probed.
    let traces: Vec<String> = records.iter().map(trace).collect();
    let expert_steps: Vec<Vec<String>> = traces.iter().map(|t| split_steps(t, "\n")).collect();
    let max_steps = expert_steps.iter().map(Vec::len).max().unwrap_or(1);
    let mut greedy_ok = 0;
    let mut greedy_valid = 0;
    for r in &records {
        let p = tok.encode_prompt(r.get("prompt").unwrap_or(""))?;
        let g = generate(
            &m.model,
            Some(&tok),
            &[p],
            &SamplingParams {
                max_tokens,
                ..SamplingParams::default()
            },
            &mut rng,
        )?;
        let text = g[0].text.as_deref().unwrap_or("");
        if check(kind, r, text) {
            greedy_ok += 1;
            greedy_valid +=
                usize::from(climb_trace_valid(r.get("prompt").unwrap_or(""), text, jump));
        }
    }
    println!(
        "greedy accuracy from the prompt: {:.3} ({greedy_valid} of {greedy_ok} correct with a valid climb)",
        greedy_ok as f64 / records.len() as f64
    );
    println!("k\tsuccess\tgroups_with_a_success\tvalid_successes");
    for k in 0..max_steps {
        let mut prompts = Vec::new();
        let mut owners = Vec::new();
        for (ri, r) in records.iter().enumerate() {
            let steps = &expert_steps[ri];
            if k >= steps.len() {
                continue;
            }
            let mut p = tok.encode_prompt(r.get("prompt").unwrap_or(""))?;
            let prefix = prefix_text(steps, k, "\n");
            p.extend(tok.encode(&prefix)?);
            for _ in 0..samples {
                prompts.push(p.clone());
                owners.push((ri, prefix.clone()));
            }
        }
        if prompts.is_empty() {
            break;
        }
        let mut shown = 0;
        let mut ok = vec![0usize; records.len()];
        let mut total = 0;
        let mut valid = 0;
        for (chunk, own) in prompts.chunks(64).zip(owners.chunks(64)) {
            let gens = generate(&m.model, Some(&tok), chunk, &params, &mut rng)?;
            for (g, (ri, prefix)) in gens.iter().zip(own) {
                let text = format!("{prefix}{}", g.text.as_deref().unwrap_or(""));
                if check(kind, &records[*ri], &text) {
                    ok[*ri] += 1;
                    total += 1;
                    valid += usize::from(climb_trace_valid(
                        records[*ri].get("prompt").unwrap_or(""),
                        &text,
                        jump,
                    ));
                } else if shown < show {
                    shown += 1;
                    eprintln!(
                        "  k={k} prompt {:?} expert {:?}\n    got {:?}",
                        records[*ri].get("prompt").unwrap_or(""),
                        traces[*ri],
                        text
                    );
                }
            }
        }
        let groups = records.len();
        println!(
            "{k}\t{:.3}\t{:.3}\t{valid}/{total}",
            total as f64 / prompts.len() as f64,
            ok.iter().filter(|&&c| c > 0).count() as f64 / groups as f64
        );
    }
    Ok(())
}
