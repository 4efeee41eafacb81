//! A seeded, time-bounded fuzz run over everything that reads `.post` text: the checker, the
//! formatter, the language server's analysis (hover, completion, signature help, navigation,
//! outline, semantic tokens) and the terminal rendering of every diagnostic. The inputs are
//! mutants of the examples and the standard library: byte flips, truncations, splices, deep and
//! unclosed nesting, very long lines. None may panic, and each must be handled within a bound
//! that only a linear-time front end meets (unclosed blocks used to take exponential time).
//!
//! CI runs a fixed seed for about `POST_FUZZ_SECS` (default 20) seconds; set `POST_FUZZ_SEED`
//! to explore other seeds and `POST_FUZZ_SECS` to run longer.

#[path = "../cli/diagnostics.rs"]
#[allow(dead_code)]
mod diagnostics;

use std::time::{Duration, Instant};

use post_compiler::ide::Analysis;
use post_compiler::{MemoryFs, compile_source, format};

/// (repository path, text) of every `*.post` file under `dir`, sorted.
fn post_files(dir: &str) -> Vec<(String, String)> {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&full)
        .expect("fixture directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "post"))
        .map(|p| {
            let name = format!("{dir}/{}", p.file_name().unwrap().to_string_lossy());
            (name, std::fs::read_to_string(&p).expect("UTF-8 fixture"))
        })
        .collect();
    out.sort();
    out
}

/// The examples, the stdlib and the example data, in memory (the run does no I/O).
fn fixture_fs() -> MemoryFs {
    let mut fs = MemoryFs::new();
    for dir in ["examples", "stdlib"] {
        for (n, t) in post_files(dir) {
            fs.insert(&n, &t);
        }
    }
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    for e in std::fs::read_dir(&data).expect("examples/data") {
        let p = e.expect("entry").path();
        let name = format!("examples/data/{}", p.file_name().unwrap().to_string_lossy());
        if let Ok(text) = std::fs::read_to_string(&p) {
            fs.insert(&name, &text);
        }
    }
    fs
}

/// xorshift64*: deterministic, so a failure reproduces from its seed.
#[path = "../compiler/tests/common/xorshift.rs"]
mod xorshift;
use xorshift::Rng;

const SNIPPETS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "\"",
    "\n",
    "stage s {\n",
    "eval {\n",
    "experiment e {\n",
    "if ",
    " then ",
    "match x {",
    "=",
    "->",
    "1e999",
    "😀",
    "\u{0}",
    "\\",
    "//",
    "regex(\"a{100000}\")",
    "batch = 4611686018427387904 prompts\n",
    "task(\"arith\", size = 1e12)",
];

/// Cut `i` down to a char boundary of `s`.
fn boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(rng: &mut Rng, src: &str) -> String {
    let mut s = src.to_string();
    for _ in 0..1 + rng.below(3) {
        let len = s.len();
        let at = boundary(&s, rng.below(len + 1));
        match rng.below(8) {
            // Byte flip (kept valid UTF-8: the compiler reads text).
            0 if len > 0 => {
                let mut bytes = s.clone().into_bytes();
                let i = rng.below(len);
                bytes[i] ^= 1 << rng.below(7);
                s = String::from_utf8_lossy(&bytes).into_owned();
            }
            // Truncation.
            1 => s.truncate(at),
            // Splice of a piece of the file somewhere else.
            2 if len > 0 => {
                let a = at;
                let b = boundary(&s, a + rng.below(300));
                let piece = s[a..b].to_string();
                let to = boundary(&s, rng.below(len + 1));
                s.insert_str(to, &piece);
            }
            // Deep nesting of unclosed blocks (below and above the nesting limit).
            3 => {
                let depth = 1 + rng.below(130);
                s.insert_str(at, &"stage s {\n".repeat(depth));
            }
            // Deep brackets.
            4 => {
                let depth = 1 + rng.below(200);
                let open = ["(", "[", "{"][rng.below(3)];
                s.insert_str(at, &open.repeat(depth));
            }
            // A very long line: errors far to the right (miette used to panic past 65,535).
            5 => {
                let pad = " ".repeat(rng.below(80_000));
                s.insert_str(at, &format!("{pad}= = ("));
            }
            // Drop every closing brace.
            6 if rng.below(4) == 0 => s = s.replace('}', ""),
            _ => s.insert_str(at, SNIPPETS[rng.below(SNIPPETS.len())]),
        }
    }
    s
}

/// Everything the CLI and the language server do with one buffer.
fn exercise(fs: &MemoryFs, name: &str, src: &str, rng: &mut Rng) {
    let c = compile_source(fs, name, src.to_string());
    assert!(
        c.diagnostics.len() <= post_compiler::diagnostic::MAX_DIAGNOSTICS + 1,
        "{name}: {} diagnostics",
        c.diagnostics.len()
    );
    for d in &c.diagnostics {
        assert!(
            d.primary.span.end as usize <= src.len(),
            "{name}: span out of range"
        );
        let _ = diagnostics::render(d, name, src, false);
    }
    if let Err(diags) = format(src) {
        for d in &diags {
            let _ = diagnostics::render(d, name, src, false);
        }
    }
    let a = Analysis::new(src, name);
    let _ = a.outline();
    let _ = a.semantic_tokens();
    for _ in 0..4 {
        let offset = rng.below(src.len() + 2) as u32;
        let _ = a.hover(offset);
        let _ = a.completions(fs, offset);
        let _ = a.signature_help(offset);
        let _ = a.definition(offset);
        let _ = a.references(offset, true);
        let _ = a.prepare_rename(offset);
    }
}

#[test]
fn mutants_of_the_examples_and_stdlib_never_panic_and_stay_fast() {
    let fs = fixture_fs();
    let mut files = post_files("examples");
    files.extend(post_files("stdlib"));
    let seed = std::env::var("POST_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x5eed_0019_f022_0001);
    let budget = Duration::from_secs(
        std::env::var("POST_FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    // Generous: a debug build on a loaded 2-core machine; exponential time would blow it
    // by orders of magnitude.
    let per_input = Duration::from_secs(5);
    let mut rng = Rng(seed | 1);
    let start = Instant::now();
    let mut runs = 0usize;
    while start.elapsed() < budget || runs < files.len() {
        let (name, src) = &files[runs % files.len()];
        let m = mutate(&mut rng, src);
        let t = Instant::now();
        exercise(&fs, name, &m, &mut rng);
        let took = t.elapsed();
        assert!(
            took < per_input,
            "seed {seed}, run {runs}: a mutant of {name} took {took:?}:\n{}",
            m.chars().take(2000).collect::<String>()
        );
        runs += 1;
    }
    eprintln!(
        "fuzz: {runs} mutants in {:?} (seed {seed})",
        start.elapsed()
    );
}
