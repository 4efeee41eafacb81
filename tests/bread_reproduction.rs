//! The reduced BREAD reproduction: the real `examples/bread_base.post`, `examples/grpo.post` and
//! `examples/bread.post`, with smaller step budgets, run through the `post` binary, then compared
//! with `post compare`. BREAD must end with a higher held-out accuracy than GRPO from the same
//! base, seed and step budget, while training on only part of the expert-trace tokens.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn post(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_post"))
        .args(args)
        .output()
        .expect("the post binary runs")
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// An example with `replacements` applied; each must match exactly once, so a change to the
/// example that this reduction no longer fits fails loudly instead of running the full budget.
fn reduced(example: &str, replacements: &[(&str, &str)], dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(example);
    let mut text = std::fs::read_to_string(&src).unwrap();
    for (from, to) in replacements {
        assert_eq!(
            text.matches(from).count(),
            1,
            "`{from}` should occur once in {example}"
        );
        text = text.replace(from, to);
    }
    let out = dir.join(example);
    std::fs::write(&out, text).unwrap();
    out
}

fn comparison(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("comparison.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn bread_beats_grpo_from_the_same_base() {
    let root = std::env::temp_dir().join(format!("post-bread-repro-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let examples = root.join("examples");
    std::fs::create_dir_all(&examples).unwrap();
    let runs = root.join("runs");

    let base = reduced(
        "bread_base.post",
        &[
            ("steps = 2400", "steps = BASE_STEPS"),
            ("every 2400 steps on easy", "every BASE_STEPS steps on easy"),
            ("every 2400 steps on hard", "every BASE_STEPS steps on hard"),
        ],
        &examples,
    );
    let base_out = runs.join("bread_base");
    ok(
        &post(&[
            "run",
            base.to_str().unwrap(),
            "--out",
            base_out.to_str().unwrap(),
        ]),
        "bread_base",
    );

    let rl = [
        ("steps = 60", "steps = RL_STEPS"),
        ("eval every 10 steps", "eval every RL_EVERY steps"),
    ];
    for name in ["grpo", "bread"] {
        let file = reduced(&format!("{name}.post"), &rl, &examples);
        let out = runs.join(name);
        ok(
            &post(&[
                "run",
                file.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ]),
            name,
        );
    }

    let cmp = root.join("comparison");
    let o = post(&[
        "compare",
        runs.join("grpo").to_str().unwrap(),
        runs.join("bread").to_str().unwrap(),
        "--out",
        cmp.to_str().unwrap(),
    ]);
    ok(&o, "compare");
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    println!("{table}");
    let c = comparison(&cmp);
    let row = |name: &str| {
        c["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["run"] == name)
            .unwrap_or_else(|| panic!("no row {name} in {c}"))
            .clone()
    };
    let (grpo, bread) = (row("grpo"), row("bread"));
    let acc = |r: &serde_json::Value| r["final"].as_f64().unwrap();
    let frac = |r: &serde_json::Value| r["expert_token_frac"].as_f64().unwrap();
    assert!(
        acc(&bread) >= acc(&grpo) + MARGIN,
        "BREAD {} should beat GRPO {} by {MARGIN}:\n{table}",
        acc(&bread),
        acc(&grpo)
    );
    assert!(frac(&bread) > 0.0 && frac(&bread) < 1.0, "{table}");
    assert_eq!(frac(&grpo), 0.0, "{table}");
    assert!(root.join("comparison/comparison.svg").is_file());
    let _ = std::fs::remove_dir_all(&root);
}
