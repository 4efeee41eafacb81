//! Hover documentation: what the name under the cursor is, as Markdown.

use super::docs::{self, BuiltinDoc, ParamDefault, Scope, SettingDoc};
use super::{Analysis, Site, Symbol, SymbolKind};
use crate::span::Span;
use crate::syntax::ast::{BlockKind, DefKind};

/// Hover text (Markdown) and the span it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hover {
    pub span: Span,
    pub markdown: String,
}

fn code(s: &str) -> String {
    format!("```post\n{s}\n```")
}

impl Analysis {
    pub fn hover(&self, offset: u32) -> Option<Hover> {
        let Some(site) = self.site_at(offset) else {
            return self.hover_word(offset);
        };
        let markdown = match &site.site {
            Site::Sym { sym, .. } => self.symbol_doc(self.symbol(*sym)?),
            Site::Builtin { name, scope } => builtin_doc(docs::builtin(name, *scope)?),
            Site::BuiltinArg { func, scope, param } => {
                let b = docs::builtin(func, *scope)?;
                let p = b.params.iter().find(|p| p.name == param)?;
                let mut s = code(&format!("({} of {}) {}", "parameter", b.name, p.render()));
                if !p.doc.is_empty() {
                    s.push_str("\n\n");
                    s.push_str(p.doc);
                }
                if let Some(meaning) = docs::type_name(&p.ty_text()) {
                    s.push_str(&format!("\n\n`{}`: {meaning}", p.ty));
                }
                s.push_str(&type_note(&p.ty_text()));
                s
            }
            Site::Setting { block, key } => {
                let (table, what) = settings_of(*block);
                match table.iter().find(|s| s.name == key) {
                    Some(sd) => setting_doc(sd, what),
                    None if *block == Some(None) => format!(
                        "{}\n\nA metric of this eval block, reported as `{key}`.",
                        code(&format!("(metric) {key}"))
                    ),
                    None => return None,
                }
            }
            Site::Field { base, name } => {
                let owner = base.and_then(|b| self.symbol(b));
                match owner {
                    Some(s) if s.kind == SymbolKind::Param => {
                        let what = match name.as_str() {
                            "completion" => "the generated text".to_string(),
                            "tokens" => "the completion's length in tokens".to_string(),
                            _ => format!("the `{name}` field of the sample's record"),
                        };
                        format!(
                            "{}\n\n{what}",
                            code(&format!("(sample field) {}.{name}", s.name))
                        )
                    }
                    Some(s) => format!(
                        "{}\n\nField `{name}` of the records of dataset `{}`.",
                        code(&format!("(field) {}.{name}", s.name)),
                        s.name
                    ),
                    None => code(&format!("(field) {name}")),
                }
            }
            Site::Unit(u) => format!("{}\n\n{}", code(&format!("(unit) {u}")), docs::unit(u)?),
            Site::Type(t) => format!(
                "{}\n\n{}",
                code(&format!("(type) {t}")),
                docs::type_name(t)?
            ),
            Site::Keyword(k) => format!("{}\n\n{}", code(k), docs::keyword(k)?),
            Site::Module(m) => {
                let items: Vec<&Symbol> = self
                    .symbols
                    .iter()
                    .filter(|s| s.module() == Some(m.as_str()) && s.kind != SymbolKind::Param)
                    .collect();
                let mut s = code(&format!("module {m}"));
                if !items.is_empty() {
                    s.push_str("\n\n");
                    let names: Vec<String> =
                        items.iter().map(|s| format!("`{}`", s.name)).collect();
                    s.push_str(&names.join(", "));
                }
                s
            }
            Site::Choice { param, name } => {
                let p = self.symbol(*param)?;
                format!(
                    "{}\n\nOne of the options of parameter `{}`: {}",
                    code(&format!("(option) {name}")),
                    p.name,
                    p.ty.as_deref().unwrap_or("")
                )
            }
        };
        Some(Hover {
            span: site.span,
            markdown,
        })
    }

    /// Words that are not in the tree (reserved words inside broken lines, units).
    fn hover_word(&self, offset: u32) -> Option<Hover> {
        let i = self
            .tokens
            .iter()
            .position(|t| t.span.contains(offset) && t.kind == super::lex::Tok::Ident)?;
        let t = self.tokens[i];
        let word = t.text(&self.source);
        let markdown =
            if let Some(d) = docs::keyword(word).filter(|_| docs::RESERVED.contains(&word)) {
                format!("{}\n\n{d}", code(word))
            } else {
                return None;
            };
        Some(Hover {
            span: t.span,
            markdown,
        })
    }

    pub fn symbol_doc(&self, s: &Symbol) -> String {
        let mut out = String::new();
        match s.kind {
            SymbolKind::Param => {
                let owner = s.owner.and_then(|o| self.symbol(o));
                let head = match owner {
                    Some(o) => format!("(parameter of {}) {}", o.name, s.signature),
                    None => format!("(parameter) {}", s.signature),
                };
                out.push_str(&code(&head));
                if let Some(d) = &s.doc {
                    out.push_str("\n\n");
                    out.push_str(d);
                }
                if let Some(t) = &s.ty {
                    if let Some(meaning) = docs::type_name(t) {
                        out.push_str(&format!("\n\n`{t}`: {meaning}"));
                    }
                    out.push_str(&type_note(t));
                }
            }
            SymbolKind::Def(kind) => {
                out.push_str(&code(&s.signature_block()));
                if let Some(m) = s.module() {
                    out.push_str(&format!("\n\nfrom `{m}`"));
                }
                if let Some(d) = &s.doc {
                    out.push_str("\n\n");
                    out.push_str(d);
                }
                if let Some(v) = &s.value {
                    let title = match kind {
                        DefKind::Objective => "Formula",
                        DefKind::Reward => "Reward",
                        _ => "Value",
                    };
                    out.push_str(&format!("\n\n**{title}**\n\n{}", code(&dedent(v))));
                }
                let params: Vec<&Symbol> =
                    s.params.iter().filter_map(|p| self.symbol(*p)).collect();
                if !params.is_empty() {
                    out.push_str("\n\n**Parameters**\n");
                    for p in params {
                        out.push_str(&format!("\n- `{}`", p.signature));
                        let mut notes = Vec::new();
                        if let Some(d) = &p.doc {
                            notes.push(d.replace('\n', " "));
                        }
                        if let Some(t) = p.ty.as_deref().and_then(docs::type_name) {
                            notes.push(t.to_string());
                        }
                        if !notes.is_empty() {
                            out.push_str(&format!(": {}", notes.join("; ")));
                        }
                    }
                }
            }
            SymbolKind::Stage(kind) => {
                out.push_str(&code(&s.signature));
                if let Some(d) = &s.doc {
                    out.push_str("\n\n");
                    out.push_str(d);
                }
                let kw = match kind {
                    BlockKind::Stage => "stage",
                    BlockKind::Select => "select",
                    BlockKind::Analysis => "analysis",
                    BlockKind::Experiment => "experiment",
                };
                if let Some(d) = docs::keyword(kw) {
                    out.push_str("\n\n");
                    out.push_str(d);
                }
            }
            SymbolKind::Experiment => {
                out.push_str(&code(&s.signature));
                if let Some(d) = &s.doc {
                    out.push_str("\n\n");
                    out.push_str(d);
                }
            }
        }
        out
    }
}

fn settings_of(block: Option<Option<BlockKind>>) -> (&'static [SettingDoc], &'static str) {
    match block {
        None | Some(Some(BlockKind::Experiment)) => (docs::EXPERIMENT_SETTINGS, "experiment"),
        Some(Some(BlockKind::Stage)) => (docs::STAGE_SETTINGS, "stage"),
        Some(Some(BlockKind::Select)) => (docs::SELECT_SETTINGS, "select"),
        Some(Some(BlockKind::Analysis)) => (docs::ANALYSIS_SETTINGS, "analysis"),
        Some(None) => (docs::EVAL_SETTINGS, "eval"),
    }
}

/// The settings a block accepts (completion uses the same tables as hover).
pub fn block_settings(block: Option<Option<BlockKind>>) -> &'static [SettingDoc] {
    settings_of(block).0
}

fn setting_doc(sd: &SettingDoc, what: &str) -> String {
    let head = match sd.default_doc() {
        ParamDefault::Required => format!("({what} setting) {}: {}  (required)", sd.name, sd.ty),
        ParamDefault::Optional => format!("({what} setting) {}: {}  (optional)", sd.name, sd.ty),
        ParamDefault::Value(v) => format!("({what} setting) {}: {} = {v}", sd.name, sd.ty),
    };
    format!("{}\n\n{}{}", code(&head), sd.doc, type_note(&sd.ty_text()))
}

pub fn builtin_doc(b: &BuiltinDoc) -> String {
    let mut s = code(&b.signature());
    s.push_str(&format!("\n\n{} — {}", b.scope.describe(), b.doc));
    if !b.params.is_empty() && b.scope != Scope::Formula {
        s.push_str("\n\n**Parameters**\n");
        for p in b.params {
            s.push_str(&format!("\n- `{}`", p.render()));
            if !p.doc.is_empty() {
                s.push_str(&format!(": {}", p.doc));
            }
        }
    }
    s
}

/// "Unit: tokens" style notes for typed values.
fn type_note(ty: &str) -> String {
    let units: Vec<&str> = ty
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| {
            matches!(
                *w,
                "tokens" | "steps" | "prompts" | "sequences" | "completions"
            )
        })
        .collect();
    if units.is_empty() {
        String::new()
    } else {
        format!("\n\nUnit: {}", units.join(" or "))
    }
}

/// Remove the indentation common to the lines after the first (a value written over lines).
fn dedent(s: &str) -> String {
    let mut lines = s.lines();
    let first = lines.next().unwrap_or("").to_string();
    let rest: Vec<&str> = lines.collect();
    let indent = rest
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = first;
    for l in rest {
        out.push('\n');
        out.push_str(
            l.get(indent.min(l.len() - l.trim_start().len())..)
                .unwrap_or(l),
        );
    }
    out
}
