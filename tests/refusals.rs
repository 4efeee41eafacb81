//! The invariant behind `post check`: every refusal the runtime can make before its first step
//! is either a checker diagnostic (shown here by a source that produces it, with a help line)
//! or listed in spec/language.md under "Known only at run time" (then `post check --deep`
//! reports it). `cover` matches every [`Refusal`] without a wildcard, so a new refusal does not
//! compile until it is classified; the cases below then hold the classification to account.
//! The end-to-end tests run the `post` binary on the cases a new user hit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use post_compiler::{MemoryFs, compile_source};
use post_runtime::exec::{Refusal, RunOptions, run_with_log, validate};

/// How a refusal is covered.
enum Cover {
    /// `post check` reports it: compiling the source yields this code.
    Checked { code: &'static str, source: String },
    /// Knowable only at run time: the spec's table names the refusal's id.
    RunTimeOnly,
}

const HEAD: &str = "use std.objectives.{sft, grpo, dpo}\n\n";

fn exp(body: &str) -> String {
    format!(
        "{HEAD}experiment e {{\n  model policy = preset(\"tiny\")\n  data train = task(\"arith\", difficulty = 2)\n  data test = task(\"arith\", split = test, difficulty = 2)\n  reward correct(s) = if number(answer(s.completion)) == number(s.answer) then 1 else 0\n{body}}}\n"
    )
}

fn stage(settings: &str) -> String {
    exp(&format!(
        "  stage s {{\n    data = train\n    steps = 10\n{settings}  }}\n"
    ))
}

fn checked(code: &'static str, source: String) -> Cover {
    Cover::Checked { code, source }
}

fn cover(r: Refusal) -> Vec<Cover> {
    use Cover::RunTimeOnly;
    let sft = "    batch = 8 sequences\n    objective = sft(train.solution)\n";
    match r {
        Refusal::NoStages => vec![checked(
            "E0104",
            format!("{HEAD}experiment e {{\n  model policy = preset(\"tiny\")\n}}\n"),
        )],
        Refusal::UnknownName => vec![
            checked("E0101", exp("  model r2 = frozen(polcy)\n")),
            RunTimeOnly,
        ],
        Refusal::LaggedEveryZero => vec![checked(
            "E0401",
            exp("  model l = lagged(policy, every = 0 steps)\n"),
        )],
        Refusal::TrainsFrozenModel => vec![checked(
            "E0407",
            exp(&format!(
                "  model reference = frozen(policy)\n  stage s {{\n    model = reference\n    data = train\n    steps = 10\n{sft}  }}\n"
            )),
        )],
        Refusal::StepsZero => vec![checked(
            "E0401",
            exp(&format!(
                "  stage s {{\n    data = train\n    steps = 0\n{sft}  }}\n"
            )),
        )],
        Refusal::GradAccumSplit => vec![checked(
            "E0408",
            stage(
                "    batch = 16 sequences\n    grad_accum = 3\n    objective = sft(train.solution)\n",
            ),
        )],
        // The checker clamps `updates` to at least 1 (formula.rs); only a graph JSON has 0.
        Refusal::UpdatesPerBatchZero => vec![RunTimeOnly],
        Refusal::DataSlotMisuse => vec![
            checked(
                "E0202",
                stage("    batch = 8 completions\n    objective = sft(train.solution)\n"),
            ),
            checked(
                "E0201",
                format!(
                    "objective o(y: seqs, r: reward) = -mean_seqs(r(y) * sum_tokens(logp(y)))\n{}",
                    stage(
                        "    batch = 8 sequences\n    objective = o(train.solution, r = correct)\n"
                    )
                ),
            ),
        ],
        Refusal::GroupSplit => vec![checked(
            "E0402",
            stage(
                "    batch = 30 completions\n    rollout = sample(policy, n = 4)\n    objective = grpo(reward = correct)\n",
            ),
        )],
        Refusal::RewardInvalid => vec![checked(
            "E0401",
            exp("  reward bad(s) = if matches(s.completion, \"(a\") then 1 else 0\n"),
        )],
        Refusal::NoReferenceModel => vec![checked(
            "E0403",
            stage("    batch = 8 prompts\n    objective = dpo(train.solution, train.rejected)\n"),
        )],
        // Every hyperparameter of a lowered loss has a value (defaults included).
        Refusal::MissingHyper => vec![RunTimeOnly],
        Refusal::EvalEveryZero => vec![checked(
            "E0401",
            stage(&format!(
                "{sft}    eval every 0 steps on test {{\n      acc = accuracy(correct, greedy(policy))\n    }}\n"
            )),
        )],
        Refusal::PassAtKRange => vec![checked(
            "E0406",
            stage(&format!(
                "{sft}    eval every 5 steps on test {{\n      pass = pass_at(8, correct, sample(policy, n = 4))\n    }}\n"
            )),
        )],
        Refusal::Unsupported => vec![checked(
            "W0001",
            exp(&format!(
                "  analysis before {{\n    model = policy\n    data = train\n    summaries = [intrinsic_dim()]\n  }}\n  stage s {{\n    data = train\n    steps = 10\n{sft}  }}\n"
            )),
        )],
        Refusal::MissingPath => vec![
            checked("E0504", exp("  data d = jsonl(\"nope.jsonl\")\n")),
            checked(
                "E0504",
                exp("  model m = preset(\"tiny\", init = \"missing/dir\")\n"),
            ),
            checked("E0504", exp("  model m = hf(\"nowhere\")\n")),
            checked(
                "E0504",
                exp("  model m = trained(\"base.post\", model = \"policy\")\n"),
            ),
            // A prerequisite's output before `post run` builds it.
            RunTimeOnly,
        ],
        Refusal::TaskRange => vec![
            checked(
                "E0401",
                exp("  data d = task(\"countdown\", difficulty = 1)\n"),
            ),
            checked(
                "E0401",
                exp("  data d = task(\"arith\", difficulty = 19)\n"),
            ),
        ],
        Refusal::ModelContents
        | Refusal::VocabularyTooSmall
        | Refusal::DataContents
        | Refusal::Memory
        | Refusal::Resume
        | Refusal::RunDirectory => vec![RunTimeOnly],
    }
}

fn spec() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/language.md"))
        .expect("spec/language.md")
}

#[test]
fn every_pre_step_refusal_is_a_diagnostic_or_documented_as_run_time_only() {
    let spec = spec();
    let known = spec
        .split("### Known only at run time")
        .nth(1)
        .expect("the spec has a \"Known only at run time\" section");
    let known = known.split("\n## ").next().unwrap_or(known);
    let fs = MemoryFs::new();
    for &r in Refusal::ALL {
        let covers = cover(r);
        assert!(!covers.is_empty(), "{r:?} is not classified");
        for c in covers {
            match c {
                Cover::Checked { code, source } => {
                    let comp = compile_source(&fs, "e.post", source.clone());
                    let d = comp.diagnostics.iter().find(|d| d.code == code);
                    let d = d.unwrap_or_else(|| {
                        panic!(
                            "{r:?}: expected {code} from\n{source}\ngot {:#?}",
                            comp.diagnostics
                        )
                    });
                    assert!(d.help.is_some(), "{r:?}: {code} has no help line");
                }
                Cover::RunTimeOnly => assert!(
                    known.contains(&format!("`{}`", r.id())),
                    "{r:?} is classified as known only at run time, but the spec's table does not list `{}`",
                    r.id()
                ),
            }
        }
    }
}

/// The runtime's own refusal for each graph-level mistake the checker catches, on a graph the
/// checker built and the test then broke the way the checker forbids.
#[test]
fn the_runtime_refuses_what_the_checker_reports() {
    let src = exp(
        "  model reference = frozen(policy)\n  stage s {\n    data = train\n    steps = 10\n    batch = 16 sequences\n    objective = sft(train.solution)\n  }\n",
    );
    let good = compile_source(&MemoryFs::new(), "e.post", src)
        .graph
        .expect("a graph");
    validate(&good).expect("the unbroken graph validates");
    let broken = |f: &dyn Fn(&mut post_graph::TrainStage)| {
        let mut g = good.clone();
        if let post_graph::StageKind::Train(t) = &mut g.stages[0].kind {
            f(t);
        }
        validate(&g).expect_err("refused").refusal()
    };
    assert_eq!(broken(&|t| t.grad_accum = 3), Some(Refusal::GradAccumSplit));
    assert_eq!(broken(&|t| t.steps = 0), Some(Refusal::StepsZero));
    assert_eq!(
        broken(&|t| t.model = "reference".into()),
        Some(Refusal::TrainsFrozenModel)
    );
    assert_eq!(
        broken(&|t| t.objective.updates_per_batch = 0),
        Some(Refusal::UpdatesPerBatchZero)
    );
}

/// `post check` and `post run` agree on every built-in task's difficulty range: the largest
/// accepted difficulty checks clean and generates; one past it is E0401 and a `task-range`
/// refusal (the countdown 1..=6 vs 2..=8 disagreement this replaced).
#[test]
fn check_and_run_agree_on_every_task_limit() {
    let fs = MemoryFs::new();
    for t in post_graph::tasks::TASKS {
        for (d, ok) in [
            (t.min_difficulty, true),
            (t.max_difficulty, true),
            (t.max_difficulty + 1, false),
            (t.min_difficulty - 1, false),
        ] {
            if d == 0 {
                continue; // the signature's own range (a count >= 1) refuses 0
            }
            let src = exp(&format!(
                "  stage s {{\n    data = d\n    steps = 1\n    batch = 2 sequences\n    objective = sft(d.solution)\n  }}\n  data d = task(\"{}\", size = 4, difficulty = {d})\n",
                t.name
            ));
            let c = compile_source(&fs, "e.post", src);
            let checked_ok = !c.has_errors();
            assert_eq!(
                checked_ok, ok,
                "{} difficulty {d}: {:#?}",
                t.name, c.diagnostics
            );
            let generated = post_runtime::tasks::generate(
                t.name,
                post_runtime::tasks::TaskSplit::Train,
                2,
                d,
                1,
            );
            assert_eq!(generated.is_ok(), ok, "{} difficulty {d}", t.name);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// End to end, through the binary.

fn post(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_post"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the post binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("post-refusals-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

const SMALL: &str = "use std.objectives.{sft}\n\nexperiment small {\n  seed = 3\n  model policy = preset(\"tiny\")\n  data train = task(\"arith\", size = 64, difficulty = 1)\n  stage s {\n    data = train\n    steps = 3\n    batch = 4 sequences\n    objective = sft(train.solution)\n    optimizer = adamw(lr = cosine(1e-3 -> 0.0))\n  }\n}\n";

/// The four mistakes that passed `post check` and failed `post run` now fail `post check`, each
/// with its code, the path or numbers, and a help line.
#[test]
fn check_catches_what_run_used_to_refuse() {
    let dir = temp_dir("check");
    let cases = [
        (
            "  data train = task(\"arith\", size = 64, difficulty = 1)",
            "  data train = jsonl(\"nope.jsonl\")",
            "E0504",
            "nope.jsonl",
        ),
        (
            "    batch = 4 sequences\n",
            "    batch = 16 sequences\n    grad_accum = 3\n",
            "E0408",
            "16 records",
        ),
        (
            "preset(\"tiny\")",
            "preset(\"tiny\", init = \"missing/dir\")",
            "E0504",
            "missing/dir",
        ),
        ("difficulty = 1)", "difficulty = 40)", "E0401", "1..=18"),
    ];
    for (i, (from, to, code, shows)) in cases.iter().enumerate() {
        let src = SMALL.replacen(from, to, 1);
        assert_ne!(src, SMALL, "case {i} changed nothing");
        let file = format!("case{i}.post");
        std::fs::write(dir.join(&file), &src).expect("write");
        let out = post(&["check", &file], &dir);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "case {i}: {t}");
        assert!(t.contains(code) && t.contains(shows), "case {i}: {t}");
        assert!(t.contains("help:"), "case {i}: no help line: {t}");
    }
}

/// `cosine(... -> 0)` checks clean and trains (its end value is never applied).
#[test]
fn cosine_to_zero_checks_clean_and_trains() {
    let dir = temp_dir("cosine");
    std::fs::write(dir.join("small.post"), SMALL).expect("write");
    let out = post(&["check", "small.post"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = post(&["run", "small.post", "--out", "runs/small", "-q"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let metrics = std::fs::read_to_string(dir.join("runs/small/metrics.jsonl")).expect("metrics");
    let lrs: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["lr"].as_f64())
        .collect();
    assert_eq!(lrs.len(), 3, "{metrics}");
    assert!(lrs.iter().all(|&lr| lr > 0.0), "{lrs:?}");
    assert!(lrs.windows(2).all(|w| w[1] < w[0]), "{lrs:?}");
}

/// A malformed line past the records the checker reads: `post check` is clean, `post check
/// --deep` and `post run --dry-run` report it with file:line, and nothing is written.
#[test]
fn deep_check_reports_what_only_the_data_shows() {
    let dir = temp_dir("deep");
    let mut data = String::new();
    for i in 0..8 {
        if i == 6 {
            data.push_str("{\"prompt\": \"oops\n");
        } else {
            data.push_str(&format!(
                "{{\"prompt\": \"{i}+1=\", \"solution\": \"{}\"}}\n",
                i + 1
            ));
        }
    }
    std::fs::write(dir.join("d.jsonl"), data).expect("write");
    let src = SMALL.replacen(
        "task(\"arith\", size = 64, difficulty = 1)",
        "jsonl(\"d.jsonl\")",
        1,
    );
    std::fs::write(dir.join("e.post"), src).expect("write");
    let out = post(&["check", "e.post"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = post(&["check", "--deep", "e.post"], &dir);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("d.jsonl:7") && t.contains("data-contents"),
        "{t}"
    );
    let out = post(&["run", "e.post", "--dry-run", "--out", "runs/e"], &dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        !dir.join("runs/e").exists(),
        "a dry run wrote its output directory"
    );
}

/// `trained(...)`: the first run builds the prerequisite into the runs directory's cache and
/// says so; the next reuses it; an edited prerequisite is rebuilt under its new hash.
#[test]
fn prerequisites_are_built_once_and_rebuilt_when_edited() {
    let dir = temp_dir("prereq");
    std::fs::write(dir.join("base.post"), SMALL).expect("write");
    let main = "use std.objectives.{sft}\n\nexperiment next {\n  model policy = trained(\"base.post\", model = \"policy\")\n  data train = task(\"arith\", size = 64, difficulty = 1)\n  stage s {\n    data = train\n    steps = 2\n    batch = 4 sequences\n    objective = sft(train.solution)\n  }\n}\n";
    std::fs::write(dir.join("next.post"), main).expect("write");
    let out = post(&["check", "next.post"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A dry run neither builds nor writes.
    let out = post(
        &["run", "next.post", "--dry-run", "--out", "runs/next"],
        &dir,
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("not built yet"), "{t}");
    assert!(!dir.join("runs").exists());

    let out = post(&["run", "next.post", "--out", "runs/next", "-q"], &dir);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("building prerequisite `small`"), "{t}");
    let cached: Vec<_> = std::fs::read_dir(dir.join("runs/prereq"))
        .expect("the prerequisite cache")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].starts_with("small-"), "{cached:?}");
    assert!(
        dir.join("runs/prereq")
            .join(&cached[0])
            .join("models/policy/model.safetensors")
            .is_file()
    );
    assert!(dir.join("runs/next/summary.json").is_file());

    let out = post(&["run", "next.post", "--out", "runs/next2", "-q"], &dir);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(!t.contains("building prerequisite"), "{t}");

    std::fs::write(dir.join("base.post"), SMALL.replace("seed = 3", "seed = 4")).expect("write");
    let out = post(&["run", "next.post", "--out", "runs/next3", "-q"], &dir);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("building prerequisite `small`"), "{t}");
    assert_eq!(
        std::fs::read_dir(dir.join("runs/prereq"))
            .expect("cache")
            .count(),
        2
    );
}

/// The options a library user passes: a prerequisite that was not built is a clear refusal.
#[test]
fn unbuilt_prerequisite_is_refused_by_the_library() {
    let fs = MemoryFs::new().with("base.post", SMALL);
    let main = "use std.objectives.{sft}\n\nexperiment next {\n  model policy = trained(\"base.post\", model = \"policy\")\n  data train = task(\"arith\", size = 64, difficulty = 1)\n  stage s {\n    data = train\n    steps = 2\n    batch = 4 sequences\n    objective = sft(train.solution)\n  }\n}\n";
    let g = compile_source(&fs, "next.post", main.to_string())
        .graph
        .expect("a graph");
    assert_eq!(g.prerequisites.len(), 1);
    let dir = temp_dir("lib");
    let err =
        run_with_log(&g, &RunOptions::new(dir.join("out")), &mut |_| {}).expect_err("refused");
    assert_eq!(err.refusal(), Some(Refusal::MissingPath));
    assert!(err.to_string().contains("not been built"), "{err}");
}

/// Re-running into a finished run's directory without `--resume` is refused and loses
/// nothing; `--force` replaces it; `--resume` of a finished run changes nothing either.
#[test]
fn a_finished_run_is_never_overwritten() {
    let dir = temp_dir("rundir");
    std::fs::write(dir.join("small.post"), SMALL).expect("write");
    let out = post(&["run", "small.post", "--out", "runs/a", "-q"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let metrics = std::fs::read_to_string(dir.join("runs/a/metrics.jsonl")).expect("metrics");
    let again = post(&["run", "small.post", "--out", "runs/a", "-q"], &dir);
    let t = text(&again);
    assert_eq!(again.status.code(), Some(1), "{t}");
    assert!(
        t.contains("already holds a run") && t.contains("--resume"),
        "{t}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("runs/a/metrics.jsonl")).expect("metrics"),
        metrics,
        "the refused run touched the metrics"
    );
    assert!(
        !dir.join("runs/a/.post.lock").exists(),
        "a lock was left behind"
    );
    let forced = post(
        &["run", "small.post", "--out", "runs/a", "-q", "--force"],
        &dir,
    );
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced));
    assert!(dir.join("runs/a/summary.json").is_file());
}
