//! End-to-end tests of `post check`, `post fmt` and `post compile` as processes: exit codes,
//! output, and hostile inputs (binary garbage, a directory for a file, empty and huge files).

use std::path::PathBuf;
use std::process::{Command, Output};

fn post(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_post"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the post binary runs")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("post-lang-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

#[test]
fn examples_and_stdlib_check_clean() {
    let o = post(&["check", "examples", "stdlib"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn examples_and_stdlib_are_formatted() {
    let o = post(&["fmt", "--check", "examples", "stdlib"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn errors_exit_1_and_usage_errors_exit_2() {
    let bad = scratch("bad.post");
    std::fs::write(
        &bad,
        "experiment e {\n  model policy = preset(\"tiny\")\n  model reference = frozen(polcy)\n}\n",
    )
    .expect("write");
    let o = post(&["check", bad.to_str().expect("utf-8 path")]);
    assert_eq!(code(&o), 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("E0101") && err.contains("did you mean `policy`?"),
        "{err}"
    );
    assert_eq!(code(&post(&["check", "no/such/file.post"])), 2);
    assert_eq!(code(&post(&["check"])), 2);
    assert_eq!(code(&post(&["frobnicate"])), 2);
}

#[test]
fn compile_prints_versioned_graph_and_defaults() {
    let o = post(&["compile", "examples/quickstart.post", "--emit", "graph"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let g = post_graph::Graph::from_json(&String::from_utf8_lossy(&o.stdout)).expect("a graph");
    assert_eq!(g.version, post_graph::GRAPH_VERSION);
    assert_eq!(g.experiment, "quickstart");
    assert!(!g.defaults_applied.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("defaults applied") && err.contains("stage sft.grad_clip = 1"),
        "{err}"
    );
}

#[test]
fn compile_of_a_library_or_directory_fails_cleanly() {
    assert_eq!(code(&post(&["compile", "stdlib/objectives.post"])), 1);
    assert_eq!(code(&post(&["compile", "examples"])), 1);
}

#[test]
fn hostile_files_do_not_panic() {
    let bin = scratch("garbage.post");
    std::fs::write(&bin, [0xffu8, 0xfe, 0x00, 0x80, b'x', 0xc3]).expect("write");
    let o = post(&["check", bin.to_str().expect("utf-8 path")]);
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("E0002"));

    let empty = scratch("empty.post");
    std::fs::write(&empty, "").expect("write");
    assert_eq!(
        code(&post(&["check", empty.to_str().expect("utf-8 path")])),
        0
    );

    let deep = scratch("deep.post");
    std::fs::write(&deep, format!("const x = {}", "[".repeat(100_000))).expect("write");
    let o = post(&["check", deep.to_str().expect("utf-8 path")]);
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("E0004"));

    let huge = scratch("huge.post");
    std::fs::write(
        &huge,
        "// filler\n".repeat(300_000) + "experiment e {\n  seed = \n}\n",
    )
    .expect("write");
    let o = post(&["check", huge.to_str().expect("utf-8 path")]);
    assert_eq!(code(&o), 1);
    for p in [bin, empty, deep, huge] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn fmt_rewrites_files_and_keeps_comments() {
    let f = scratch("messy.post");
    std::fs::write(&f, "// top\nexperiment   e{seed=1   // s\n}\n").expect("write");
    let path = f.to_str().expect("utf-8 path");
    assert_eq!(code(&post(&["fmt", "--check", path])), 1);
    assert_eq!(code(&post(&["fmt", path])), 0);
    let out = std::fs::read_to_string(&f).expect("read back");
    assert_eq!(out, "// top\nexperiment e {\n  seed = 1  // s\n}\n");
    assert_eq!(code(&post(&["fmt", "--check", path])), 0);
    let _ = std::fs::remove_file(f);
}

/// An error at column 70,000: miette's label padding is a formatting width, which Rust limits
/// to 65,535, so `check`, `fmt` and `run` used to panic. Long lines are shown as a window.
#[test]
fn an_error_far_right_on_a_line_is_rendered_not_a_panic() {
    let f = scratch("col70000.post");
    std::fs::write(
        &f,
        format!(
            "experiment e {{\n  model policy = preset(\"tiny\")\n{}seed = = 1\n}}\n",
            " ".repeat(69_993)
        ),
    )
    .expect("write");
    let path = f.to_string_lossy().to_string();
    let out_dir = scratch("col70000-run").to_string_lossy().to_string();
    for args in [
        vec!["check", path.as_str()],
        vec!["fmt", "--check", path.as_str()],
        vec!["run", path.as_str(), "--dry-run", "--out", out_dir.as_str()],
    ] {
        let o = post(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(code(&o), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains("col70000.post:3:70001"), "{args:?}: {err}");
        assert!(err.contains("(column 70001)"), "{args:?}: {err}");
        // The window, not the whole line.
        assert!(err.len() < 5_000, "{args:?}: {} bytes", err.len());
    }
}

const SIZES_HEAD: &str =
    "use std.objectives.{sft, grpo}\n\nexperiment e {\n  model policy = preset(\"tiny\")\n";

fn stage_with(data: &str, batch: &str, extra: &str) -> String {
    format!(
        "{SIZES_HEAD}  data train = {data}\n{extra}  stage s {{\n    data = train\n    steps = 10\n    batch = {batch}\n    objective = sft(train.solution)\n  }}\n}}\n"
    )
}

/// Sizes that used to overflow or abort allocating are refused by `post check`, with the
/// limit in the message; so are data paths that are not regular files and a regex whose
/// compiled program is too large (it took 73 s at run time).
#[test]
fn absurd_sizes_devices_and_huge_patterns_are_refused_by_check() {
    let task = "task(\"arith\", difficulty = 2)";
    let cases = [
        (
            "batch",
            stage_with(task, "4611686018427387904 sequences", ""),
            "is more than the limit of 1048576",
        ),
        (
            "task size",
            stage_with(
                "task(\"arith\", difficulty = 2, size = 1e12)",
                "8 sequences",
                "",
            ),
            "a task of 1000000000000 records is more than the limit of 10000000",
        ),
        (
            "device",
            stage_with(
                "jsonl(\"/dev/zero\", prompt = \"q\", solution = \"a\")",
                "8 sequences",
                "",
            ),
            "is not a regular file (a device, pipe or socket)",
        ),
        (
            "regex",
            stage_with(
                task,
                "8 sequences",
                "  reward r(s) = if matches(s.completion, \"a{100000}\") then 1 else 0\n",
            ),
            "the pattern is too large once compiled",
        ),
    ];
    for (what, src, expected) in cases {
        let f = scratch(&format!("limits-{}.post", what.replace(' ', "-")));
        std::fs::write(&f, src).expect("write");
        let start = std::time::Instant::now();
        // `/dev/zero` lies outside the file's directory: granted, so what is tested is the
        // regular-file check, not the read scope (E0506).
        let o = post(&["check", &f.to_string_lossy(), "--allow-read", "/dev"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(code(&o), 1, "{what}: {err}");
        assert!(err.contains(expected), "{what}: {err}");
        assert!(
            start.elapsed().as_secs() < 10,
            "{what}: {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn version_names_the_graph_format_and_completions_print() {
    let o = post(&["--version"]);
    assert_eq!(code(&o), 0);
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(
        v.contains(&format!("graph format {}", post_graph::GRAPH_VERSION)),
        "{v}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let o = post(&["completions", shell]);
        assert_eq!(code(&o), 0, "{shell}");
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(
            s.contains("compile") && s.contains("allow-read"),
            "{shell}: {s}"
        );
    }
    assert_eq!(code(&post(&["completions", "cmd.exe"])), 2);
}
