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

/// Longest source line (in bytes) shown whole in a snippet. miette formats label padding with
/// `{:width$}`, and Rust's formatting widths stop at 65,535: an error at column 65,536 or later
/// panicked inside miette. Such lines (and any line too long to read in a terminal) are shown
/// as a window around each label instead ([`render_long`]).
const MAX_SNIPPET_LINE: usize = 1000;

/// Characters shown on each side of a label in a long line's window.
const WINDOW: usize = 40;

/// Start and end (exclusive, without the newline) of the line holding byte `at`.
fn line_bounds(source: &str, at: usize) -> (usize, usize) {
    let at = at.min(source.len());
    let start = source.as_bytes()[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let end = source.as_bytes()[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(source.len(), |i| at + i);
    (start, end)
}

/// Whether a label of `d` starts or ends on a line longer than [`MAX_SNIPPET_LINE`].
fn touches_long_line(d: &Diagnostic, source: &str) -> bool {
    std::iter::once(&d.primary)
        .chain(&d.secondary)
        .flat_map(|l| [l.span.start as usize, l.span.end as usize])
        .any(|at| {
            let (a, b) = line_bounds(source, at);
            b - a > MAX_SNIPPET_LINE
        })
}

/// The largest char boundary of `s` at or below `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A diagnostic on a long line, without miette: `path:line:column` (column in characters, as
/// miette counts) and, per label, a window of the line with the label underlined.
fn render_long(d: &Diagnostic, path: &str, source: &str) -> String {
    let mut out = format!("{}\n\n  × {}\n", d.code, d.message);
    let position = |at: usize| {
        let at = floor_boundary(source, at);
        let (start, _) = line_bounds(source, at);
        let line = source.as_bytes()[..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        let column = source[start..at].chars().count() + 1;
        (line, column)
    };
    let (line, column) = position(d.primary.span.start as usize);
    out.push_str(&format!("   ╭─[{path}:{line}:{column}]\n"));
    for l in std::iter::once(&d.primary).chain(&d.secondary) {
        let at = floor_boundary(source, l.span.start as usize);
        let (start, end) = line_bounds(source, at);
        let (line, column) = position(at);
        // The window: up to WINDOW characters either side of the label's start.
        let before: Vec<(usize, char)> = source[start..at].char_indices().collect();
        let from = before
            .len()
            .checked_sub(WINDOW)
            .map_or(start, |k| start + before[k].0);
        let to = source[at..end]
            .char_indices()
            .nth(WINDOW)
            .map_or(end, |(i, _)| at + i);
        let label_end = floor_boundary(source, (l.span.end as usize).clamp(at, to));
        let lead = if from > start { "…" } else { "" };
        let tail = if to < end { "…" } else { "" };
        let text = &source[from..to];
        let pad = lead.chars().count() + source[from..at].chars().count();
        let width = source[at..label_end].chars().count().max(1);
        out.push_str(&format!(
            " {line} │ {lead}{text}{tail}\n   · {}{} {} (column {column})\n",
            " ".repeat(pad),
            "─".repeat(width),
            l.message
        ));
    }
    out.push_str("   ╰────\n");
    if let Some(h) = &d.help {
        out.push_str(&format!("  help: {h}\n"));
    }
    out.push('\n');
    out
}

/// Render one diagnostic; `color` selects the fancy theme, otherwise plain ASCII-free text
/// suitable for snapshots.
pub fn render(d: &Diagnostic, path: &str, source: &str, color: bool) -> String {
    if touches_long_line(d, source) {
        return render_long(d, path, source);
    }
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
