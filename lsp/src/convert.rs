//! Byte offsets <-> LSP positions (UTF-16 code units), and compiler types -> LSP types.

use lsp_types as lt;
use post_compiler::{LineIndex, Span};

/// A text with its line index.
pub struct Text<'a> {
    pub text: &'a str,
    pub index: &'a LineIndex,
}

impl Text<'_> {
    pub fn position(&self, offset: u32) -> lt::Position {
        let lc = self.index.line_col(self.text, offset);
        lt::Position::new(lc.line, lc.col_utf16)
    }

    pub fn range(&self, span: Span) -> lt::Range {
        lt::Range::new(self.position(span.start), self.position(span.end))
    }

    /// The byte offset of a position; positions past a line's end or the text's end are
    /// clamped, so no client input can point outside the text.
    pub fn offset(&self, p: lt::Position) -> u32 {
        self.index.offset_utf16(self.text, p.line, p.character)
    }

    pub fn span(&self, r: lt::Range) -> Span {
        let a = self.offset(r.start);
        let b = self.offset(r.end);
        Span::new(a.min(b) as usize, a.max(b) as usize)
    }
}

/// A compiler diagnostic as the editor shows it: the code, the primary label and the help in the
/// message, secondary labels as related information.
pub fn diagnostic(text: &Text, uri: &lt::Uri, d: &post_compiler::Diagnostic) -> lt::Diagnostic {
    let mut message = d.message.clone();
    let label = d.primary.message.trim();
    if !label.is_empty() && !message.contains(label) {
        message.push_str(&format!("\n{label}"));
    }
    if let Some(h) = &d.help {
        message.push_str(&format!("\nhelp: {h}"));
    }
    let related: Vec<lt::DiagnosticRelatedInformation> = d
        .secondary
        .iter()
        .map(|l| lt::DiagnosticRelatedInformation {
            location: lt::Location::new(uri.clone(), text.range(l.span)),
            message: l.message.clone(),
        })
        .collect();
    lt::Diagnostic {
        range: text.range(d.primary.span),
        severity: Some(match d.severity {
            post_compiler::Severity::Error => lt::DiagnosticSeverity::ERROR,
            post_compiler::Severity::Warning => lt::DiagnosticSeverity::WARNING,
        }),
        code: Some(lt::NumberOrString::String(d.code.to_string())),
        code_description: None,
        source: Some("post".into()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        tags: None,
        data: d.help.as_ref().map(|h| serde_json::json!({ "help": h })),
    }
}
