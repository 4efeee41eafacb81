//! A setting written with another framework's name (`num_generations`, TRL's) is E0103 with a
//! help naming post's (`n`), and the editor offers the rename as a quick fix.

#[path = "lsp/harness.rs"]
mod harness;

use serde_json::json;

#[test]
fn a_trl_name_gets_a_rename_quick_fix() {
    let mut client = harness::start(false);
    let uri = harness::uri_of(&std::env::temp_dir().join("quick_fix.post"));
    let text = "experiment e {\n  model policy = preset(\"tiny\")\n  rollout r = sample(policy, num_generations = 8)\n}\n";
    client
        .notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": "post", "version": 1, "text": text } }),
        )
        .expect("didOpen");
    let published = client
        .wait_for("textDocument/publishDiagnostics", |p| p["version"] == 1)
        .expect("diagnostics");
    let diagnostics = published["params"]["diagnostics"].clone();
    let d = diagnostics
        .as_array()
        .expect("a list")
        .iter()
        .find(|d| d["code"] == "E0103")
        .unwrap_or_else(|| panic!("E0103 published: {diagnostics}"))
        .clone();
    assert!(
        d["message"].as_str().unwrap().contains("post calls it `n`"),
        "{d}"
    );
    let r = client
        .request(
            "textDocument/codeAction",
            json!({
                "textDocument": { "uri": uri },
                "range": d["range"],
                "context": { "diagnostics": [d] },
            }),
        )
        .expect("an answer");
    let actions = r["result"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(actions.len(), 1, "{r}");
    let edits = &actions[0]["edit"]["changes"][&uri];
    assert_eq!(edits[0]["newText"], "n", "{r}");
    let start = harness::offset(text, &edits[0]["range"]["start"]);
    let end = harness::offset(text, &edits[0]["range"]["end"]);
    assert_eq!(&text[start..end], "num_generations");
    client.shutdown().expect("shutdown");
}
