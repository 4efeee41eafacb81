//! Rendering of compiler diagnostics in the terminal with miette (plain text without colour
//! when not a terminal, or when asked).

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use post_compiler::{Diagnostic, Severity};

/// Adapter from the compiler's plain diagnostic to miette's trait.
struct Report<'a> {
    d: &'a Diagnostic,
    src: NamedSource<String>,
    len: usize,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}

impl std::error::Error for Report<'_> {}

fn span(s: post_compiler::Span, len: usize) -> SourceSpan {
    let start = (s.start as usize).min(len);
    let end = (s.end as usize).min(len).max(start);
    SourceSpan::new(start.into(), end - start)
}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.d.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.d
            .help
            .as_ref()
            .map(|h| Box::new(h.clone()) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let mut v = vec![LabeledSpan::new_primary_with_span(
            Some(self.d.primary.message.clone()),
            span(self.d.primary.span, self.len),
        )];
        for l in &self.d.secondary {
            v.push(LabeledSpan::new_with_span(
                Some(l.message.clone()),
                span(l.span, self.len),
            ));
        }
        Some(Box::new(v.into_iter()))
    }
}

/// Render one diagnostic; `color` selects the fancy theme, otherwise plain ASCII-free text
/// suitable for snapshots.
pub fn render(d: &Diagnostic, path: &str, source: &str, color: bool) -> String {
    let report = Report {
        d,
        src: NamedSource::new(path, source.to_string()),
        len: source.len(),
    };
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    if handler.render_report(&mut out, &report).is_err() {
        // Rendering into a String cannot fail in practice; fall back to a one-line form.
        out = format!(
            "error[{}]: {} at {}:{}\n",
            d.code, d.message, path, d.primary.span.start
        );
    }
    out
}

/// Whether stderr is a terminal that wants colour.
pub fn use_color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}
