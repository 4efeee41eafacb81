//! SFT through the executor learns: greedy accuracy on held-out 2-digit additions goes from 0
//! before training to a clear margin after a couple of hundred steps (seeded, so the numbers
//! are the same on every machine with the same thread count).

mod train_support;

use post_graph::{Schedule, Shape};
use post_runtime::exec::{RunOptions, RunOutcome, run};
use train_support::*;

#[test]
fn sft_raises_greedy_accuracy_from_zero() {
    let spec = SftSpec {
        task: "arith",
        difficulty: 2,
        train_size: 2000,
        test_size: 100,
        steps: 200,
        batch: 16,
        lr: Schedule {
            shape: Shape::Cosine {
                from: 3e-3,
                to: 3e-4,
            },
            warmup: 10,
        },
        eval_every: 200,
        eval_limit: Some(50),
        max_tokens: 48,
        ..SftSpec::default()
    };
    let dir = temp_dir("sft-learns");
    let RunOutcome::Finished(summary) = run(&sft_graph(&spec), &RunOptions::new(&dir)).unwrap()
    else {
        panic!("the run did not finish");
    };
    let before = summary.initial["accuracy"];
    let after = summary.final_["accuracy"];
    eprintln!("accuracy {before} -> {after} in {:.1}s", summary.wall_s);
    assert!(
        before <= 0.02,
        "an untrained model should not solve additions: {before}"
    );
    assert!(after >= 0.1, "SFT should reach a clear margin: {after}");
    assert!(summary.final_["loss"] < 0.5, "{:?}", summary.final_);
    let _ = std::fs::remove_dir_all(&dir);
}
