//! Shared by the `lsp_*` tests: start a real `post lsp`, open fixture text, render responses
//! as readable text with the cursor drawn in.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use post_lsp::client::Client;
use serde_json::{Value, json};

/// A scratch directory for the server's stdlib cache, unique per test process.
pub fn cache_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("post-lsp-tests-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}

pub fn start(test_hooks: bool) -> Client {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_post"));
    cmd.arg("lsp").env("POST_LSP_CACHE", cache_dir());
    if test_hooks {
        cmd.env("POST_LSP_TEST_HOOKS", "1");
    }
    Client::spawn(cmd, json!({})).expect("post lsp starts")
}

pub fn uri_of(path: &Path) -> String {
    post_lsp::uri::from_path(&path.to_string_lossy())
}

/// Line and UTF-16 column of a byte offset.
pub fn position(text: &str, offset: usize) -> Value {
    let before = &text[..offset];
    let line = before.matches('\n').count();
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let col: usize = before[start..].encode_utf16().count();
    json!({ "line": line, "character": col })
}

/// Byte offset of an LSP position (UTF-16 column) in `text`.
pub fn offset(text: &str, pos: &Value) -> usize {
    let line = pos["line"].as_u64().unwrap_or(0) as usize;
    let col = pos["character"].as_u64().unwrap_or(0) as usize;
    let mut start = 0;
    for _ in 0..line {
        match text[start..].find('\n') {
            Some(i) => start += i + 1,
            None => return text.len(),
        }
    }
    let mut units = 0;
    for (i, ch) in text[start..].char_indices() {
        if units >= col || ch == '\n' {
            return start + i;
        }
        units += ch.len_utf16();
    }
    text.len()
}

/// The line holding `range` with carets under it: `  12 | text` / `     |   ^^^^`.
pub fn draw(text: &str, range: &Value) -> String {
    let a = offset(text, &range["start"]);
    let b = offset(text, &range["end"]).max(a);
    let line_start = text[..a].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[a..].find('\n').map_or(text.len(), |i| a + i);
    let line_no = text[..a].matches('\n').count() + 1;
    let width = text[line_start..a].chars().count();
    let len = text[a..b.min(line_end)].chars().count().max(1);
    format!(
        "{line_no:4} | {}\n     | {}{}",
        &text[line_start..line_end],
        " ".repeat(width),
        "^".repeat(len)
    )
}

/// Replace machine-specific paths with stable names.
pub fn redact(s: &str, fixtures: &Path) -> String {
    let cache = uri_of(&cache_dir());
    let mut out = s.replace(&uri_of(fixtures), "<fixtures>");
    // Stdlib files: `<cache>/stdlib-<hash>/objectives.post` -> `<stdlib>/objectives.post`.
    while let Some(i) = out.find(&cache) {
        let rest = &out[i + cache.len()..];
        let end = rest
            .strip_prefix("/stdlib-")
            .map_or(0, |r| "/stdlib-".len() + r.find('/').unwrap_or(r.len()));
        out.replace_range(i..i + cache.len() + end, "<stdlib>");
    }
    out
}
