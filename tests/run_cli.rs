//! End-to-end tests of `post run`: a graph JSON runs and writes metrics, summary, plot and
//! checkpoints; `--stop-after` then `--resume` reproduces an uninterrupted run; a malformed
//! JSONL line is reported with file:line before training; quickstart.post compiles and runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use post_graph::*;

fn post(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_post"))
        .args(args)
        .output()
        .expect("the post binary runs")
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("post-run-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A small SFT graph on 1-digit addition with a greedy accuracy eval.
fn small_graph(steps: u64, data: DataSource) -> Graph {
    let correct = RExpr::If {
        cond: Box::new(RExpr::Binary {
            op: RBinary::Eq,
            lhs: Box::new(RExpr::Call {
                func: RFunc::Answer {
                    marker: "####".into(),
                },
                args: vec![RExpr::Completion],
            }),
            rhs: Box::new(RExpr::Field {
                name: "answer".into(),
            }),
        }),
        then: Box::new(RExpr::Num { value: 1.0 }),
        otherwise: Box::new(RExpr::Num { value: 0.0 }),
    };
    Graph {
        version: GRAPH_VERSION,
        experiment: "cli_small".into(),
        seed: 3,
        models: vec![ModelNode {
            name: "policy".into(),
            source: ModelSource::Preset {
                preset: "tiny".into(),
                config: post_runtime::model::presets::tiny(),
                init: None,
                trained: None,
            },
        }],
        datasets: vec![
            DataNode {
                name: "train".into(),
                source: data,
                transforms: vec![],
            },
            DataNode {
                name: "test".into(),
                source: DataSource::Task {
                    task: "arith".into(),
                    split: Split::Test,
                    size: 4,
                    difficulty: 1,
                    min_difficulty: None,
                },
                transforms: vec![],
            },
        ],
        rewards: vec![RewardNode {
            name: "correct".into(),
            expr: correct,
        }],
        rollouts: vec![RolloutNode {
            name: "greedy".into(),
            policy: Rollout::Sample(Sampling {
                model: "policy".into(),
                n: 1,
                temperature: 0.0,
                top_k: 0,
                top_p: 1.0,
                max_tokens: 10,
                stop: vec![],
            }),
        }],
        stages: vec![Stage {
            name: "sft".into(),
            kind: StageKind::Train(TrainStage {
                model: "policy".into(),
                data: "train".into(),
                steps,
                batch: Batch {
                    size: 4,
                    unit: BatchUnit::Sequences,
                },
                objective: ObjectiveInstance {
                    name: "sft".into(),
                    args: BTreeMap::new(),
                    slots: vec![Slot {
                        name: "y".into(),
                        source: SlotSource::Data {
                            field: "solution".into(),
                        },
                        reward: None,
                    }],
                    loss: Expr::reduce(
                        Reduce::MeanAllTokens,
                        Expr::unary(UnaryOp::Neg, Expr::input(Quantity::Logp, "y")),
                    ),
                    reference: None,
                    mask_truncated: false,
                    updates_per_batch: 1,
                },
                optimizer: Optimizer::AdamW {
                    lr: Schedule::constant(1e-3),
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: 0.01,
                },
                grad_clip: Some(1.0),
                grad_accum: 1,
                hypers: BTreeMap::new(),
                evals: vec![Eval {
                    data: "test".into(),
                    every: 3,
                    limit: None,
                    metrics: vec![Metric {
                        name: "accuracy".into(),
                        rollout: "greedy".into(),
                        kind: MetricKind::MeanReward {
                            reward: "correct".into(),
                        },
                    }],
                }],
                checkpoint_every: 2,
                keep_checkpoints: DEFAULT_KEEP_CHECKPOINTS,
            }),
        }],
        defaults_applied: vec![],
        prerequisites: vec![],
    }
}

fn task_data() -> DataSource {
    DataSource::Task {
        task: "arith".into(),
        split: Split::Train,
        size: 40,
        difficulty: 1,
        min_difficulty: None,
    }
}

fn write_graph(dir: &Path, g: &Graph) -> String {
    let p = dir.join("graph.json");
    std::fs::write(&p, g.to_json()).unwrap();
    p.display().to_string()
}

/// metrics.jsonl without the wall-clock fields.
fn deterministic_metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("tokens_per_s");
            o.remove("step_s");
            v
        })
        .collect()
}

#[test]
fn run_graph_json_writes_every_output() {
    let dir = temp_dir("outputs");
    let graph = write_graph(&dir, &small_graph(6, task_data()));
    let out = dir.join("out");
    let o = post(&["run", &graph, "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let log = text(&o);
    assert!(log.contains("memory estimate"), "{log}");
    assert!(
        log.contains("accuracy:") && log.contains("before training"),
        "{log}"
    );
    let metrics = deterministic_metrics(&out);
    assert_eq!(metrics.len(), 7);
    for (i, m) in metrics.iter().enumerate().skip(1) {
        assert_eq!(m["step"], i as u64);
        assert_eq!(m["stage"], "sft");
        for key in ["loss", "lr", "grad_norm", "tokens"] {
            assert!(m[key].is_number(), "{key} missing in {m}");
        }
    }
    assert!(metrics[0]["eval"]["accuracy"].is_number());
    assert!(metrics[3]["eval"]["accuracy"].is_number());
    assert!(metrics[6]["eval"]["accuracy"].is_number());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert!(summary["final"]["accuracy"].is_number());
    assert!(summary["best"]["accuracy"].is_number());
    assert!(summary["wall_s"].as_f64().unwrap() > 0.0);
    assert!(summary["peak_rss_bytes"].as_u64().unwrap() > 0);
    let svg = std::fs::read_to_string(out.join("curves.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("accuracy"));
    let latest = std::fs::read_to_string(out.join("checkpoints/latest")).unwrap();
    assert_eq!(latest, "step-000006");
    let ckpt = out.join("checkpoints/step-000006");
    for f in [
        "policy/model.safetensors",
        "policy/config.json",
        "optimizer.safetensors",
        "state.json",
    ] {
        assert!(ckpt.join(f).is_file(), "{f} missing");
    }
    // The final weights are also exported where a later experiment can start from them.
    let exported = std::fs::read(out.join("models/policy/model.safetensors")).unwrap();
    let last = std::fs::read(ckpt.join("policy/model.safetensors")).unwrap();
    assert_eq!(exported, last);
    assert!(out.join("models/policy/config.json").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stop_then_resume_equals_uninterrupted() {
    let dir = temp_dir("resume");
    let graph = write_graph(&dir, &small_graph(8, task_data()));
    let full = dir.join("full");
    let o = post(&["run", &graph, "--out", full.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", text(&o));

    let part = dir.join("part");
    let o = post(&[
        "run",
        &graph,
        "--out",
        part.to_str().unwrap(),
        "--stop-after",
        "5",
        "-q",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!part.join("summary.json").exists());
    let o = post(&[
        "run",
        &graph,
        "--out",
        part.to_str().unwrap(),
        "--resume",
        part.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resuming from"), "{}", text(&o));
    assert_eq!(deterministic_metrics(&part), deterministic_metrics(&full));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_jsonl_line_is_reported_before_training() {
    let dir = temp_dir("jsonl");
    std::fs::write(
        dir.join("train.jsonl"),
        "{\"q\": \"1+2=?\\n\", \"s\": \"#### 3\"}\n\n{\"q\": \"2+2=?\\n\" \"s\": \"#### 4\"}\n",
    )
    .unwrap();
    let data = DataSource::Jsonl {
        path: "train.jsonl".into(),
        fields: BTreeMap::from([
            ("prompt".to_string(), "q".to_string()),
            ("solution".to_string(), "s".to_string()),
        ]),
    };
    let graph = write_graph(&dir, &small_graph(4, data));
    let out = dir.join("out");
    let o = post(&["run", &graph, "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let log = text(&o);
    assert!(log.contains("train.jsonl:3: malformed JSON"), "{log}");
    assert!(!out.join("metrics.jsonl").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn quickstart_compiles_and_starts_training() {
    let dir = temp_dir("quickstart");
    let quickstart = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.post");
    let out = dir.join("out");
    let o = post(&[
        "run",
        quickstart,
        "--out",
        out.to_str().unwrap(),
        "--stop-after",
        "2",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let metrics = deterministic_metrics(&out);
    // The eval before training, then two steps.
    assert_eq!(metrics.len(), 3, "{metrics:?}");
    assert!(metrics[0]["eval"]["accuracy"].is_number());
    assert!(metrics[2]["loss"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_file_is_a_usage_error() {
    let o = post(&["run", "/nonexistent/x.post"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn compare_reads_finished_runs_back() {
    let dir = temp_dir("compare");
    let (a, b) = (dir.join("short"), dir.join("long"));
    for (out, steps) in [(&a, 3), (&b, 6)] {
        let graph = write_graph(&dir, &small_graph(steps, task_data()));
        let o = post(&["run", &graph, "--out", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let cmp = dir.join("cmp");
    let o = post(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--reference",
        "short",
        "--out",
        cmp.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        table.contains("| short |") && table.contains("| long |"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cmp.join("comparison.json")).unwrap())
            .unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs[0]["steps"], 3);
    assert_eq!(runs[1]["steps"], 6);
    // The reference reaches its own final value at the latest by its last eval.
    assert!(runs[0]["steps_to_reference"].as_u64().unwrap() <= 3);
    // Supervised runs train on whole expert traces.
    assert_eq!(runs[0]["expert_token_frac"], 1.0);
    assert!(cmp.join("comparison.svg").is_file() && cmp.join("comparison.md").is_file());

    let o = post(&["compare", dir.join("nope").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("metrics.jsonl"), "{}", text(&o));
}
