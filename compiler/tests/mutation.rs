//! A seeded mutation test: thousands of corrupted variants of the examples and stdlib go through
//! parse + check + format; none may panic. Formatting must also be idempotent on every mutant
//! that formats.

mod common;

use post_compiler::{compile_source, format};

/// A small deterministic generator (xorshift64*), so failures reproduce.
#[path = "common/xorshift.rs"]
mod xorshift;
use xorshift::Rng;

const SNIPPETS: &[&str] = &[
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    "=",
    "==",
    "->",
    "=>",
    "\"",
    "//",
    "\n",
    " ",
    ".",
    ":",
    "|",
    "-",
    "^",
    "if ",
    " then ",
    " else ",
    "match ",
    "1e999",
    "0",
    "-1",
    "3 tokens",
    "7 prompts",
    "é",
    "😀",
    "\\",
    "\t",
    "stage x {",
    "experiment",
    "model",
    "use std.objectives.{",
    "logp(y)",
    "mean_seqs(",
    "sample(policy, n = 0)",
    "\u{0}",
];

fn mutate(rng: &mut Rng, src: &str) -> String {
    let mut s: Vec<char> = src.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let len = s.len();
        match rng.below(5) {
            0 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(40)).min(len);
                s.drain(a..b);
            }
            1 => {
                let at = rng.below(len + 1);
                let snip = SNIPPETS[rng.below(SNIPPETS.len())];
                for (i, ch) in snip.chars().enumerate() {
                    s.insert(at + i, ch);
                }
            }
            2 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(200)).min(len);
                let chunk: Vec<char> = s[a..b].to_vec();
                let at = rng.below(len + 1);
                for (i, ch) in chunk.into_iter().enumerate() {
                    s.insert(at + i, ch);
                }
            }
            3 if len > 0 => {
                let a = rng.below(len);
                s[a] = char::from_u32(rng.below(0x3000) as u32).unwrap_or('?');
            }
            _ => {
                let text: String = s.iter().collect();
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let a = rng.below(lines.len());
                    let b = rng.below(lines.len());
                    lines.swap(a, b);
                }
                s = lines.join("\n").chars().collect();
            }
        }
    }
    s.into_iter().collect()
}

#[test]
fn corrupted_inputs_never_panic() {
    let fs = common::fixture_fs();
    let mut files = common::post_files("examples");
    files.extend(common::post_files("stdlib"));
    // POST_MUTATION_SEED explores other seeds locally; CI uses the fixed one.
    let seed = std::env::var("POST_MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    let mut rng = Rng(seed | 1);
    let per_file = 2400 / files.len().max(1) + 1;
    let mut checked = 0;
    for (name, src) in &files {
        for _ in 0..per_file {
            let m = mutate(&mut rng, src);
            let c = compile_source(&fs, name, m.clone());
            // Every diagnostic points inside the text.
            for d in &c.diagnostics {
                assert!(
                    d.primary.span.end as usize <= m.len(),
                    "{name}: span out of range in {m:?}"
                );
            }
            if let Ok(f) = format(&m) {
                let again = format(&f)
                    .unwrap_or_else(|e| panic!("formatted text does not parse: {e:?}\n{f}"));
                assert_eq!(
                    again, f,
                    "formatting not idempotent for a mutant of {name}:\n{m}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 2000);
}

/// Every diagnostic of a mutant carries a help line (see also `tests/help.rs`).
#[test]
fn mutant_diagnostics_have_help() {
    let fs = common::fixture_fs();
    let mut files = common::post_files("examples");
    files.extend(common::post_files("stdlib"));
    let mut rng = Rng(0x4e1b_0000_0000_0001 | 1);
    let per_file = 600 / files.len().max(1) + 1;
    let mut missing = std::collections::BTreeMap::new();
    for (name, src) in &files {
        for _ in 0..per_file {
            let m = mutate(&mut rng, src);
            let c = compile_source(&fs, name, m.clone());
            for d in c.diagnostics.iter().filter(|d| d.help.is_none()) {
                missing
                    .entry(format!("{} {}", d.code, d.message))
                    .or_insert_with(|| m.clone());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "diagnostics without help (one mutant each):\n{}",
        missing
            .iter()
            .map(|(d, m)| format!(
                "  {d}\n    in: {:?}",
                m.chars().take(200).collect::<String>()
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn hostile_inputs_never_panic() {
    let fs = common::fixture_fs();
    let deep = "(".repeat(5000);
    let deep_if = "experiment e { seed = ".to_string() + &"if true then ".repeat(3000) + "1";
    let long_chain = "const x = ".to_string() + &"1 + ".repeat(50_000) + "1\n";
    let unary = "const x = ".to_string() + &"-".repeat(50_000) + "1\n";
    let fields = "const x = a".to_string() + &".b".repeat(50_000) + "\n";
    let calls = "const x = f".to_string() + &"()".repeat(50_000) + "\n";
    let garbage: String = (0..20_000u32)
        .map(|i| char::from_u32((i * 7919) % 0x2FFF + 1).unwrap_or('x'))
        .collect();
    for src in [
        String::new(),
        "\n\n".into(),
        deep,
        deep_if,
        long_chain,
        unary,
        fields,
        calls,
        garbage,
        "experiment".into(),
        "}}}}".into(),
        "\"".into(),
    ] {
        let c = compile_source(&fs, "x.post", src.clone());
        let _ = format(&src);
        for d in &c.diagnostics {
            assert!(d.primary.span.end as usize <= src.len());
        }
    }
}

/// Check `src` and return how long it took. Every diagnostic must point inside the text.
fn timed_check(src: &str) -> (std::time::Duration, post_compiler::Compilation) {
    let fs = common::fixture_fs();
    let t = std::time::Instant::now();
    let c = compile_source(&fs, "x.post", src.to_string());
    (t.elapsed(), c)
}

/// Unclosed blocks used to make the parser retry every enclosing block line by line: time
/// doubled with each level (20 levels took 4 s). At 90 levels (just inside the nesting limit)
/// exponential time would never finish; linear parsing takes milliseconds. The bound is
/// generous for a loaded machine and still 2^70 times below the old behaviour.
#[test]
fn unclosed_blocks_check_in_linear_time() {
    let mut src = String::from("experiment e {\n  model policy = preset(\"tiny\")\n");
    for i in 0..90 {
        src.push_str(&format!("  stage s{i} {{\n    steps = 10\n"));
        if i == 0 {
            src.push_str("    x = = 1\n");
        }
    }
    let (took, c) = timed_check(&src);
    assert!(took.as_secs() < 2, "90 unclosed blocks took {took:?}");
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.code == "E0001" && d.message == "`stage s89` is never closed"),
        "{:#?}",
        c.diagnostics
    );
    // Each block is reported where it opens, and the broken lines inside are still found.
    let (_, c) = timed_check(&src[..src.find("  stage s1 ").unwrap()]);
    let messages: Vec<String> = c.diagnostics.iter().map(|d| d.message.clone()).collect();
    assert!(
        messages.contains(&"`experiment e` is never closed".to_string()),
        "{messages:?}"
    );
    assert!(
        messages.contains(&"`stage s0` is never closed".to_string()),
        "{messages:?}"
    );
    assert!(
        messages.contains(&"syntax error".to_string()),
        "{messages:?}"
    );
    // Every example with its closing braces removed: the measured case (a real file whose
    // 16 stages lost their `}` took 4.6 s).
    for (name, text) in common::post_files("examples") {
        let (took, c) = timed_check(&text.replace('}', ""));
        assert!(took.as_secs() < 2, "{name} without `}}` took {took:?}");
        assert!(c.has_errors(), "{name}");
    }
}

/// A file of nothing but broken lines reports the first 100 diagnostics and one E0007 counting
/// the rest (a 51 KB file used to print 1 GB of errors), and the re-parse behind each message
/// stops at the cap, so such a file is also checked quickly.
#[test]
fn diagnostics_are_capped_per_file() {
    let src: String = (0..5000)
        .map(|i| format!("const ok{i} = 1\nconst bad{i} = = {i}\n"))
        .collect();
    let (took, c) = timed_check(&src);
    assert!(took.as_secs() < 5, "took {took:?}");
    let max = post_compiler::diagnostic::MAX_DIAGNOSTICS;
    assert_eq!(c.diagnostics.len(), max + 1, "{:#?}", &c.diagnostics[..3]);
    let last = c.diagnostics.last().unwrap();
    assert_eq!(last.code, "E0007");
    assert!(last.is_error(), "cut errors keep the file failing");
    assert_eq!(
        last.message,
        format!("4900 more diagnostics not shown (4900 errors); only the first {max} are reported")
    );
    let formatted = format(&src).unwrap_err();
    assert_eq!(formatted.len(), max + 1);
}
