//! One snapshot per diagnostic code: the failing source and the plain (colourless) miette
//! rendering of its diagnostics, exactly as `post check` prints them. Every code in
//! `post_compiler::diagnostic::Code::ALL` must have a case here.

#[path = "../cli/diagnostics.rs"]
#[allow(dead_code)]
mod diagnostics;

use post_compiler::{FileSystem, FsError, MemoryFs, compile, compile_source};

const HEAD: &str = "use std.objectives.{sft, grpo, dpo}\n\n";

fn exp(body: &str) -> String {
    format!(
        "{HEAD}experiment e {{\n  model policy = preset(\"tiny\")\n  data train = task(\"arith\", difficulty = 2)\n  reward correct(s) = if number(answer(s.completion)) == number(s.answer) then 1 else 0\n{body}}}\n"
    )
}

fn stage(settings: &str) -> String {
    exp(&format!(
        "  stage s {{\n    data = train\n    steps = 10\n{settings}  }}\n"
    ))
}

fn cases() -> Vec<(&'static str, String)> {
    vec![
        ("E0001", "experiment e {\n  seed = = 1\n}\n".into()),
        ("E0004", format!("const x = {}1{}\n", "(".repeat(120), ")".repeat(120))),
        ("E0005", "const s = \"a\\q\"\n".into()),
        ("E0006", "const n = 1e999\n".into()),
        ("E0101", exp("  model reference = frozen(polcy)\n")),
        ("E0102", exp("  model policy = preset(\"tiny\")\n")),
        ("E0103", exp("  rollout r = sample(policy, n = 4, temprature = 0.7)\n")),
        ("E0104", exp("  stage s {\n    steps = 10\n    objective = sft(train.solution)\n  }\n")),
        ("E0105", exp("  rollout r = sample(policy, n = 4, n = 8)\n")),
        ("E0106", "use std.objectives.{dpoo}\n".into()),
        ("E0107", "seed = 3\n".into()),
        ("E0108", "experiment a {\n}\nexperiment b {\n}\n".into()),
        ("E0109", "const a = b\nconst b = a\n".into()),
        ("E0201", exp("  reward bad(s) = if number(answer(s.completion)) == s.answer then 1 else 0\n")),
        ("E0202", stage("    batch = 32 tokens\n    objective = sft(train.solution)\n")),
        ("E0203", format!("objective w(y: seqs, k: num = 1) = if k > 0 then mean_all_tokens(logp(y)) else 0\n{}", stage("    batch = 8 sequences\n    objective = w(train.solution, k = linear(1 -> 0))\n"))),
        ("E0204", "objective o(y: seqs, how: sum | mean) = match how {\n  sum => mean_seqs(sum_tokens(logp(y))),\n}\n".into()),
        ("E0301", "objective o(y: seqs) = mean_seqs(logp(y))\n".into()),
        ("E0302", format!("objective o(y: seqs) = sum_tokens(logp(y))\n{}", stage("    batch = 8 sequences\n    objective = o(train.solution)\n"))),
        ("E0303", "objective o(a: seqs, b: seqs) = mean_all_tokens(logp(a) - logp(b))\n".into()),
        ("E0304", format!("objective o(y: seqs, r1: reward, r2: reward) = mean_seqs(r1(y) * r2(y) * sum_tokens(logp(y)))\n{}", stage("    batch = 8 prompts\n    rollout = sample(policy, n = 4)\n    objective = o(r1 = correct, r2 = len_reward)\n")).replace("experiment e {\n", "experiment e {\n  reward len_reward(s) = s.tokens\n")),
        ("E0401", stage("    batch = 8 sequences\n    objective = sft(train.solution)\n    optimizer = adamw(lr = -3e-4)\n")),
        ("E0402", stage("    batch = 30 completions\n    rollout = sample(policy, n = 4)\n    objective = grpo(reward = correct)\n")),
        ("E0403", stage("    batch = 8 prompts\n    objective = dpo(train.solution, train.rejected)\n")),
        ("E0404", stage("    batch = 8 prompts\n    rollout = sample(policy, n = 4, max_tokens = 1000 tokens)\n    objective = grpo(reward = correct)\n")),
        ("E0405", stage("    batch = 8 prompts\n    rollout = sample(policy, n = 1)\n    objective = grpo(reward = correct)\n")),
        ("E0406", exp("  data test = task(\"arith\", split = test)\n  stage s {\n    data = train\n    steps = 10\n    batch = 8 sequences\n    objective = sft(train.solution)\n    eval every 5 steps on test {\n      pass = pass_at(8, correct, sample(policy, n = 4))\n    }\n  }\n")),
        ("E0407", exp("  stage s {\n    steps = 10\n    batch = 8 sequences\n    reference = policy\n    objective = dpo(train.solution, train.rejected)\n  }\n")),
        ("E0501", stage("    batch = 8 sequences\n    objective = sft(train.solutoin)\n")),
        ("E0502", exp("  data d = jsonl(\"data.jsonl\", prompt = \"q\")\n")),
        ("E0503", stage("    batch = 8 prompts\n    objective = grpo(reward = correct)\n")),
        ("E0408", stage("    batch = 16 sequences\n    grad_accum = 3\n    objective = sft(train.solution)\n")),
        ("E0504", exp("  data d = jsonl(\"missing.jsonl\")\n")),
        ("E0505", exp("  model again = trained(\"example.post\", model = \"policy\")\n")),
        ("E0506", exp("  data d = jsonl(\"../../etc/passwd\")\n")),
        ("W0001", exp("  analysis before {\n    model = policy\n    data = train\n    summaries = [intrinsic_dim()]\n  }\n  stage s {\n    data = train\n    steps = 10\n    batch = 8 sequences\n    objective = sft(train.solution)\n  }\n")),
        ("W0002", stage("    batch = 8 prompts\n    rollout = sample(policy, n = 4, temperature = 0)\n    objective = grpo(reward = correct)\n")),
    ]
}

/// A file system whose only file is not UTF-8.
struct BinaryFs;

impl FileSystem for BinaryFs {
    fn read_to_string(&self, _: &str) -> Result<String, FsError> {
        Err(FsError::InvalidUtf8 { valid_up_to: 3 })
    }
    fn is_file(&self, _: &str) -> bool {
        true
    }
    fn is_dir(&self, _: &str) -> bool {
        false
    }
}

fn render_all(c: &post_compiler::Compilation) -> String {
    let mut out = String::new();
    for d in &c.diagnostics {
        out.push_str(&diagnostics::render(d, &c.path, &c.source, false));
    }
    out
}

#[test]
fn every_code_has_a_snapshot() {
    let mut covered = std::collections::BTreeSet::new();
    let fs = MemoryFs::new().with("data.jsonl", "this is not json\n");
    for (code, src) in cases() {
        let c = compile_source(&fs, "example.post", src.clone());
        assert!(
            c.diagnostics.iter().any(|d| d.code == code),
            "{code} not produced by its case; got {:#?}",
            c.diagnostics
        );
        covered.insert(code.to_string());
        insta::assert_snapshot!(code, format!("{src}\n---\n{}", render_all(&c)));
    }
    let c = compile(&BinaryFs, "binary.post");
    assert!(c.diagnostics.iter().any(|d| d.code == "E0002"));
    covered.insert("E0002".into());
    insta::assert_snapshot!("E0002", render_all(&c));
    // E0007: only the cut notice is snapshotted; the 100 diagnostics before it are E0001s.
    let many: String = (0..102)
        .map(|i| format!("const a{i} = 1\nconst b{i} = = 1\n"))
        .collect();
    let c = compile_source(&fs, "example.post", many);
    let last = c.diagnostics.last().expect("diagnostics");
    assert_eq!(last.code, "E0007");
    assert_eq!(c.diagnostics.len(), 101);
    covered.insert("E0007".into());
    insta::assert_snapshot!(
        "E0007",
        diagnostics::render(last, &c.path, &c.source, false)
    );
    let c = compile(&MemoryFs::new(), "missing.post");
    assert!(c.diagnostics.iter().any(|d| d.code == "E0003"));
    covered.insert("E0003".into());
    insta::assert_snapshot!("E0003", render_all(&c));
    for code in post_compiler::diagnostic::Code::ALL {
        assert!(
            covered.contains(code.as_str()),
            "no snapshot case for {code}"
        );
    }
}
