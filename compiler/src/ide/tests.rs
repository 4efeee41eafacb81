//! Unit tests of the IDE queries, on in-memory text (`$0` marks the cursor).

use super::complete::filter_prefix;
use super::*;
use crate::MemoryFs;

fn cursor(src: &str) -> (String, u32) {
    let at = src.find("$0").expect("a $0 cursor");
    (src.replacen("$0", "", 1), at as u32)
}

fn labels(src: &str) -> Vec<String> {
    let (text, at) = cursor(src);
    let a = Analysis::new(&text, "main.post");
    let items = filter_prefix(&a.source, a.completions(&MemoryFs::new(), at));
    items.into_iter().map(|c| c.label).collect()
}

#[test]
fn dataset_dot_offers_fields_and_transforms() {
    let l = labels("experiment e {\n  data t = task(\"arith\")\n  data u = t.$0\n}\n");
    for want in [
        "prompt", "solution", "answer", "rejected", "template", "shuffle", "take",
    ] {
        assert!(l.iter().any(|x| x == want), "missing {want} in {l:?}");
    }
}

#[test]
fn jsonl_fields_come_from_the_first_records() {
    let fs = MemoryFs::new().with(
        "dir/data/qa.jsonl",
        "{\"q\": 1, \"a\": 2}\n{\"q\": 3, \"a\": 4, \"x\": 5}\n",
    );
    let (text, at) = cursor(
        "experiment e {\n  data qa = jsonl(\"data/qa.jsonl\")\n  data t = qa.$0template(\"{q}\")\n}\n",
    );
    let a = Analysis::new(&text, "dir/main.post");
    let l: Vec<String> = a
        .completions(&fs, at)
        .into_iter()
        .map(|c| c.label)
        .collect();
    for want in ["q", "a", "template", "shuffle"] {
        assert!(l.iter().any(|x| x == want), "missing {want} in {l:?}");
    }
    assert!(
        !l.iter().any(|x| x == "x"),
        "x is not in every record: {l:?}"
    );
}

/// The checker's own "the arguments are: ..." help lists exactly the parameters documented in
/// `docs`, for every experiment-level built-in and transform (so the tables cannot drift).
#[test]
fn signatures_match_the_checker() {
    use super::docs::{BUILTINS, Scope};
    let fs = MemoryFs::new();
    for b in BUILTINS
        .iter()
        .filter(|b| matches!(b.scope, Scope::Experiment | Scope::Transform))
    {
        if b.name == "jsonl" {
            continue; // Named arguments of `jsonl` map fields; they are not parameters.
        }
        let call = match b.scope {
            Scope::Transform => format!("task(\"arith\").{}(zzzzzz = 1)", b.name),
            _ => format!("{}(zzzzzz = 1)", b.name),
        };
        let src = format!("experiment e {{\n  data probe = {call}\n}}\n");
        let c = crate::compile_source(&fs, "probe.post", src);
        let help = c
            .diagnostics
            .iter()
            .find(|d| d.code == "E0103")
            .and_then(|d| d.help.clone())
            .unwrap_or_else(|| {
                panic!(
                    "`{}`: no unknown-argument error in {:?}",
                    b.name, c.diagnostics
                )
            });
        let documented: Vec<&str> = b.params.iter().map(|p| p.name).collect();
        let expected = if documented.is_empty() {
            "this takes no arguments".to_string()
        } else {
            format!("the arguments are: {}", documented.join(", "))
        };
        assert_eq!(help, expected, "parameters of `{}`", b.name);
    }
}

/// The same for block settings: the checker's list of known keys is the documented one.
#[test]
fn settings_match_the_checker() {
    use super::docs::{ANALYSIS_SETTINGS, SELECT_SETTINGS, STAGE_SETTINGS};
    let fs = MemoryFs::new();
    for (kw, what, table) in [
        ("stage", "stage", STAGE_SETTINGS),
        ("select", "select", SELECT_SETTINGS),
        ("analysis", "analysis", ANALYSIS_SETTINGS),
    ] {
        let src = format!("experiment e {{\n  {kw} s {{\n    zzzzzz = 1\n  }}\n}}\n");
        let c = crate::compile_source(&fs, "probe.post", src);
        let help = c
            .diagnostics
            .iter()
            .find(|d| d.code == "E0103")
            .and_then(|d| d.help.clone())
            .unwrap_or_else(|| panic!("`{kw}`: no unknown-setting error in {:?}", c.diagnostics));
        let keys: Vec<&str> = table.iter().map(|s| s.name).collect();
        assert_eq!(
            help,
            format!("the settings of {what} are: {}", keys.join(", ")),
            "settings of `{kw}`"
        );
    }
    let src = "experiment e {\n  zzzzzz = 1\n}\n".to_string();
    let c = crate::compile_source(&fs, "probe.post", src);
    let keys: Vec<&str> = super::docs::EXPERIMENT_SETTINGS
        .iter()
        .map(|s| s.name)
        .collect();
    assert!(
        c.diagnostics.iter().any(|d| d.code == "E0103"
            && d.help.as_deref()
                == Some(format!("the settings of experiment are: {}", keys.join(", ")).as_str())),
        "experiment settings: {:?}",
        c.diagnostics
    );
}

#[test]
fn navigation_reaches_parameters_and_the_stdlib() {
    let (text, at) = cursor(
        "use std.objectives.{dpo}\nexperiment e {\n  objective o(y: seqs, w: pos = 1) = w * dpo(y, y, be$0ta = w)\n}\n",
    );
    let a = Analysis::new(&text, "main.post");
    let def = a.definition(at).expect("a definition");
    assert!(matches!(def.file, FileId::Std(_)));
    let src = def.file.std_source().expect("stdlib text");
    assert_eq!(&src[def.span.start as usize..def.span.end as usize], "beta");
    // `w`: its declaration and two uses, all renamed together.
    let w = text.find("w * ").expect("w") as u32;
    let spans = a.rename(w, "weight").expect("renamable");
    assert_eq!(spans.len(), 3);
    assert!(a.rename(w, "then").is_err());
    assert!(
        a.prepare_rename(at).is_err(),
        "stdlib parameters are not renamed"
    );
}

#[test]
fn hover_shows_stdlib_docs_defaults_and_units() {
    let (text, at) = cursor(
        "use std.rollouts.{explore}\nexperiment e {\n  model p = preset(\"tiny\")\n  rollout r = expl$0ore(p, max_tokens = 64 tokens)\n}\n",
    );
    let a = Analysis::new(&text, "main.post");
    let h = a.hover(at).expect("hover").markdown;
    assert!(h.contains("from `std.rollouts`"), "{h}");
    assert!(h.contains("max_tokens: tokens = 128"), "{h}");
    assert!(h.contains("a number of tokens"), "{h}");
    let unit = text.find("tokens)").expect("unit") as u32 + 1;
    assert!(
        a.hover(unit)
            .expect("unit hover")
            .markdown
            .contains("(unit) tokens")
    );
}

#[test]
fn completion_knows_the_cursor_context() {
    // Statement start in a stage: its settings (not those already written) and `eval`.
    let l = labels("experiment e {\n  stage s {\n    steps = 1\n    $0\n  }\n}\n");
    assert!(
        l.contains(&"batch =".to_string()) && l.contains(&"eval".to_string()),
        "{l:?}"
    );
    assert!(!l.contains(&"steps =".to_string()), "{l:?}");
    // Top level: declarations and `use`, no settings.
    let l = labels("$0\n");
    assert!(
        l.contains(&"use".to_string()) && l.contains(&"experiment".to_string()),
        "{l:?}"
    );
    // Call arguments: the parameters not given yet, positional ones counted.
    let l = labels(
        "experiment e {\n  model p = preset(\"tiny\")\n  rollout r = sample(p, n = 2, $0)\n}\n",
    );
    assert!(l.contains(&"temperature =".to_string()), "{l:?}");
    assert!(
        !l.contains(&"model =".to_string()) && !l.contains(&"n =".to_string()),
        "{l:?}"
    );
    // An enumerated parameter's value: its options only.
    let l = labels("experiment e {\n  data t = task(\"arith\", split = $0)\n}\n");
    assert_eq!(l, vec!["train".to_string(), "test".to_string()]);
    // `use std.` and inside the braces.
    assert!(labels("use std.$0").contains(&"objectives".to_string()));
    let l = labels("use std.rewards.{$0}");
    assert!(l.contains(&"exact_answer".to_string()), "{l:?}");
    // Inside comments and strings: nothing.
    assert!(labels("// mod$0el\n").is_empty());
    assert!(labels("experiment e {\n  model p = preset(\"ti$0ny\")\n}\n").is_empty());
}

#[test]
fn nothing_panics_on_any_prefix_of_the_examples() {
    // Every prefix of a realistic file (as while typing it), every offset.
    let src = "use std.objectives.{grpo}\nexperiment e {\n  model policy = preset(\"tiny\")\n  data train = task(\"arith\", split = train)\n  reward ok(s) = if s.answer == answer(s.completion) then 1.0 else 0.0\n  stage rl {\n    steps = 3\n    batch = 2 prompts\n    rollout = sample(policy, n = 2)\n    objective = grpo(reward = ok)\n    eval every 1 steps on train { acc = accuracy(ok, greedy(policy)) }\n  }\n}\n";
    let fs = MemoryFs::new();
    for end in (0..=src.len()).step_by(7) {
        let text = &src[..end];
        let a = Analysis::new(text, "main.post");
        for at in (0..=end as u32 + 2).step_by(3) {
            let _ = a.hover(at);
            let _ = a.completions(&fs, at);
            let _ = a.signature_help(at);
            let _ = a.definition(at);
            let _ = a.references(at, true);
            let _ = a.rename(at, "x");
        }
        let _ = a.semantic_tokens();
        let _ = a.outline();
    }
}

#[test]
fn a_setting_value_is_completed_with_names_not_keywords() {
    let l = labels(
        "use std.objectives.{sft}\nexperiment e {\n  data t = task(\"arith\")\n  stage s {\n    objective = $0\n  }\n}\n",
    );
    assert!(
        l.contains(&"sft".to_string()) && l.contains(&"t".to_string()),
        "{l:?}"
    );
    assert!(!l.iter().any(|x| x == "eval" || x == "steps ="), "{l:?}");
    // After a number on the same line: units.
    let l = labels("experiment e {\n  stage s {\n    steps = 10 $0\n  }\n}\n");
    assert!(l.contains(&"steps".to_string()), "{l:?}");
}

#[test]
fn diagnostics_match_compile_source() {
    let fs = MemoryFs::new().with("d/x.jsonl", "{\"q\": 1}\n");
    let sources = [
        "",
        "use std.objectives.{sft, nope}\nexperiment e {\n  model p = preset(\"tiny\")\n  model p = preset(\"20m\")\n  broken line here\n  data t = jsonl(\"x.jsonl\", prompt = \"zz\")\n  stage s {\n    steps = 0\n    batch = 2 tokens\n    objective = sft(t.solution)\n  }\n}\n",
        "experiment e {\n  stage s { }\n}\nexperiment f {\n}\n(((\n",
        "use std.objectives.{grpo}\nexperiment e {\n  model policy = preset(\"tiny\")\n  data train = task(\"arith\")\n  reward ok(s) = s.answer == answer(s.completion)\n  stage rl {\n    steps = 2\n    batch = 3 completions\n    rollout = sample(policy, n = 2)\n    objective = grpo(reward = ok)\n  }\n}\n",
    ];
    for src in sources {
        let parsed = crate::syntax::parse(src);
        let mine = diagnostics_of(&fs, "d/main.post", &parsed);
        let theirs = crate::compile_source(&fs, "d/main.post", src.to_string()).diagnostics;
        assert_eq!(mine, theirs, "for {src:?}");
    }
}
