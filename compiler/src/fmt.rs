//! The canonical formatter behind `post fmt`: two-space indentation, one item per line, single
//! blank lines kept between items, calls broken one argument per line when they do not fit in
//! [`WIDTH`] columns (or hold comments), every comment kept. Formatting is idempotent.

use crate::diagnostic::Diagnostic;
use crate::syntax::{self, ast::*};

pub const WIDTH: usize = 100;

/// Format a file; files with syntax errors are refused (their diagnostics are returned).
pub fn format(src: &str) -> Result<String, Vec<Diagnostic>> {
    let parsed = syntax::parse(src);
    if !parsed.errors.is_empty() {
        let mut diagnostics: Vec<Diagnostic> =
            parsed.errors.iter().map(|e| e.to_diagnostic()).collect();
        diagnostics.sort_by_key(|d| (d.primary.span.start, d.code));
        crate::diagnostic::cap(&mut diagnostics);
        return Err(diagnostics);
    }
    let mut f = F {
        src,
        comments: &parsed.file.comments,
        next: 0,
        out: String::new(),
        last_end: 0,
    };
    f.items(&parsed.file.items, 0, None);
    f.flush_before(u32::MAX, 0, true);
    let mut out = f.out.trim_end().to_string();
    out.push('\n');
    if out.trim().is_empty() {
        return Ok(String::new());
    }
    Ok(out)
}

struct F<'a> {
    src: &'a str,
    comments: &'a [Comment],
    next: usize,
    out: String,
    last_end: u32,
}

fn pad(indent: usize) -> String {
    "  ".repeat(indent)
}

impl<'a> F<'a> {
    fn blank_between(&self, from: u32, to: u32) -> bool {
        let from = from as usize;
        let to = (to as usize).min(self.src.len());
        if from >= to {
            return false;
        }
        let gap = &self.src[from..to];
        let mut newlines = 0;
        for ch in gap.chars() {
            if ch == '\n' {
                newlines += 1;
                if newlines >= 2 {
                    return true;
                }
            } else if !ch.is_whitespace() {
                newlines = 0;
            }
        }
        false
    }

    fn at_block_start(&self) -> bool {
        let t = self.out.trim_end_matches([' ']);
        t.is_empty() || t.ends_with("{\n")
    }

    fn line(&mut self, indent: usize, text: &str, start: u32) {
        if !self.at_block_start() && self.blank_between(self.last_end, start) {
            self.out.push('\n');
        }
        self.out.push_str(&pad(indent));
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// Emit every comment that starts before `pos` on its own line.
    fn flush_before(&mut self, pos: u32, indent: usize, _end: bool) {
        while let Some(c) = self.comments.get(self.next) {
            if c.span.start >= pos {
                break;
            }
            let text = format!("//{}", c.text);
            self.line(indent, &text, c.span.start);
            self.last_end = c.span.end;
            self.next += 1;
        }
    }

    /// A comment on the same source line as `end` is appended to the last output line.
    fn trailing(&mut self, end: u32) {
        if let Some(c) = self.comments.get(self.next) {
            let gap = self
                .src
                .get(end as usize..c.span.start as usize)
                .unwrap_or("\n");
            if c.span.start >= end && !gap.contains('\n') {
                if self.out.ends_with('\n') {
                    self.out.pop();
                }
                self.out.push_str("  //");
                self.out.push_str(&c.text);
                self.out.push('\n');
                self.last_end = c.span.end;
                self.next += 1;
            }
        }
    }

    fn has_comment_in(&self, start: u32, end: u32) -> bool {
        self.comments[self.next..]
            .iter()
            .take_while(|c| c.span.start < end)
            .any(|c| c.span.start >= start)
    }

    fn items(&mut self, items: &[Item], indent: usize, _close: Option<u32>) {
        for item in items {
            let span = item.span();
            self.flush_before(span.start, indent, false);
            match item {
                Item::Use(u) => {
                    let module = u
                        .module
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(".");
                    let names = u
                        .names
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    let text = if !u.braced && u.names.is_empty() {
                        format!("use {module}")
                    } else if u.braced || u.names.len() != 1 {
                        format!("use {module}.{{{names}}}")
                    } else {
                        format!("use {module}.{names}")
                    };
                    self.line(indent, &text, span.start);
                }
                Item::Def(d) => {
                    let mut head = format!("{} {}", d.kind.keyword(), d.name.name);
                    if let Some(ps) = &d.params {
                        let parts: Vec<String> = ps.iter().map(param).collect();
                        let flat = format!("{head}({}) = ", parts.join(", "));
                        // Break the parameters when the head with the value's first line is
                        // too wide (the comment cursor is restored after the trial render).
                        let saved = self.next;
                        let trial = self.expr_at(&d.value, indent, pad(indent).len() + flat.len());
                        self.next = saved;
                        let first = trial.lines().next().unwrap_or("").len();
                        if pad(indent).len() + flat.len() + first > WIDTH
                            || self.has_comment_in(d.span.start, d.value.span.start)
                        {
                            self.line(indent, &format!("{head}("), span.start);
                            for (p, text) in ps.iter().zip(parts) {
                                self.flush_before(p.span.start, indent + 1, false);
                                self.out.push_str(&format!("{}{text},\n", pad(indent + 1)));
                                self.last_end = p.span.end;
                                self.trailing(p.span.end);
                            }
                            self.flush_before(d.value.span.start, indent + 1, false);
                            head = ") =".to_string();
                            let v =
                                self.expr_at(&d.value, indent, pad(indent).len() + head.len() + 1);
                            self.out.push_str(&format!("{}{head} {v}\n", pad(indent)));
                        } else {
                            let v = self.expr_at(&d.value, indent, pad(indent).len() + flat.len());
                            self.line(indent, &format!("{flat}{v}"), span.start);
                        }
                    } else {
                        head.push_str(" = ");
                        let v = self.expr_at(&d.value, indent, pad(indent).len() + head.len());
                        self.line(indent, &format!("{head}{v}"), span.start);
                    }
                }
                Item::Setting(s) => {
                    let head = format!("{} = ", s.key.name);
                    let v = self.expr_at(&s.value, indent, pad(indent).len() + head.len());
                    self.line(indent, &format!("{head}{v}"), span.start);
                }
                Item::Block(b) => {
                    self.line(
                        indent,
                        &format!("{} {} {{", b.kind.keyword(), b.name.name),
                        span.start,
                    );
                    self.last_end = b.name.span.end;
                    // A comment after `{` and before the first item stays on the header line.
                    let first = b.items.first().map_or(b.close.start, |i| i.span().start);
                    if self
                        .comments
                        .get(self.next)
                        .is_some_and(|c| c.span.start < first)
                    {
                        self.trailing(b.name.span.end);
                    }
                    self.items(&b.items, indent + 1, Some(b.close.start));
                    self.flush_before(b.close.start, indent + 1, true);
                    self.out.push_str(&format!("{}}}\n", pad(indent)));
                }
                Item::Eval(e) => {
                    let mut head = "eval".to_string();
                    if let Some(every) = &e.every {
                        head.push_str(" every ");
                        head.push_str(&expr_to_string(every));
                    }
                    if let Some(on) = &e.on {
                        head.push_str(" on ");
                        head.push_str(&on.name);
                    }
                    head.push_str(" {");
                    self.line(indent, &head, span.start);
                    self.items(&e.items, indent + 1, Some(e.close.start));
                    self.flush_before(e.close.start, indent + 1, true);
                    self.out.push_str(&format!("{}}}\n", pad(indent)));
                }
                Item::Error(_) => {}
            }
            self.last_end = span.end;
            self.trailing(span.end);
        }
    }

    /// Render an expression that starts at output column `col`; breaks calls that do not fit.
    fn expr_at(&mut self, e: &Expr, indent: usize, col: usize) -> String {
        let flat = expr_to_string(e);
        let fits = col + flat.len() <= WIDTH && !flat.contains('\n');
        // Only calls and matches can hold comments in their layout; other forms break by
        // width alone, so moving a comment out of them does not change their layout later.
        let holds_comments = matches!(e.kind, ExprKind::Call { .. } | ExprKind::Match { .. });
        if fits && !(holds_comments && self.has_comment_in(e.span.start, e.span.end)) {
            return flat;
        }
        match &e.kind {
            ExprKind::Call { callee, args } => {
                // A method chain `base.a(...).b(...)` breaks before each method.
                let mut methods = Vec::new();
                let mut cur = e;
                while let ExprKind::Call { callee, args } = &cur.kind {
                    let ExprKind::Field { base, field } = &callee.kind else {
                        break;
                    };
                    methods.push((field, args, cur.span));
                    cur = base;
                }
                if !methods.is_empty()
                    && !std::ptr::eq(cur, e)
                    && matches!(cur.kind, ExprKind::Call { .. })
                {
                    methods.reverse();
                    let mut s = self.expr_at(cur, indent, col);
                    for (field, args, span) in methods {
                        let head = format!(".{}", field.name);
                        let c2 = pad(indent + 1).len() + head.len();
                        let a = self.args_at(args, span.end, indent + 1, c2);
                        s.push_str(&format!("\n{}{head}{a}", pad(indent + 1)));
                    }
                    return s;
                }
                let head = operand(callee, 8);
                let a = self.args_at(args, e.span.end, indent, col + head.len());
                format!("{head}{a}")
            }
            ExprKind::Match { scrutinee, arms } => {
                let mut s = format!("match {} {{\n", operand(scrutinee, 9));
                for a in arms {
                    while let Some(c) = self.comments.get(self.next) {
                        if c.span.start >= a.span.start {
                            break;
                        }
                        s.push_str(&format!("{}//{}\n", pad(indent + 1), c.text));
                        self.next += 1;
                    }
                    let head = format!("{} => ", a.pattern.name);
                    let v = self.expr_at(&a.value, indent + 1, pad(indent + 1).len() + head.len());
                    s.push_str(&format!("{}{head}{v},\n", pad(indent + 1)));
                }
                while let Some(c) = self.comments.get(self.next) {
                    if c.span.start >= e.span.end {
                        break;
                    }
                    s.push_str(&format!("{}//{}\n", pad(indent + 1), c.text));
                    self.next += 1;
                }
                s.push_str(&pad(indent));
                s.push('}');
                s
            }
            ExprKind::Binary { op, .. } if *op != BinOp::Pow => {
                // Break a chain of same-precedence operators before each operator.
                let p = op.precedence();
                let mut rest = Vec::new();
                let mut first = e;
                while let ExprKind::Binary { op: o, lhs, rhs } = &first.kind {
                    if o.precedence() != p || p == 3 {
                        break;
                    }
                    rest.push((*o, &**rhs));
                    first = lhs;
                }
                if rest.is_empty() {
                    // A comparison: operands side by side.
                    return flat;
                }
                rest.reverse();
                let mut s = self.operand_at(first, p, indent, col);
                for (o, x) in rest {
                    let sym = o.symbol();
                    let v = self.operand_at(
                        x,
                        p + 1,
                        indent + 1,
                        pad(indent + 1).len() + sym.len() + 1,
                    );
                    s.push_str(&format!("\n{}{sym} {v}", pad(indent + 1)));
                }
                s
            }
            ExprKind::Unary { op, arg } => {
                let sym = if *op == UnaryOp::Neg { "-" } else { "!" };
                format!("{sym}{}", self.operand_at(arg, 6, indent, col + 1))
            }
            _ => flat,
        }
    }
}

impl F<'_> {
    /// A parenthesised argument list starting at column `col`: on one line when it fits and
    /// holds no comment, otherwise one argument per line.
    fn args_at(&mut self, args: &[Arg], end: u32, indent: usize, col: usize) -> String {
        let flat_parts: Vec<String> = args
            .iter()
            .map(|a| match &a.name {
                Some(n) => format!("{} = {}", n.name, expr_to_string(&a.value)),
                None => expr_to_string(&a.value),
            })
            .collect();
        let flat = format!("({})", flat_parts.join(", "));
        let start = args.first().map_or(end, |a| a.span.start);
        if args.is_empty() || (col + flat.len() <= WIDTH && !self.has_comment_in(start, end)) {
            return flat;
        }
        let mut s = String::from("(\n");
        for a in args {
            while let Some(c) = self.comments.get(self.next) {
                if c.span.start >= a.span.start {
                    break;
                }
                s.push_str(&format!("{}//{}\n", pad(indent + 1), c.text));
                self.next += 1;
            }
            let name = a
                .name
                .as_ref()
                .map(|n| format!("{} = ", n.name))
                .unwrap_or_default();
            let v = self.expr_at(&a.value, indent + 1, pad(indent + 1).len() + name.len());
            s.push_str(&format!("{}{name}{v},", pad(indent + 1)));
            // A comment on the same line as the argument stays there.
            if let Some(c) = self.comments.get(self.next) {
                let gap = self
                    .src
                    .get(a.span.end as usize..c.span.start as usize)
                    .unwrap_or("\n");
                if c.span.start >= a.span.end && !gap.contains('\n') && c.span.start < end {
                    s.push_str(&format!("  //{}", c.text));
                    self.next += 1;
                }
            }
            s.push('\n');
        }
        while let Some(c) = self.comments.get(self.next) {
            if c.span.start >= end {
                break;
            }
            s.push_str(&format!("{}//{}\n", pad(indent + 1), c.text));
            self.next += 1;
        }
        s.push_str(&pad(indent));
        s.push(')');
        s
    }

    /// Like [`F::expr_at`] for an operand that needs strength `min` (parenthesised if weaker).
    fn operand_at(&mut self, e: &Expr, min: u8, indent: usize, col: usize) -> String {
        if strength(e) < min {
            format!("({})", self.expr_at(e, indent, col + 1))
        } else {
            self.expr_at(e, indent, col)
        }
    }
}

fn param(p: &Param) -> String {
    let mut s = p.name.name.clone();
    if let Some(ty) = &p.ty {
        s.push_str(": ");
        s.push_str(
            &ty.iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(" | "),
        );
    }
    if let Some(d) = &p.default {
        s.push_str(" = ");
        s.push_str(&expr_to_string(d));
    }
    s
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Binding strength of an expression as an operand (higher binds tighter).
fn strength(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::If { .. } | ExprKind::Match { .. } => 0,
        ExprKind::Arrow { .. } => 0,
        ExprKind::Binary { op, .. } => op.precedence(),
        ExprKind::Unary { .. } => 6,
        _ => 9,
    }
}

/// Render `e` where an operand of strength `min` is needed, with parentheses if weaker.
fn operand(e: &Expr, min: u8) -> String {
    let s = expr_to_string(e);
    if strength(e) < min {
        format!("({s})")
    } else {
        s
    }
}

/// One-line canonical rendering of an expression.
pub fn expr_to_string(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Number { text, .. } => text.clone(),
        ExprKind::Quantity { text, unit, .. } => format!("{text} {}", unit.name),
        ExprKind::Str(s) => escape(s),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Field { base, field } => format!("{}.{}", operand(base, 8), field.name),
        ExprKind::Call { callee, args } => {
            let parts: Vec<String> = args
                .iter()
                .map(|a| match &a.name {
                    Some(n) => format!("{} = {}", n.name, expr_to_string(&a.value)),
                    None => expr_to_string(&a.value),
                })
                .collect();
            format!("{}({})", operand(callee, 8), parts.join(", "))
        }
        ExprKind::Unary { op, arg } => {
            let sym = if *op == UnaryOp::Neg { "-" } else { "!" };
            // `-x ^ 2` parses as -(x ^ 2), so a power operand needs no parentheses.
            format!("{sym}{}", operand(arg, 6))
        }
        ExprKind::Binary { op, lhs, rhs } => {
            let p = op.precedence();
            let (lmin, rmin) = if *op == BinOp::Pow {
                // Right-associative; the base must be a postfix expression.
                (8, 6)
            } else if p == 3 {
                // Comparisons do not chain.
                (p + 1, p + 1)
            } else {
                (p, p + 1)
            };
            format!(
                "{} {} {}",
                operand(lhs, lmin),
                op.symbol(),
                operand(rhs, rmin)
            )
        }
        ExprKind::If {
            cond,
            then,
            otherwise,
        } => format!(
            "if {} then {} else {}",
            expr_to_string(cond),
            expr_to_string(then),
            expr_to_string(otherwise)
        ),
        ExprKind::Match { scrutinee, arms } => {
            let parts: Vec<String> = arms
                .iter()
                .map(|a| format!("{} => {}", a.pattern.name, expr_to_string(&a.value)))
                .collect();
            format!("match {} {{ {} }}", operand(scrutinee, 8), parts.join(", "))
        }
        ExprKind::Tuple(xs) => {
            let parts: Vec<String> = xs.iter().map(expr_to_string).collect();
            if xs.len() == 1 {
                format!("({},)", parts[0])
            } else {
                format!("({})", parts.join(", "))
            }
        }
        ExprKind::List(xs) => {
            let parts: Vec<String> = xs.iter().map(expr_to_string).collect();
            format!("[{}]", parts.join(", "))
        }
        ExprKind::Arrow { from, to } => format!("{} -> {}", operand(from, 1), operand(to, 1)),
    }
}
