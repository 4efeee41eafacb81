//! Semantic tokens: every token of the buffer classified by what the index knows about it
//! (a declaration or use of a model, a reward, a parameter; a built-in; a setting; a unit).

use super::docs;
use super::lex::Tok;
use super::{Analysis, Site, SymbolKind};
use crate::span::Span;
use crate::syntax::ast::DefKind;

/// The token types, in the order of the legend the server announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Keyword,
    Comment,
    String,
    Number,
    Operator,
    Function,
    Variable,
    Parameter,
    Property,
    Type,
    Namespace,
    EnumMember,
}

pub const TOKEN_TYPES: &[&str] = &[
    "keyword",
    "comment",
    "string",
    "number",
    "operator",
    "function",
    "variable",
    "parameter",
    "property",
    "type",
    "namespace",
    "enumMember",
];

/// Modifier bits, in the order of [`TOKEN_MODIFIERS`].
pub const MOD_DECLARATION: u32 = 1;
pub const MOD_DEFAULT_LIBRARY: u32 = 2;
pub const TOKEN_MODIFIERS: &[&str] = &["declaration", "defaultLibrary"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemanticToken {
    pub span: Span,
    pub ty: TokenType,
    pub modifiers: u32,
}

impl Analysis {
    pub fn semantic_tokens(&self) -> Vec<SemanticToken> {
        let mut out = Vec::with_capacity(self.tokens.len());
        for t in &self.tokens {
            let text = t.text(&self.source);
            let (ty, modifiers) = match t.kind {
                Tok::Comment => (TokenType::Comment, 0),
                Tok::Str { .. } => (TokenType::String, 0),
                Tok::Number => (TokenType::Number, 0),
                Tok::Punct => {
                    if matches!(
                        text,
                        "(" | ")" | "[" | "]" | "{" | "}" | "," | "." | ":" | ";"
                    ) {
                        continue;
                    }
                    (TokenType::Operator, 0)
                }
                Tok::Other => continue,
                Tok::Ident => match self.site_exact(t.span) {
                    Some(site) => match self.classify(site) {
                        Some(c) => c,
                        None => continue,
                    },
                    None if docs::RESERVED.contains(&text) => (TokenType::Keyword, 0),
                    None => continue,
                },
            };
            out.push(SemanticToken {
                span: t.span,
                ty,
                modifiers,
            });
        }
        out
    }

    fn site_exact(&self, span: Span) -> Option<&Site> {
        let i = self.sites.partition_point(|s| s.span.start < span.start);
        self.sites
            .get(i..)?
            .iter()
            .take_while(|s| s.span.start == span.start)
            .find(|s| s.span == span)
            .map(|s| &s.site)
    }

    fn classify(&self, site: &Site) -> Option<(TokenType, u32)> {
        Some(match site {
            Site::Sym { sym, decl } => {
                let s = self.symbol(*sym)?;
                let mut m = if *decl { MOD_DECLARATION } else { 0 };
                if s.is_std() {
                    m |= MOD_DEFAULT_LIBRARY;
                }
                let ty = match s.kind {
                    SymbolKind::Param => TokenType::Parameter,
                    SymbolKind::Def(DefKind::Objective | DefKind::Reward) => TokenType::Function,
                    SymbolKind::Def(DefKind::Rollout) if !s.params.is_empty() => {
                        TokenType::Function
                    }
                    SymbolKind::Def(_) => TokenType::Variable,
                    SymbolKind::Stage(_) | SymbolKind::Experiment => TokenType::Namespace,
                };
                (ty, m)
            }
            Site::Builtin { .. } => (TokenType::Function, MOD_DEFAULT_LIBRARY),
            Site::BuiltinArg { .. } | Site::Setting { .. } | Site::Field { .. } => {
                (TokenType::Property, 0)
            }
            Site::Unit(_) | Site::Type(_) => (TokenType::Type, 0),
            Site::Keyword(_) => (TokenType::Keyword, 0),
            Site::Module(_) => (TokenType::Namespace, 0),
            Site::Choice { .. } => (TokenType::EnumMember, 0),
        })
    }
}
