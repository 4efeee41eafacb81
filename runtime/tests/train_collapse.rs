//! Training that cannot learn stops with a message naming the detector, the step and the
//! likely cause (a learning rate so high the model saturates; GRPO sampling at temperature 0);
//! text the tokenizer cannot encode is refused before step 1, naming the first record.

mod train_support;

use std::collections::BTreeMap;

use post_graph::*;
use post_runtime::exec::{Refusal, RunError, RunOptions, RunOutcome, run};
use post_runtime::output::read_metrics;
use train_support::*;

fn small(steps: u64) -> SftSpec {
    SftSpec {
        difficulty: 1,
        train_size: 64,
        test_size: 4,
        steps,
        batch: 4,
        eval_every: steps,
        eval_limit: Some(2),
        max_tokens: 8,
        ..SftSpec::default()
    }
}

#[test]
fn a_learning_rate_of_1e3_stops_the_run_naming_the_cause() {
    let mut spec = small(40);
    spec.lr = Schedule::constant(1e3);
    let graph = sft_graph(&spec);
    let dir = temp_dir("collapse-lr");
    let err = run(&graph, &RunOptions::new(&dir)).unwrap_err();
    let RunError::NoLearning { step, detector, .. } = &err else {
        panic!("expected a stop for training that cannot learn, got {err}");
    };
    let msg = err.to_string();
    assert!(
        ["uniform-loss", "zero-gradient"].contains(detector),
        "{detector}: {msg}"
    );
    // The window of evidence is 20 steps; the collapse happens within the first few.
    assert!((20..30).contains(step), "stopped at {step}: {msg}");
    assert!(
        msg.contains("lr 1.000e3") && msg.contains("learning rate too high"),
        "{msg}"
    );
    // What was measured is kept, and the summary says why the run stopped.
    assert_eq!(
        read_metrics(&dir.join("metrics.jsonl")).unwrap().len() as u64,
        1 + step
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert!(
        summary["stopped"].as_str().unwrap().contains(detector),
        "{summary}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sane_learning_rate_is_not_stopped() {
    let graph = sft_graph(&small(30));
    let dir = temp_dir("collapse-sane");
    let outcome = run(&graph, &RunOptions::new(&dir)).unwrap();
    let RunOutcome::Finished(summary) = outcome else {
        panic!("not finished");
    };
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn grpo_sampling_at_temperature_0_stops() {
    let mut spec = small(24);
    spec.batch = 2;
    let mut graph = grpo_graph(&spec, 4, false);
    for r in &mut graph.rollouts {
        if let Rollout::Sample(s) = &mut r.policy
            && r.name == "explore"
        {
            s.temperature = 0.0;
        }
    }
    let dir = temp_dir("collapse-t0");
    let err = run(&graph, &RunOptions::new(&dir)).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            RunError::NoLearning {
                step: 20,
                detector: "identical-samples",
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("temperature"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn text_the_tokenizer_cannot_encode_is_refused_naming_the_record() {
    let dir = temp_dir("collapse-unk");
    std::fs::create_dir_all(&dir).unwrap();
    let mut lines = String::new();
    for i in 0..8 {
        let q = if i == 2 { "What Is 1+1?" } else { "1+1=" };
        lines.push_str(&format!("{{\"q\": \"{q}\", \"a\": \"2\"}}\n"));
    }
    let data = dir.join("d.jsonl");
    std::fs::write(&data, lines).unwrap();
    let mut graph = sft_graph(&small(4));
    let fields = BTreeMap::from([
        ("prompt".to_string(), "q".to_string()),
        ("solution".to_string(), "a".to_string()),
    ]);
    graph.datasets[0].source = DataSource::Jsonl {
        path: data.display().to_string(),
        fields,
    };
    let mut opts = RunOptions::new(dir.join("out"));
    opts.dry_run = true;
    let err = run(&graph, &opts).unwrap_err();
    assert_eq!(err.refusal(), Some(Refusal::DataContents), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("`<unk>`") && msg.contains("record 3 of") && msg.contains("'W'"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
