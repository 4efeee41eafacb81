//! `post bench lsp`: latency of a real `post lsp` process, measured by a client over stdio.
//! Diagnostics of a 2,000-line file after a one-character change (target < 50 ms, measured from
//! sending the change to receiving the diagnostics, with the debounce set to 0), hover and
//! completion round trips (target < 10 ms). Also the in-process split: compile vs. IDE index.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use post_compiler::ide::Analysis;
use post_compiler::{LineIndex, MemoryFs};
use post_lsp::client::Client;
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Args {
    /// Lines of the generated experiment.
    #[arg(long, default_value_t = 2000)]
    pub lines: usize,
    /// Measurements per figure (median, p90 and max are printed).
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let pick = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:7.2} ms   p90 {:7.2} ms   max {:7.2} ms",
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(pick(1.0))
    )
}

/// The UTF-16 position of the first occurrence of `needle` (plus `delta` bytes).
fn position_of(text: &str, needle: &str, delta: usize) -> Option<Value> {
    let at = text.find(needle)? + delta;
    let index = LineIndex::new(text);
    let lc = index.line_col(text, at as u32);
    Some(json!({ "line": lc.line, "character": lc.col_utf16 }))
}

pub fn run(args: Args) -> ExitCode {
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("post bench lsp: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> Result<(), String> {
    let text = super::check::generate(args.lines);
    let runs = args.runs.max(1);
    println!(
        "post bench lsp: {} lines, {} bytes, {runs} runs per figure",
        text.lines().count(),
        text.len()
    );

    // In process: what a change costs the server.
    let fs = MemoryFs::new();
    let mut compile = Vec::new();
    let mut index = Vec::new();
    let mut parse = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let parsed = post_compiler::syntax::parse(&text);
        parse.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(Analysis::from_file(&text, "bench.post", parsed.file));
        index.push(t.elapsed());
        let t = Instant::now();
        let c = post_compiler::compile_source(&fs, "bench.post", text.clone());
        compile.push(t.elapsed());
        std::hint::black_box(c);
    }
    println!("in process   compile (parse+check)  {}", stats(compile));
    println!("in process   parse only             {}", stats(parse));
    println!("in process   IDE index (after parse) {}", stats(index));

    // A real server process.
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the post binary: {e}"))?;
    let cache = std::env::temp_dir().join(format!("post-bench-lsp-{}", std::process::id()));
    let mut cmd = Command::new(exe);
    cmd.arg("lsp").env("POST_LSP_CACHE", &cache);
    let mut client = Client::spawn(cmd, json!({ "debounceMs": 0 }))?;
    let dir = std::env::temp_dir();
    let uri = post_lsp::uri::from_path(&dir.join("bench-lsp.post").to_string_lossy());
    client.notify(
        "textDocument/didOpen",
        json!({ "textDocument": { "uri": uri, "languageId": "post", "version": 0, "text": text } }),
    )?;
    client.wait_for("textDocument/publishDiagnostics", |p| p["version"] == 0)?;

    // Change one digit back and forth: `steps = 10` <-> `steps = 11`.
    let pos =
        position_of(&text, "steps = 10", 9).ok_or("the generated file has no `steps = 10`")?;
    let mut diag = Vec::new();
    let mut errors = 0usize;
    for v in 1..=runs as i64 {
        let digit = if v % 2 == 1 { "1" } else { "0" };
        let range = json!({ "start": pos, "end": { "line": pos["line"], "character": pos["character"].as_u64().unwrap_or(0) + 1 } });
        let t = Instant::now();
        client.notify(
            "textDocument/didChange",
            json!({ "textDocument": { "uri": uri, "version": v }, "contentChanges": [{ "range": range, "text": digit }] }),
        )?;
        let n = client.wait_for("textDocument/publishDiagnostics", |p| p["version"] == v)?;
        diag.push(t.elapsed());
        errors = n["params"]["diagnostics"].as_array().map_or(0, Vec::len);
    }
    println!(
        "server       diagnostics after a change  {}   ({errors} diagnostics)",
        stats(diag)
    );

    let mut measure =
        |label: &str, method: &str, needle: &str, delta: usize| -> Result<(), String> {
            let pos = position_of(&text, needle, delta)
                .ok_or_else(|| format!("`{needle}` not in the file"))?;
            let mut times = Vec::new();
            let mut size = 0;
            for _ in 0..runs {
                let t = Instant::now();
                let r = client.request(
                    method,
                    json!({ "textDocument": { "uri": uri }, "position": pos }),
                )?;
                times.push(t.elapsed());
                if let Some(e) = r.get("error") {
                    return Err(format!("{method} failed: {e}"));
                }
                size = r["result"].to_string().len();
            }
            println!("server       {label:<27} {}   ({size} bytes)", stats(times));
            Ok(())
        };
    measure(
        "hover (stdlib objective)",
        "textDocument/hover",
        "grpo(reward",
        1,
    )?;
    measure("hover (built-in)", "textDocument/hover", "sample(policy", 1)?;
    measure(
        "hover (declared reward)",
        "textDocument/hover",
        "reward = correct_",
        10,
    )?;
    measure(
        "completion (value)",
        "textDocument/completion",
        "rollout = explore_",
        10,
    )?;
    measure(
        "completion (call argument)",
        "textDocument/completion",
        "n = 4, ",
        7,
    )?;
    measure(
        "completion (stage setting)",
        "textDocument/completion",
        "    steps = 10",
        4,
    )?;
    client.shutdown()?;
    let _ = std::fs::remove_dir_all(&cache);
    println!("targets: diagnostics < 50 ms, hover and completion < 10 ms");
    Ok(())
}
