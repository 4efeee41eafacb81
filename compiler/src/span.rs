//! Source positions: byte-offset spans, and the line index that turns them into line/column
//! (UTF-8 bytes or UTF-16 code units) at the CLI and LSP edges.

use serde::{Deserialize, Serialize};

/// A half-open byte range `[start, end)` into one source file.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: clamp_u32(start),
            end: clamp_u32(end.max(start)),
        }
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.end == self.start
    }

    /// The smallest span covering both.
    pub fn join(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    pub fn contains(self, offset: u32) -> bool {
        self.start <= offset && offset <= self.end
    }

    /// Shift by `delta` bytes (spans of a re-parsed fragment).
    pub fn offset(self, delta: usize) -> Span {
        Span::new(self.start as usize + delta, self.end as usize + delta)
    }
}

fn clamp_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Line starts of a text, for offset -> (line, column) conversion.
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<u32>,
}

/// A 0-based position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: u32,
    /// Column in UTF-8 bytes.
    pub col: u32,
    /// Column in UTF-16 code units (what LSP clients count by default).
    pub col_utf16: u32,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let mut starts = vec![0u32];
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                starts.push(clamp_u32(i + 1));
            }
        }
        LineIndex { starts }
    }

    /// The position of byte `offset` (clamped to the text; offsets inside a UTF-8 sequence count
    /// from the start of that character).
    pub fn line_col(&self, text: &str, offset: u32) -> LineCol {
        let offset = offset.min(clamp_u32(text.len()));
        let line = match self.starts.binary_search(&offset) {
            Ok(l) => l,
            Err(l) => l.saturating_sub(1),
        };
        let start = self.starts.get(line).copied().unwrap_or(0);
        let mut col_utf16 = 0u32;
        let slice = text.get(start as usize..).unwrap_or("");
        for (i, ch) in slice.char_indices() {
            if start as usize + i >= offset as usize {
                break;
            }
            col_utf16 += ch.len_utf16() as u32;
        }
        LineCol {
            line: clamp_u32(line),
            col: offset - start,
            col_utf16,
        }
    }

    /// Byte offset of a 0-based line and UTF-16 column (for LSP requests), clamped to the line.
    pub fn offset_utf16(&self, text: &str, line: u32, col_utf16: u32) -> u32 {
        let Some(&start) = self.starts.get(line as usize) else {
            return clamp_u32(text.len());
        };
        let mut units = 0u32;
        let rest = text.get(start as usize..).unwrap_or("");
        for (i, ch) in rest.char_indices() {
            if units >= col_utf16 || ch == '\n' {
                return start + clamp_u32(i);
            }
            units += ch.len_utf16() as u32;
        }
        clamp_u32(text.len())
    }

    pub fn line_count(&self) -> usize {
        self.starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_columns() {
        let text = "ab\né😀x\n";
        let idx = LineIndex::new(text);
        let x = text.find('x').unwrap() as u32;
        let lc = idx.line_col(text, x);
        assert_eq!((lc.line, lc.col, lc.col_utf16), (1, 6, 3));
        assert_eq!(idx.offset_utf16(text, 1, 3), x);
    }
}
