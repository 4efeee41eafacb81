//! `trained("base.post", model = "policy")`: a model as another experiment trains it.
//!
//! The other file is compiled here, through the same [`crate::FileSystem`], so `post check`
//! checks it too and an edit to it changes this graph's hash. The lowered model is the
//! prerequisite's preset with [`post_graph::Trained`] naming where its initial weights come
//! from; the graph lists the prerequisite with its graph hash, and `post run` builds it first
//! when its output is missing (`<runs>/prereq/<experiment>-<hash>`).

use post_graph::{ModelSource, Prerequisite, StageKind, Trained};

use super::{Checker, Value};
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;
use crate::suggest;

/// `trained(file, model)`, each argument with its span (bound by the caller against the
/// signature table).
pub(super) fn trained(
    c: &mut Checker,
    (file, file_span): (String, Span),
    (model, model_span): (String, Span),
) -> Option<Value> {
    let resolved = c.read_path(&file, file_span)?;
    if c.file_stack.iter().any(|f| same_file(f, &resolved)) {
        let circle = c.file_stack.join(" -> ");
        c.err(
            Diagnostic::error(
                Code::E0505,
                format!("`{file}` builds on this file: the experiments form a circle"),
                file_span,
                "circular prerequisite",
            )
            .with_help(format!(
                "{circle} -> {resolved}: start one of them from a preset or a checkpoint instead"
            )),
        );
        return None;
    }
    if !c.fs.is_file(&resolved) {
        c.err(
            Diagnostic::error(
                Code::E0504,
                format!("prerequisite experiment `{file}` not found (looked for `{resolved}`)"),
                file_span,
                "no such file",
            )
            .with_help("the path is relative to this file's directory, like a data file's"),
        );
        return None;
    }
    let compiled = crate::compile_nested(c.fs, &resolved, &c.file_stack);
    let errors: Vec<&Diagnostic> = compiled
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .collect();
    if let Some(first) = errors.first() {
        c.err(
            Diagnostic::error(
                Code::E0505,
                format!(
                    "prerequisite experiment `{file}` has {} error(s); the first: {} {}",
                    errors.len(),
                    first.code,
                    first.message
                ),
                file_span,
                "prerequisite does not check",
            )
            .with_help(format!("run `post check {resolved}` to see them all")),
        );
        return None;
    }
    let Some(graph) = compiled.graph else {
        c.err(
            Diagnostic::error(
                Code::E0505,
                format!("`{file}` defines no experiment, so nothing trains a model there"),
                file_span,
                "not an experiment",
            )
            .with_help("`trained(...)` names a file with an `experiment` block"),
        );
        return None;
    };
    let Some(node) = graph.model(&model) else {
        let names: Vec<&str> = graph.models.iter().map(|m| m.name.as_str()).collect();
        c.err(
            Diagnostic::error(
                Code::E0101,
                format!("experiment `{}` has no model `{model}`", graph.experiment),
                model_span,
                "not a model there",
            )
            .with_help(
                suggest::did_you_mean(&model, names.iter().copied())
                    .unwrap_or_else(|| format!("its models are {}", names.join(", "))),
            ),
        );
        return None;
    };
    let trains = graph
        .stages
        .iter()
        .any(|s| matches!(&s.kind, StageKind::Train(t) if t.model == model));
    let ModelSource::Preset { preset, config, .. } = &node.source else {
        c.err(
            Diagnostic::error(
                Code::E0505,
                format!(
                    "model `{model}` of `{}` is not a preset, so its trained weights cannot start this experiment yet",
                    graph.experiment
                ),
                model_span,
                "not a trained preset",
            )
            .with_help(
                "name a model that experiment builds with `preset(...)` and trains; for a Hugging Face model, use `hf(\"<its run>/models/<name>\")`",
            ),
        );
        return None;
    };
    if !trains {
        c.err(
            Diagnostic::error(
                Code::E0505,
                format!("no stage of `{}` trains model `{model}`", graph.experiment),
                model_span,
                "never trained",
            )
            .with_help(
                "name the model its stages train (their `model = ...`, `policy` by default)",
            ),
        );
        return None;
    }
    let hash = graph.hash();
    match c
        .prerequisites
        .iter()
        .find(|p| p.experiment == graph.experiment)
    {
        Some(p) if p.graph_hash != hash || !same_file(&p.file, &file) => {
            c.err(
                Diagnostic::error(
                    Code::E0505,
                    format!(
                        "two prerequisites are both called experiment `{}` (`{}` and `{file}`)",
                        graph.experiment, p.file
                    ),
                    file_span,
                    "same experiment name",
                )
                .with_help("their outputs are cached by experiment name: rename one experiment"),
            );
            return None;
        }
        Some(_) => {}
        None => c.prerequisites.push(Prerequisite {
            experiment: graph.experiment.clone(),
            file: file.clone(),
            graph_hash: hash,
        }),
    }
    Some(Value::ModelSrc(ModelSource::Preset {
        preset: preset.clone(),
        config: config.clone(),
        init: None,
        trained: Some(Trained {
            prerequisite: graph.experiment.clone(),
            model,
        }),
    }))
}

/// Paths compared without a leading `./`.
fn same_file(a: &str, b: &str) -> bool {
    a.trim_start_matches("./") == b.trim_start_matches("./")
}
