//! No request crashes `post lsp`: garbage buffers, positions far past the end, unknown
//! methods, malformed parameters, and a handler that panics (the `post/panic` test hook) all get
//! an answer, and the server keeps serving afterwards.

#[path = "lsp/harness.rs"]
mod harness;

use serde_json::{Value, json};

const METHODS: &[&str] = &[
    "textDocument/hover",
    "textDocument/completion",
    "textDocument/signatureHelp",
    "textDocument/definition",
    "textDocument/references",
    "textDocument/prepareRename",
    "textDocument/rename",
];

fn params(uri: &str, line: u64, character: u64) -> Value {
    json!({
        "textDocument": { "uri": uri },
        "position": { "line": line, "character": character },
        "context": { "includeDeclaration": true },
        "newName": "x",
    })
}

/// A buffer of everything at once: binary junk, unbalanced brackets, deep nesting, broken
/// strings, huge numbers, non-ASCII.
fn garbage() -> String {
    let mut s = String::from("experiment \u{0}\u{7f} {{{ ((( [[[ \"unterminated\n");
    s.push_str("model = = = (((( 1e999999 tokens tokens\n");
    s.push_str(&"(".repeat(500));
    s.push_str("\nstage s { batch = 😀 prompts, objective = sft(\n");
    s.push_str("reward r(s) = s.\u{feff}.. match { => } if then else\n");
    s.push_str(&"}".repeat(50));
    s.push_str("\n\u{1F600}\u{0301}é\r\n\t use std..{,,}\n");
    s
}

#[test]
fn garbage_and_out_of_range_positions_are_answered() {
    let mut client = harness::start(false);
    let dir = std::env::temp_dir();
    let uri = harness::uri_of(&dir.join("garbage.post"));
    let text = garbage();
    client
        .notify("textDocument/didOpen", json!({ "textDocument": { "uri": uri, "languageId": "post", "version": 0, "text": text } }))
        .expect("didOpen");
    let lines = text.lines().count() as u64;
    let positions = [
        (0, 0),
        (1, 3),
        (lines, 0),
        (lines + 1000, 5),
        (2, 100_000),
        (u32::MAX as u64, u32::MAX as u64),
        (3, 250),
    ];
    for method in METHODS {
        for (l, c) in positions {
            let r = client
                .request(method, params(&uri, l, c))
                .expect("an answer");
            assert!(
                r.get("result").is_some() || r.get("error").is_some(),
                "{method} {l}:{c}: {r}"
            );
            if let Some(e) = r.get("error") {
                // Errors are deliberate refusals (e.g. nothing to rename), never internal ones.
                assert_ne!(e["code"], -32603, "{method} {l}:{c} failed internally: {e}");
            }
        }
    }
    for method in [
        "textDocument/documentSymbol",
        "textDocument/semanticTokens/full",
        "textDocument/formatting",
    ] {
        let r = client
            .request(method, json!({ "textDocument": { "uri": uri }, "options": { "tabSize": 2, "insertSpaces": true } }))
            .expect("an answer");
        if let Some(e) = r.get("error") {
            assert_ne!(e["code"], -32603, "{method} failed internally: {e}");
        }
    }
    // Edits with ranges past the end are clamped, not fatal.
    client
        .notify(
            "textDocument/didChange",
            json!({ "textDocument": { "uri": uri, "version": 1 }, "contentChanges": [
                { "range": { "start": { "line": 9999, "character": 9999 }, "end": { "line": 0, "character": 0 } }, "text": "é😀" },
                { "range": { "start": { "line": 0, "character": 3 }, "end": { "line": 0, "character": 4 } }, "text": "" }
            ] }),
        )
        .expect("didChange");
    let d = client
        .wait_for("textDocument/publishDiagnostics", |p| p["version"] == 1)
        .expect("diagnostics after the change");
    assert!(
        d["params"]["diagnostics"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    // Unknown documents, unknown methods, malformed parameters.
    let r = client
        .request("textDocument/hover", params("file:///nowhere.post", 0, 0))
        .expect("answer");
    assert!(r.get("error").is_some(), "{r}");
    let r = client
        .request("post/noSuchMethod", json!({}))
        .expect("answer");
    assert_eq!(r["error"]["code"], -32601);
    let r = client
        .request("textDocument/hover", json!({ "nonsense": true }))
        .expect("answer");
    assert_eq!(r["error"]["code"], -32602);
    // Still serving.
    let r = client
        .request(
            "textDocument/documentSymbol",
            json!({ "textDocument": { "uri": uri } }),
        )
        .expect("answer");
    assert!(r.get("result").is_some(), "{r}");
    assert!(client.shutdown().expect("shutdown").success());
}

#[test]
fn a_panicking_handler_is_reported_and_the_server_keeps_serving() {
    let mut client = harness::start(true);
    let uri = harness::uri_of(&std::env::temp_dir().join("panic.post"));
    let text = "experiment e {\n  model policy = preset(\"tiny\")\n}\n";
    client
        .notify("textDocument/didOpen", json!({ "textDocument": { "uri": uri, "languageId": "post", "version": 0, "text": text } }))
        .expect("didOpen");
    for _ in 0..3 {
        let r = client
            .request("post/panic", json!({}))
            .expect("an answer to the panicking request");
        assert_eq!(r["error"]["code"], -32603, "{r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("deliberate panic"),
            "{r}"
        );
        let log = client
            .wait_for("window/logMessage", |p| {
                p["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("deliberate panic")
            })
            .expect("the panic is logged");
        assert_eq!(log["params"]["type"], 1);
    }
    let r = client
        .request(
            "textDocument/hover",
            json!({ "textDocument": { "uri": uri }, "position": { "line": 1, "character": 19 } }),
        )
        .expect("hover after the panics");
    assert!(
        r["result"]["contents"]["value"]
            .as_str()
            .unwrap_or("")
            .contains("preset("),
        "{r}"
    );
    assert!(client.shutdown().expect("shutdown").success());
}

#[test]
fn the_panic_hook_is_off_by_default() {
    let mut client = harness::start(false);
    let r = client.request("post/panic", json!({})).expect("answer");
    assert_eq!(r["error"]["code"], -32601, "{r}");
    assert!(client.shutdown().expect("shutdown").success());
}
