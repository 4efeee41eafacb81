//! A `.post` file reads only under its own directory and the directories `--allow-read` grants
//! (E0506), after `..` and symbolic links are resolved; a graph JSON run directly gets the same
//! scope; `post compile --emit paths` lists what a run reads and writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn post(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_post"))
        .args(args)
        .output()
        .expect("the post binary runs")
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `<tmp>/exp/` holds the experiments, `<tmp>/outside/d.jsonl` the data they should not reach.
fn layout(name: &str) -> (PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("post-read-scope-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let exp = root.join("exp");
    let outside = root.join("outside");
    std::fs::create_dir_all(&exp).expect("dir");
    std::fs::create_dir_all(&outside).expect("dir");
    let mut data = String::new();
    for i in 0..8 {
        data.push_str(&format!(
            "{{\"prompt\": \"{i}+1=\", \"solution\": \"{}\"}}\n",
            i + 1
        ));
    }
    std::fs::write(outside.join("d.jsonl"), &data).expect("write");
    std::fs::write(exp.join("inside.jsonl"), &data).expect("write");
    (exp, outside)
}

fn experiment(data_path: &str) -> String {
    format!(
        "use std.objectives.{{sft}}\n\nexperiment e {{\n  model policy = preset(\"tiny\")\n  data train = jsonl(\"{data_path}\")\n  stage s {{\n    data = train\n    steps = 1\n    batch = 2 sequences\n    objective = sft(train.solution)\n  }}\n}}\n"
    )
}

#[test]
fn a_path_up_and_out_is_refused_unless_granted() {
    let (exp, outside) = layout("up");
    let f = exp.join("e.post");
    std::fs::write(&f, experiment("../outside/d.jsonl")).expect("write");
    let o = post(&["check", s(&f)]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("E0506") && err(&o).contains("--allow-read"),
        "{}",
        err(&o)
    );
    let o = post(&["check", s(&f), "--allow-read", s(&outside)]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    // Inside its own directory needs no grant, however it is spelled.
    std::fs::create_dir_all(exp.join("sub")).expect("dir");
    std::fs::write(&f, experiment("./sub/../inside.jsonl")).expect("write");
    let o = post(&["check", s(&f)]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
}

#[test]
fn a_symlink_out_of_the_directory_is_refused() {
    let (exp, outside) = layout("link");
    std::os::unix::fs::symlink(&outside, exp.join("link")).expect("symlink");
    let f = exp.join("e.post");
    std::fs::write(&f, experiment("link/d.jsonl")).expect("write");
    let o = post(&["check", s(&f)]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("E0506") && err(&o).contains("resolves to"),
        "{}",
        err(&o)
    );
    let o = post(&["run", s(&f), "--dry-run"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("E0506"), "{}", err(&o));
}

#[test]
fn a_graph_json_gets_the_same_scope() {
    let (exp, outside) = layout("json");
    let f = exp.join("e.post");
    std::fs::write(&f, experiment("../outside/d.jsonl")).expect("write");
    let g = exp.join("g.json");
    let o = post(&[
        "compile",
        s(&f),
        "--allow-read",
        s(&outside),
        "--emit",
        "graph",
        "-o",
        s(&g),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let o = post(&["run", s(&g), "--dry-run"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("dataset `train`") && err(&o).contains("outside the directories"),
        "{}",
        err(&o)
    );
    let o = post(&["run", s(&g), "--dry-run", "--allow-read", s(&outside)]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
}

#[test]
fn emit_paths_lists_reads_and_writes() {
    let (exp, _) = layout("emit");
    let f = exp.join("e.post");
    std::fs::write(&f, experiment("inside.jsonl")).expect("write");
    let o = post(&["compile", s(&f), "--emit", "paths"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let reads = v["reads"].as_array().expect("reads");
    assert_eq!(reads.len(), 1, "{v}");
    assert_eq!(reads[0]["path"], s(&exp.join("inside.jsonl")));
    assert!(
        reads[0]["what"]
            .as_str()
            .unwrap()
            .contains("dataset `train`")
    );
    let writes: Vec<&str> = v["writes"]
        .as_array()
        .expect("writes")
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert!(writes.contains(&"<out>/metrics.jsonl"), "{writes:?}");
}
