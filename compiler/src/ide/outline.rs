//! The document outline: experiments, stages, definitions and settings as a tree.

use super::Analysis;
use crate::span::Span;
use crate::syntax::ast::{BlockKind, DefKind, Item};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlineKind {
    Import,
    Experiment,
    Stage(BlockKind),
    Eval,
    Def(DefKind),
    Setting,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlineItem {
    pub name: String,
    pub detail: Option<String>,
    pub kind: OutlineKind,
    /// The whole item.
    pub span: Span,
    /// Its name.
    pub selection: Span,
    pub children: Vec<OutlineItem>,
}

impl Analysis {
    pub fn outline(&self) -> Vec<OutlineItem> {
        self.outline_items(&self.file.items)
    }

    fn outline_items(&self, items: &[Item]) -> Vec<OutlineItem> {
        let mut out = Vec::new();
        for item in items {
            match item {
                Item::Use(u) => {
                    let module = u
                        .module
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(".");
                    let names: Vec<&str> = u.names.iter().map(|n| n.name.as_str()).collect();
                    let selection = u.module.first().map_or(u.span, |f| {
                        f.span.join(u.module.last().map_or(f.span, |l| l.span))
                    });
                    out.push(OutlineItem {
                        name: module,
                        detail: (!names.is_empty()).then(|| names.join(", ")),
                        kind: OutlineKind::Import,
                        span: u.span,
                        selection,
                        children: Vec::new(),
                    });
                }
                Item::Def(d) => {
                    let sig = self
                        .symbols
                        .iter()
                        .find(|s| s.name_span == d.name.span && s.file == super::FileId::Main)
                        .map(|s| s.signature.clone());
                    out.push(OutlineItem {
                        name: d.name.name.clone(),
                        detail: sig,
                        kind: OutlineKind::Def(d.kind),
                        span: d.span,
                        selection: d.name.span,
                        children: Vec::new(),
                    });
                }
                Item::Block(b) => out.push(OutlineItem {
                    name: b.name.name.clone(),
                    detail: Some(b.kind.keyword().to_string()),
                    kind: if b.kind == BlockKind::Experiment {
                        OutlineKind::Experiment
                    } else {
                        OutlineKind::Stage(b.kind)
                    },
                    span: b.span,
                    selection: b.name.span,
                    children: self.outline_items(&b.items),
                }),
                Item::Eval(e) => {
                    let every = e.every.as_ref().map(|x| {
                        self.source
                            .get(x.span.start as usize..x.span.end as usize)
                            .unwrap_or("")
                            .to_string()
                    });
                    let detail = match (&every, &e.on) {
                        (Some(x), Some(on)) => Some(format!("every {x} on {}", on.name)),
                        (Some(x), None) => Some(format!("every {x}")),
                        (None, Some(on)) => Some(format!("on {}", on.name)),
                        (None, None) => None,
                    };
                    out.push(OutlineItem {
                        name: "eval".into(),
                        detail,
                        kind: OutlineKind::Eval,
                        span: e.span,
                        selection: Span::new(e.span.start as usize, e.span.start as usize + 4),
                        children: self.outline_items(&e.items),
                    });
                }
                Item::Setting(s) => out.push(OutlineItem {
                    name: s.key.name.clone(),
                    detail: Some(
                        self.source
                            .get(s.value.span.start as usize..s.value.span.end as usize)
                            .unwrap_or("")
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    kind: OutlineKind::Setting,
                    span: s.span,
                    selection: s.key.span,
                    children: Vec::new(),
                }),
                Item::Error(_) => {}
            }
        }
        out
    }
}
