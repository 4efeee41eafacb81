//! Golden files with inline expectations (Typst style): each `compiler/tests/golden/*.post`
//! marks the lines where errors are expected with a trailing `// error: E0xxx` comment
//! (several codes separated by spaces). The test compiles each file in memory and compares the
//! set of (line, code) pairs of its errors with the marks.

mod common;

use std::collections::BTreeSet;

use post_compiler::{LineIndex, MemoryFs, compile_source};

fn expectations(src: &str) -> BTreeSet<(u32, String)> {
    let mut out = BTreeSet::new();
    for (i, line) in src.lines().enumerate() {
        if let Some(pos) = line.find("// error:") {
            for code in line[pos + 9..].split_whitespace() {
                if code.starts_with('E') && code.len() == 5 {
                    out.insert((i as u32 + 1, code.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn golden_files() {
    let files = common::post_files("compiler/tests/golden");
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for (name, src) in files {
        let fs = MemoryFs::new().with("compiler/tests/golden/data/bad.jsonl", "not json\n");
        let c = compile_source(&fs, &name, src.clone());
        let idx = LineIndex::new(&src);
        let found: BTreeSet<(u32, String)> = c
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| {
                (
                    idx.line_col(&src, d.primary.span.start).line + 1,
                    d.code.clone(),
                )
            })
            .collect();
        let expected = expectations(&src);
        if found != expected {
            let missing: Vec<_> = expected.difference(&found).collect();
            let extra: Vec<_> = found.difference(&expected).collect();
            let msgs: Vec<String> = c
                .diagnostics
                .iter()
                .map(|d| format!("{} {}", d.code, d.message))
                .collect();
            failures.push(format!(
                "{name}: missing {missing:?}, unexpected {extra:?}\n  {}",
                msgs.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
