//! Training mechanics through the executor: gradient accumulation over equal micro-batches of a
//! sequence-mean loss equals the full batch; the frozen reference model does not move; the
//! learning rate follows the schedule.

mod train_support;

use post_graph::*;
use post_runtime::exec::{RunOptions, run};
use post_runtime::output::read_metrics;
use train_support::*;

fn spec(grad_accum: usize) -> SftSpec {
    SftSpec {
        difficulty: 1,
        train_size: 32,
        test_size: 4,
        steps: 3,
        batch: 8,
        grad_accum,
        eval_every: 100,
        eval_limit: Some(2),
        max_tokens: 8,
        lr: Schedule {
            shape: Shape::Linear {
                from: 1e-3,
                to: 0.0,
            },
            warmup: 1,
        },
        ..SftSpec::default()
    }
}

fn seq_mean_graph(grad_accum: usize) -> Graph {
    let mut g = sft_graph(&spec(grad_accum));
    if let StageKind::Train(t) = &mut g.stages[0].kind {
        // seq-mean-token-mean: the mean of equal-sized micro-batch means is the batch mean.
        t.objective.loss = Expr::reduce(
            Reduce::MeanSeqs,
            Expr::reduce(
                Reduce::MeanTokens,
                Expr::unary(UnaryOp::Neg, Expr::input(Quantity::Logp, "y")),
            ),
        );
    }
    g
}

#[test]
fn gradient_accumulation_matches_the_full_batch() {
    let a = temp_dir("accum1");
    let b = temp_dir("accum4");
    run(&seq_mean_graph(1), &RunOptions::new(&a)).unwrap();
    run(&seq_mean_graph(4), &RunOptions::new(&b)).unwrap();
    let ma = read_metrics(&a.join("metrics.jsonl")).unwrap();
    let mb = read_metrics(&b.join("metrics.jsonl")).unwrap();
    assert_eq!(ma.len(), mb.len());
    for (x, y) in ma.iter().zip(&mb).filter(|(x, _)| x.loss.is_some()) {
        let (lx, ly) = (x.loss.unwrap(), y.loss.unwrap());
        let (gx, gy) = (x.grad_norm.unwrap(), y.grad_norm.unwrap());
        assert!((lx - ly).abs() < 1e-4 * lx.abs(), "loss {lx} vs {ly}");
        assert!((gx - gy).abs() < 1e-3 * gx.abs(), "grad norm {gx} vs {gy}");
        assert_eq!(x.lr, y.lr);
    }
    // Warmup 1 step then linear decay from 1e-3 to 0 over the remaining 2 steps.
    let lrs: Vec<f64> = ma.iter().filter_map(|r| r.lr).collect();
    assert_eq!(lrs, vec![1e-3, 1e-3, 5e-4]);
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn frozen_reference_is_the_initial_policy_and_stays_put() {
    let plain = temp_dir("kl-plain");
    run(&sft_graph(&spec(1)), &RunOptions::new(&plain)).unwrap();
    let mut g = sft_graph(&spec(1));
    g.models.push(ModelNode {
        name: "reference".into(),
        source: ModelSource::Frozen {
            of: "policy".into(),
        },
    });
    if let StageKind::Train(t) = &mut g.stages[0].kind {
        t.objective.reference = Some("reference".into());
        // sft + mean squared log-ratio to the reference. At step 1 the reference equals the
        // policy, so the extra term and its gradient are exactly 0: the first update is plain
        // SFT's. At step 2 the policy has moved and the reference has not: the term is > 0.
        let d = Expr::binary(
            BinaryOp::Sub,
            Expr::input(Quantity::Logp, "y"),
            Expr::input(Quantity::RefLogp, "y"),
        );
        let kl = Expr::reduce(Reduce::MeanAllTokens, Expr::unary(UnaryOp::Square, d));
        t.objective.loss = Expr::binary(BinaryOp::Add, sft_loss("y"), kl);
    }
    let with_ref = temp_dir("kl-ref");
    run(&g, &RunOptions::new(&with_ref)).unwrap();
    let series = |d: &std::path::Path| -> (Vec<f64>, Vec<f64>) {
        let m = read_metrics(&d.join("metrics.jsonl")).unwrap();
        (
            m.iter().filter_map(|r| r.loss).collect(),
            m.iter().filter_map(|r| r.grad_norm).collect(),
        )
    };
    let ((a, ga), (b, gb)) = (series(&plain), series(&with_ref));
    assert_eq!(a[0], b[0], "the reference must start equal to the policy");
    assert_eq!(ga[0], gb[0], "the first update must be plain SFT's");
    // Step 2 is evaluated at the same weights in both runs; only the log-ratio term differs.
    assert!(b[1] > a[1], "the reference must stay frozen: {a:?} {b:?}");
    let _ = std::fs::remove_dir_all(&plain);
    let _ = std::fs::remove_dir_all(&with_ref);
}

#[test]
fn a_preset_starts_from_an_exported_model() {
    let a = temp_dir("init-a");
    run(&sft_graph(&spec(1)), &RunOptions::new(&a)).unwrap();
    let exported = a.join("models/policy");
    assert!(exported.join("model.safetensors").is_file());
    // Same experiment, initialised from A's result, trained with a zero learning rate: the
    // weights it exports must be A's, bit for bit.
    let mut g = sft_graph(&spec(1));
    if let ModelSource::Preset { init, .. } = &mut g.models[0].source {
        *init = Some(exported.display().to_string());
    }
    if let StageKind::Train(t) = &mut g.stages[0].kind {
        t.optimizer = Optimizer::Sgd {
            lr: Schedule::constant(0.0),
            momentum: 0.0,
        };
        t.steps = 1;
    }
    let b = temp_dir("init-b");
    run(&g, &RunOptions::new(&b)).unwrap();
    let wa = std::fs::read(exported.join("model.safetensors")).unwrap();
    let wb = std::fs::read(b.join("models/policy/model.safetensors")).unwrap();
    assert_eq!(wa, wb);
    // And a fresh preset (no init) differs from A's trained weights.
    let fresh = temp_dir("init-c");
    let mut g2 = g.clone();
    if let ModelSource::Preset { init, .. } = &mut g2.models[0].source {
        *init = None;
    }
    run(&g2, &RunOptions::new(&fresh)).unwrap();
    let wc = std::fs::read(fresh.join("models/policy/model.safetensors")).unwrap();
    assert_ne!(wa, wc);
    for d in [a, b, fresh] {
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// Two stages on the same policy: plain SFT, then SFT + mean squared log-ratio to `reference`.
fn two_stage_graph(reference: ModelSource) -> Graph {
    let mut g = sft_graph(&SftSpec {
        steps: 2,
        checkpoint_every: 1,
        ..spec(1)
    });
    g.models.push(ModelNode {
        name: "reference".into(),
        source: reference,
    });
    let mut second = g.stages[0].clone();
    second.name = "anchored".into();
    if let StageKind::Train(t) = &mut second.kind {
        t.objective.reference = Some("reference".into());
        let d = Expr::binary(
            BinaryOp::Sub,
            Expr::input(Quantity::Logp, "y"),
            Expr::input(Quantity::RefLogp, "y"),
        );
        let kl = Expr::reduce(Reduce::MeanAllTokens, Expr::unary(UnaryOp::Square, d));
        t.objective.loss = Expr::binary(BinaryOp::Add, sft_loss("y"), kl);
        t.steps = 3;
    }
    g.stages.push(second);
    g
}

fn losses(dir: &std::path::Path) -> Vec<(String, f64)> {
    read_metrics(&dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|r| r.loss.map(|l| (r.stage.clone(), l)))
        .collect()
}

#[test]
fn snapshot_is_retaken_at_stage_start_and_survives_resume() {
    let snap = temp_dir("snapshot");
    let g = two_stage_graph(ModelSource::Snapshot {
        of: "policy".into(),
    });
    run(&g, &RunOptions::new(&snap)).unwrap();
    let frozen = temp_dir("snapshot-frozen");
    run(
        &two_stage_graph(ModelSource::Frozen {
            of: "policy".into(),
        }),
        &RunOptions::new(&frozen),
    )
    .unwrap();
    let (s, f) = (losses(&snap), losses(&frozen));
    assert_eq!(s.len(), 5);
    assert_eq!(s[..2], f[..2], "stage 1 does not read the reference");
    assert_eq!(s[2].0, "anchored");
    // Stage 2, step 1: the snapshot equals the policy (log-ratio term exactly 0); the frozen
    // copy is the initial model, two SFT steps behind (term > 0).
    assert!(f[2].1 > s[2].1, "{s:?} {f:?}");

    // Stopped in the middle of stage 2 and resumed: the snapshot comes from the checkpoint.
    let part = temp_dir("snapshot-part");
    let mut opts = RunOptions::new(&part);
    opts.stop_after = Some(3);
    run(&g, &opts).unwrap();
    let mut opts = RunOptions::new(&part);
    opts.resume = Some(part.clone());
    run(&g, &opts).unwrap();
    assert_eq!(losses(&part), s);
    for d in [snap, frozen, part] {
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn lagged_copy_follows_its_source() {
    let plain = temp_dir("lagged-plain");
    run(&sft_graph(&spec(1)), &RunOptions::new(&plain)).unwrap();
    let with_lag = |every: u64, tag: &str| {
        let mut g = two_stage_graph(ModelSource::Lagged {
            of: "policy".into(),
            every_steps: every,
        });
        // Only the anchored stage, as long as the plain run.
        g.stages.remove(0);
        if let StageKind::Train(t) = &mut g.stages[0].kind {
            t.steps = 3;
        }
        g.stages[0].name = "sft".into();
        let d = temp_dir(tag);
        run(&g, &RunOptions::new(&d)).unwrap();
        let l = losses(&d);
        let _ = std::fs::remove_dir_all(&d);
        l
    };
    let p = losses(&plain);
    // Refreshed after every step: the log-ratio term is always exactly 0.
    assert_eq!(with_lag(1, "lagged-1"), p);
    // Refreshed every 2 steps: at step 2 the copy is one step behind.
    let l2 = with_lag(2, "lagged-2");
    assert_eq!(l2[0], p[0]);
    assert!(l2[1].1 > p[1].1, "{l2:?} {p:?}");
    let _ = std::fs::remove_dir_all(&plain);
}
