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
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub primary: Label,
    pub secondary: Vec<Label>,
    pub help: Option<String>,
    /// An edit that resolves it (the editor offers it as a quick fix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
}

/// Replace `span` with `replacement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fix {
    pub span: Span,
    pub replacement: String,
}

impl Diagnostic {
    pub fn error(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            primary: Label::new(span, label),
            secondary: Vec::new(),
            help: None,
            fix: None,
        }
    }

    /// A warning: reported by check, run and the editor, never stops a graph being built.
    pub fn warning(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message, span, label)
        }
    }

    /// The fix: replace `span` with `replacement`.
    pub fn with_fix(mut self, span: Span, replacement: impl Into<String>) -> Self {
        self.fix = Some(Fix {
            span,
            replacement: replacement.into(),
        });
        self
    }

    /// [`Diagnostic::with_fix`] when there is a replacement.
    pub fn with_fix_opt(self, span: Span, replacement: Option<&str>) -> Self {
        match replacement {
            Some(r) => self.with_fix(span, r),
            None => self,
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

/// Most diagnostics reported for one file; the rest are cut and counted in one E0007 (a file
/// of garbage would otherwise print without end, and an editor would choke on the list).
pub const MAX_DIAGNOSTICS: usize = 100;

/// Keep the first [`MAX_DIAGNOSTICS`] of `diagnostics` (already in reporting order) and replace
/// the rest with one E0007 counting them, an error when any cut one was an error (so an exit
/// status or a "no errors" summary never depends on which were shown).
pub fn cap(diagnostics: &mut Vec<Diagnostic>) {
    if diagnostics.len() <= MAX_DIAGNOSTICS {
        return;
    }
    let cut = diagnostics.split_off(MAX_DIAGNOSTICS);
    let errors = cut.iter().filter(|d| d.is_error()).count();
    let first = cut[0].primary.span;
    let mut d = Diagnostic::warning(
        Code::E0007,
        format!(
            "{} more diagnostic{} not shown ({errors} error{}); only the first {MAX_DIAGNOSTICS} are reported",
            cut.len(),
            if cut.len() == 1 { "" } else { "s" },
            if errors == 1 { "" } else { "s" },
        ),
        Span::new(first.start as usize, first.start as usize),
        "the first one not shown is here",
    )
    .with_help("fix the diagnostics above and check again; the rest are reported then");
    if errors > 0 {
        d.severity = Severity::Error;
    }
    diagnostics.push(d);
}

/// Declares [`Code`] with its one-line titles, in the order spec/language.md lists them.
macro_rules! codes {
    ($($code:ident => $title:expr,)*) => {
        /// A stable diagnostic code (`E0101`), documented in spec/language.md. A code is a
        /// variant, so a mistyped one does not compile. Ordered as the spec lists them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Code {
            $($code,)*
        }

        impl Code {
            /// Every code, in the order spec/language.md lists them.
            pub const ALL: &[Code] = &[$(Code::$code,)*];

            /// The code as written: `E0101`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$code => stringify!($code),)*
                }
            }

            /// The one-line title of the spec's table.
            pub fn title(self) -> &'static str {
                match self {
                    $(Code::$code => $title,)*
                }
            }
        }
    };
}

codes! {
    E0001 => "syntax error",
    E0002 => "the file is not valid UTF-8",
    E0003 => "the file cannot be read",
    E0004 => "nesting too deep",
    E0005 => "invalid string escape",
    E0006 => "invalid number",
    E0007 => "too many diagnostics",
    E0101 => "unresolved name",
    E0102 => "duplicate definition",
    E0103 => "unknown argument or setting",
    E0104 => "missing required argument or setting",
    E0105 => "argument given twice or out of place",
    E0106 => "unknown import",
    E0107 => "item not allowed here",
    E0108 => "more than one experiment in a file",
    E0109 => "recursive definition",
    E0201 => "type mismatch",
    E0202 => "unit mismatch",
    E0203 => "value depends on a schedule where a constant is needed",
    E0204 => "non-exhaustive or invalid match",
    E0301 => "axis error: a reduction got a value on the wrong axis",
    E0302 => "an objective must reduce to a scalar",
    E0303 => "token-level values of two sequence sets combined",
    E0304 => "one sequence set scored by two different rewards",
    E0401 => "value out of range",
    E0402 => "batch not divisible by the group size",
    E0403 => "a reference model is required",
    E0404 => "generation does not fit in the model's context",
    E0405 => "group statistics need at least two completions per prompt",
    E0406 => "pass@k needs at least k samples per prompt",
    E0407 => "conflicting settings",
    E0408 => "the batch does not split into the gradient-accumulation micro-batches",
    E0501 => "unknown dataset field",
    E0502 => "dataset file has no readable records",
    E0503 => "a stage needs a rollout",
    E0504 => "a path the experiment reads does not exist",
    E0505 => "a prerequisite experiment cannot be used",
    E0506 => "a path outside the directories the file may read",
    W0001 => "the runtime does not run this yet",
    W0002 => "these settings cannot train",
}

impl Code {
    /// The code written as text (`"E0101"`), if it is one.
    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == text)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Code {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

/// The title of a code written as text (`"E0101"`).
pub fn code_title(code: &str) -> Option<&'static str> {
    Code::parse(code).map(Code::title)
}

#[cfg(test)]
mod tests {
    use super::Code;

    /// The spec's table of codes lists every [`Code`], in order, with its title.
    #[test]
    fn the_spec_table_lists_every_code_in_order() {
        let spec = include_str!("../../spec/language.md");
        let rows: Vec<(String, String)> = spec
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells.len() == 4 && Code::parse(cells[1]).is_some())
                    .then(|| (cells[1].to_string(), cells[2].to_string()))
            })
            .collect();
        let codes: Vec<&str> = rows.iter().map(|(c, _)| c.as_str()).collect();
        let all: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(codes, all);
        for (c, title) in &rows {
            let code = Code::parse(c).unwrap();
            assert!(
                title.starts_with(code.title()),
                "{c}: spec `{title}`, code `{}`",
                code.title()
            );
        }
    }

    #[test]
    fn codes_print_as_written() {
        assert_eq!(Code::E0202.to_string(), "E0202");
        assert_eq!(serde_json::to_string(&Code::W0001).unwrap(), "\"W0001\"");
    }
}
