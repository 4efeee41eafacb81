//! Parsing: source text -> [`ast::File`] plus syntax diagnostics.
//!
//! The pest grammar (`post.pest`, normative) never fails as a whole: broken lines are caught by
//! catch-all rules and each becomes one diagnostic, found by re-parsing the line on its own for
//! pest's precise message. Nesting is bounded before pest runs (brackets, `if`s), and expression
//! trees deeper than [`MAX_DEPTH`] are refused, so no input can exhaust the stack later.

pub mod ast;

use pest::Parser as _;
use pest::iterators::Pair;

use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;
use ast::*;

#[derive(pest_derive::Parser)]
#[grammar = "syntax/post.pest"]
struct PostParser;

/// Deepest expression tree (and bracket nesting) accepted.
pub const MAX_DEPTH: usize = 96;

/// The errors of the syntax phase.
#[derive(Debug, Clone, PartialEq)]
pub enum SyntaxError {
    /// pest's message for a line that does not parse.
    Unexpected {
        span: Span,
        message: String,
    },
    TooDeep {
        span: Span,
    },
    BadEscape {
        span: Span,
        escape: String,
    },
    BadNumber {
        span: Span,
        text: String,
    },
    /// A block's `{` (at `open`) with no matching `}`: the block runs to the end of the file.
    Unclosed {
        open: Span,
        block: String,
    },
}

impl SyntaxError {
    pub fn to_diagnostic(&self) -> Diagnostic {
        match self {
            SyntaxError::Unexpected { span, message } => {
                Diagnostic::error(Code::E0001, "syntax error", *span, message.clone()).with_help(
                    "each line holds one definition (`model m = ...`), setting (`key = value`) or block (`stage name { ... }`)",
                )
            }
            SyntaxError::TooDeep { span } => Diagnostic::error(
                Code::E0004,
                format!("nesting deeper than {MAX_DEPTH} levels"),
                *span,
                "too deeply nested",
            )
            .with_help("split the expression into named definitions"),
            SyntaxError::BadEscape { span, escape } => Diagnostic::error(
                Code::E0005,
                format!("invalid escape `{escape}` in a string"),
                *span,
                "unknown escape",
            )
            .with_help(r#"the escapes are \n \t \" \\"#),
            SyntaxError::BadNumber { span, text } => Diagnostic::error(
                Code::E0006,
                format!("`{text}` is not a finite number"),
                *span,
                "invalid number",
            )
            .with_help("write a finite decimal number such as `0.5`, `3e-4` or `1000`"),
            SyntaxError::Unclosed { open, block } => Diagnostic::error(
                Code::E0001,
                format!("`{block}` is never closed"),
                *open,
                "this `{` has no matching `}`",
            )
            .with_help(
                "close the block with `}`; everything after this `{` was read as part of it",
            ),
        }
    }
}

pub struct Parsed {
    pub file: File,
    pub errors: Vec<SyntaxError>,
}

/// Parse a whole file. Never panics; returns every item that parsed.
pub fn parse(src: &str) -> Parsed {
    let comments = scan_comments(src);
    let mut errors = Vec::new();
    if let Some(span) = too_deep(src) {
        errors.push(SyntaxError::TooDeep { span });
        return Parsed {
            file: File {
                items: vec![],
                comments,
            },
            errors,
        };
    }
    let mut b = Builder {
        src,
        errors: Vec::new(),
    };
    let items = match PostParser::parse(Rule::file, src) {
        Ok(mut pairs) => match pairs.next() {
            Some(file) => b.items(file.into_inner(), true),
            None => vec![],
        },
        // The catch-all rules make this unreachable in practice; stay total anyway.
        Err(e) => {
            b.errors.push(pest_error(e, 0, src.len()));
            vec![]
        }
    };
    errors.extend(b.errors);
    Parsed {
        file: File { items, comments },
        errors,
    }
}

/// Bracket nesting (per file) and `if`/`match` counts (per line) are bounded before pest runs,
/// so its recursion (and ours) stays shallow on any input; pest's stack guard refuses the rest.
fn too_deep(src: &str) -> Option<Span> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let mut in_comment = false;
    let bytes = src.as_bytes();
    let mut conds = 0usize;
    for (i, &c) in bytes.iter().enumerate() {
        if in_comment {
            if c == b'\n' {
                in_comment = false;
            }
            continue;
        }
        if in_str {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' || c == b'\n' {
                in_str = false;
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'/' if bytes.get(i + 1) == Some(&b'/') => in_comment = true,
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(Span::new(i, i + 1));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            // pest's own stack guard covers deeper multi-line nesting; one line is bounded here.
            b'\n' => conds = 0,
            b'i' | b'm' => {
                let word_start = i == 0 || !is_ident_byte(bytes[i - 1]);
                let rest = &bytes[i..];
                let kw = if rest.starts_with(b"if") {
                    2
                } else if rest.starts_with(b"match") {
                    5
                } else {
                    0
                };
                if word_start && kw > 0 && !rest.get(kw).is_some_and(|b| is_ident_byte(*b)) {
                    conds += 1;
                    if conds > MAX_DEPTH {
                        return Some(Span::new(i, i + kw));
                    }
                }
            }
            _ => {}
        }
    }
    None
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Comments are found by a small scan (outside strings), independent of pest.
pub fn scan_comments(src: &str) -> Vec<Comment> {
    let mut out = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    let mut in_str = false;
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'"' || c == b'\n' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_str = true;
        } else if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            let end = src[i..].find('\n').map_or(src.len(), |n| i + n);
            let text = src[i + 2..end].trim_end().to_string();
            out.push(Comment {
                text,
                span: Span::new(i, end),
            });
            i = end;
            continue;
        }
        i += 1;
    }
    out
}

fn pest_error(e: pest::error::Error<Rule>, offset: usize, limit: usize) -> SyntaxError {
    let (start, end) = match e.location {
        pest::error::InputLocation::Pos(p) => (p, p),
        pest::error::InputLocation::Span((s, e)) => (s, e),
    };
    let start = (start + offset).min(limit);
    let end = (end + offset).min(limit).max(start);
    let message = match &e.variant {
        pest::error::ErrorVariant::ParsingError {
            positives,
            negatives: _,
        } => {
            let mut names: Vec<String> = positives.iter().filter_map(rule_name).collect();
            names.sort();
            names.dedup();
            if names.is_empty() {
                "unexpected input".to_string()
            } else {
                format!("expected {}", names.join(", "))
            }
        }
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    SyntaxError::Unexpected {
        span: Span::new(start, end),
        message,
    }
}

fn rule_name(r: &Rule) -> Option<String> {
    let s = match r {
        Rule::ident => "a name",
        Rule::expr | Rule::arrow | Rule::chain | Rule::unary | Rule::postfix => "an expression",
        Rule::number | Rule::quantity => "a number",
        Rule::string => "a string",
        Rule::assign => "`=`",
        Rule::body => "`{`",
        Rule::call_args => "arguments",
        Rule::ty => "a type",
        Rule::param | Rule::params => "a parameter",
        Rule::def_kw => "a definition",
        Rule::setting => "a setting",
        Rule::stage_kw => "a block",
        Rule::bin_op => "an operator",
        Rule::field => "`.`",
        Rule::EOI => "end of input",
        Rule::arm => "a match arm",
        Rule::kw_then => "`then`",
        Rule::kw_else => "`else`",
        Rule::unit => "a unit",
        _ => return None,
    };
    Some(s.to_string())
}

struct Builder<'a> {
    src: &'a str,
    errors: Vec<SyntaxError>,
}

/// The span of a pair without the whitespace and comments pest lets trail inside rules.
fn span_of(p: &Pair<Rule>) -> Span {
    let s = p.as_span();
    Span::new(s.start(), s.start() + content_len(p.as_str()))
}

/// Length of `text` once trailing whitespace and trailing `//` comments are removed.
fn content_len(text: &str) -> usize {
    let mut end = text.len();
    loop {
        let trimmed = text[..end].trim_end();
        end = trimmed.len();
        let line_start = trimmed.rfind('\n').map_or(0, |i| i + 1);
        match comment_start(&trimmed[line_start..]) {
            Some(c) => end = line_start + c,
            None => return end,
        }
    }
}

/// Byte offset of a `//` comment in one line, outside string literals.
fn comment_start(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'/' if !in_str && b.get(i + 1) == Some(&b'/') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Prefix operators of an operand, outermost first.
type Prefixes = Vec<(UnaryOp, Span)>;

/// Result of building an expression: the node and its tree depth.
type Built = Option<(Expr, usize)>;

impl<'a> Builder<'a> {
    /// Items of a block or the file. Consecutive broken lines are reported once.
    fn items(&mut self, pairs: pest::iterators::Pairs<Rule>, top: bool) -> Vec<Item> {
        let mut out: Vec<Item> = Vec::new();
        let mut last_was_error = false;
        for p in pairs {
            let item = match p.as_rule() {
                Rule::EOI | Rule::unclosed => continue,
                Rule::top_error | Rule::member_error => {
                    let mut span = span_of(&p);
                    // An item that parsed only up to a broken rest of its line (`x = f(` ...) is
                    // part of the broken line: drop it so it causes no follow-up errors.
                    if let Some(prev) = out.last() {
                        let prev_span = prev.span();
                        let between = self
                            .src
                            .get(prev_span.end as usize..span.start as usize)
                            .unwrap_or("\n");
                        if !matches!(prev, Item::Error(_)) && !between.contains('\n') {
                            span = prev_span.join(span);
                            out.pop();
                        }
                    }
                    if !last_was_error {
                        self.report_line(&p, top);
                    }
                    last_was_error = true;
                    out.push(Item::Error(span));
                    continue;
                }
                Rule::use_decl => self.use_decl(p).map(Item::Use),
                Rule::experiment => self.block(p, BlockKind::Experiment).map(Item::Block),
                Rule::stage => self.stage(p).map(Item::Block),
                Rule::def => self.def(p).map(Item::Def),
                Rule::eval => self.eval(p).map(Item::Eval),
                Rule::setting => self.setting(p).map(Item::Setting),
                _ => None,
            };
            last_was_error = false;
            if let Some(item) = item {
                out.push(item);
            }
        }
        out
    }

    fn report_line(&mut self, p: &Pair<Rule>, top: bool) {
        // Past the cap the diagnostics are cut anyway (`crate::diagnose`); skipping the re-parse
        // keeps a file of many broken lines linear rather than (lines x file size).
        if self.errors.len() >= crate::diagnostic::MAX_DIAGNOSTICS {
            self.errors.push(SyntaxError::Unexpected {
                span: span_of(p),
                message: "unexpected input".to_string(),
            });
            return;
        }
        let start = p.as_span().start();
        let text = p.as_str();
        let rule = if top {
            Rule::single_item
        } else {
            Rule::single_member
        };
        // The line alone usually fails where the real problem is; if the line is only the start
        // of a multi-line item, extend it to the rest of the file for the message.
        let rest = &self.src[start..];
        let err = match PostParser::parse(rule, rest) {
            Err(e) => Some(e),
            Ok(_) => PostParser::parse(rule, text).err(),
        };
        let err = match err {
            Some(e) => pest_error(e, start, self.src.len()),
            None => SyntaxError::Unexpected {
                span: span_of(p),
                message: "unexpected input".to_string(),
            },
        };
        // Keep the primary span on the broken line when the re-parse wandered further.
        let err = match err {
            SyntaxError::Unexpected { span, message }
                if span.start as usize > p.as_span().end() =>
            {
                SyntaxError::Unexpected {
                    span: span_of(p),
                    message,
                }
            }
            other => other,
        };
        self.errors.push(err);
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        Ident {
            name: p.as_str().to_string(),
            span: span_of(&p),
        }
    }

    fn use_decl(&mut self, p: Pair<Rule>) -> Option<Use> {
        let span = span_of(&p);
        let mut module = Vec::new();
        let mut names = Vec::new();
        let mut braced = false;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::ident => module.push(self.ident(c)),
                Rule::use_names => {
                    braced = true;
                    names = c.into_inner().map(|n| self.ident(n)).collect();
                }
                _ => {}
            }
        }
        if !braced {
            // `use std.objectives.sft`: the last segment is the imported name.
            if module.len() >= 2 {
                names.push(module.pop()?);
            }
        }
        Some(Use {
            module,
            names,
            braced,
            span,
        })
    }

    fn block(&mut self, p: Pair<Rule>, kind: BlockKind) -> Option<Block> {
        let span = span_of(&p);
        let mut name = None;
        let mut items = Vec::new();
        let mut close = Span::new(span.end as usize, span.end as usize);
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::ident => name = Some(self.ident(c)),
                Rule::body => {
                    let what = format!(
                        "{} {}",
                        kind.keyword(),
                        name.as_ref().map_or("", |n: &Ident| n.name.as_str())
                    );
                    close = self.close_of(&c, what);
                    items = self.items(c.into_inner(), false);
                }
                _ => {}
            }
        }
        Some(Block {
            kind,
            name: name?,
            items,
            close,
            span,
        })
    }

    /// The closing `}` of a `body`; for an unclosed one, an empty span at the end of the file
    /// and an [`SyntaxError::Unclosed`] naming the block (`what`).
    fn close_of(&mut self, body: &Pair<Rule>, what: String) -> Span {
        let unclosed = body
            .clone()
            .into_inner()
            .any(|c| c.as_rule() == Rule::unclosed);
        if unclosed {
            let open = body.as_span().start();
            self.errors.push(SyntaxError::Unclosed {
                open: Span::new(open, open + 1),
                block: what.trim_end().to_string(),
            });
            return Span::new(self.src.len(), self.src.len());
        }
        let end = span_of(body).end as usize;
        Span::new(end.saturating_sub(1), end)
    }

    fn stage(&mut self, p: Pair<Rule>) -> Option<Block> {
        let kind = match p.clone().into_inner().next()?.as_str() {
            "select" => BlockKind::Select,
            "analysis" => BlockKind::Analysis,
            _ => BlockKind::Stage,
        };
        self.block(p, kind)
    }

    fn eval(&mut self, p: Pair<Rule>) -> Option<EvalBlock> {
        let span = span_of(&p);
        let mut every = None;
        let mut on = None;
        let mut items = Vec::new();
        let mut close = Span::new(span.end as usize, span.end as usize);
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::eval_every => {
                    let e = c.into_inner().find(|x| x.as_rule() == Rule::expr)?;
                    every = Some(self.expr(e)?.0);
                }
                Rule::eval_on => {
                    let i = c.into_inner().find(|x| x.as_rule() == Rule::ident)?;
                    on = Some(self.ident(i));
                }
                Rule::body => {
                    close = self.close_of(&c, "eval".to_string());
                    items = self.items(c.into_inner(), false);
                }
                _ => {}
            }
        }
        Some(EvalBlock {
            every,
            on,
            items,
            close,
            span,
        })
    }

    fn def(&mut self, p: Pair<Rule>) -> Option<Def> {
        let span = span_of(&p);
        let mut inner = p.into_inner();
        let kw = inner.next()?;
        let kind = match kw.as_str() {
            "model" => DefKind::Model,
            "data" => DefKind::Data,
            "reward" => DefKind::Reward,
            "objective" => DefKind::Objective,
            "rollout" => DefKind::Rollout,
            _ => DefKind::Const,
        };
        let name = self.ident(inner.next()?);
        let mut params = None;
        let mut value = None;
        for c in inner {
            match c.as_rule() {
                Rule::params => {
                    let mut ps = Vec::new();
                    for pp in c.into_inner() {
                        ps.push(self.param(pp)?);
                    }
                    params = Some(ps);
                }
                Rule::expr => value = Some(self.expr(c)?.0),
                _ => {}
            }
        }
        Some(Def {
            kind,
            kind_span: span_of(&kw),
            name,
            params,
            value: value?,
            span,
        })
    }

    fn param(&mut self, p: Pair<Rule>) -> Option<Param> {
        let span = span_of(&p);
        let mut inner = p.into_inner();
        let name = self.ident(inner.next()?);
        let mut ty = None;
        let mut default = None;
        for c in inner {
            match c.as_rule() {
                Rule::ty => ty = Some(c.into_inner().map(|i| self.ident(i)).collect()),
                Rule::expr => default = Some(self.expr(c)?.0),
                _ => {}
            }
        }
        Some(Param {
            name,
            ty,
            default,
            span,
        })
    }

    fn setting(&mut self, p: Pair<Rule>) -> Option<Setting> {
        let span = span_of(&p);
        let mut inner = p.into_inner();
        let key = self.ident(inner.next()?);
        let value = inner
            .find(|c| c.as_rule() == Rule::expr)
            .and_then(|e| self.expr(e))?
            .0;
        Some(Setting { key, value, span })
    }

    fn check_depth(&mut self, e: Expr, depth: usize) -> Built {
        if depth > MAX_DEPTH {
            self.errors.push(SyntaxError::TooDeep { span: e.span });
            return None;
        }
        Some((e, depth))
    }

    fn expr(&mut self, p: Pair<Rule>) -> Built {
        let span = span_of(&p);
        match p.as_rule() {
            Rule::expr => self.expr(p.into_inner().next()?),
            Rule::if_expr => {
                let mut parts = Vec::new();
                let mut depth = 0;
                for c in p.into_inner().filter(|c| c.as_rule() == Rule::expr) {
                    let (e, d) = self.expr(c)?;
                    depth = depth.max(d);
                    parts.push(Box::new(e));
                }
                let otherwise = parts.pop()?;
                let then = parts.pop()?;
                let cond = parts.pop()?;
                self.check_depth(
                    Expr {
                        kind: ExprKind::If {
                            cond,
                            then,
                            otherwise,
                        },
                        span,
                    },
                    depth + 1,
                )
            }
            Rule::match_expr => {
                let mut inner = p.into_inner().filter(|c| c.as_rule() != Rule::kw_match);
                let (scrutinee, mut depth) = self.expr(inner.next()?)?;
                let mut arms = Vec::new();
                for a in inner {
                    let aspan = span_of(&a);
                    let mut ai = a.into_inner();
                    let pattern = self.ident(ai.next()?);
                    let (value, d) = self.expr(ai.next()?)?;
                    depth = depth.max(d);
                    arms.push(Arm {
                        pattern,
                        value,
                        span: aspan,
                    });
                }
                self.check_depth(
                    Expr {
                        kind: ExprKind::Match {
                            scrutinee: Box::new(scrutinee),
                            arms,
                        },
                        span,
                    },
                    depth + 1,
                )
            }
            Rule::arrow => {
                let mut inner = p.into_inner();
                let (from, d1) = self.expr(inner.next()?)?;
                match inner.next() {
                    None => Some((from, d1)),
                    Some(t) => {
                        let (to, d2) = self.expr(t)?;
                        self.check_depth(
                            Expr {
                                kind: ExprKind::Arrow {
                                    from: Box::new(from),
                                    to: Box::new(to),
                                },
                                span,
                            },
                            d1.max(d2) + 1,
                        )
                    }
                }
            }
            Rule::chain => self.chain(p),
            Rule::unary => {
                let (prefixes, operand) = self.unary_parts(p)?;
                self.apply_prefixes(prefixes, operand)
            }
            Rule::postfix => {
                let mut inner = p.into_inner();
                let (mut e, mut depth) = self.expr(inner.next()?)?;
                for c in inner {
                    let cspan = span_of(&c);
                    let whole = Span::new(span.start as usize, cspan.end as usize);
                    let kind = match c.as_rule() {
                        Rule::field => {
                            let f = self.ident(c.into_inner().next()?);
                            ExprKind::Field {
                                base: Box::new(e),
                                field: f,
                            }
                        }
                        _ => {
                            let mut args = Vec::new();
                            for a in c.into_inner() {
                                let (arg, d) = self.arg(a)?;
                                depth = depth.max(d);
                                args.push(arg);
                            }
                            ExprKind::Call {
                                callee: Box::new(e),
                                args,
                            }
                        }
                    };
                    let (ne, d) = self.check_depth(Expr { kind, span: whole }, depth + 1)?;
                    e = ne;
                    depth = d;
                }
                Some((e, depth))
            }
            Rule::quantity => {
                let mut inner = p.into_inner();
                let num = inner.next()?;
                let unit = self.ident(inner.next()?);
                let text = num.as_str().to_string();
                let value = self.number(&text, span)?;
                Some((
                    Expr {
                        kind: ExprKind::Quantity { value, text, unit },
                        span,
                    },
                    1,
                ))
            }
            Rule::number => {
                let text = p.as_str().to_string();
                let value = self.number(&text, span)?;
                Some((
                    Expr {
                        kind: ExprKind::Number { value, text },
                        span,
                    },
                    1,
                ))
            }
            Rule::string => {
                let s = self.unescape(p.as_str(), span)?;
                Some((
                    Expr {
                        kind: ExprKind::Str(s),
                        span,
                    },
                    1,
                ))
            }
            Rule::boolean => Some((
                Expr {
                    kind: ExprKind::Bool(p.as_str() == "true"),
                    span,
                },
                1,
            )),
            Rule::ident => Some((
                Expr {
                    kind: ExprKind::Name(p.as_str().to_string()),
                    span,
                },
                1,
            )),
            Rule::paren => {
                let mut xs = Vec::new();
                let mut depth = 0;
                let mut trailing = false;
                for c in p.into_inner() {
                    if c.as_rule() == Rule::trailing_comma {
                        trailing = true;
                        continue;
                    }
                    let (e, d) = self.expr(c)?;
                    depth = depth.max(d);
                    xs.push(e);
                }
                if xs.len() == 1 && !trailing {
                    // Parentheses only group: keep the inner node (its span excludes them).
                    return xs.pop().map(|e| (e, depth));
                }
                self.check_depth(
                    Expr {
                        kind: ExprKind::Tuple(xs),
                        span,
                    },
                    depth + 1,
                )
            }
            Rule::list => {
                let mut xs = Vec::new();
                let mut depth = 0;
                for c in p.into_inner() {
                    let (e, d) = self.expr(c)?;
                    depth = depth.max(d);
                    xs.push(e);
                }
                self.check_depth(
                    Expr {
                        kind: ExprKind::List(xs),
                        span,
                    },
                    depth + 1,
                )
            }
            _ => None,
        }
    }

    /// The prefix operators and the operand of a `unary` pair.
    fn unary_parts(&mut self, p: Pair<Rule>) -> Option<(Prefixes, (Expr, usize))> {
        let mut ops = Vec::new();
        let mut operand = None;
        for c in p.into_inner() {
            if c.as_rule() == Rule::prefix_op {
                let op = if c.as_str() == "!" {
                    UnaryOp::Not
                } else {
                    UnaryOp::Neg
                };
                ops.push((op, span_of(&c)));
            } else {
                operand = Some(c);
            }
        }
        Some((ops, self.expr(operand?)?))
    }

    fn apply_prefixes(&mut self, ops: Vec<(UnaryOp, Span)>, operand: (Expr, usize)) -> Built {
        let (mut e, mut depth) = operand;
        for (op, ospan) in ops.into_iter().rev() {
            let span = ospan.join(e.span);
            let (ne, d) = self.check_depth(
                Expr {
                    kind: ExprKind::Unary {
                        op,
                        arg: Box::new(e),
                    },
                    span,
                },
                depth + 1,
            )?;
            e = ne;
            depth = d;
        }
        Some((e, depth))
    }

    fn binary(&mut self, op: BinOp, lhs: (Expr, usize), rhs: (Expr, usize)) -> Built {
        let span = lhs.0.span.join(rhs.0.span);
        self.check_depth(
            Expr {
                kind: ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs.0),
                    rhs: Box::new(rhs.0),
                },
                span,
            },
            lhs.1.max(rhs.1) + 1,
        )
    }

    /// A flat chain `unary (op unary)*` grouped by precedence without recursion: powers first
    /// (right-associative, binding tighter than a prefix minus on their base), then the other
    /// operators by precedence climbing (left-associative; comparisons do not chain).
    fn chain(&mut self, p: Pair<Rule>) -> Built {
        let mut operands = Vec::new();
        let mut ops: Vec<(BinOp, Span)> = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::bin_op => ops.push((bin_op(c.as_str()), span_of(&c))),
                _ => operands.push(self.unary_parts(c)?),
            }
        }
        // Pass 1: runs joined by `^`.
        let mut items: Vec<(Expr, usize)> = Vec::new();
        let mut rest_ops: Vec<(BinOp, Span)> = Vec::new();
        let mut operands = operands.into_iter();
        let mut i = 0;
        while let Some((prefixes, base)) = operands.next() {
            let mut run = Vec::new();
            while ops.get(i).is_some_and(|(o, _)| *o == BinOp::Pow) {
                let (pre, x) = operands.next()?;
                run.push(self.apply_prefixes(pre, x)?);
                i += 1;
            }
            let mut acc: Option<(Expr, usize)> = None;
            for x in run.into_iter().rev() {
                acc = Some(match acc {
                    None => x,
                    Some(a) => self.binary(BinOp::Pow, x, a)?,
                });
            }
            let powered = match acc {
                None => base,
                Some(a) => self.binary(BinOp::Pow, base, a)?,
            };
            items.push(self.apply_prefixes(prefixes, powered)?);
            if let Some(op) = ops.get(i) {
                rest_ops.push(*op);
                i += 1;
            }
        }
        // Pass 2: precedence climbing with explicit stacks.
        let mut out: Vec<(Expr, usize)> = Vec::new();
        let mut stack: Vec<BinOp> = Vec::new();
        let mut items = items.into_iter();
        out.push(items.next()?);
        for (op, ospan) in rest_ops {
            let is_cmp = op.precedence() == 3;
            while let Some(top) = stack.last().copied() {
                if top.precedence() < op.precedence() {
                    break;
                }
                if is_cmp && top.precedence() == 3 {
                    self.errors.push(SyntaxError::Unexpected {
                        span: ospan,
                        message: "comparisons do not chain: combine them with `&&`".into(),
                    });
                    return None;
                }
                stack.pop();
                let rhs = out.pop()?;
                let lhs = out.pop()?;
                out.push(self.binary(top, lhs, rhs)?);
            }
            stack.push(op);
            out.push(items.next()?);
        }
        while let Some(top) = stack.pop() {
            let rhs = out.pop()?;
            let lhs = out.pop()?;
            out.push(self.binary(top, lhs, rhs)?);
        }
        out.pop()
    }

    fn arg(&mut self, p: Pair<Rule>) -> Option<(Arg, usize)> {
        let span = span_of(&p);
        let inner = p.into_inner().next()?;
        if inner.as_rule() == Rule::named_arg {
            let mut ni = inner.into_inner();
            let name = self.ident(ni.next()?);
            let e = ni.find(|c| c.as_rule() == Rule::expr)?;
            let (value, d) = self.expr(e)?;
            Some((
                Arg {
                    name: Some(name),
                    value,
                    span,
                },
                d,
            ))
        } else {
            let (value, d) = self.expr(inner)?;
            Some((
                Arg {
                    name: None,
                    value,
                    span,
                },
                d,
            ))
        }
    }

    fn number(&mut self, text: &str, span: Span) -> Option<f64> {
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                self.errors.push(SyntaxError::BadNumber {
                    span,
                    text: text.to_string(),
                });
                None
            }
        }
    }

    fn unescape(&mut self, raw: &str, span: Span) -> Option<String> {
        let body = raw.get(1..raw.len().saturating_sub(1)).unwrap_or("");
        let mut out = String::with_capacity(body.len());
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                other => {
                    let esc = other.map(|(_, c)| format!("\\{c}")).unwrap_or("\\".into());
                    let at = span.start as usize + 1 + i;
                    self.errors.push(SyntaxError::BadEscape {
                        span: Span::new(at, at + esc.len()),
                        escape: esc,
                    });
                    return None;
                }
            }
        }
        Some(out)
    }
}

fn bin_op(s: &str) -> BinOp {
    match s {
        "||" => BinOp::Or,
        "&&" => BinOp::And,
        "==" => BinOp::Eq,
        "!=" => BinOp::Ne,
        "<" => BinOp::Lt,
        "<=" => BinOp::Le,
        ">" => BinOp::Gt,
        ">=" => BinOp::Ge,
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        _ => BinOp::Pow,
    }
}
