//! Rewards: `reward name(s) = expr` lowered to a pure [`RExpr`] over one sample, with a small
//! type check (numbers, strings, booleans). `s.completion` is the generated text, `s.tokens` its
//! length in tokens, any other `s.<field>` a field of the sample's record.

use post_graph::{RBinary, RExpr, RFunc, RUnary};

use super::builtins;
use super::signatures;
use super::{Checker, Value};
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;
use crate::syntax::ast::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Num,
    Str,
    Bool,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Num => "a number",
            Ty::Str => "a string",
            Ty::Bool => "a boolean",
        }
    }
}

struct Ctx<'s> {
    module: usize,
    sample: &'s str,
    fields: Vec<(String, Span)>,
}

/// Lower a reward definition; returns the expression and the record fields it reads.
pub fn lower_def(c: &mut Checker, id: usize) -> Option<(RExpr, Vec<(String, Span)>)> {
    let def = c.defs[id].def;
    let module = c.defs[id].module;
    let params = def.params.as_deref().unwrap_or(&[]);
    if params.len() != 1 || params[0].ty.is_some() || params[0].default.is_some() {
        c.err(
            Diagnostic::error(
                Code::E0201,
                format!(
                    "reward `{}` must take exactly one parameter: the sample",
                    def.name.name
                ),
                def.name.span,
                "wrong parameters",
            )
            .with_help(format!(
                "write `reward {}(s) = ...` and read `s.completion`, `s.answer`, ...",
                def.name.name
            )),
        );
        return None;
    }
    let mut ctx = Ctx {
        module,
        sample: &params[0].name.name,
        fields: Vec::new(),
    };
    let (e, ty) = lower(c, &mut ctx, &def.value)?;
    if ty == Ty::Str {
        c.err(
            Diagnostic::error(
                Code::E0201,
                "a reward must be a number or a boolean, found a string",
                def.value.span,
                "this is a string",
            )
            .with_help("compare it, e.g. `answer(s.completion) == s.answer`, or convert it with `number(...)`"),
        );
        return None;
    }
    Some((e, ctx.fields))
}

fn expect(c: &mut Checker, span: Span, want: Ty, got: Ty) -> Option<()> {
    if want == got {
        return Some(());
    }
    let help = match (want, got) {
        (Ty::Num, Ty::Str) => "convert text to a number with `number(...)`",
        (Ty::Str, Ty::Num) => "compare numbers with numbers: `number(s.answer)`",
        (Ty::Bool, _) => {
            "write a comparison (`a == b`, `x > 0`) or a test like `contains(s.completion, \"####\")`"
        }
        (Ty::Num, Ty::Bool) => {
            "a boolean counts as a number only as a reward's result: write `if cond then 1 else 0`"
        }
        (Ty::Str, Ty::Bool) => "a boolean is not text: write `if cond then \"yes\" else \"no\"`",
        _ => "convert the value to the expected type",
    };
    c.err(
        Diagnostic::error(
            Code::E0201,
            format!("expected {}, found {}", want.name(), got.name()),
            span,
            format!("this is {}", got.name()),
        )
        .with_help(help),
    );
    None
}

fn lower(c: &mut Checker, ctx: &mut Ctx, e: &Expr) -> Option<(RExpr, Ty)> {
    match &e.kind {
        ExprKind::Number { value, .. } => Some((RExpr::Num { value: *value }, Ty::Num)),
        ExprKind::Str(s) => Some((RExpr::Str { value: s.clone() }, Ty::Str)),
        ExprKind::Bool(b) => Some((RExpr::Bool { value: *b }, Ty::Bool)),
        ExprKind::Quantity { unit, .. } => {
            c.err(
                Diagnostic::error(
                    Code::E0202,
                    format!(
                        "rewards are plain numbers; `{}` has no meaning here",
                        unit.name
                    ),
                    unit.span,
                    "unexpected unit",
                )
                .with_help(format!("drop `{}`: write the plain number", unit.name)),
            );
            None
        }
        ExprKind::Field { base, field } => {
            let ExprKind::Name(n) = &base.kind else {
                c.err(
                    Diagnostic::error(
                        Code::E0201,
                        "only the sample has fields in a reward",
                        base.span,
                        "not the sample",
                    )
                    .with_help(format!(
                        "read fields of the reward's parameter: `{}.completion`, `{}.answer`, ...",
                        ctx.sample, ctx.sample
                    )),
                );
                return None;
            };
            if n != ctx.sample {
                c.err(
                    Diagnostic::error(
                        Code::E0101,
                        format!("cannot find `{n}`"),
                        base.span,
                        "not the sample",
                    )
                    .with_help(format!(
                        "the sample is `{}`: write `{}.{}`",
                        ctx.sample, ctx.sample, field.name
                    )),
                );
                return None;
            }
            match field.name.as_str() {
                "completion" => Some((RExpr::Completion, Ty::Str)),
                "tokens" => Some((RExpr::CompletionTokens, Ty::Num)),
                f => {
                    // Fields read by standard-library rewards are reported at the use site.
                    let span = if ctx.module == c.user_module {
                        field.span
                    } else {
                        Span::default()
                    };
                    ctx.fields.push((f.to_string(), span));
                    Some((
                        RExpr::Field {
                            name: f.to_string(),
                        },
                        Ty::Str,
                    ))
                }
            }
        }
        ExprKind::Name(n) => {
            if n == ctx.sample {
                c.err(
                    Diagnostic::error(
                        Code::E0201,
                        "the sample itself is not a value",
                        e.span,
                        "the whole sample",
                    )
                    .with_help(format!(
                        "read a part of it: `{n}.completion`, `{n}.answer`, `{n}.tokens`"
                    )),
                );
                return None;
            }
            match c.lookup(ctx.module, n) {
                Some(id) if c.defs[id].def.kind == super::DefKind::Const => {
                    match c.def_value(id, e.span)? {
                        Value::Num(x) => Some((RExpr::Num { value: x }, Ty::Num)),
                        Value::Str(s) => Some((RExpr::Str { value: s }, Ty::Str)),
                        Value::Bool(b) => Some((RExpr::Bool { value: b }, Ty::Bool)),
                        v => {
                            c.type_error(e.span, "a number, string or boolean", &v);
                            None
                        }
                    }
                }
                Some(id) => {
                    let d = c.defs[id].def;
                    c.err(
                        Diagnostic::error(
                            Code::E0201,
                            format!(
                                "`{n}` is a {} and cannot be used in a reward",
                                d.kind.keyword()
                            ),
                            e.span,
                            "not a value",
                        )
                        .with_label(d.name.span, "defined here")
                        .with_help(
                            "a reward sees only its sample (`s.completion`, `s.<field>`), constants and other rewards",
                        ),
                    );
                    None
                }
                None => {
                    c.unresolved(ctx.module, n, e.span, &[ctx.sample]);
                    None
                }
            }
        }
        ExprKind::Unary { op, arg } => {
            let (a, t) = lower(c, ctx, arg)?;
            let (rop, want) = match op {
                UnaryOp::Neg => (RUnary::Neg, Ty::Num),
                UnaryOp::Not => (RUnary::Not, Ty::Bool),
            };
            expect(c, arg.span, want, t)?;
            Some((
                RExpr::Unary {
                    op: rop,
                    arg: Box::new(a),
                },
                want,
            ))
        }
        ExprKind::Binary { op, lhs, rhs } => {
            let l = lower(c, ctx, lhs);
            let r = lower(c, ctx, rhs);
            let ((l, lt), (r, rt)) = (l?, r?);
            let (rop, out) = match op {
                BinOp::Add => (RBinary::Add, Ty::Num),
                BinOp::Sub => (RBinary::Sub, Ty::Num),
                BinOp::Mul => (RBinary::Mul, Ty::Num),
                BinOp::Div => (RBinary::Div, Ty::Num),
                BinOp::Eq => (RBinary::Eq, Ty::Bool),
                BinOp::Ne => (RBinary::Ne, Ty::Bool),
                BinOp::Lt => (RBinary::Lt, Ty::Bool),
                BinOp::Le => (RBinary::Le, Ty::Bool),
                BinOp::Gt => (RBinary::Gt, Ty::Bool),
                BinOp::Ge => (RBinary::Ge, Ty::Bool),
                BinOp::And => (RBinary::And, Ty::Bool),
                BinOp::Or => (RBinary::Or, Ty::Bool),
                BinOp::Pow => {
                    c.err(
                        Diagnostic::error(
                            Code::E0201,
                            "`^` is not available in rewards",
                            e.span,
                            "no power in rewards",
                        )
                        .with_help("multiply instead"),
                    );
                    return None;
                }
            };
            match op {
                BinOp::Eq | BinOp::Ne => {
                    // Booleans compare with numbers as 0/1; strings only with strings.
                    let num_like = |t: Ty| t != Ty::Str;
                    if (lt == Ty::Str) != (rt == Ty::Str) || !(num_like(lt) || lt == rt) {
                        let span = if lt == Ty::Str { rhs.span } else { lhs.span };
                        let got = if lt == Ty::Str { rt } else { lt };
                        expect(c, span, Ty::Str, got)?;
                    }
                }
                BinOp::And | BinOp::Or => {
                    expect(c, lhs.span, Ty::Bool, lt)?;
                    expect(c, rhs.span, Ty::Bool, rt)?;
                }
                _ => {
                    // Booleans count as 0/1 in arithmetic and comparisons.
                    if lt == Ty::Str {
                        expect(c, lhs.span, Ty::Num, lt)?;
                    }
                    if rt == Ty::Str {
                        expect(c, rhs.span, Ty::Num, rt)?;
                    }
                }
            }
            Some((
                RExpr::Binary {
                    op: rop,
                    lhs: Box::new(l),
                    rhs: Box::new(r),
                },
                out,
            ))
        }
        ExprKind::If {
            cond,
            then,
            otherwise,
        } => {
            let cnd = lower(c, ctx, cond);
            let t = lower(c, ctx, then);
            let o = lower(c, ctx, otherwise);
            let ((cnd, ct), (t, tt), (o, ot)) = (cnd?, t?, o?);
            expect(c, cond.span, Ty::Bool, ct)?;
            let tt2 = if tt == Ty::Bool { Ty::Num } else { tt };
            let ot2 = if ot == Ty::Bool { Ty::Num } else { ot };
            if tt2 != ot2 {
                c.err(
                    Diagnostic::error(
                        Code::E0201,
                        format!("the branches differ: {} and {}", tt.name(), ot.name()),
                        otherwise.span,
                        "other branch type",
                    )
                    .with_label(then.span, format!("this is {}", tt.name()))
                    .with_help(format!(
                        "make both branches {}, e.g. with `number(...)` or a comparison",
                        tt.name()
                    )),
                );
                return None;
            }
            let out = if tt == ot { tt } else { Ty::Num };
            Some((
                RExpr::If {
                    cond: Box::new(cnd),
                    then: Box::new(t),
                    otherwise: Box::new(o),
                },
                out,
            ))
        }
        ExprKind::Call { callee, args } => call(c, ctx, e, callee, args),
        ExprKind::Match { .. }
        | ExprKind::Tuple(_)
        | ExprKind::List(_)
        | ExprKind::Arrow { .. } => {
            c.err(Diagnostic::error(Code::E0201, "this form is not available in rewards", e.span, "not allowed in a reward")
                .with_help("rewards use numbers, strings, booleans, `if`, operators and the text functions"));
            None
        }
    }
}

fn str_arg(c: &mut Checker, a: &Arg, what: &str) -> Option<String> {
    match &a.value.kind {
        ExprKind::Str(s) => Some(s.clone()),
        _ => {
            c.err(
                Diagnostic::error(
                    Code::E0201,
                    format!("the {what} must be a string literal"),
                    a.value.span,
                    "not a literal",
                )
                .with_help(format!(
                    "write the {what} in quotes, e.g. `\"####\"`; it is fixed when the file is checked"
                )),
            );
            None
        }
    }
}

fn call(
    c: &mut Checker,
    ctx: &mut Ctx,
    e: &Expr,
    callee: &Expr,
    args: &[Arg],
) -> Option<(RExpr, Ty)> {
    let ExprKind::Name(name) = &callee.kind else {
        c.err(super::not_callable(
            callee.span,
            "only names are called in a reward: a built-in like `contains(...)` or another reward",
        ));
        return None;
    };
    // Another reward applied to the sample: inline it.
    if let Some(id) = c.lookup(ctx.module, name) {
        let def = c.defs[id].def;
        if def.kind != super::DefKind::Reward {
            c.err(
                Diagnostic::error(
                    Code::E0201,
                    format!("`{name}` is a {}, not a reward", def.kind.keyword()),
                    callee.span,
                    "not callable here",
                )
                .with_help(format!(
                    "inside a reward only rewards are called: define `reward {name}(s) = ...` or call a built-in"
                )),
            );
            return None;
        }
        let ok_arg = args.len() == 1
            && args[0].name.is_none()
            && matches!(&args[0].value.kind, ExprKind::Name(n) if n == ctx.sample);
        if !ok_arg {
            c.err(
                Diagnostic::error(
                    Code::E0201,
                    format!(
                        "apply reward `{name}` to the sample: `{name}({})`",
                        ctx.sample
                    ),
                    e.span,
                    "wrong arguments",
                )
                .with_help(format!(
                    "write `{name}({})`: a reward takes exactly the sample",
                    ctx.sample
                )),
            );
            return None;
        }
        let inner = c.lower_reward_def(id)?;
        if let Some(Some((_, fields))) = c.rewards_lowered.get(&id) {
            ctx.fields.extend(fields.iter().cloned());
        }
        return Some((inner, Ty::Num));
    }
    // A built-in: its arity and parameters come from the signature table.
    let Some(sig) = signatures::in_reward(name) else {
        let names: Vec<&str> = signatures::reward_builtins().map(|b| b.name).collect();
        c.unresolved(ctx.module, name, callee.span, &names);
        return None;
    };
    let bound = builtins::bind_expr_call(c, sig, args, e.span)?;
    let positional = &bound.positional[..];
    let text_fn = |c: &mut Checker,
                   ctx: &mut Ctx,
                   func: RFunc,
                   arg_tys: &[Ty],
                   out: Ty|
     -> Option<(RExpr, Ty)> {
        let mut lowered = Vec::new();
        for (a, want) in positional.iter().zip(arg_tys) {
            let (x, t) = lower(c, ctx, &a.value)?;
            let t = if t == Ty::Bool && *want == Ty::Num {
                Ty::Num
            } else {
                t
            };
            expect(c, a.value.span, *want, t)?;
            lowered.push(x);
        }
        Some((
            RExpr::Call {
                func,
                args: lowered,
            },
            out,
        ))
    };
    match name.as_str() {
        "number" => text_fn(c, ctx, RFunc::Number, &[Ty::Str], Ty::Num),
        "len" => text_fn(c, ctx, RFunc::Len, &[Ty::Str], Ty::Num),
        "trim" => text_fn(c, ctx, RFunc::Trim, &[Ty::Str], Ty::Str),
        "lower" => text_fn(c, ctx, RFunc::Lower, &[Ty::Str], Ty::Str),
        "contains" => text_fn(c, ctx, RFunc::Contains, &[Ty::Str, Ty::Str], Ty::Bool),
        "starts_with" => text_fn(c, ctx, RFunc::StartsWith, &[Ty::Str, Ty::Str], Ty::Bool),
        "ends_with" => text_fn(c, ctx, RFunc::EndsWith, &[Ty::Str, Ty::Str], Ty::Bool),
        "abs" => text_fn(c, ctx, RFunc::Abs, &[Ty::Num], Ty::Num),
        "climb_valid" => text_fn(
            c,
            ctx,
            RFunc::ClimbValid,
            &[Ty::Str, Ty::Str, Ty::Num],
            Ty::Bool,
        ),
        "min" => text_fn(c, ctx, RFunc::Min, &[Ty::Num, Ty::Num], Ty::Num),
        "max" => text_fn(c, ctx, RFunc::Max, &[Ty::Num, Ty::Num], Ty::Num),
        "answer" => {
            let marker = match bound.named.iter().find(|(p, _)| *p == "marker") {
                Some((_, a)) => str_arg(c, a, "marker")?,
                None => "####".to_string(),
            };
            text_fn(c, ctx, RFunc::Answer { marker }, &[Ty::Str], Ty::Str)
        }
        "extract" | "matches" => {
            let (x, t) = lower(c, ctx, &positional[0].value)?;
            expect(c, positional[0].value.span, Ty::Str, t)?;
            let pattern = str_arg(c, positional[1], "pattern")?;
            if let Err(msg) = check_regex(&pattern) {
                c.err(
                    Diagnostic::error(
                        Code::E0401,
                        format!("invalid pattern: {msg}"),
                        positional[1].value.span,
                        "bad regular expression",
                    )
                    .with_help(
                        "escape special characters with a backslash (`\\\\(` in a string) and balance brackets and parentheses",
                    ),
                );
                return None;
            }
            let (func, out) = if name == "extract" {
                (RFunc::Extract { pattern }, Ty::Str)
            } else {
                (RFunc::Matches { pattern }, Ty::Bool)
            };
            Some((
                RExpr::Call {
                    func,
                    args: vec![x],
                },
                out,
            ))
        }
        _ => {
            // In the table but not checked here: a built-in the checker has not caught up with.
            c.unresolved(ctx.module, name, callee.span, &[]);
            None
        }
    }
}

/// Compile the regular expression exactly as the runtime's reward evaluator does (one shared
/// helper, with bounded sizes), so a pattern passes `post check` exactly when `post run`
/// accepts it.
fn check_regex(p: &str) -> Result<(), String> {
    post_graph::pattern::compile_regex(p).map(|_| ())
}
