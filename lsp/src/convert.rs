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
        data: diagnostic_data(text, d),
    }
}

/// The help, and the fix as an edit, for the quick fix the editor asks for later
/// (`textDocument/codeAction` sends the diagnostics back with this `data`).
fn diagnostic_data(text: &Text, d: &post_compiler::Diagnostic) -> Option<serde_json::Value> {
    let mut data = serde_json::Map::new();
    if let Some(h) = &d.help {
        data.insert("help".into(), serde_json::json!(h));
    }
    if let Some(f) = &d.fix {
        data.insert(
            "fix".into(),
            serde_json::json!({ "range": text.range(f.span), "newText": f.replacement }),
        );
    }
    (!data.is_empty()).then_some(serde_json::Value::Object(data))
}

/// The quick fixes of the diagnostics a `textDocument/codeAction` request carries: each with a
/// `fix` in its data becomes an edit of the document.
pub fn quick_fixes(uri: &lt::Uri, diagnostics: &[lt::Diagnostic]) -> Vec<lt::CodeActionOrCommand> {
    let mut out = Vec::new();
    for d in diagnostics {
        let Some(fix) = d.data.as_ref().and_then(|v| v.get("fix")) else {
            continue;
        };
        let (Some(range), Some(new_text)) = (
            fix.get("range")
                .and_then(|r| serde_json::from_value::<lt::Range>(r.clone()).ok()),
            fix.get("newText").and_then(|t| t.as_str()),
        ) else {
            continue;
        };
        let edit = lt::TextEdit::new(range, new_text.to_string());
        #[allow(clippy::mutable_key_type)] // lsp-types keys edits by Uri, as the protocol does
        let changes = std::collections::HashMap::from([(uri.clone(), vec![edit])]);
        out.push(lt::CodeActionOrCommand::CodeAction(lt::CodeAction {
            title: format!("Rename to `{new_text}`"),
            kind: Some(lt::CodeActionKind::QUICKFIX),
            diagnostics: Some(vec![d.clone()]),
            edit: Some(lt::WorkspaceEdit {
                changes: Some(changes),
                ..Default::default()
            }),
            is_preferred: Some(true),
            ..Default::default()
        }));
    }
    out
}
