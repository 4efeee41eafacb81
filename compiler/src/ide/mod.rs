//! IDE queries over the syntax tree: the language server's knowledge of a file.
//!
//! [`Analysis::new`] parses one buffer (with the same error-tolerant parser as the compiler),
//! then indexes it: every declaration becomes a [`Symbol`] (the standard library's included, so
//! navigation reaches into `stdlib/`), and every identifier the editor can point at becomes a
//! [`Site`] (a reference to a symbol, a built-in, a setting key, a field, a unit, a keyword).
//! [`Analysis::site_at`] is the `find_node(byte_offset)` that hover, go-to-definition, rename and
//! semantic tokens build on; completion and signature help also look at the raw tokens around the
//! cursor ([`lex`]) because the line being typed rarely parses.
//!
//! Everything is in byte offsets ([`Span`]); line/column conversion is the server's job. Nothing
//! here does IO except through [`FileSystem`] (dataset field names for completion).

pub mod complete;
pub mod docs;
pub mod hover;
pub mod lex;
pub mod outline;
pub mod tokens;

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use crate::FileSystem;
use crate::span::Span;
use crate::stdlib;
use crate::syntax::{self, ast::*};
use docs::Scope;
use lex::{Tok, Token};

/// A file known to the analysis: the buffer itself or a standard library module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileId {
    Main,
    /// Index into [`stdlib::MODULES`].
    Std(usize),
}

impl FileId {
    /// The source text of a standard library module.
    pub fn std_source(self) -> Option<&'static str> {
        match self {
            FileId::Std(i) => stdlib::MODULES.get(i).map(|m| m.2),
            FileId::Main => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub file: FileId,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolKind {
    Def(DefKind),
    Param,
    Stage(BlockKind),
    Experiment,
}

pub type SymId = usize;

#[derive(Debug, Clone)]
pub struct Symbol {
    pub name: String,
    pub kind: SymbolKind,
    pub file: FileId,
    pub name_span: Span,
    /// The whole declaration.
    pub span: Span,
    /// The `//` comment lines just above the declaration (or after a parameter).
    pub doc: Option<String>,
    /// The declaration's first line as written: `objective dpo(chosen: seqs, beta: pos = 0.1)`.
    pub signature: String,
    /// The defining expression (a definition's value, a parameter's default) as written.
    pub value: Option<String>,
    /// Parameters of a definition, in order.
    pub params: Vec<SymId>,
    /// For a parameter: its definition, its type as written.
    pub owner: Option<SymId>,
    pub ty: Option<String>,
}

impl Symbol {
    /// The signature for a code block: one parameter per line when it is long.
    pub fn signature_block(&self) -> String {
        let Some(open) = self.signature.find('(') else {
            return self.signature.clone();
        };
        if self.signature.len() <= 80 || self.params.is_empty() {
            return self.signature.clone();
        }
        let inner = self
            .signature
            .get(open + 1..self.signature.len().saturating_sub(1))
            .unwrap_or("");
        // Parameters never contain `, ` at depth 0 except as separators; defaults may hold
        // calls, so split at depth 0 only.
        let mut parts = Vec::new();
        let mut depth = 0i32;
        let mut cur = String::new();
        for ch in inner.chars() {
            match ch {
                '(' | '[' => depth += 1,
                ')' | ']' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(cur.trim().to_string());
                    cur.clear();
                    continue;
                }
                _ => {}
            }
            cur.push(ch);
        }
        if !cur.trim().is_empty() {
            parts.push(cur.trim().to_string());
        }
        let mut out = format!("{}(\n", self.signature.get(..open).unwrap_or(""));
        for p in parts {
            out.push_str(&format!("  {p},\n"));
        }
        out.push(')');
        out
    }

    pub fn is_std(&self) -> bool {
        matches!(self.file, FileId::Std(_))
    }

    pub fn location(&self) -> Location {
        Location {
            file: self.file,
            span: self.name_span,
        }
    }

    /// The standard library module this symbol comes from.
    pub fn module(&self) -> Option<&'static str> {
        match self.file {
            FileId::Std(i) => stdlib::MODULES.get(i).map(|m| m.0),
            FileId::Main => None,
        }
    }
}

/// Something the cursor can point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// A symbol's declaration (`decl`) or a use of it.
    Sym {
        sym: SymId,
        decl: bool,
    },
    /// A built-in function named or called.
    Builtin {
        name: String,
        scope: Scope,
    },
    /// The name of a named argument of a built-in call.
    BuiltinArg {
        func: String,
        scope: Scope,
        param: String,
    },
    /// A setting key; `block` is `None` in the experiment itself, `Some(None)` in an eval block.
    Setting {
        block: Option<Option<BlockKind>>,
        key: String,
    },
    /// `base.name`: a dataset field or a sample field.
    Field {
        base: Option<SymId>,
        name: String,
    },
    Unit(String),
    Type(String),
    Keyword(String),
    /// A part of a module path in a `use`: the module named so far.
    Module(String),
    /// One option of an enumerated parameter (`search: binary | linear`), or a `match` arm.
    Choice {
        param: SymId,
        name: String,
    },
}

#[derive(Debug, Clone)]
pub struct SiteAt {
    pub span: Span,
    pub site: Site,
}

/// What a buffer holds, indexed.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub source: String,
    pub file: File,
    pub tokens: Vec<Token>,
    pub symbols: Vec<Symbol>,
    /// Sorted by start, then by length.
    pub sites: Vec<SiteAt>,
    /// Names visible at the file's top level (definitions and imports).
    pub scope: HashMap<String, SymId>,
    /// Where the buffer lives (anchors relative dataset paths).
    pub path: String,
}

struct StdIndex {
    symbols: Vec<Symbol>,
    /// Per module: its top-level scope (definitions and imports).
    scopes: Vec<HashMap<String, SymId>>,
}

fn std_index() -> &'static StdIndex {
    static INDEX: OnceLock<StdIndex> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut symbols = Vec::new();
        let mut scopes = Vec::new();
        let parsed = stdlib::parsed();
        for (i, (_, file)) in parsed.iter().enumerate() {
            let src = stdlib::MODULES.get(i).map_or("", |m| m.2);
            let mut scope = HashMap::new();
            for d in defs_of(&file.items) {
                let id = push_def(&mut symbols, d, FileId::Std(i), src);
                scope.entry(d.name.name.clone()).or_insert(id);
            }
            scopes.push(scope);
        }
        // Imports between standard modules.
        for (i, (_, file)) in parsed.iter().enumerate() {
            for u in file.items.iter().filter_map(|it| match it {
                Item::Use(u) => Some(u),
                _ => None,
            }) {
                let Some(m) = module_index(u) else { continue };
                for n in &u.names {
                    let target = scopes.get(m).and_then(|s| s.get(&n.name)).copied();
                    if let (Some(t), Some(scope)) = (target, scopes.get_mut(i)) {
                        scope.entry(n.name.clone()).or_insert(t);
                    }
                }
            }
        }
        StdIndex { symbols, scopes }
    })
}

fn module_index(u: &Use) -> Option<usize> {
    let name = module_name(u);
    stdlib::MODULES.iter().position(|m| m.0 == name)
}

fn module_name(u: &Use) -> String {
    u.module
        .iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

/// The definitions of a file as the checker sees them: top level, then inside experiments.
fn defs_of(items: &[Item]) -> Vec<&Def> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Def(d) => out.push(d),
            Item::Block(b) if b.kind == BlockKind::Experiment => {
                out.extend(b.items.iter().filter_map(|i| match i {
                    Item::Def(d) => Some(d),
                    _ => None,
                }))
            }
            _ => {}
        }
    }
    out
}

fn slice(src: &str, span: Span) -> &str {
    src.get(span.start as usize..span.end as usize)
        .unwrap_or("")
}

/// Whitespace runs (newlines included) collapsed to one space.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `//` lines directly above `offset` (no blank line between), without the slashes.
fn doc_above(src: &str, offset: u32) -> Option<String> {
    let before = src.get(..offset as usize)?;
    // The text on the declaration's own line before it must be blank.
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    if !before.get(line_start..)?.trim().is_empty() {
        return None;
    }
    let mut lines = Vec::new();
    let mut rest = before.get(..line_start.saturating_sub(1))?;
    if line_start == 0 {
        return None;
    }
    loop {
        let start = rest.rfind('\n').map_or(0, |i| i + 1);
        let line = rest.get(start..)?.trim();
        let Some(text) = line.strip_prefix("//") else {
            break;
        };
        lines.push(
            text.strip_prefix(' ')
                .unwrap_or(text)
                .trim_end()
                .to_string(),
        );
        if start == 0 {
            break;
        }
        rest = rest.get(..start - 1)?;
    }
    if lines.is_empty() {
        return None;
    }
    lines.reverse();
    Some(lines.join("\n"))
}

/// A `// comment` after `offset` on the same line.
fn doc_after(src: &str, offset: u32) -> Option<String> {
    let rest = src.get(offset as usize..)?;
    let line = rest.split('\n').next()?;
    let at = line.find("//")?;
    // Only punctuation may sit between the item and its comment (`beta: pos = 0.1, // ...`).
    if line.get(..at)?.trim().chars().any(|c| c.is_alphanumeric()) {
        return None;
    }
    let text = line.get(at + 2..)?.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn push_def(symbols: &mut Vec<Symbol>, d: &Def, file: FileId, src: &str) -> SymId {
    let id = symbols.len();
    let signature = match &d.params {
        None => format!("{} {}", d.kind.keyword(), d.name.name),
        Some(ps) => {
            let ps: Vec<String> = ps.iter().map(|p| one_line(slice(src, p.span))).collect();
            format!("{} {}({})", d.kind.keyword(), d.name.name, ps.join(", "))
        }
    };
    symbols.push(Symbol {
        name: d.name.name.clone(),
        kind: SymbolKind::Def(d.kind),
        file,
        name_span: d.name.span,
        span: d.span,
        doc: doc_above(src, d.span.start),
        signature,
        value: Some(slice(src, d.value.span).to_string()),
        params: Vec::new(),
        owner: None,
        ty: None,
    });
    let mut params = Vec::new();
    for p in d.params.iter().flatten() {
        let pid = symbols.len();
        let ty = p.ty.as_ref().map(|t| {
            t.iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        });
        let doc = doc_above(src, p.span.start).or_else(|| doc_after(src, p.span.end));
        symbols.push(Symbol {
            name: p.name.name.clone(),
            kind: SymbolKind::Param,
            file,
            name_span: p.name.span,
            span: p.span,
            doc,
            signature: one_line(slice(src, p.span)),
            value: p.default.as_ref().map(|e| slice(src, e.span).to_string()),
            params: Vec::new(),
            owner: Some(id),
            ty,
        });
        params.push(pid);
    }
    if let Some(s) = symbols.get_mut(id) {
        s.params = params;
    }
    id
}

impl Analysis {
    /// Parse and index a buffer. Never panics, whatever the text.
    pub fn new(source: &str, path: &str) -> Analysis {
        let parsed = syntax::parse(source);
        Analysis::from_file(source, path, parsed.file)
    }

    /// Index an already parsed buffer.
    pub fn from_file(source: &str, path: &str, file: File) -> Analysis {
        let std = std_index();
        let mut b = Builder {
            src: source,
            symbols: std.symbols.clone(),
            sites: Vec::new(),
            scope: HashMap::new(),
            stages: HashMap::new(),
            locals: Vec::new(),
            scope_kind: Scope::Experiment,
        };
        for d in defs_of(&file.items) {
            let id = push_def(&mut b.symbols, d, FileId::Main, source);
            b.scope.entry(d.name.name.clone()).or_insert(id);
        }
        for item in &file.items {
            if let Item::Use(u) = item {
                b.use_decl(u, std);
            }
        }
        b.items(&file.items, None);
        let Builder {
            symbols,
            mut sites,
            scope,
            ..
        } = b;
        sites.sort_by_key(|s| (s.span.start, s.span.len()));
        Analysis {
            source: source.to_string(),
            tokens: lex::lex(source),
            file,
            symbols,
            sites,
            scope,
            path: path.to_string(),
        }
    }

    pub fn symbol(&self, id: SymId) -> Option<&Symbol> {
        self.symbols.get(id)
    }

    /// The innermost site whose span contains `offset` (an offset just after a word counts).
    pub fn site_at(&self, offset: u32) -> Option<&SiteAt> {
        let end = self.sites.partition_point(|s| s.span.start <= offset);
        self.sites[..end]
            .iter()
            .filter(|s| s.span.contains(offset))
            .min_by_key(|s| (s.span.len(), std::cmp::Reverse(s.span.start)))
    }

    /// The symbol at `offset`, declared or used there.
    pub fn symbol_at(&self, offset: u32) -> Option<SymId> {
        match self.site_at(offset)?.site {
            Site::Sym { sym, .. } => Some(sym),
            _ => None,
        }
    }

    /// Go to definition.
    pub fn definition(&self, offset: u32) -> Option<Location> {
        let site = self.site_at(offset)?;
        match &site.site {
            Site::Sym { sym, .. } => self.symbol(*sym).map(Symbol::location),
            Site::Module(m) => {
                let i = stdlib::MODULES.iter().position(|x| x.0 == m)?;
                Some(Location {
                    file: FileId::Std(i),
                    span: Span::default(),
                })
            }
            Site::Field {
                base: Some(base), ..
            } => self.symbol(*base).map(Symbol::location),
            _ => None,
        }
    }

    /// Every use of the symbol at `offset` in this buffer (and its declaration, when asked).
    pub fn references(&self, offset: u32, include_decl: bool) -> Vec<Location> {
        let Some(sym) = self.symbol_at(offset) else {
            return Vec::new();
        };
        self.references_of(sym, include_decl)
    }

    pub fn references_of(&self, sym: SymId, include_decl: bool) -> Vec<Location> {
        let mut out: Vec<Location> = Vec::new();
        if include_decl && let Some(s) = self.symbol(sym) {
            out.push(s.location());
        }
        for s in &self.sites {
            if let Site::Sym { sym: x, decl } = s.site
                && x == sym
                && !decl
            {
                out.push(Location {
                    file: FileId::Main,
                    span: s.span,
                });
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The span a rename at `offset` would change, or why it cannot.
    pub fn prepare_rename(&self, offset: u32) -> Result<Span, String> {
        let site = self
            .site_at(offset)
            .ok_or_else(|| "nothing to rename here".to_string())?;
        let Site::Sym { sym, .. } = site.site else {
            return Err("only names declared in this file can be renamed".into());
        };
        let s = self
            .symbol(sym)
            .ok_or_else(|| "unknown symbol".to_string())?;
        if s.is_std() {
            return Err(format!(
                "`{}` is defined in the standard library ({}) and cannot be renamed here",
                s.name,
                s.module().unwrap_or("std")
            ));
        }
        Ok(site.span)
    }

    /// The edits (spans in this buffer, each replaced by `new_name`) of a rename.
    pub fn rename(&self, offset: u32, new_name: &str) -> Result<Vec<Span>, String> {
        self.prepare_rename(offset)?;
        if !is_identifier(new_name) {
            return Err(format!("`{new_name}` is not a valid name"));
        }
        let sym = self
            .symbol_at(offset)
            .ok_or_else(|| "nothing to rename here".to_string())?;
        let mut spans: Vec<Span> = self
            .references_of(sym, true)
            .into_iter()
            .filter(|l| l.file == FileId::Main)
            .map(|l| l.span)
            .collect();
        spans.sort();
        spans.dedup();
        Ok(spans)
    }

    /// The innermost definition whose span contains `offset`.
    pub fn enclosing_def(&self, offset: u32) -> Option<&Def> {
        defs_of(&self.file.items)
            .into_iter()
            .find(|d| d.span.contains(offset))
    }

    /// Which built-ins are reachable at `offset`.
    pub fn scope_at(&self, offset: u32) -> Scope {
        match self.enclosing_def(offset).map(|d| d.kind) {
            Some(DefKind::Objective) => Scope::Formula,
            Some(DefKind::Reward) => Scope::Reward,
            _ => Scope::Experiment,
        }
    }

    /// Names visible at `offset`: parameters of the enclosing definition, then the file's scope.
    pub fn visible(&self, offset: u32) -> Vec<SymId> {
        let mut out = Vec::new();
        if let Some(d) = self.enclosing_def(offset)
            && let Some(s) = self.symbols.iter().find(|s| {
                s.file == FileId::Main && s.name_span == d.name.span && s.kind != SymbolKind::Param
            })
        {
            out.extend(s.params.iter().copied());
        }
        let mut top: Vec<SymId> = self.scope.values().copied().collect();
        top.sort();
        out.extend(top);
        out
    }

    /// The record fields of the dataset declared by `sym`, as the checker knows them (its
    /// [`crate::check::Facts`]: a task's fields, a JSONL file's mapped or shared keys, fields a
    /// transform adds).
    pub fn data_fields(&self, fs: &dyn FileSystem, sym: SymId) -> Option<BTreeSet<String>> {
        let s = self.symbol(sym)?;
        if s.kind != SymbolKind::Def(DefKind::Data) || s.file != FileId::Main {
            return None;
        }
        let (_, _, facts) = crate::check::check_with_facts(&self.file, fs, &self.path, &[]);
        facts
            .data_fields
            .into_iter()
            .find(|(span, _)| *span == s.name_span)
            .map(|(_, fields)| fields)
    }
}

/// The diagnostics `crate::compile_source` reports for this parse, through the same
/// [`crate::diagnose`], so a server that also indexes the text parses it once.
pub fn diagnostics_of(
    fs: &dyn FileSystem,
    path: &str,
    parsed: &syntax::Parsed,
) -> Vec<crate::Diagnostic> {
    crate::diagnose(fs, path, parsed, &[]).1
}

/// Whether `s` can name something (`ident` of the grammar, not a reserved word).
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(lex::is_ident_start)
        && chars.all(lex::is_ident_char)
        && !docs::RESERVED.contains(&s)
}

struct Builder<'s> {
    src: &'s str,
    symbols: Vec<Symbol>,
    sites: Vec<SiteAt>,
    scope: HashMap<String, SymId>,
    stages: HashMap<String, SymId>,
    /// Parameters of the definition being walked.
    locals: Vec<(String, SymId)>,
    scope_kind: Scope,
}

impl Builder<'_> {
    fn site(&mut self, span: Span, site: Site) {
        self.sites.push(SiteAt { span, site });
    }

    fn keyword_at(&mut self, start: u32, kw: &str) {
        if self.src.get(start as usize..start as usize + kw.len()) == Some(kw) {
            self.site(
                Span::new(start as usize, start as usize + kw.len()),
                Site::Keyword(kw.to_string()),
            );
        }
    }

    fn use_decl(&mut self, u: &Use, std: &StdIndex) {
        self.keyword_at(u.span.start, "use");
        let mut path = String::new();
        for part in &u.module {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&part.name);
            self.site(part.span, Site::Module(path.clone()));
        }
        let m = module_index(u);
        for n in &u.names {
            let target = m
                .and_then(|m| std.scopes.get(m))
                .and_then(|s| s.get(&n.name));
            if let Some(&t) = target {
                self.site(
                    n.span,
                    Site::Sym {
                        sym: t,
                        decl: false,
                    },
                );
                self.scope.entry(n.name.clone()).or_insert(t);
            }
        }
    }

    fn resolve(&self, name: &str) -> Option<SymId> {
        self.locals
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
            .or_else(|| self.scope.get(name).copied())
    }

    fn main_def_symbol(&self, d: &Def) -> Option<SymId> {
        self.symbols.iter().position(|s| {
            s.file == FileId::Main
                && s.name_span == d.name.span
                && s.kind == SymbolKind::Def(d.kind)
        })
    }

    fn items(&mut self, items: &[Item], block: Option<&Block>) {
        // Stage names first: `selected(s2l)` may name a later stage.
        for item in items {
            if let Item::Block(b) = item {
                let kind = if b.kind == BlockKind::Experiment {
                    SymbolKind::Experiment
                } else {
                    SymbolKind::Stage(b.kind)
                };
                let id = self.symbols.len();
                let head = Span::new(b.span.start as usize, b.name.span.end as usize);
                self.symbols.push(Symbol {
                    name: b.name.name.clone(),
                    kind,
                    file: FileId::Main,
                    name_span: b.name.span,
                    span: b.span,
                    doc: doc_above(self.src, b.span.start),
                    signature: one_line(slice(self.src, head)),
                    value: None,
                    params: Vec::new(),
                    owner: None,
                    ty: None,
                });
                self.site(
                    b.name.span,
                    Site::Sym {
                        sym: id,
                        decl: true,
                    },
                );
                if b.kind != BlockKind::Experiment {
                    self.stages.entry(b.name.name.clone()).or_insert(id);
                }
            }
        }
        for item in items {
            match item {
                Item::Use(_) | Item::Error(_) => {}
                Item::Def(d) => self.def(d),
                Item::Block(b) => {
                    self.keyword_at(b.span.start, b.kind.keyword());
                    self.items(&b.items, Some(b));
                }
                Item::Eval(e) => {
                    self.keyword_at(e.span.start, "eval");
                    let head_end = e.items.first().map_or(e.close.start, |i| i.span().start);
                    for t in lex::lex(slice(
                        self.src,
                        Span::new(e.span.start as usize, head_end as usize),
                    )) {
                        let text = t.text(slice(
                            self.src,
                            Span::new(e.span.start as usize, head_end as usize),
                        ));
                        if t.kind == Tok::Ident && (text == "every" || text == "on") {
                            let sp = t.span.offset(e.span.start as usize);
                            self.site(sp, Site::Keyword(text.to_string()));
                        }
                    }
                    if let Some(x) = &e.every {
                        self.expr(x);
                    }
                    if let Some(on) = &e.on
                        && let Some(sym) = self.resolve(&on.name)
                    {
                        self.site(on.span, Site::Sym { sym, decl: false });
                    }
                    for i in &e.items {
                        if let Item::Setting(s) = i {
                            self.site(
                                s.key.span,
                                Site::Setting {
                                    block: Some(None),
                                    key: s.key.name.clone(),
                                },
                            );
                            self.expr(&s.value);
                        }
                    }
                }
                Item::Setting(s) => {
                    let kind = block
                        .map(|b| b.kind)
                        .filter(|k| *k != BlockKind::Experiment);
                    self.site(
                        s.key.span,
                        Site::Setting {
                            block: kind.map(Some),
                            key: s.key.name.clone(),
                        },
                    );
                    self.expr(&s.value);
                }
            }
        }
    }

    fn def(&mut self, d: &Def) {
        self.site(d.kind_span, Site::Keyword(d.kind.keyword().to_string()));
        let id = self.main_def_symbol(d);
        let params: Vec<SymId> = id
            .and_then(|i| self.symbols.get(i))
            .map(|s| s.params.clone())
            .unwrap_or_default();
        if let Some(id) = id {
            self.site(
                d.name.span,
                Site::Sym {
                    sym: id,
                    decl: true,
                },
            );
        }
        self.scope_kind = match d.kind {
            DefKind::Objective => Scope::Formula,
            DefKind::Reward => Scope::Reward,
            _ => Scope::Experiment,
        };
        self.locals.clear();
        for (p, pid) in d.params.iter().flatten().zip(params.iter().copied()) {
            self.site(
                p.name.span,
                Site::Sym {
                    sym: pid,
                    decl: true,
                },
            );
            match p.ty.as_deref() {
                Some([one]) => self.site(one.span, Site::Type(one.name.clone())),
                Some(many) => {
                    for opt in many {
                        let choice = Site::Choice {
                            param: pid,
                            name: opt.name.clone(),
                        };
                        self.site(opt.span, choice);
                    }
                }
                None => {}
            }
            if let Some(dflt) = &p.default {
                self.expr(dflt);
            }
            self.locals.push((p.name.name.clone(), pid));
        }
        self.expr(&d.value);
        self.locals.clear();
        self.scope_kind = Scope::Experiment;
    }

    fn name(&mut self, n: &str, span: Span) {
        if let Some(sym) = self.resolve(n) {
            self.site(span, Site::Sym { sym, decl: false });
        } else if let Some(b) = docs::builtin(n, self.scope_kind) {
            self.site(
                span,
                Site::Builtin {
                    name: n.to_string(),
                    scope: b.scope,
                },
            );
        } else if let Some(&sym) = self.stages.get(n) {
            self.site(span, Site::Sym { sym, decl: false });
        }
    }

    fn expr(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Name(n) => self.name(n, e.span),
            ExprKind::Quantity { unit, .. } => self.site(unit.span, Site::Unit(unit.name.clone())),
            ExprKind::Field { base, field } => {
                self.expr(base);
                let base_sym = match &base.kind {
                    ExprKind::Name(n) => self.resolve(n),
                    _ => None,
                };
                self.site(
                    field.span,
                    Site::Field {
                        base: base_sym,
                        name: field.name.clone(),
                    },
                );
            }
            ExprKind::Call { callee, args } => {
                let (target, builtin) = match &callee.kind {
                    ExprKind::Name(n) => {
                        self.name(n, callee.span);
                        let t = self.resolve(n);
                        let b = if t.is_none() {
                            docs::builtin(n, self.scope_kind).map(|d| (d.name, d.scope))
                        } else {
                            None
                        };
                        (t, b)
                    }
                    ExprKind::Field { base, field } => {
                        self.expr(base);
                        let b = docs::builtin(&field.name, Scope::Transform)
                            .filter(|d| d.scope == Scope::Transform);
                        if let Some(d) = b {
                            self.site(
                                field.span,
                                Site::Builtin {
                                    name: d.name.to_string(),
                                    scope: Scope::Transform,
                                },
                            );
                        }
                        (None, b.map(|d| (d.name, d.scope)))
                    }
                    _ => {
                        self.expr(callee);
                        (None, None)
                    }
                };
                for a in args {
                    if let Some(key) = &a.name {
                        let param = target.and_then(|t| {
                            let params = self.symbols.get(t)?.params.clone();
                            params
                                .into_iter()
                                .find(|p| self.symbols.get(*p).is_some_and(|s| s.name == key.name))
                        });
                        if let Some(p) = param {
                            self.site(
                                key.span,
                                Site::Sym {
                                    sym: p,
                                    decl: false,
                                },
                            );
                        } else if let Some((func, scope)) = builtin {
                            self.site(
                                key.span,
                                Site::BuiltinArg {
                                    func: func.to_string(),
                                    scope,
                                    param: key.name.clone(),
                                },
                            );
                        }
                    }
                    self.expr(&a.value);
                }
            }
            ExprKind::Match { scrutinee, arms } => {
                self.expr(scrutinee);
                // Arm patterns are the options of the matched symbol parameter.
                let param = match &scrutinee.kind {
                    ExprKind::Name(n) => self.resolve(n),
                    _ => None,
                };
                for a in arms {
                    if let Some(p) = param {
                        let choice = Site::Choice {
                            param: p,
                            name: a.pattern.name.clone(),
                        };
                        self.site(a.pattern.span, choice);
                    }
                    self.expr(&a.value);
                }
            }
            _ => {
                for c in e.children() {
                    self.expr(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
