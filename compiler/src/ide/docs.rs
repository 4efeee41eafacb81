//! Documentation the editor shows for the language's fixed vocabulary: keywords, units, the
//! built-in functions (experiment level, formulas, rewards, dataset transforms) and block
//! settings. Standard library items are documented by their own `//` comments in `stdlib/`.
//!
//! Built-in signatures and block settings are not written here: they are the checker's own
//! tables (`check::signatures::BUILTINS`, the settings tables of `check::stage`), re-exported,
//! with types and defaults rendered from the checker's `T` and `D`.

pub use crate::check::builtins::P as ParamDoc;
pub use crate::check::signatures::{BUILTINS, Builtin as BuiltinDoc, ParamDefault, Scope, builtin};
pub use crate::check::stage::{
    ANALYSIS_SETTINGS, EVAL_SETTINGS, EXPERIMENT_SETTINGS, SELECT_SETTINGS, STAGE_SETTINGS,
};

/// A block setting: documented like a parameter (`name` is the key).
pub type SettingDoc = ParamDoc;

/// A setting of a block.
/// A keyword or unit and what it means.
pub const KEYWORDS: &[(&str, &str)] = &[
    (
        "use",
        "Imports standard library items: `use std.objectives.{sft, grpo}`.",
    ),
    (
        "experiment",
        "The experiment: its seed, definitions and stages (the curriculum, run in order). One per file.",
    ),
    (
        "model",
        "Declares a model: `model policy = preset(\"tiny\")`, `model reference = frozen(policy)`.",
    ),
    (
        "data",
        "Declares a dataset: `data train = task(\"arith\")` or `jsonl(\"file.jsonl\", ...)`, with transforms.",
    ),
    (
        "reward",
        "Declares a reward, a pure expression over one sample: `reward correct(s) = answer(s.completion) == s.answer`.",
    ),
    (
        "objective",
        "Declares an objective: a formula over per-token, per-sequence and per-group quantities, reduced to a scalar loss.",
    ),
    (
        "rollout",
        "Declares a rollout policy: how completions are produced (`sample`, `greedy`, `branched`, ...).",
    ),
    ("const", "Declares a named constant."),
    (
        "stage",
        "A training stage: objective, data, rollout, optimizer, steps and batch. Stages run in order.",
    ),
    (
        "select",
        "A data-selection stage (S2L): trains a proxy, clusters loss trajectories and selects examples for later stages.",
    ),
    (
        "analysis",
        "An analysis stage: captures activations per layer and computes summaries.",
    ),
    (
        "eval",
        "An evaluation block in a stage: `eval every 50 steps on test { accuracy = accuracy(correct, greedy(policy)) }`.",
    ),
    ("every", "How often an eval block runs: `every 50 steps`."),
    ("on", "The dataset an eval block evaluates on."),
    ("if", "`if cond then a else b`."),
    ("then", "`if cond then a else b`."),
    ("else", "`if cond then a else b`."),
    (
        "match",
        "`match option { a => x, b => y }` chooses by a symbol parameter (objective formulas).",
    ),
    ("true", "The boolean true."),
    ("false", "The boolean false."),
];

pub const UNITS: &[(&str, &str)] = &[
    ("steps", "Optimizer steps."),
    ("step", "Optimizer steps."),
    ("tokens", "Tokens of the model's tokenizer."),
    ("token", "Tokens of the model's tokenizer."),
    (
        "prompts",
        "Prompts; with sampling each prompt yields a group of completions.",
    ),
    (
        "prompt",
        "Prompts; with sampling each prompt yields a group of completions.",
    ),
    (
        "sequences",
        "Sequences (prompt + completion) taken from a dataset.",
    ),
    (
        "sequence",
        "Sequences (prompt + completion) taken from a dataset.",
    ),
    (
        "completions",
        "Sampled completions (a multiple of the group size).",
    ),
    (
        "completion",
        "Sampled completions (a multiple of the group size).",
    ),
];

/// Parameter type names of `.post` definitions, with their meaning.
pub const TYPES: &[(&str, &str)] = &[
    ("num", "any finite number"),
    ("pos", "a number > 0"),
    ("nonneg", "a number >= 0"),
    ("prob", "a number strictly between 0 and 1"),
    ("int", "a whole number >= 0"),
    ("count", "a whole number >= 1"),
    ("str", "a string"),
    ("bool", "a boolean"),
    ("tokens", "a number of tokens (unit `tokens`)"),
    ("steps", "a number of steps (unit `steps`)"),
    ("model", "a model"),
    ("data", "a dataset"),
    ("reward", "a reward"),
    ("rollout", "a rollout"),
    ("seqs", "a sequence set: a dataset field or a rollout"),
    ("token", "a formula value with one entry per token"),
    ("seq", "a formula value with one entry per sequence"),
    ("scalar", "a formula value reduced to a scalar"),
];

pub fn keyword(name: &str) -> Option<&'static str> {
    KEYWORDS.iter().find(|(k, _)| *k == name).map(|(_, d)| *d)
}

pub fn unit(name: &str) -> Option<&'static str> {
    UNITS.iter().find(|(k, _)| *k == name).map(|(_, d)| *d)
}

pub fn type_name(name: &str) -> Option<&'static str> {
    TYPES.iter().find(|(k, _)| *k == name).map(|(_, d)| *d)
}

/// Reserved words (never identifiers).
pub const RESERVED: &[&str] = &["if", "then", "else", "match", "true", "false"];

/// Words that introduce a definition.
pub const DEF_KEYWORDS: &[&str] = &["model", "data", "reward", "objective", "rollout", "const"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_and_type_is_documented() {
        for b in BUILTINS {
            assert!(!b.doc.is_empty(), "`{}` has no documentation", b.name);
        }
        for t in crate::check::builtins::TYPE_NAMES {
            assert!(type_name(t).is_some(), "type `{t}` has no documentation");
        }
    }
}
