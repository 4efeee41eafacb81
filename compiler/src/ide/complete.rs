//! Completion and signature help. Both read the tokens around the cursor rather than the tree,
//! since the line being typed usually does not parse yet; the tree (of the rest of the file)
//! supplies the names in scope.

use std::collections::BTreeSet;

use super::docs::{self, ParamDefault, Scope};
use super::hover::{block_settings, builtin_doc};
use super::lex::{Tok, Token};
use super::{Analysis, FileId, SymId, SymbolKind};
use crate::FileSystem;
use crate::span::Span;
use crate::stdlib;
use crate::syntax::ast::{BlockKind, DefKind, Item};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CompletionKind {
    Keyword,
    Setting,
    Param,
    Field,
    Def(DefKindOrd),
    Stage,
    Builtin,
    Transform,
    Module,
    Unit,
    Choice,
    Type,
}

/// [`DefKind`] with an order, for sorting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DefKindOrd {
    Model,
    Data,
    Reward,
    Objective,
    Rollout,
    Const,
}

impl From<DefKind> for DefKindOrd {
    fn from(k: DefKind) -> Self {
        match k {
            DefKind::Model => DefKindOrd::Model,
            DefKind::Data => DefKindOrd::Data,
            DefKind::Reward => DefKindOrd::Reward,
            DefKind::Objective => DefKindOrd::Objective,
            DefKind::Rollout => DefKindOrd::Rollout,
            DefKind::Const => DefKindOrd::Const,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub label: String,
    pub kind: CompletionKind,
    /// One line shown beside the label (a signature, a default).
    pub detail: Option<String>,
    /// Markdown documentation.
    pub doc: Option<String>,
    /// The text inserted in place of `replace`, when it differs from the label.
    pub insert: Option<String>,
    /// The span replaced: the part of the word before the cursor.
    pub replace: Span,
    /// An edit elsewhere: the `use` line that imports a standard library item.
    pub import: Option<(Span, String)>,
    /// Lower sorts first.
    pub rank: u8,
}

/// The call the cursor is in, and where in its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub callee: String,
    /// `train.template(` : the callee is a method.
    pub method: bool,
    pub callee_span: Span,
    /// Index of the argument under the cursor (commas before it).
    pub arg_index: usize,
    /// The name of the argument under the cursor, when written `name = ...`.
    pub arg_name: Option<String>,
    /// Names of the named arguments already written.
    pub named: Vec<String>,
    /// Whether the cursor is where an argument (or its name) starts.
    pub at_arg_start: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHelp {
    pub label: String,
    /// Byte ranges of each parameter inside `label`.
    pub params: Vec<(usize, usize)>,
    pub param_docs: Vec<String>,
    pub doc: String,
    pub active: Option<usize>,
}

/// A parameter as completion and signature help need it.
struct ParamInfo {
    name: String,
    rendered: String,
    default: Option<String>,
    doc: String,
}

impl Analysis {
    /// Tokens before `offset`, comments excluded.
    fn before(&self, offset: u32) -> Vec<Token> {
        self.tokens
            .iter()
            .filter(|t| t.span.start < offset && t.kind != Tok::Comment)
            .copied()
            .collect()
    }

    fn text(&self, t: Token) -> &str {
        t.text(&self.source)
    }

    /// The enclosing unclosed `(` call at `offset`.
    pub fn call_context(&self, offset: u32) -> Option<CallContext> {
        let toks = self.before(offset);
        let mut depth = 0i32;
        let mut open = None;
        for (i, t) in toks.iter().enumerate().rev() {
            if t.kind != Tok::Punct {
                continue;
            }
            match self.text(*t) {
                ")" | "]" | "}" => depth += 1,
                "(" | "[" => {
                    if depth == 0 {
                        if self.text(*t) == "(" {
                            open = Some(i);
                        }
                        break;
                    }
                    depth -= 1;
                }
                "{" => {
                    if depth == 0 {
                        return None;
                    }
                    depth -= 1;
                }
                _ => {}
            }
        }
        let open = open?;
        let callee = *toks.get(open.checked_sub(1)?)?;
        if callee.kind != Tok::Ident {
            return None;
        }
        let method = open >= 2 && toks.get(open - 2).is_some_and(|t| self.text(*t) == ".");
        // Split the arguments at top-level commas.
        let mut arg_index = 0;
        let mut arg_start = open + 1;
        let mut named = Vec::new();
        let mut depth = 0i32;
        for (i, t) in toks.iter().enumerate().skip(open + 1) {
            if t.kind != Tok::Punct {
                continue;
            }
            match self.text(*t) {
                "(" | "[" | "{" => depth += 1,
                ")" | "]" | "}" => depth -= 1,
                "," if depth == 0 => {
                    if let Some(n) = self.arg_name(&toks, arg_start, i) {
                        named.push(n);
                    }
                    arg_index += 1;
                    arg_start = i + 1;
                }
                _ => {}
            }
        }
        let arg_name = self.arg_name(&toks, arg_start, toks.len()).or_else(|| {
            // The cursor on the name itself: `beta| = 0.1` or `|beta = 0.1`.
            if toks.len() - arg_start > 1 {
                return None;
            }
            let i = self.tokens.iter().position(|t| {
                t.span.start <= offset && offset <= t.span.end && t.kind == Tok::Ident
            })?;
            let next = self.tokens.get(i + 1)?;
            (self.text(*next) == "=").then(|| self.text(self.tokens[i]).to_string())
        });
        // The cursor starts an argument when nothing but (part of) one word precedes it.
        let typed = toks.len() - arg_start;
        let at_arg_start = typed == 0
            || (typed == 1
                && toks
                    .last()
                    .is_some_and(|t| t.kind == Tok::Ident && t.span.end >= offset));
        Some(CallContext {
            callee: self.text(callee).to_string(),
            method,
            callee_span: callee.span,
            arg_index,
            arg_name,
            named,
            at_arg_start,
        })
    }

    fn arg_name(&self, toks: &[Token], start: usize, end: usize) -> Option<String> {
        let a = toks.get(start)?;
        let b = toks.get(start + 1)?;
        (start + 1 < end && a.kind == Tok::Ident && self.text(*b) == "=")
            .then(|| self.text(*a).to_string())
    }

    /// The parameters of what `ctx` calls.
    fn call_params(
        &self,
        ctx: &CallContext,
        offset: u32,
    ) -> Option<(String, String, Vec<ParamInfo>)> {
        if !ctx.method {
            let visible = self.visible(offset);
            if let Some(sym) = visible
                .into_iter()
                .find(|id| self.symbol(*id).is_some_and(|s| s.name == ctx.callee))
            {
                let s = self.symbol(sym)?;
                if s.params.is_empty() {
                    return None;
                }
                let params = s
                    .params
                    .iter()
                    .filter_map(|p| self.symbol(*p))
                    .map(|p| ParamInfo {
                        name: p.name.clone(),
                        rendered: p.signature.clone(),
                        default: p.value.clone(),
                        doc: p.doc.clone().unwrap_or_default(),
                    })
                    .collect();
                return Some((s.signature.clone(), self.symbol_doc(s), params));
            }
        }
        let scope = if ctx.method {
            Scope::Transform
        } else {
            self.scope_at(offset)
        };
        let b = docs::builtin(&ctx.callee, scope)
            .filter(|b| (b.scope == Scope::Transform) == ctx.method)?;
        let params = b
            .params
            .iter()
            .map(|p| ParamInfo {
                name: p.name.to_string(),
                rendered: p.render(),
                default: match p.default_doc() {
                    ParamDefault::Value(v) => Some(v.to_string()),
                    _ => None,
                },
                doc: p.doc.to_string(),
            })
            .collect();
        Some((b.signature(), builtin_doc(b), params))
    }

    pub fn signature_help(&self, offset: u32) -> Option<SignatureHelp> {
        let ctx = self.call_context(offset)?;
        let (_, doc, params) = self.call_params(&ctx, offset)?;
        let mut label = format!("{}(", ctx.callee);
        let mut ranges = Vec::new();
        for (i, p) in params.iter().enumerate() {
            if i > 0 {
                label.push_str(", ");
            }
            let start = label.len();
            label.push_str(&p.rendered);
            ranges.push((start, label.len()));
        }
        label.push(')');
        let active = match &ctx.arg_name {
            Some(n) => params.iter().position(|p| &p.name == n),
            None => (ctx.named.is_empty() && ctx.arg_index < params.len()).then_some(ctx.arg_index),
        };
        Some(SignatureHelp {
            label,
            params: ranges,
            param_docs: params.iter().map(|p| p.doc.clone()).collect(),
            doc,
            active,
        })
    }

    /// Completions at `offset`.
    pub fn completions(&self, fs: &dyn FileSystem, offset: u32) -> Vec<Completion> {
        let offset = offset.min(self.source.len() as u32);
        // Inside a comment or a string: nothing.
        if self.tokens.iter().any(|t| {
            matches!(t.kind, Tok::Comment | Tok::Str { .. })
                && t.span.start < offset
                && (offset < t.span.end
                    || (t.kind == Tok::Comment || t.kind == Tok::Str { closed: false })
                        && offset == t.span.end)
        }) {
            return Vec::new();
        }
        let toks = self.before(offset);
        // The word being typed.
        let (prefix_span, prev) = match toks.last() {
            Some(t) if t.kind == Tok::Ident && t.span.end >= offset => (
                Span::new(t.span.start as usize, offset as usize),
                toks.len().checked_sub(2),
            ),
            _ => (
                Span::new(offset as usize, offset as usize),
                toks.len().checked_sub(1),
            ),
        };
        let prev_tok = prev.and_then(|i| toks.get(i)).copied();
        let prev_text = prev_tok.map(|t| self.text(t)).unwrap_or("");
        let mut out = Vec::new();
        let mk = move |label: &str,
                       kind: CompletionKind,
                       detail: Option<String>,
                       doc: Option<String>,
                       insert: Option<String>,
                       rank: u8| Completion {
            label: label.to_string(),
            kind,
            detail,
            doc,
            insert,
            replace: prefix_span,
            import: None,
            rank,
        };

        // `use std.objectives.{...}` lines.
        if let Some(line_toks) = self.use_line(&toks, prev) {
            let path: Vec<&str> = line_toks
                .iter()
                .skip(1)
                .take_while(|t| self.text(**t) != "{")
                .filter(|t| t.kind == Tok::Ident)
                .map(|t| self.text(*t))
                .collect();
            let in_braces = line_toks.iter().any(|t| self.text(*t) == "{");
            let path_str = path.join(".");
            if in_braces || (prev_text == "." && stdlib::MODULES.iter().any(|m| m.0 == path_str)) {
                let module = if in_braces { path_str } else { path.join(".") };
                for s in self
                    .symbols
                    .iter()
                    .filter(|s| s.module() == Some(module.as_str()) && s.kind != SymbolKind::Param)
                {
                    out.push(mk(
                        &s.name,
                        def_kind(s.kind),
                        Some(s.signature.clone()),
                        completion_doc(s),
                        None,
                        0,
                    ));
                }
            } else if prev_text == "." || prev_text == "use" {
                let typed = if prev_text == "use" {
                    String::new()
                } else {
                    format!("{path_str}.")
                };
                for (m, _, _) in stdlib::MODULES {
                    if let Some(rest) = m.strip_prefix(typed.as_str()) {
                        let next = rest.split('.').next().unwrap_or(rest);
                        if !out.iter().any(|c| c.label == next) {
                            out.push(mk(
                                next,
                                CompletionKind::Module,
                                Some((*m).to_string()),
                                None,
                                None,
                                0,
                            ));
                        }
                    }
                }
            }
            return out;
        }

        // After a dot: fields of a dataset or sample, dataset transforms.
        if prev_text == "." {
            let base = prev
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| toks.get(i))
                .copied();
            if let Some(base) = base.filter(|t| t.kind == Tok::Ident) {
                let name = self.text(base);
                let sym = self
                    .visible(offset)
                    .into_iter()
                    .find(|id| self.symbol(*id).is_some_and(|s| s.name == name));
                let kind = sym.and_then(|id| self.symbol(id)).map(|s| s.kind);
                match kind {
                    Some(SymbolKind::Param) if self.scope_at(offset) == Scope::Reward => {
                        out.push(mk(
                            "completion",
                            CompletionKind::Field,
                            Some("str".into()),
                            Some("The generated text.".into()),
                            None,
                            0,
                        ));
                        out.push(mk(
                            "tokens",
                            CompletionKind::Field,
                            Some("num".into()),
                            Some("The completion's length in tokens.".into()),
                            None,
                            0,
                        ));
                        for f in self.all_fields(fs) {
                            out.push(mk(
                                &f,
                                CompletionKind::Field,
                                Some("record field".into()),
                                None,
                                None,
                                1,
                            ));
                        }
                    }
                    Some(SymbolKind::Def(DefKind::Data)) => {
                        if let Some(fields) = sym.and_then(|id| self.data_fields(fs, id)) {
                            for f in fields {
                                out.push(mk(
                                    &f,
                                    CompletionKind::Field,
                                    Some(format!("field of `{name}`")),
                                    None,
                                    None,
                                    0,
                                ));
                            }
                        }
                        for b in docs::BUILTINS
                            .iter()
                            .filter(|b| b.scope == Scope::Transform)
                        {
                            out.push(mk(
                                b.name,
                                CompletionKind::Transform,
                                Some(b.signature()),
                                Some(b.doc.to_string()),
                                None,
                                1,
                            ));
                        }
                    }
                    _ => {}
                }
            }
            return out;
        }

        // After a number: its unit.
        let same_line = |t: Token| {
            let between = self
                .source
                .get(t.span.end as usize..prefix_span.start as usize)
                .unwrap_or("\n");
            !between.contains('\n')
        };
        if prev_tok.is_some_and(|t| {
            t.kind == Tok::Number && t.span.end < prefix_span.start && same_line(t)
        }) {
            for (u, d) in docs::UNITS.iter().filter(|(u, _)| u.ends_with('s')) {
                out.push(mk(
                    u,
                    CompletionKind::Unit,
                    None,
                    Some((*d).to_string()),
                    None,
                    0,
                ));
            }
            return out;
        }

        // Naming something new: no suggestions.
        if prev_tok.is_some_and(|t| {
            let w = self.text(t);
            t.kind == Tok::Ident
                && (docs::DEF_KEYWORDS.contains(&w)
                    || matches!(w, "experiment" | "stage" | "select" | "analysis"))
                && self.starts_statement(&toks, prev.unwrap_or(0))
        }) {
            return out;
        }

        // Inside a call.
        if let Some(ctx) = self.call_context(offset) {
            if let Some((_, _, params)) = self.call_params(&ctx, offset) {
                // The value of an enumerated parameter: only its options make sense.
                if let Some(n) = ctx.arg_name.as_ref().filter(|_| !ctx.at_arg_start) {
                    let options = params
                        .iter()
                        .find(|p| &p.name == n)
                        .map(|p| enum_options(&p.rendered))
                        .unwrap_or_default();
                    if !options.is_empty() {
                        for opt in options {
                            out.push(mk(
                                &opt,
                                CompletionKind::Choice,
                                Some(format!("option of `{n}`")),
                                None,
                                None,
                                0,
                            ));
                        }
                        return out;
                    }
                }
                if ctx.at_arg_start {
                    // Positional arguments fill the first parameters.
                    let positional = ctx.arg_index.saturating_sub(ctx.named.len());
                    for p in params
                        .iter()
                        .skip(positional)
                        .filter(|p| !ctx.named.contains(&p.name))
                    {
                        let detail = match &p.default {
                            Some(d) => format!("{} (default {d})", p.rendered),
                            None => p.rendered.clone(),
                        };
                        let doc = (!p.doc.is_empty()).then(|| p.doc.clone());
                        out.push(mk(
                            &format!("{} =", p.name),
                            CompletionKind::Param,
                            Some(detail),
                            doc,
                            Some(format!("{} = ", p.name)),
                            0,
                        ));
                    }
                }
            }
            self.expression_items(&mut out, offset, prefix_span);
            return out;
        }

        // At the start of a statement: keywords and settings of the enclosing block.
        let at_statement_start = match prev_tok {
            None => true,
            Some(p) => {
                let between = self
                    .source
                    .get(p.span.end as usize..prefix_span.start as usize)
                    .unwrap_or("");
                let closes = matches!(self.text(p), "{" | "}" | ";" | ")" | "]");
                closes || (between.contains('\n') && p.kind != Tok::Punct)
            }
        };
        if at_statement_start {
            let block = self.block_at(offset);
            let kws: &[&str] = match block {
                None => &[
                    "use",
                    "experiment",
                    "model",
                    "data",
                    "reward",
                    "objective",
                    "rollout",
                    "const",
                ],
                Some(Some(BlockKind::Experiment)) => &[
                    "model",
                    "data",
                    "reward",
                    "objective",
                    "rollout",
                    "const",
                    "stage",
                    "select",
                    "analysis",
                ],
                Some(Some(BlockKind::Stage)) => &["eval"],
                _ => &[],
            };
            for k in kws {
                out.push(mk(
                    k,
                    CompletionKind::Keyword,
                    None,
                    docs::keyword(k).map(str::to_string),
                    None,
                    1,
                ));
            }
            let settings: &[docs::SettingDoc] = match block {
                None => &[],
                Some(Some(BlockKind::Experiment)) => docs::EXPERIMENT_SETTINGS,
                Some(b) => block_settings(Some(b)),
            };
            let written = self.settings_written(offset);
            for s in settings.iter().filter(|s| !written.contains(s.name)) {
                let detail = match s.default_doc() {
                    ParamDefault::Required => format!("{} (required)", s.ty),
                    ParamDefault::Optional => format!("{} (optional)", s.ty),
                    ParamDefault::Value(v) => format!("{} = {v}", s.ty),
                };
                out.push(mk(
                    &format!("{} =", s.name),
                    CompletionKind::Setting,
                    Some(detail),
                    Some(s.doc.to_string()),
                    Some(format!("{} = ", s.name)),
                    0,
                ));
            }
            return out;
        }

        // A value: names, built-ins, standard library items.
        self.expression_items(&mut out, offset, prefix_span);
        out
    }

    /// Whether the token at `i` begins a statement (first on its line, or after a brace).
    fn starts_statement(&self, toks: &[Token], i: usize) -> bool {
        let Some(t) = toks.get(i) else { return true };
        let Some(p) = i.checked_sub(1).and_then(|j| toks.get(j)) else {
            return true;
        };
        let between = self
            .source
            .get(p.span.end as usize..t.span.start as usize)
            .unwrap_or("");
        between.contains('\n') || matches!(self.text(*p), "{" | "}" | ";")
    }

    /// The tokens of the `use` statement the cursor is in, if any.
    fn use_line(&self, toks: &[Token], prev: Option<usize>) -> Option<Vec<Token>> {
        let mut i = prev?;
        loop {
            let t = *toks.get(i)?;
            if t.kind == Tok::Ident && self.text(t) == "use" && self.starts_statement(toks, i) {
                let line: Vec<Token> = toks.get(i..=prev?)?.to_vec();
                if line.iter().any(|t| self.text(*t) == "}") {
                    return None;
                }
                return Some(line);
            }
            if self.starts_statement(toks, i) && !matches!(self.text(t), "," | "{" | ".") {
                return None;
            }
            i = i.checked_sub(1)?;
        }
    }

    /// The block the cursor is in: `None` at the top level, `Some(None)` in an eval block.
    fn block_at(&self, offset: u32) -> Option<Option<BlockKind>> {
        fn inner(items: &[Item], offset: u32) -> Option<Option<BlockKind>> {
            for item in items {
                match item {
                    Item::Block(b) if b.span.start < offset && offset <= b.close.start => {
                        return Some(inner(&b.items, offset).unwrap_or(Some(b.kind)));
                    }
                    Item::Eval(e) if e.span.start < offset && offset <= e.close.start => {
                        return Some(None);
                    }
                    _ => {}
                }
            }
            None
        }
        if let Some(b) = inner(&self.file.items, offset) {
            return Some(b);
        }
        // The tree may have lost the block (its header line is being typed): count braces.
        let toks = self.before(offset);
        let mut depth = 0i32;
        for (i, t) in toks.iter().enumerate().rev() {
            match self.text(*t) {
                "}" => depth += 1,
                "{" if depth > 0 => depth -= 1,
                "{" => {
                    let kw = toks[..i].iter().rev().take(6).find(|t| {
                        t.kind == Tok::Ident
                            && matches!(
                                self.text(**t),
                                "experiment" | "stage" | "select" | "analysis" | "eval"
                            )
                    })?;
                    return Some(match self.text(*kw) {
                        "experiment" => Some(BlockKind::Experiment),
                        "stage" => Some(BlockKind::Stage),
                        "select" => Some(BlockKind::Select),
                        "analysis" => Some(BlockKind::Analysis),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        None
    }

    /// Setting keys already written in the block at `offset`.
    fn settings_written(&self, offset: u32) -> BTreeSet<String> {
        fn inner(items: &[Item], offset: u32, out: &mut BTreeSet<String>) {
            for item in items {
                if let Item::Block(b) = item
                    && b.span.start < offset
                    && offset <= b.close.start
                {
                    for i in &b.items {
                        if let Item::Setting(s) = i
                            && !s.key.span.contains(offset)
                        {
                            out.insert(s.key.name.clone());
                        }
                    }
                    inner(&b.items, offset, out);
                }
            }
        }
        let mut out = BTreeSet::new();
        inner(&self.file.items, offset, &mut out);
        out
    }

    /// Every field of every dataset of the file (what a reward's sample may read).
    fn all_fields(&self, fs: &dyn FileSystem) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (id, s) in self.symbols.iter().enumerate() {
            if s.file == FileId::Main && s.kind == SymbolKind::Def(DefKind::Data) {
                out.extend(self.data_fields(fs, id).unwrap_or_default());
            }
        }
        out.remove("completion");
        out.remove("tokens");
        out
    }

    fn expression_items(&self, out: &mut Vec<Completion>, offset: u32, replace: Span) {
        let scope = self.scope_at(offset);
        let mut seen = BTreeSet::new();
        let mk =
            |label: &str, kind, detail: Option<String>, doc: Option<String>, rank| Completion {
                label: label.to_string(),
                kind,
                detail,
                doc,
                insert: None,
                replace,
                import: None,
                rank,
            };
        for id in self.visible(offset) {
            let Some(s) = self.symbol(id) else { continue };
            if !seen.insert(s.name.clone()) {
                continue;
            }
            let kind = match s.kind {
                SymbolKind::Param => CompletionKind::Param,
                k => def_kind(k),
            };
            out.push(mk(
                &s.name,
                kind,
                Some(s.signature.clone()),
                completion_doc(s),
                0,
            ));
        }
        if scope == Scope::Experiment {
            for s in self
                .symbols
                .iter()
                .filter(|s| matches!(s.kind, SymbolKind::Stage(BlockKind::Select)))
            {
                if seen.insert(s.name.clone()) {
                    out.push(mk(
                        &s.name,
                        CompletionKind::Stage,
                        Some(s.signature.clone()),
                        None,
                        2,
                    ));
                }
            }
        }
        for b in docs::BUILTINS.iter().filter(|b| b.scope == scope) {
            if seen.insert(b.name.to_string()) {
                out.push(mk(
                    b.name,
                    CompletionKind::Builtin,
                    Some(b.signature()),
                    Some(b.doc.to_string()),
                    1,
                ));
            }
        }
        for k in docs::RESERVED {
            out.push(mk(
                k,
                CompletionKind::Keyword,
                None,
                docs::keyword(k).map(str::to_string),
                3,
            ));
        }
        // Standard library items not imported yet: completing one adds the import.
        for (id, s) in self.symbols.iter().enumerate() {
            if s.kind == SymbolKind::Param || seen.contains(&s.name) {
                continue;
            }
            let Some(m) = s.module() else { continue };
            if !self.std_item_fits(id, scope) {
                continue;
            }
            seen.insert(s.name.clone());
            let mut c = mk(
                &s.name,
                def_kind(s.kind),
                Some(format!("{} (from {m})", s.signature)),
                completion_doc(s),
                2,
            );
            c.import = Some(self.import_edit(m, &s.name));
            out.push(c);
        }
    }

    /// Objectives are used in stages and formulas, rewards and rollouts anywhere.
    fn std_item_fits(&self, id: SymId, scope: Scope) -> bool {
        let Some(s) = self.symbol(id) else {
            return false;
        };
        !matches!(
            (s.kind, scope),
            (SymbolKind::Def(DefKind::Objective), Scope::Reward)
                | (
                    SymbolKind::Def(DefKind::Rollout | DefKind::Model | DefKind::Data),
                    Scope::Formula | Scope::Reward
                )
        )
    }

    /// The edit that imports `name` from `module`: into an existing `use` of that module, or
    /// a new line after the last `use` (or at the top).
    fn import_edit(&self, module: &str, name: &str) -> (Span, String) {
        let mut last_use_end = None;
        for item in &self.file.items {
            if let Item::Use(u) = item {
                let m = u
                    .module
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(".");
                if m == module
                    && u.braced
                    && let Some(last) = u.names.last()
                {
                    return (
                        Span::new(last.span.end as usize, last.span.end as usize),
                        format!(", {name}"),
                    );
                }
                last_use_end = Some(u.span.end);
            }
        }
        match last_use_end {
            Some(end) => (
                Span::new(end as usize, end as usize),
                format!("\nuse {module}.{{{name}}}"),
            ),
            None => (Span::new(0, 0), format!("use {module}.{{{name}}}\n\n")),
        }
    }
}

/// A completion item's documentation: the declaration's own comment (hover shows the rest;
/// full hover text on hundreds of items would make every completion response large).
fn completion_doc(s: &super::Symbol) -> Option<String> {
    let module = s.module().map(|m| format!("from `{m}`"));
    match (&s.doc, module) {
        (Some(d), Some(m)) => Some(format!("{m}\n\n{d}")),
        (Some(d), None) => Some(d.clone()),
        (None, m) => m,
    }
}

/// The options of an enumerated parameter, from its rendering (`search: binary | linear = binary`).
fn enum_options(rendered: &str) -> Vec<String> {
    let Some((_, ty)) = rendered.split_once(':') else {
        return Vec::new();
    };
    let ty = ty.split('=').next().unwrap_or("");
    if !ty.contains('|') || ty.contains("schedule") {
        return Vec::new();
    }
    ty.split('|')
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty())
        .collect()
}

fn def_kind(k: SymbolKind) -> CompletionKind {
    match k {
        SymbolKind::Def(d) => CompletionKind::Def(d.into()),
        SymbolKind::Param => CompletionKind::Param,
        SymbolKind::Stage(_) | SymbolKind::Experiment => CompletionKind::Stage,
    }
}

/// Keep only the completions whose label starts with what was typed (servers may leave this to
/// the client; tests and the benchmark use it to keep lists short).
pub fn filter_prefix(source: &str, items: Vec<Completion>) -> Vec<Completion> {
    items
        .into_iter()
        .filter(|c| {
            let typed = source
                .get(c.replace.start as usize..c.replace.end as usize)
                .unwrap_or("");
            c.label.starts_with(typed)
        })
        .collect()
}
