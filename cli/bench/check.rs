//! `post bench check`: whole-process `post check` time on each example (target < 20 ms), on a
//! generated 10,000-line file (target < 200 ms), and the scaling over 1k/10k/100k lines.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Directory of example experiments.
    #[arg(long, default_value = "examples")]
    pub examples: String,
    /// Runs per measurement (the median is printed).
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
}

/// A generated experiment of about `lines` lines: repeated rewards, rollouts and stages.
pub fn generate(lines: usize) -> String {
    let mut s = String::from(
        "use std.objectives.{sft, grpo}\n\nexperiment generated {\n  seed = 1\n  model policy = preset(\"tiny\")\n  data train = task(\"arith\", split = train, size = 100, difficulty = 2)\n  data test = task(\"arith\", split = test, size = 20, difficulty = 2)\n\n",
    );
    let mut i = 0;
    while s.lines().count() < lines.saturating_sub(1) {
        s.push_str(&format!(
            "  // chunk {i}\n  reward correct_{i}(s) = if number(answer(s.completion)) == number(s.answer) then 1.0 else 0.0\n  rollout explore_{i} = sample(policy, n = 4, temperature = 1.0, max_tokens = 32 tokens)\n  stage rl_{i} {{\n    data = train\n    steps = 10\n    batch = 8 prompts\n    rollout = explore_{i}\n    objective = grpo(reward = correct_{i}, beta = 0.0)\n    optimizer = adamw(lr = cosine(1e-4 -> 1e-5, warmup = 2 steps))\n  }}\n\n"
        ));
        i += 1;
    }
    s.push_str("}\n");
    s
}

fn time_check(exe: &Path, file: &Path, runs: usize) -> Option<(Duration, bool)> {
    let mut times = Vec::new();
    let mut ok = true;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let status = Command::new(exe)
            .arg("check")
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        times.push(t.elapsed());
        ok &= status.success();
    }
    times.sort();
    Some((times[times.len() / 2], ok))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(args: Args) -> ExitCode {
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("error: cannot locate the post executable");
        return ExitCode::from(1);
    };
    let mut examples: Vec<PathBuf> = match std::fs::read_dir(&args.examples) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "post"))
            .collect(),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.examples);
            return ExitCode::from(2);
        }
    };
    examples.sort();
    println!(
        "post check, whole process, median of {} runs (target < 20 ms per example)",
        args.runs
    );
    for p in &examples {
        match time_check(&exe, p, args.runs) {
            Some((d, ok)) => println!(
                "  {:<40} {:>8.2} ms{}",
                p.display(),
                ms(d),
                if ok { "" } else { "  (errors)" }
            ),
            None => println!("  {:<40} failed to run", p.display()),
        }
    }
    let dir = std::env::temp_dir().join(format!("post-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    println!("generated files (10k-line target < 200 ms; cost should grow linearly)");
    let mut prev: Option<(usize, f64)> = None;
    for lines in [1_000usize, 10_000, 100_000] {
        let text = generate(lines);
        let path = dir.join(format!("gen_{lines}.post"));
        if let Err(e) = std::fs::write(&path, &text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            continue;
        }
        let runs = if lines >= 100_000 { 3 } else { args.runs };
        match time_check(&exe, &path, runs) {
            Some((d, ok)) => {
                let per_k = ms(d) / (text.lines().count() as f64 / 1000.0);
                let ratio = prev
                    .map(|(pl, pt)| {
                        format!(
                            "  x{:.1} time for x{:.0} lines",
                            ms(d) / pt,
                            lines as f64 / pl as f64
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "  {:>7} lines {:>10.2} ms  ({per_k:.3} ms per 1k lines){ratio}{}",
                    text.lines().count(),
                    ms(d),
                    if ok { "" } else { "  (errors)" }
                );
                prev = Some((lines, ms(d)));
            }
            None => println!("  {lines} lines: failed to run"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}
