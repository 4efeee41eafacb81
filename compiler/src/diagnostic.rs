//! The one diagnostic type every phase converts its errors into. It is plain data (byte-offset
//! spans, no terminal or editor types): the CLI renders it with miette, the language server as
//! LSP diagnostics.

use serde::{Deserialize, Serialize};

use crate::span::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

impl Label {
    pub fn new(span: Span, message: impl Into<String>) -> Label {
        Label {
            span,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Stable code (`E0101`), documented in spec/language.md.
    pub code: String,
    pub severity: Severity,
    pub message: String,
    pub primary: Label,
    pub secondary: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(
        code: &str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            code: code.to_string(),
            severity: Severity::Error,
            message: message.into(),
            primary: Label::new(span, label),
            secondary: Vec::new(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn with_label(mut self, span: Span, message: impl Into<String>) -> Self {
        self.secondary.push(Label::new(span, message));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Every diagnostic code with a one-line title, in the order spec/language.md lists them.
pub const CODES: &[(&str, &str)] = &[
    ("E0001", "syntax error"),
    ("E0002", "the file is not valid UTF-8"),
    ("E0003", "the file cannot be read"),
    ("E0004", "nesting too deep"),
    ("E0005", "invalid string escape"),
    ("E0006", "invalid number"),
    ("E0101", "unresolved name"),
    ("E0102", "duplicate definition"),
    ("E0103", "unknown argument or setting"),
    ("E0104", "missing required argument or setting"),
    ("E0105", "argument given twice or out of place"),
    ("E0106", "unknown import"),
    ("E0107", "item not allowed here"),
    ("E0108", "more than one experiment in a file"),
    ("E0109", "recursive definition"),
    ("E0201", "type mismatch"),
    ("E0202", "unit mismatch"),
    (
        "E0203",
        "value depends on a schedule where a constant is needed",
    ),
    ("E0204", "non-exhaustive or invalid match"),
    (
        "E0301",
        "axis error: a reduction got a value on the wrong axis",
    ),
    ("E0302", "an objective must reduce to a scalar"),
    ("E0303", "token-level values of two sequence sets combined"),
    ("E0304", "one sequence set scored by two different rewards"),
    ("E0401", "value out of range"),
    ("E0402", "batch not divisible by the group size"),
    ("E0403", "a reference model is required"),
    ("E0404", "generation does not fit in the model's context"),
    (
        "E0405",
        "group statistics need at least two completions per prompt",
    ),
    ("E0406", "pass@k needs at least k samples per prompt"),
    ("E0407", "conflicting settings"),
    ("E0501", "unknown dataset field"),
    ("E0502", "dataset file has no readable records"),
    ("E0503", "a stage needs a rollout"),
];

pub fn code_title(code: &str) -> Option<&'static str> {
    CODES.iter().find(|(c, _)| *c == code).map(|(_, t)| *t)
}
