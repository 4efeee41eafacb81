//! Checkpoint drills: a byte flipped in any file of the newest checkpoint, or a re-sealed
//! checkpoint whose state does not describe this run, makes `--resume` fall back to the
//! previous checkpoint and say which and why; with no good checkpoint it refuses. Retention
//! keeps the newest `keep_checkpoints` plus the best.

mod train_support;

use std::path::{Path, PathBuf};

use post_graph::Graph;
use post_runtime::checkpoint::manifest;
use post_runtime::exec::{Refusal, RunError, RunOptions, RunOutcome, run, run_with_log};
use post_runtime::output::{StepRecord, read_metrics};
use train_support::*;

fn spec() -> SftSpec {
    SftSpec {
        difficulty: 1,
        train_size: 32,
        test_size: 4,
        steps: 6,
        batch: 4,
        eval_every: 3,
        eval_limit: Some(2),
        max_tokens: 8,
        checkpoint_every: 2,
        keep_checkpoints: 10,
        ..SftSpec::default()
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// Everything but wall-clock measurements.
fn deterministic(mut r: Vec<StepRecord>) -> Vec<StepRecord> {
    for x in &mut r {
        x.tokens_per_s = None;
        x.step_s = None;
    }
    r
}

/// A finished run with checkpoints at steps 2, 4 and 6 (built once per test).
fn finished_run(tag: &str) -> (Graph, PathBuf) {
    let graph = sft_graph(&spec());
    let dir = temp_dir(tag);
    let outcome = run(&graph, &RunOptions::new(&dir)).unwrap();
    assert!(matches!(outcome, RunOutcome::Finished(_)));
    (graph, dir)
}

/// Resume `dir`, returning the outcome and every log line.
fn resume(graph: &Graph, dir: &Path) -> (Result<RunOutcome, RunError>, Vec<String>) {
    let mut opts = RunOptions::new(dir);
    opts.resume = Some(dir.to_path_buf());
    let mut lines = Vec::new();
    let r = run_with_log(graph, &opts, &mut |m: &str| lines.push(m.to_string()));
    (r, lines)
}

fn flip(path: &Path, at: impl Fn(usize) -> usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = at(bytes.len());
    bytes[i] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// Rewrite `state.json` of `ckpt` through `edit` and re-seal its manifest, as a buggy writer
/// would have: the bytes verify, the meaning does not.
fn edit_state(ckpt: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = ckpt.join("state.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    manifest::write(ckpt).unwrap();
}

/// Damage the newest checkpoint (step 6) of a copy of `base` and resume: the run falls back to
/// step 4, says why, and ends with the uninterrupted run's metrics.
fn falls_back(graph: &Graph, base: &Path, tag: &str, damage: impl FnOnce(&Path), why: &[&str]) {
    let dir = temp_dir(tag);
    copy_tree(base, &dir);
    damage(&dir.join("checkpoints/step-000006"));
    let (r, lines) = resume(graph, &dir);
    let log = lines.join("\n");
    assert!(
        matches!(r, Ok(RunOutcome::Finished(_))),
        "{tag}: {r:?}\n{log}"
    );
    assert!(
        log.contains("step-000006") && why.iter().all(|w| log.contains(w)),
        "{tag}: {log}"
    );
    assert!(
        log.contains("falling back to checkpoint") && log.contains("step-000004 (step 4)"),
        "{tag}: {log}"
    );
    let want = deterministic(read_metrics(&base.join("metrics.jsonl")).unwrap());
    let got = deterministic(read_metrics(&dir.join("metrics.jsonl")).unwrap());
    assert_eq!(got, want, "{tag}: history lost or changed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_flipped_byte_in_any_file_falls_back_to_the_previous_checkpoint() {
    let (graph, base) = finished_run("ckpt-flip");
    let near_end = |n: usize| n - 5;
    falls_back(
        &graph,
        &base,
        "flip-weights",
        |c| flip(&c.join("policy/model.safetensors"), near_end),
        &["model.safetensors", "checksum mismatch"],
    );
    falls_back(
        &graph,
        &base,
        "flip-optimizer",
        |c| flip(&c.join("optimizer.safetensors"), near_end),
        &["optimizer.safetensors", "checksum mismatch"],
    );
    falls_back(
        &graph,
        &base,
        "flip-state",
        |c| flip(&c.join("state.json"), |n| n / 2),
        &["state.json", "checksum mismatch"],
    );
    falls_back(
        &graph,
        &base,
        "flip-metrics",
        |c| flip(&c.join("metrics.jsonl"), |n| n / 2),
        &["metrics.jsonl", "checksum mismatch"],
    );
    falls_back(
        &graph,
        &base,
        "flip-manifest",
        |c| {
            let p = c.join("manifest.json");
            let text = std::fs::read_to_string(&p).unwrap();
            let at = text.find("\"sha256\": \"").unwrap() + 11;
            flip(&p, |_| at);
        },
        &["checksum mismatch"],
    );
    falls_back(
        &graph,
        &base,
        "missing-manifest",
        |c| std::fs::remove_file(c.join("manifest.json")).unwrap(),
        &["manifest.json is missing"],
    );
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_resealed_state_that_does_not_fit_the_graph_falls_back() {
    let (graph, base) = finished_run("ckpt-state");
    falls_back(
        &graph,
        &base,
        "no-models",
        |c| edit_state(c, |v| v["models"] = serde_json::json!([])),
        &["model `policy` is not in the checkpoint"],
    );
    falls_back(
        &graph,
        &base,
        "stage-index",
        |c| edit_state(c, |v| v["stage_index"] = serde_json::json!(7)),
        &["stage_index 7 is not a training stage of this graph (1 stage)"],
    );
    falls_back(
        &graph,
        &base,
        "global-step",
        |c| edit_state(c, |v| v["global_step"] = serde_json::json!(3)),
        &["global_step 3"],
    );
    falls_back(
        &graph,
        &base,
        "empty-metrics",
        |c| {
            std::fs::write(c.join("metrics.jsonl"), b"").unwrap();
            manifest::write(c).unwrap();
        },
        &["metrics.jsonl holds 0 records; step 6 of this graph has written 7"],
    );
    falls_back(
        &graph,
        &base,
        "latest-dangling",
        |c| std::fs::remove_dir_all(c).unwrap(),
        &["names `step-000006`, which does not exist"],
    );
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn no_good_checkpoint_refuses_naming_each() {
    let (graph, dir) = finished_run("ckpt-none");
    for step in [2, 4, 6] {
        let c = dir.join(format!("checkpoints/step-{step:06}"));
        flip(&c.join("state.json"), |n| n / 2);
    }
    let (r, lines) = resume(&graph, &dir);
    let err = r.unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::Resume));
    let msg = err.to_string();
    assert!(msg.contains("no usable checkpoint"), "{msg}");
    for step in [2, 4, 6] {
        assert!(msg.contains(&format!("step-{step:06}")), "{msg}");
    }
    assert_eq!(
        lines.iter().filter(|l| l.contains("is not usable")).count(),
        3,
        "{lines:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retention_keeps_the_newest_and_the_best() {
    let mut s = spec();
    s.steps = 8;
    s.checkpoint_every = 1;
    s.keep_checkpoints = 2;
    s.eval_every = 2;
    let graph = sft_graph(&s);
    let dir = temp_dir("ckpt-keep");
    run(&graph, &RunOptions::new(&dir)).unwrap();
    // The best accuracy among checkpoints written where it was evaluated (2, 4, 6, 8),
    // earliest on ties, read back from the metrics independently of the runtime.
    let records = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    let mut best: Option<(u64, f64)> = None;
    for r in records.iter().filter(|r| r.step > 0) {
        if let Some(&v) = r.eval.get("accuracy")
            && best.is_none_or(|(_, b)| v > b)
        {
            best = Some((r.step, v));
        }
    }
    let best = best.unwrap().0;
    let mut want = vec![7, 8, best];
    want.sort_unstable();
    want.dedup();
    let mut left: Vec<u64> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("step-").map(|n| n.parse().unwrap())
        })
        .collect();
    left.sort_unstable();
    assert_eq!(left, want);
    assert_eq!(
        std::fs::read_to_string(dir.join("checkpoints/latest")).unwrap(),
        "step-000008"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
