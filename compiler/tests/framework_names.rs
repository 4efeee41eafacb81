//! The names of TRL, verl and OpenRLHF (`suggest::FRAMEWORK_NAMES`) lead to post's, with the
//! rename as a fix, wherever post's name is valid: arguments of built-ins and objectives, and
//! stage settings.

use post_compiler::{MemoryFs, compile_source};

fn e0103(body: &str) -> (String, Option<String>) {
    let src = format!(
        "use std.objectives.{{grpo}}\n\nexperiment e {{\n  model policy = preset(\"tiny\")\n  data train = task(\"arith\", difficulty = 2)\n  reward correct(s) = if number(answer(s.completion)) == number(s.answer) then 1 else 0\n{body}}}\n"
    );
    let c = compile_source(&MemoryFs::new(), "e.post", src.clone());
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.code == "E0103")
        .unwrap_or_else(|| panic!("no E0103 in {:#?}", c.diagnostics));
    let fix = d.fix.as_ref().map(|f| {
        assert_eq!(f.span, d.primary.span, "the fix replaces the name");
        f.replacement.clone()
    });
    (d.help.clone().unwrap_or_default(), fix)
}

#[test]
fn a_sample_argument() {
    let (help, fix) = e0103("  rollout r = sample(policy, num_generations = 8)\n");
    assert!(help.contains("TRL") && help.contains("`n`"), "{help}");
    assert_eq!(fix.as_deref(), Some("n"));
}

#[test]
fn an_objective_argument_and_a_stage_setting() {
    let stage = |setting: &str, args: &str| {
        format!(
            "  stage s {{\n    data = train\n    steps = 10\n    batch = 8 prompts\n    rollout = sample(policy, n = 4)\n    objective = grpo(reward = correct{args})\n{setting}  }}\n"
        )
    };
    let (help, fix) = e0103(&stage("", ", epsilon_high = 0.28"));
    assert!(help.contains("`eps_high`"), "{help}");
    assert_eq!(fix.as_deref(), Some("eps_high"));
    let (help, fix) = e0103(&stage("    max_grad_norm = 1.0\n", ""));
    assert!(help.contains("`grad_clip`"), "{help}");
    assert_eq!(fix.as_deref(), Some("grad_clip"));
}

#[test]
fn a_name_valid_elsewhere_is_not_suggested_here() {
    // `learning_rate` is `lr` of an optimizer, not an argument of `sample`.
    let (help, fix) = e0103("  rollout r = sample(policy, learning_rate = 1e-3)\n");
    assert!(!help.contains("`lr`"), "{help}");
    assert_eq!(fix, None);
}
