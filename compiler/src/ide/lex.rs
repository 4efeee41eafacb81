//! A small, total lexer for editor features. The pest grammar decides what a file means; this
//! only splits text into tokens so that completion, semantic tokens and signature help can look
//! at the text around the cursor even while the line being typed does not parse.

use crate::span::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    Ident,
    Number,
    /// A string literal; `closed` is false when the line ends first.
    Str {
        closed: bool,
    },
    Comment,
    /// Operators and punctuation, one or two characters (`->`, `=>`, `==`, `&&`, ...).
    Punct,
    /// A byte sequence the language has no token for.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: Tok,
    pub span: Span,
}

impl Token {
    pub fn text(self, src: &str) -> &str {
        src.get(self.span.start as usize..self.span.end as usize)
            .unwrap_or("")
    }
}

const TWO_CHAR: &[&str] = &["->", "=>", "==", "!=", "<=", ">=", "&&", "||"];

pub fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

pub fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every token of `src`, comments included, whitespace skipped.
pub fn lex(src: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut it = src.char_indices().peekable();
    while let Some(&(i, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
            continue;
        }
        let start = i;
        let kind;
        if c == '/' && src.get(i + 1..i + 2) == Some("/") {
            while it.peek().is_some_and(|&(_, c)| c != '\n') {
                it.next();
            }
            kind = Tok::Comment;
        } else if c == '"' {
            it.next();
            let mut closed = false;
            while let Some(&(_, c)) = it.peek() {
                if c == '\n' {
                    break;
                }
                it.next();
                if c == '\\' {
                    if it.peek().is_some_and(|&(_, c)| c != '\n') {
                        it.next();
                    }
                } else if c == '"' {
                    closed = true;
                    break;
                }
            }
            kind = Tok::Str { closed };
        } else if is_ident_start(c) {
            while it.peek().is_some_and(|&(_, c)| is_ident_char(c)) {
                it.next();
            }
            kind = Tok::Ident;
        } else if c.is_ascii_digit() {
            lex_number(src, &mut it);
            kind = Tok::Number;
        } else if c.is_ascii_punctuation() {
            it.next();
            let two = src.get(i..i + 2).unwrap_or("");
            if TWO_CHAR.contains(&two) {
                it.next();
            }
            kind = Tok::Punct;
        } else {
            it.next();
            kind = Tok::Other;
        }
        let end = it.peek().map_or(src.len(), |&(j, _)| j);
        out.push(Token {
            kind,
            span: Span::new(start, end),
        });
    }
    out
}

/// Digits, an optional fraction and an optional exponent (as the grammar's `number`).
fn lex_number(src: &str, it: &mut std::iter::Peekable<std::str::CharIndices<'_>>) {
    let digits = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while it.peek().is_some_and(|&(_, c)| c.is_ascii_digit()) {
            it.next();
        }
    };
    digits(it);
    let next_is_digit = |at: usize| {
        src.get(at..)
            .and_then(|s| s.chars().next())
            .is_some_and(|c| c.is_ascii_digit())
    };
    if let Some(&(j, '.')) = it.peek()
        && next_is_digit(j + 1)
    {
        it.next();
        digits(it);
    }
    if let Some(&(j, 'e' | 'E')) = it.peek() {
        let sign = src.get(j + 1..j + 2);
        let skip = usize::from(matches!(sign, Some("+") | Some("-")));
        if next_is_digit(j + 1 + skip) {
            it.next();
            if skip == 1 {
                it.next();
            }
            digits(it);
        }
    }
}

/// The index of the last token that starts before `offset` (comments excluded).
pub fn last_before(tokens: &[Token], offset: u32) -> Option<usize> {
    let n = tokens.partition_point(|t| t.span.start < offset);
    (0..n).rev().find(|&i| tokens[i].kind != Tok::Comment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(Tok, &str)> {
        lex(src)
            .into_iter()
            .map(|t| (t.kind, t.text(src)))
            .collect()
    }

    #[test]
    fn splits_tokens() {
        let src = "batch = 3.5e-4 tokens // hi\nx -> \"a\\\"b\" é";
        assert_eq!(
            kinds(src),
            vec![
                (Tok::Ident, "batch"),
                (Tok::Punct, "="),
                (Tok::Number, "3.5e-4"),
                (Tok::Ident, "tokens"),
                (Tok::Comment, "// hi"),
                (Tok::Ident, "x"),
                (Tok::Punct, "->"),
                (Tok::Str { closed: true }, "\"a\\\"b\""),
                (Tok::Other, "é"),
            ]
        );
    }

    #[test]
    fn unterminated_string_stops_at_newline() {
        let src = "\"abc\nx";
        assert_eq!(
            kinds(src),
            vec![(Tok::Str { closed: false }, "\"abc"), (Tok::Ident, "x")]
        );
    }
}
