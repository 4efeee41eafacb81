//! W0002: settings that pass every type and range check but cannot train, and their neighbours
//! that can (so the warning cannot fire on everything).

use post_compiler::{MemoryFs, compile_source};

const HEAD: &str = "use std.objectives.{sft, grpo, dpo}\n\nexperiment e {\n  model policy = preset(\"tiny\")\n  model reference = frozen(policy)\n  data train = task(\"arith\", difficulty = 2)\n  reward correct(s) = if number(answer(s.completion)) == number(s.answer) then 1 else 0\n";

fn codes(stage: &str) -> Vec<(String, bool, String)> {
    let src = format!("{HEAD}  stage s {{\n    data = train\n    steps = 10\n{stage}  }}\n}}\n");
    let c = compile_source(&MemoryFs::new(), "e.post", src);
    c.diagnostics
        .iter()
        .map(|d| (d.code.to_string(), d.is_error(), d.message.clone()))
        .collect()
}

fn w0002(stage: &str) -> Vec<String> {
    codes(stage)
        .into_iter()
        .filter(|(c, _, _)| c == "W0002")
        .map(|(_, _, m)| m)
        .collect()
}

#[test]
fn a_group_sampled_at_temperature_zero_warns() {
    let m = w0002(
        "    batch = 8 prompts\n    rollout = sample(policy, n = 4, temperature = 0)\n    objective = grpo(reward = correct)\n",
    );
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].contains("temperature 0") && m[0].contains("advantage"),
        "{m:?}"
    );
}

#[test]
fn a_group_sampled_above_zero_does_not() {
    assert!(
        w0002(
            "    batch = 8 prompts\n    rollout = sample(policy, n = 4, temperature = 0.7)\n    objective = grpo(reward = correct)\n"
        )
        .is_empty()
    );
}

#[test]
fn sft_on_greedy_samples_does_not_warn() {
    // No group statistic: greedy completions are a fine SFT target (self-distillation).
    assert!(
        w0002(
            "    batch = 8 prompts\n    rollout = sample(policy, n = 1, temperature = 0)\n    objective = sft(rollout)\n"
        )
        .iter()
        .all(|m| !m.contains("temperature"))
    );
}

#[test]
fn identical_chosen_and_rejected_warn() {
    let m = w0002("    batch = 8 prompts\n    objective = dpo(train.solution, train.solution)\n");
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].contains("`chosen`") && m[0].contains("`rejected`") && m[0].contains("solution"),
        "{m:?}"
    );
}

#[test]
fn distinct_chosen_and_rejected_do_not() {
    assert!(
        w0002("    batch = 8 prompts\n    objective = dpo(train.solution, train.rejected)\n")
            .is_empty()
    );
}

#[test]
fn a_zero_gradient_clip_is_a_range_error() {
    let d =
        codes("    batch = 8 sequences\n    objective = sft(train.solution)\n    grad_clip = 0\n");
    assert!(d.iter().any(|(c, err, _)| c == "E0401" && *err), "{d:?}");
}
