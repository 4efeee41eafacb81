//! Golden files with inline expectations (Typst style): each `compiler/tests/golden/*.post`
//! marks the lines where errors are expected with a trailing comment, in one of two forms:
//!
//! - `// error: E0xxx E0yyy`: errors with these codes start on this line (several codes
//!   separated by spaces);
//! - `// error: E0202 14-22 unit mismatch`: one error with this code, whose primary span runs
//!   from column 14 to column 22 of this line (byte columns counted from 1, both ends
//!   inclusive: the first and the last character an editor highlights), and whose message is the
//!   rest of the line, exactly. The range and the message are each optional
//!   (`// error: E0202 unit mismatch`, `// error: E0202 14-22`).
//!
//! The test compiles each file in memory and matches every error against the marks; an error
//! matches a mark on its line with its code, and its range and message where the mark has them.

mod common;

use post_compiler::{LineIndex, MemoryFs, compile_source};

#[derive(Debug)]
struct Mark {
    line: u32,
    code: String,
    cols: Option<(u32, u32)>,
    message: Option<String>,
}

#[derive(Debug)]
struct Found {
    line: u32,
    code: String,
    cols: (u32, u32),
    message: String,
}

fn is_code(w: &str) -> bool {
    (w.starts_with('E') || w.starts_with('W'))
        && w.len() == 5
        && w[1..].chars().all(|c| c.is_ascii_digit())
}

fn range(w: &str) -> Option<(u32, u32)> {
    let (a, b) = w.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn expectations(src: &str) -> Vec<Mark> {
    let mut out = Vec::new();
    for (i, line) in src.lines().enumerate() {
        let Some(pos) = line.find("// error:") else {
            continue;
        };
        let line_no = i as u32 + 1;
        let rest = line[pos + 9..].trim();
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words.iter().all(|w| is_code(w)) {
            for w in words {
                out.push(Mark {
                    line: line_no,
                    code: w.to_string(),
                    cols: None,
                    message: None,
                });
            }
            continue;
        }
        // One mark: a code, then an optional column range, then an optional message.
        let (code, mut rest) = rest.split_once(' ').expect("a code and more");
        assert!(is_code(code), "line {line_no}: `{code}` is not a code");
        rest = rest.trim_start();
        let first = rest.split_whitespace().next().unwrap_or("");
        let cols = range(first);
        if cols.is_some() {
            rest = rest[first.len()..].trim_start();
        }
        out.push(Mark {
            line: line_no,
            code: code.to_string(),
            cols,
            message: (!rest.is_empty()).then(|| rest.to_string()),
        });
    }
    out
}

fn matches(m: &Mark, f: &Found) -> bool {
    m.line == f.line
        && m.code == f.code
        && m.cols.is_none_or(|c| c == f.cols)
        && m.message.as_ref().is_none_or(|t| *t == f.message)
}

#[test]
fn golden_files() {
    let files = common::post_files("compiler/tests/golden");
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    let mut detailed = 0;
    for (name, src) in files {
        let fs = MemoryFs::new().with("compiler/tests/golden/data/bad.jsonl", "not json\n");
        let c = compile_source(&fs, &name, src.clone());
        let idx = LineIndex::new(&src);
        let mut found: Vec<Found> = c
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| {
                let s = idx.line_col(&src, d.primary.span.start);
                let e = idx.line_col(&src, d.primary.span.end);
                let end = if e.line == s.line {
                    e.col.max(s.col + 1)
                } else {
                    s.col + 1
                };
                Found {
                    line: s.line + 1,
                    code: d.code.to_string(),
                    cols: (s.col + 1, end),
                    message: d.message.clone(),
                }
            })
            .collect();
        let marks = expectations(&src);
        detailed += marks
            .iter()
            .filter(|m| m.cols.is_some() || m.message.is_some())
            .count();
        // Marks with more detail first, so a bare mark never takes an error a detailed one needs.
        let mut order: Vec<&Mark> = marks.iter().collect();
        order.sort_by_key(|m| (m.cols.is_none() as u8) + (m.message.is_none() as u8));
        let mut missing = Vec::new();
        for m in order {
            match found.iter().position(|f| matches(m, f)) {
                Some(i) => {
                    found.remove(i);
                }
                None => missing.push(m),
            }
        }
        if !missing.is_empty() || !found.is_empty() {
            let unexpected: Vec<String> = found
                .iter()
                .map(|f| {
                    format!(
                        "line {}: {} {}-{} {}",
                        f.line, f.code, f.cols.0, f.cols.1, f.message
                    )
                })
                .collect();
            failures.push(format!(
                "{name}: missing {missing:?}\n  unexpected (as a mark would write them):\n    {}",
                unexpected.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(detailed > 0, "no mark uses a column range or a message");
}
