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

/// One frame with `body` and a correct `Content-Length`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// The server answers a document-symbol request for `uri` (it is alive and serving).
fn still_serving(client: &mut post_lsp::client::Client, uri: &str, after: &str) {
    let r = client
        .request(
            "textDocument/documentSymbol",
            json!({ "textDocument": { "uri": uri } }),
        )
        .unwrap_or_else(|e| panic!("no answer after {after}: {e}"));
    assert!(r.get("result").is_some(), "after {after}: {r}");
}

#[test]
fn malformed_messages_are_logged_and_the_server_keeps_serving() {
    let mut client = harness::start(false);
    let uri = harness::uri_of(&std::env::temp_dir().join("malformed.post"));
    let text = "experiment e {\n  model policy = preset(\"tiny\")\n}\n";
    client
        .notify("textDocument/didOpen", json!({ "textDocument": { "uri": uri, "languageId": "post", "version": 0, "text": text } }))
        .expect("didOpen");
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("malformed JSON", frame(b"{\"jsonrpc\": \"2.0\", \"method\": ")),
        ("not JSON at all", frame(b"\x00\x01 hello")),
        (
            "invalid UTF-8",
            frame(b"{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":{\"t\":\"\xff\xfe\"}}"),
        ),
        (
            "a non-numeric Content-Length",
            b"Content-Length: twelve\r\n\r\n{\"jsonrpc\":\"2.0\"}".to_vec(),
        ),
        (
            "a missing Content-Length",
            b"Content-Type: application/json\r\n\r\n".to_vec(),
        ),
        ("a header without a colon", b"garbage\r\n".to_vec()),
        (
            "a Content-Length over the limit",
            b"Content-Length: 999999999999999\r\n\r\n".to_vec(),
        ),
        (
            "a Content-Length too short for its body",
            b"Content-Length: 5\r\n\r\n{\"jsonrpc\":\"2.0\",\"method\":\"x\"}".to_vec(),
        ),
        ("a JSON array", frame(b"[1, 2, 3]")),
        (
            "a notification with the wrong parameter types",
            frame(br#"{"jsonrpc":"2.0","method":"textDocument/didChange","params":{"textDocument":5,"contentChanges":"x"}}"#),
        ),
        (
            "an unknown notification",
            frame(br#"{"jsonrpc":"2.0","method":"post/noSuchThing","params":[]}"#),
        ),
    ];
    for (what, bytes) in &bad {
        client.send_raw(bytes).expect("the server reads its input");
        still_serving(&mut client, &uri, what);
    }
    // A request of the wrong shape (a number as its method) is answered, not left waiting.
    client
        .send_raw(&frame(br#"{"jsonrpc":"2.0","id":4242,"method":7}"#))
        .expect("write");
    let r = client
        .wait_for_response(4242)
        .expect("an answer to the malformed request");
    assert_eq!(r["error"]["code"], -32600, "{r}");
    still_serving(&mut client, &uri, "a request with a numeric method");
    let log = client
        .wait_for("window/logMessage", |p| {
            p["message"]
                .as_str()
                .unwrap_or("")
                .contains("ignored malformed input")
        })
        .expect("malformed input is logged");
    assert_eq!(log["params"]["type"], 2, "{log}");
    assert!(client.shutdown().expect("shutdown").success());
}

/// A lone surrogate escape (half an emoji, as some editors send while a buffer is edited) is
/// not a reason to drop the change: it becomes U+FFFD and the buffer stays in step.
#[test]
fn a_lone_surrogate_escape_is_applied_as_a_replacement_character() {
    let mut client = harness::start(false);
    let uri = harness::uri_of(&std::env::temp_dir().join("surrogate.post"));
    let text = "experiment e {\n  model policy = preset(\"tiny\")\n}\n";
    client
        .notify("textDocument/didOpen", json!({ "textDocument": { "uri": uri, "languageId": "post", "version": 0, "text": text } }))
        .expect("didOpen");
    let change = format!(
        r#"{{"jsonrpc":"2.0","method":"textDocument/didChange","params":{{"textDocument":{{"uri":"{uri}","version":1}},"contentChanges":[{{"range":{{"start":{{"line":0,"character":0}},"end":{{"line":0,"character":0}}}},"text":"const  x  =  1 // \ud83d x\n"}}]}}}}"#
    );
    client.send_raw(&frame(change.as_bytes())).expect("write");
    let r = client
        .request(
            "textDocument/formatting",
            json!({ "textDocument": { "uri": uri }, "options": { "tabSize": 2, "insertSpaces": true } }),
        )
        .expect("an answer after the change");
    let edits = r["result"].to_string();
    assert!(
        edits.contains("// \u{fffd} x"),
        "the change was not applied: {r}"
    );
    assert!(client.shutdown().expect("shutdown").success());
}

/// Buffers whose blocks are never closed used to take time exponential in their nesting
/// (4 s at 20 levels, and the server answered nothing meanwhile). At 60 levels exponential time
/// would never finish; each change is answered well within the bound.
#[test]
fn unclosed_blocks_are_answered_quickly_on_every_change() {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_post"));
    cmd.arg("lsp").env("POST_LSP_CACHE", harness::cache_dir());
    let mut client =
        post_lsp::client::Client::spawn(cmd, json!({ "debounceMs": 0 })).expect("post lsp starts");
    let uri = harness::uri_of(&std::env::temp_dir().join("unclosed.post"));
    let mut text = String::from("experiment e {\n  model policy = preset(\"tiny\")\n");
    for i in 0..60 {
        text.push_str(&format!("  stage s{i} {{\n    steps = 10\n"));
    }
    client
        .notify("textDocument/didOpen", json!({ "textDocument": { "uri": uri, "languageId": "post", "version": 0, "text": text } }))
        .expect("didOpen");
    client
        .wait_for("textDocument/publishDiagnostics", |p| p["version"] == 0)
        .expect("diagnostics of the unclosed buffer");
    let mut slowest = std::time::Duration::ZERO;
    for version in 1..=10 {
        let line = 2 + 2 * version;
        let start = std::time::Instant::now();
        client
            .notify(
                "textDocument/didChange",
                json!({ "textDocument": { "uri": uri, "version": version }, "contentChanges": [
                    { "range": { "start": { "line": line, "character": 0 }, "end": { "line": line, "character": 0 } }, "text": "    seed = 1\n" }
                ] }),
            )
            .expect("didChange");
        let d = client
            .wait_for("textDocument/publishDiagnostics", |p| {
                p["version"] == version
            })
            .expect("diagnostics after the change");
        slowest = slowest.max(start.elapsed());
        let messages = d["params"]["diagnostics"].to_string();
        assert!(messages.contains("is never closed"), "{messages}");
        let r = client
            .request(
                "textDocument/hover",
                json!({ "textDocument": { "uri": uri }, "position": { "line": 1, "character": 9 } }),
            )
            .expect("hover");
        assert!(r.get("result").is_some(), "{r}");
    }
    // 100 ms is the target (measured in the report); 1 s keeps a loaded CI machine green
    // while exponential time (2^60 steps) could never meet it.
    assert!(
        slowest < std::time::Duration::from_secs(1),
        "slowest change took {slowest:?}"
    );
    assert!(client.shutdown().expect("shutdown").success());
}
