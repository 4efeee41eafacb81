//! LSP fixture tests: each `tests/lsp/fixtures/*.post` is opened in a real `post lsp` process
//! and its requests are answered; the rendered answers (cursor drawn in) are insta snapshots
//! in `tests/lsp/snapshots/`.
//!
//! Fixture format (marker lines are removed before the text is sent):
//! - `//      ^ hover` under a source line: a request at the caret's column of the line above.
//!   Requests: `hover`, `definition`, `references`, `rename NEW`, `prepare-rename`,
//!   `completion [PREFIX]` (only labels starting with PREFIX are shown), `signature`.
//! - `// @ diagnostics`, `// @ symbols`, `// @ format`, `// @ tokens`: whole-document requests.
//! - `// @ change OLD => NEW`: edit the buffer (the first OLD becomes NEW) before the
//!   following document requests; carets always refer to the original text.

#[path = "lsp/harness.rs"]
mod harness;

use std::fmt::Write as _;
use std::path::Path;

use harness::{draw, position, redact, start, uri_of};
use serde_json::{Value, json};

enum Cmd {
    At {
        offset: usize,
        op: String,
        arg: String,
    },
    Doc {
        op: String,
        arg: String,
    },
}

fn parse_fixture(raw: &str) -> (String, Vec<Cmd>) {
    let mut text = String::new();
    let mut cmds = Vec::new();
    let mut prev_line_start: Option<usize> = None;
    for line in raw.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("// @ ") {
            let rest = rest.trim_end();
            let (op, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            cmds.push(Cmd::Doc {
                op: op.into(),
                arg: arg.into(),
            });
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("//")
            && rest.trim_start().starts_with('^')
        {
            let caret_col = line.chars().take_while(|c| *c != '^').count();
            let request = rest.trim_start().trim_start_matches('^').trim();
            let (op, arg) = request.split_once(' ').unwrap_or((request, ""));
            let start = prev_line_start.expect("a caret line follows a source line");
            let target = &text[start..];
            let offset = start
                + target
                    .char_indices()
                    .nth(caret_col)
                    .map_or(target.trim_end_matches('\n').len(), |(i, _)| i);
            cmds.push(Cmd::At {
                offset,
                op: op.into(),
                arg: arg.into(),
            });
            continue;
        }
        prev_line_start = Some(text.len());
        text.push_str(line);
    }
    (text, cmds)
}

fn location_text(loc: &Value, doc_uri: &str, text: &str, fixtures: &Path) -> String {
    let uri = loc["uri"].as_str().unwrap_or("");
    let range = &loc["range"];
    let body = if uri == doc_uri {
        draw(text, range)
    } else {
        let path = post_lsp::uri::to_path(uri).expect("a file URI");
        let other = std::fs::read_to_string(&path).expect("the target file exists");
        draw(&other, range)
    };
    format!("{}\n{body}", redact(uri, fixtures))
}

fn show_range(r: &Value) -> String {
    format!(
        "{}:{}-{}:{}",
        r["start"]["line"].as_u64().unwrap_or(0) + 1,
        r["start"]["character"].as_u64().unwrap_or(0) + 1,
        r["end"]["line"].as_u64().unwrap_or(0) + 1,
        r["end"]["character"].as_u64().unwrap_or(0) + 1
    )
}

fn apply_edits(text: &str, edits: &[Value]) -> String {
    let mut spans: Vec<(usize, usize, String)> = edits
        .iter()
        .map(|e| {
            (
                harness::offset(text, &e["range"]["start"]),
                harness::offset(text, &e["range"]["end"]),
                e["newText"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    spans.sort_by_key(|s| std::cmp::Reverse(s.0));
    let mut out = text.to_string();
    for (a, b, t) in spans {
        out.replace_range(a..b, &t);
    }
    out
}

fn changed_lines(before: &str, after: &str) -> String {
    let mut s = String::new();
    for (i, (a, b)) in before.lines().zip(after.lines()).enumerate() {
        if a != b {
            let _ = writeln!(s, "{:4} - {a}\n{:4} + {b}", i + 1, i + 1);
        }
    }
    s
}

fn render_markup(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    }
}

fn run_fixture(path: &Path) -> String {
    let fixtures = path.parent().expect("fixtures directory");
    let raw = std::fs::read_to_string(path).expect("fixture readable");
    let (mut text, cmds) = parse_fixture(&raw);
    let original = text.clone();
    let uri = uri_of(path);
    let mut client = start(false);
    client
        .notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": "post", "version": 0, "text": text } }),
        )
        .expect("didOpen");
    let mut version = 0;
    let mut out = String::new();
    let doc = json!({ "uri": uri });
    for cmd in cmds {
        match cmd {
            Cmd::At { offset, op, arg } => {
                let pos = position(&original, offset);
                let cursor = json!({ "start": pos, "end": pos });
                let _ = writeln!(
                    out,
                    "== {op}{}{} at {} ==",
                    if arg.is_empty() { "" } else { " " },
                    arg,
                    show_range(&cursor).split('-').next().unwrap_or("")
                );
                let _ = writeln!(out, "{}", draw(&original, &cursor));
                let params = json!({ "textDocument": doc, "position": pos });
                let body = match op.as_str() {
                    "hover" => {
                        let r = client.request("textDocument/hover", params).expect("hover");
                        match r["result"].as_object() {
                            Some(h) => format!(
                                "range {}\n{}",
                                show_range(&h["range"]),
                                render_markup(&h["contents"])
                            ),
                            None => "(no hover)".into(),
                        }
                    }
                    "definition" => {
                        let r = client
                            .request("textDocument/definition", params)
                            .expect("definition");
                        match &r["result"] {
                            Value::Null => "(no definition)".into(),
                            loc => location_text(loc, &uri, &text, fixtures),
                        }
                    }
                    "references" => {
                        let mut p = params;
                        p["context"] = json!({ "includeDeclaration": true });
                        let r = client
                            .request("textDocument/references", p)
                            .expect("references");
                        let locs = r["result"].as_array().cloned().unwrap_or_default();
                        if locs.is_empty() {
                            "(no references)".into()
                        } else {
                            locs.iter()
                                .map(|l| location_text(l, &uri, &text, fixtures))
                                .collect::<Vec<_>>()
                                .join("\n")
                        }
                    }
                    "prepare-rename" => {
                        let r = client
                            .request("textDocument/prepareRename", params)
                            .expect("prepareRename");
                        match r.get("error") {
                            Some(e) => format!("error: {}", e["message"].as_str().unwrap_or("")),
                            None => draw(&text, &r["result"]),
                        }
                    }
                    "rename" => {
                        let mut p = params;
                        p["newName"] = json!(arg);
                        let r = client.request("textDocument/rename", p).expect("rename");
                        match r.get("error") {
                            Some(e) => format!("error: {}", e["message"].as_str().unwrap_or("")),
                            None => {
                                let edits = r["result"]["changes"][&uri]
                                    .as_array()
                                    .cloned()
                                    .unwrap_or_default();
                                format!(
                                    "{} edits\n{}",
                                    edits.len(),
                                    changed_lines(&text, &apply_edits(&text, &edits))
                                )
                            }
                        }
                    }
                    "completion" => {
                        let r = client
                            .request("textDocument/completion", params)
                            .expect("completion");
                        let mut items =
                            r["result"]["items"].as_array().cloned().unwrap_or_default();
                        items.sort_by_key(|i| i["sortText"].as_str().unwrap_or("").to_string());
                        let lines: Vec<String> = items
                            .iter()
                            // As a client does: keep items whose filter text starts with the word
                            // typed before the cursor (and with the fixture's PREFIX).
                            .filter(|i| {
                                let filter = i["filterText"]
                                    .as_str()
                                    .or(i["label"].as_str())
                                    .unwrap_or("");
                                let start =
                                    harness::offset(&text, &i["textEdit"]["range"]["start"]);
                                let typed = text.get(start..offset.max(start)).unwrap_or("");
                                filter.starts_with(typed)
                                    && i["label"].as_str().unwrap_or("").starts_with(arg.as_str())
                            })
                            .map(|i| {
                                let mut l = i["label"].as_str().unwrap_or("").to_string();
                                if let Some(d) = i["detail"].as_str() {
                                    let _ = write!(l, "  — {d}");
                                }
                                if let Some(e) = i["additionalTextEdits"].as_array() {
                                    for e in e {
                                        let _ = write!(
                                            l,
                                            "  [+ {:?} at {}]",
                                            e["newText"].as_str().unwrap_or(""),
                                            show_range(&e["range"])
                                        );
                                    }
                                }
                                l
                            })
                            .collect();
                        if lines.is_empty() {
                            "(no completions)".into()
                        } else {
                            lines.join("\n")
                        }
                    }
                    "signature" => {
                        let r = client
                            .request("textDocument/signatureHelp", params)
                            .expect("signatureHelp");
                        match r["result"]["signatures"].get(0) {
                            None => "(no signature)".into(),
                            Some(sig) => {
                                let label = sig["label"].as_str().unwrap_or("");
                                let active = sig["activeParameter"].as_u64();
                                let marked =
                                    match active.and_then(|a| sig["parameters"].get(a as usize)) {
                                        Some(p) => {
                                            let utf16: Vec<u16> = label.encode_utf16().collect();
                                            let a = p["label"][0].as_u64().unwrap_or(0) as usize;
                                            let b = p["label"][1].as_u64().unwrap_or(0) as usize;
                                            format!(
                                                "{}[{}]{}",
                                                String::from_utf16_lossy(&utf16[..a]),
                                                String::from_utf16_lossy(&utf16[a..b]),
                                                String::from_utf16_lossy(&utf16[b..])
                                            )
                                        }
                                        None => label.to_string(),
                                    };
                                format!("{marked}\nactive parameter: {active:?}")
                            }
                        }
                    }
                    other => panic!("unknown request `{other}` in {}", path.display()),
                };
                let _ = writeln!(out, "{}\n", redact(&body, fixtures));
            }
            Cmd::Doc { op, arg } => {
                let _ = writeln!(
                    out,
                    "== {op}{}{} ==",
                    if arg.is_empty() { "" } else { " " },
                    arg
                );
                let body = match op.as_str() {
                    "change" => {
                        let (old, new) = arg.split_once(" =>").expect("change OLD => NEW");
                        let new = new.strip_prefix(' ').unwrap_or(new);
                        let at = text.find(old).expect("the text to change exists");
                        let range = json!({ "start": position(&text, at), "end": position(&text, at + old.len()) });
                        version += 1;
                        client
                            .notify(
                                "textDocument/didChange",
                                json!({ "textDocument": { "uri": uri, "version": version }, "contentChanges": [{ "range": range, "text": new }] }),
                            )
                            .expect("didChange");
                        text.replace_range(at..at + old.len(), new);
                        format!("version {version}")
                    }
                    "diagnostics" => {
                        let v = version;
                        let n = client
                            .wait_for("textDocument/publishDiagnostics", |p| {
                                p["uri"] == uri.as_str() && p["version"] == v
                            })
                            .expect("diagnostics");
                        let diags = n["params"]["diagnostics"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default();
                        if diags.is_empty() {
                            "(no diagnostics)".into()
                        } else {
                            let mut s = String::new();
                            for d in diags {
                                let sev = match d["severity"].as_u64() {
                                    Some(1) => "error",
                                    Some(2) => "warning",
                                    _ => "info",
                                };
                                let _ = writeln!(
                                    s,
                                    "{sev}[{}] {}: {}",
                                    d["code"].as_str().unwrap_or(""),
                                    show_range(&d["range"]),
                                    d["message"].as_str().unwrap_or("")
                                );
                                let _ = writeln!(s, "{}", draw(&text, &d["range"]));
                                for r in d["relatedInformation"].as_array().into_iter().flatten() {
                                    let _ = writeln!(
                                        s,
                                        "  related: {}\n{}",
                                        r["message"].as_str().unwrap_or(""),
                                        draw(&text, &r["location"]["range"])
                                    );
                                }
                            }
                            s
                        }
                    }
                    "symbols" => {
                        let r = client
                            .request(
                                "textDocument/documentSymbol",
                                json!({ "textDocument": doc }),
                            )
                            .expect("documentSymbol");
                        fn walk(v: &Value, depth: usize, s: &mut String) {
                            for sym in v.as_array().into_iter().flatten() {
                                let _ = writeln!(
                                    s,
                                    "{}{} (kind {}) {}{}",
                                    "  ".repeat(depth),
                                    sym["name"].as_str().unwrap_or(""),
                                    sym["kind"],
                                    show_range(&sym["selectionRange"]),
                                    sym["detail"]
                                        .as_str()
                                        .map(|d| format!(" — {d}"))
                                        .unwrap_or_default()
                                );
                                walk(&sym["children"], depth + 1, s);
                            }
                        }
                        let mut s = String::new();
                        walk(&r["result"], 0, &mut s);
                        s
                    }
                    "format" => {
                        let r = client
                            .request("textDocument/formatting", json!({ "textDocument": doc, "options": { "tabSize": 2, "insertSpaces": true } }))
                            .expect("formatting");
                        match r.get("error") {
                            Some(e) => format!("error: {}", e["message"].as_str().unwrap_or("")),
                            None => {
                                let edits = r["result"].as_array().cloned().unwrap_or_default();
                                if edits.is_empty() {
                                    "(already formatted)".into()
                                } else {
                                    apply_edits(&text, &edits)
                                }
                            }
                        }
                    }
                    "tokens" => {
                        let r = client
                            .request(
                                "textDocument/semanticTokens/full",
                                json!({ "textDocument": doc }),
                            )
                            .expect("semanticTokens");
                        let data: Vec<u64> = r["result"]["data"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_u64)
                            .collect();
                        const TYPES: &[&str] = &[
                            "keyword",
                            "comment",
                            "string",
                            "number",
                            "operator",
                            "function",
                            "variable",
                            "parameter",
                            "property",
                            "type",
                            "namespace",
                            "enumMember",
                        ];
                        let mut s = String::new();
                        let (mut line, mut col) = (0u64, 0u64);
                        for t in data.chunks(5) {
                            let [dl, ds, len, ty, mods] = [t[0], t[1], t[2], t[3], t[4]];
                            line += dl;
                            col = if dl == 0 { col + ds } else { ds };
                            let start = json!({ "line": line, "character": col });
                            let end = json!({ "line": line, "character": col + len });
                            let a = harness::offset(&text, &start);
                            let b = harness::offset(&text, &end);
                            let mut m = Vec::new();
                            if mods & 1 != 0 {
                                m.push("declaration");
                            }
                            if mods & 2 != 0 {
                                m.push("defaultLibrary");
                            }
                            let _ = writeln!(
                                s,
                                "{}:{} {:?} {}{}",
                                line + 1,
                                col + 1,
                                &text[a..b],
                                TYPES.get(ty as usize).unwrap_or(&"?"),
                                if m.is_empty() {
                                    String::new()
                                } else {
                                    format!(" +{}", m.join(" +"))
                                }
                            );
                        }
                        s
                    }
                    other => panic!("unknown document request `{other}` in {}", path.display()),
                };
                let _ = writeln!(out, "{}\n", redact(body.trim_end(), fixtures));
            }
        }
    }
    let status = client.shutdown().expect("shutdown");
    assert!(status.success(), "post lsp exited with {status}");
    out
}

#[test]
fn lsp_fixtures() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("lsp/snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        insta::glob!("lsp/fixtures/*.post", |path| {
            insta::assert_snapshot!(run_fixture(path));
        });
    });
}
