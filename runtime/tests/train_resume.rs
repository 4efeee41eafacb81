//! A run stopped mid-way and resumed from its checkpoint writes exactly the metrics of an
//! uninterrupted run (timing fields aside), and ends with the same summary.

mod train_support;

use post_runtime::exec::{RunOptions, RunOutcome, run};
use post_runtime::output::{StepRecord, read_metrics};
use train_support::*;

fn small_spec() -> SftSpec {
    SftSpec {
        difficulty: 1,
        train_size: 64,
        test_size: 8,
        steps: 12,
        batch: 4,
        grad_accum: 2,
        eval_every: 5,
        eval_limit: Some(4),
        max_tokens: 12,
        checkpoint_every: 4,
        ..SftSpec::default()
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

/// Each line as written, with the wall-clock fields cut out of the text (every other byte
/// kept: a float that lost a bit on the way through a checkpoint shows up here).
fn without_timing(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let mut line = l.to_string();
            for key in ["tokens_per_s", "step_s"] {
                let field = format!(",\"{key}\":");
                // Evaluation-only lines (before a stage's first step) have no timing.
                let Some(at) = line.find(&field) else {
                    continue;
                };
                let rest = &line[at + field.len()..];
                let end = rest.find([',', '}']).unwrap();
                line.replace_range(at..at + field.len() + end, "");
            }
            line
        })
        .collect()
}

#[test]
fn resume_reproduces_uninterrupted_metrics() {
    let graph = sft_graph(&small_spec());
    let full = temp_dir("resume-full");
    let outcome = run(&graph, &RunOptions::new(&full)).unwrap();
    assert!(matches!(outcome, RunOutcome::Finished(_)));
    let expected = deterministic(read_metrics(&full.join("metrics.jsonl")).unwrap());
    // 12 steps + the eval before the first one.
    assert_eq!(expected.len(), 13);

    let part = temp_dir("resume-part");
    let mut opts = RunOptions::new(&part);
    opts.stop_after = Some(7);
    let outcome = run(&graph, &opts).unwrap();
    assert!(matches!(outcome, RunOutcome::Stopped { step: 7 }));
    // Killed after step 7: steps 5..7 exist in the file but the checkpoint is at step 4.
    assert_eq!(read_metrics(&part.join("metrics.jsonl")).unwrap().len(), 8);
    assert!(part.join("checkpoints/step-000004/state.json").is_file());
    assert!(!part.join("summary.json").exists());
    let first_segment = std::fs::read_to_string(part.join("metrics.jsonl")).unwrap();
    let kept: String = first_segment.split_inclusive('\n').take(5).collect();
    // The checkpoint holds exactly the bytes the run wrote up to its step.
    assert_eq!(
        std::fs::read_to_string(part.join("checkpoints/step-000004/metrics.jsonl")).unwrap(),
        kept
    );

    let mut opts = RunOptions::new(&part);
    opts.resume = Some(part.clone());
    let outcome = run(&graph, &opts).unwrap();
    let RunOutcome::Finished(summary) = outcome else {
        panic!("resumed run did not finish");
    };
    let got = deterministic(read_metrics(&part.join("metrics.jsonl")).unwrap());
    assert_eq!(got, expected);
    // Byte for byte: the lines carried over from the checkpoint are the ones first written
    // (every float read back exactly), and every line equals the uninterrupted run's once the
    // wall-clock fields are cut out.
    let resumed = std::fs::read_to_string(part.join("metrics.jsonl")).unwrap();
    assert!(resumed.starts_with(&kept), "carried-over lines changed");
    assert_eq!(
        without_timing(&resumed),
        without_timing(&std::fs::read_to_string(full.join("metrics.jsonl")).unwrap())
    );
    let full_summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_value(&summary.final_).unwrap(),
        full_summary["final"]
    );
    assert!(part.join("curves.svg").is_file());
    assert!(
        part.join("checkpoints/step-000012/policy/model.safetensors")
            .is_file()
    );
    assert!(
        part.join("checkpoints/step-000012/policy/config.json")
            .is_file()
    );
    let _ = std::fs::remove_dir_all(&full);
    let _ = std::fs::remove_dir_all(&part);
}

#[test]
fn resume_refuses_a_different_graph() {
    let graph = sft_graph(&small_spec());
    let dir = temp_dir("resume-other");
    let mut opts = RunOptions::new(&dir);
    opts.stop_after = Some(4);
    run(&graph, &opts).unwrap();
    let mut other = graph.clone();
    other.seed += 1;
    let mut opts = RunOptions::new(&dir);
    opts.resume = Some(dir.clone());
    let err = run(&other, &opts).unwrap_err().to_string();
    assert!(err.contains("different experiment graph"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
