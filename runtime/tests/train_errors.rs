//! Failures the executor must report clearly: a non-finite loss stops the run at that step and
//! keeps the last good checkpoint; malformed data and impossible memory plans are refused
//! before training starts.

mod train_support;

use std::collections::BTreeMap;

use post_graph::*;
use post_runtime::exec::{RunError, RunOptions, run};
use post_runtime::output::read_metrics;
use train_support::*;

fn tiny_spec() -> SftSpec {
    SftSpec {
        difficulty: 1,
        train_size: 32,
        test_size: 4,
        steps: 10,
        batch: 4,
        eval_every: 100,
        eval_limit: Some(2),
        max_tokens: 8,
        checkpoint_every: 2,
        ..SftSpec::default()
    }
}

fn train_stage(g: &mut Graph) -> &mut TrainStage {
    match &mut g.stages[0].kind {
        StageKind::Train(t) => t,
        _ => unreachable!("sft_graph builds one train stage"),
    }
}

#[test]
fn nan_loss_stops_and_keeps_last_good_checkpoint() {
    let mut g = sft_graph(&tiny_spec());
    // loss = sft * sqrt(h), h falling linearly from 1 to -1 over 10 steps: at stage step 6
    // (global step 7) h = -0.2 and the loss is NaN.
    let t = train_stage(&mut g);
    t.objective.loss = Expr::binary(
        BinaryOp::Mul,
        sft_loss("y"),
        Expr::unary(UnaryOp::Sqrt, Expr::Hyper { name: "h".into() }),
    );
    t.hypers = BTreeMap::from([(
        "h".to_string(),
        Schedule {
            shape: Shape::Linear {
                from: 1.0,
                to: -1.0,
            },
            warmup: 0,
        },
    )]);
    let dir = temp_dir("nan");
    let err = run(&g, &RunOptions::new(&dir)).unwrap_err();
    let msg = err.to_string();
    match err {
        RunError::NonFinite {
            step, checkpoint, ..
        } => {
            assert_eq!(step, 7);
            assert_eq!(checkpoint, Some(dir.join("checkpoints/step-000006")));
        }
        other => panic!("expected a non-finite loss error, got {other}"),
    }
    assert!(
        msg.contains("the loss is not finite") && msg.contains("step 7"),
        "{msg}"
    );
    assert!(msg.contains("step-000006"), "{msg}");
    let latest = std::fs::read_to_string(dir.join("checkpoints/latest")).unwrap();
    assert_eq!(latest, "step-000006");
    assert!(
        dir.join("checkpoints/step-000006/policy/model.safetensors")
            .is_file()
    );
    // The steps before it were recorded; the bad one was not applied.
    let m = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    assert_eq!(m.last().map(|r| r.step), Some(6));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert!(summary["stopped"].as_str().unwrap().contains("step 7"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_jsonl_is_reported_with_file_and_line_before_training() {
    let dir = temp_dir("jsonl");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("train.jsonl");
    std::fs::write(
        &data,
        "{\"q\": \"1+1=?\\n\", \"a\": \"#### 2\"}\n{\"q\": \"2+2=?\\n\", \"a\": \"#### 4\"}\n{\"q\": oops}\n",
    )
    .unwrap();
    let mut g = sft_graph(&tiny_spec());
    g.datasets[0].source = DataSource::Jsonl {
        path: "train.jsonl".into(),
        fields: BTreeMap::from([
            ("prompt".to_string(), "q".to_string()),
            ("solution".to_string(), "a".to_string()),
        ]),
    };
    let out = dir.join("out");
    let mut opts = RunOptions::new(&out);
    opts.base_dir = dir.clone();
    let err = run(&g, &opts).unwrap_err().to_string();
    assert!(err.contains("train.jsonl:3: malformed JSON"), "{err}");
    assert!(!out.join("metrics.jsonl").exists(), "no training may start");

    std::fs::write(&data, "{\"q\": \"1+1=?\\n\"}\n").unwrap();
    let err = run(&g, &opts).unwrap_err().to_string();
    assert!(
        err.contains("train.jsonl:1: missing key `a` (for field `solution`)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_plan_that_cannot_fit_is_refused_with_numbers() {
    let g = sft_graph(&tiny_spec());
    let dir = temp_dir("mem");
    let mut opts = RunOptions::new(&dir);
    opts.memory_limit = Some(1024 * 1024);
    let err = run(&g, &opts).unwrap_err();
    assert!(matches!(err, RunError::Memory(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("1.0 MiB") && msg.contains("parameters"),
        "{msg}"
    );
    assert!(!dir.join("metrics.jsonl").exists());
}

#[test]
fn unsupported_features_are_refused_before_work() {
    let mut g = sft_graph(&tiny_spec());
    g.datasets[0].transforms.push(Transform::AppendIndicator {
        token: "[c]".into(),
        when: Condition::AttendsToContext {
            model: "policy".into(),
            threshold: 0.5,
        },
    });
    let err = run(&g, &RunOptions::new(temp_dir("unsupported")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("attention probe") && err.contains("not supported"),
        "{err}"
    );

    let mut g = sft_graph(&tiny_spec());
    train_stage(&mut g).objective.loss =
        Expr::reduce(Reduce::MeanAllTokens, Expr::input(Quantity::RefLogp, "y"));
    let err = run(&g, &RunOptions::new(temp_dir("noref")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("names no reference model"), "{err}");
}
