//! Every diagnostic carries a help line: what to write instead, the allowed range, the closest
//! name. Two checks: a scan of the compiler's source, where each `Diagnostic::error(...)` /
//! `Diagnostic::warning(...)` construction must chain `.with_help(...)`, and a run over the
//! golden files, the examples and the stdlib, where every emitted diagnostic must have `help`.
#![allow(clippy::disallowed_methods)]

mod common;

use post_compiler::{MemoryFs, compile_source};

/// Every `*.rs` file under `dir`, recursively, sorted.
fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("readable source directory") {
        let p = e.expect("readable entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
}

/// The index just past the token starting at `i` when it is a string, raw string, char literal
/// or comment; `None` for any other token.
fn skip_literal(s: &[u8], i: usize) -> Option<usize> {
    let at = |k: usize| s.get(k).copied().unwrap_or(0);
    match at(i) {
        b'/' if at(i + 1) == b'/' => {
            let mut j = i;
            while j < s.len() && s[j] != b'\n' {
                j += 1;
            }
            Some(j)
        }
        b'/' if at(i + 1) == b'*' => {
            let mut j = i + 2;
            while j + 1 < s.len() && !(s[j] == b'*' && s[j + 1] == b'/') {
                j += 1;
            }
            Some(j + 2)
        }
        b'"' => {
            let mut j = i + 1;
            while j < s.len() && s[j] != b'"' {
                j += if s[j] == b'\\' { 2 } else { 1 };
            }
            Some(j + 1)
        }
        // Raw strings: r"..." and r#"..."#, not part of an identifier.
        b'r' if (at(i + 1) == b'"' || at(i + 1) == b'#')
            && !(i > 0 && (s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_')) =>
        {
            let mut j = i + 1;
            let mut hashes = 0;
            while at(j) == b'#' {
                hashes += 1;
                j += 1;
            }
            if at(j) != b'"' {
                return None;
            }
            j += 1;
            loop {
                if j >= s.len() {
                    return Some(j);
                }
                if s[j] == b'"' && (1..=hashes).all(|k| at(j + k) == b'#') {
                    return Some(j + 1 + hashes);
                }
                j += 1;
            }
        }
        // Char literals ('(' or '\n'); a lone quote is a lifetime.
        b'\'' => {
            if at(i + 1) == b'\\' {
                let mut j = i + 2;
                while j < s.len() && s[j] != b'\'' {
                    j += 1;
                }
                Some(j + 1)
            } else if at(i + 2) == b'\'' {
                Some(i + 3)
            } else {
                Some(i + 1)
            }
        }
        _ => None,
    }
}

/// From just inside an opening bracket, the index just past its matching closer.
fn skip_group(s: &[u8], mut i: usize) -> usize {
    let mut depth = 1;
    while i < s.len() && depth > 0 {
        if let Some(j) = skip_literal(s, i) {
            i = j;
            continue;
        }
        match s[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// The index of the next token at or after `i`, past whitespace and comments.
fn skip_blank(s: &[u8], mut i: usize) -> usize {
    loop {
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        if s.get(i) == Some(&b'/') && matches!(s.get(i + 1), Some(b'/' | b'*')) {
            i = skip_literal(s, i).unwrap_or(i + 1);
        } else {
            return i;
        }
    }
}

/// The method names chained onto the call whose arguments start at `i` (just past its `(`).
fn method_chain(s: &[u8], i: usize) -> Vec<String> {
    let mut i = skip_group(s, i);
    let mut chain = Vec::new();
    loop {
        let mut j = skip_blank(s, i);
        if s.get(j) != Some(&b'.') {
            return chain;
        }
        j = skip_blank(s, j + 1);
        let start = j;
        while j < s.len() && (s[j].is_ascii_alphanumeric() || s[j] == b'_') {
            j += 1;
        }
        let name = String::from_utf8_lossy(&s[start..j]).to_string();
        let j = skip_blank(s, j);
        if name.is_empty() || s.get(j) != Some(&b'(') {
            return chain;
        }
        chain.push(name);
        i = skip_group(s, j + 1);
    }
}

/// (line, chain) of every diagnostic construction in `src` outside comments and strings.
fn constructions(src: &str) -> Vec<(usize, Vec<String>)> {
    let s = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if let Some(j) = skip_literal(s, i) {
            i = j;
            continue;
        }
        let rest = &src[i..];
        let ctor = ["Diagnostic::error(", "Diagnostic::warning("]
            .into_iter()
            .find(|c| rest.starts_with(c));
        if let Some(c) = ctor {
            let line = src[..i].matches('\n').count() + 1;
            out.push((line, method_chain(s, i + c.len())));
            i += c.len();
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn scanner_follows_chains() {
    let src = r##"
        c.err(Diagnostic::error("E1", format!("a ( {x}"), span, ')').with_label(s, "x)").with_help("h"));
        let d = Diagnostic::error("E2", "m", span, "l")
            // a comment with Diagnostic::error( inside
            .with_label(s, r#"(("#);
        Diagnostic::warning("E3", '(', sp, "l")
            .with_help_opt(None)
    "##;
    let found = constructions(src);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[0].1, ["with_label", "with_help"]);
    assert_eq!(found[1].1, ["with_label"]);
    assert_eq!(found[2].1, ["with_help_opt"]);
}

#[test]
fn every_diagnostic_construction_has_help() {
    let root = std::path::PathBuf::from(common::root()).join("compiler/src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 5);
    let mut missing = Vec::new();
    let mut total = 0;
    for f in &files {
        // The constructor's own definition.
        if f.ends_with("diagnostic.rs") {
            continue;
        }
        let src = std::fs::read_to_string(f).expect("source is UTF-8");
        for (line, chain) in constructions(&src) {
            total += 1;
            if !chain.iter().any(|m| m == "with_help") {
                let rel = f.strip_prefix(common::root()).unwrap_or(f);
                missing.push(format!(
                    "{}:{line} (chain: {})",
                    rel.display(),
                    if chain.is_empty() {
                        "none".to_string()
                    } else {
                        chain.join(", ")
                    }
                ));
            }
        }
    }
    assert!(
        total > 100,
        "only {total} constructions found: the scan is broken"
    );
    assert!(
        missing.is_empty(),
        "{} diagnostic construction(s) without `.with_help(...)` (`with_help_opt` alone may leave \
         none):\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

fn without_help(name: &str, src: &str, fs: &MemoryFs, out: &mut Vec<String>) -> usize {
    let c = compile_source(fs, name, src.to_string());
    let idx = post_compiler::LineIndex::new(src);
    for d in c.diagnostics.iter().filter(|d| d.help.is_none()) {
        let line = idx.line_col(src, d.primary.span.start).line + 1;
        out.push(format!("{name}:{line} {} {}", d.code, d.message));
    }
    c.diagnostics.len()
}

#[test]
fn emitted_diagnostics_have_help() {
    let mut missing = Vec::new();
    let mut emitted = 0;
    let golden_fs = MemoryFs::new().with("compiler/tests/golden/data/bad.jsonl", "not json\n");
    for (name, src) in common::post_files("compiler/tests/golden") {
        emitted += without_help(&name, &src, &golden_fs, &mut missing);
    }
    let fs = common::fixture_fs();
    for dir in ["examples", "stdlib"] {
        for (name, src) in common::post_files(dir) {
            emitted += without_help(&name, &src, &fs, &mut missing);
        }
    }
    assert!(
        emitted > 20,
        "only {emitted} diagnostics: the golden files went missing?"
    );
    assert!(
        missing.is_empty(),
        "{} diagnostic(s) without help:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}
