//! Rollout slots through the executor: GRPO and BREAD sample groups, score them, train, log
//! reward statistics, and resume exactly (the sampling RNG and BREAD's prefix memory are part
//! of the checkpoint).

mod train_support;

use post_runtime::exec::{RunOptions, RunOutcome, run};
use post_runtime::output::{StepRecord, read_metrics};
use train_support::*;

fn spec() -> SftSpec {
    SftSpec {
        difficulty: 1,
        train_size: 40,
        test_size: 4,
        steps: 6,
        batch: 4,
        grad_accum: 2,
        eval_every: 3,
        eval_limit: Some(4),
        max_tokens: 12,
        checkpoint_every: 2,
        ..SftSpec::default()
    }
}

fn deterministic(mut r: Vec<StepRecord>) -> Vec<StepRecord> {
    for x in &mut r {
        x.tokens_per_s = None;
        x.step_s = None;
    }
    r
}

fn check_resume(branched: bool) {
    let graph = grpo_graph(&spec(), 4, branched);
    let tag = if branched { "bread" } else { "grpo" };
    let full = temp_dir(&format!("{tag}-full"));
    assert!(matches!(
        run(&graph, &RunOptions::new(&full)).unwrap(),
        RunOutcome::Finished(_)
    ));
    let expected = deterministic(read_metrics(&full.join("metrics.jsonl")).unwrap());
    for r in expected.iter().filter(|r| r.loss.is_some()) {
        let mean = r.extra["y/reward_mean"];
        assert!((0.0..=1.0).contains(&mean), "{r:?}");
        assert!(r.extra.contains_key("rollout/reward_mean"));
        assert!(r.loss.unwrap().is_finite());
        if branched {
            assert!(r.extra.contains_key("rollout/branched_frac"), "{r:?}");
        }
    }
    let part = temp_dir(&format!("{tag}-part"));
    let mut opts = RunOptions::new(&part);
    opts.stop_after = Some(3);
    run(&graph, &opts).unwrap();
    let mut opts = RunOptions::new(&part);
    opts.resume = Some(part.clone());
    run(&graph, &opts).unwrap();
    let got = deterministic(read_metrics(&part.join("metrics.jsonl")).unwrap());
    assert_eq!(got, expected);
    let _ = std::fs::remove_dir_all(&full);
    let _ = std::fs::remove_dir_all(&part);
}

#[test]
fn grpo_runs_and_resumes_exactly() {
    check_resume(false);
}

#[test]
fn bread_runs_and_resumes_exactly() {
    check_resume(true);
}
