//! The untyped syntax tree of a `.post` file. Every node carries a byte-offset [`Span`].
//! The tree is deliberately generic (definitions, blocks, settings, expressions): what a
//! setting or a call means is decided by the checker, which reports placement errors.

use serde::{Deserialize, Serialize};

use crate::span::Span;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct File {
    pub items: Vec<Item>,
    /// Every `//` comment, in source order (the formatter puts them back).
    pub comments: Vec<Comment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    /// The text after `//`, untrimmed at the start, without the newline.
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Item {
    Use(Use),
    Def(Def),
    Block(Block),
    Eval(EvalBlock),
    Setting(Setting),
    /// A line that did not parse; its diagnostic was already reported.
    Error(Span),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Use(u) => u.span,
            Item::Def(d) => d.span,
            Item::Block(b) => b.span,
            Item::Eval(e) => e.span,
            Item::Setting(s) => s.span,
            Item::Error(s) => *s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Use {
    /// `std.objectives` for `use std.objectives.{sft}`.
    pub module: Vec<Ident>,
    pub names: Vec<Ident>,
    /// Whether the names were written in braces.
    pub braced: bool,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DefKind {
    Model,
    Data,
    Reward,
    Objective,
    Rollout,
    Const,
}

impl DefKind {
    pub fn keyword(self) -> &'static str {
        match self {
            DefKind::Model => "model",
            DefKind::Data => "data",
            DefKind::Reward => "reward",
            DefKind::Objective => "objective",
            DefKind::Rollout => "rollout",
            DefKind::Const => "const",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Def {
    pub kind: DefKind,
    pub kind_span: Span,
    pub name: Ident,
    /// `None` when written without parentheses.
    pub params: Option<Vec<Param>>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    pub name: Ident,
    /// `a | b | c` is an enumeration of symbols; a single name is a type name.
    pub ty: Option<Vec<Ident>>,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockKind {
    Experiment,
    Stage,
    Select,
    Analysis,
}

impl BlockKind {
    pub fn keyword(self) -> &'static str {
        match self {
            BlockKind::Experiment => "experiment",
            BlockKind::Stage => "stage",
            BlockKind::Select => "select",
            BlockKind::Analysis => "analysis",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub kind: BlockKind,
    pub name: Ident,
    pub items: Vec<Item>,
    /// Span of the closing brace (comments before it belong inside).
    pub close: Span,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalBlock {
    pub every: Option<Expr>,
    pub on: Option<Ident>,
    pub items: Vec<Item>,
    pub close: Span,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnaryOp {
    Neg,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Pow => "^",
        }
    }

    /// Binding strength (higher binds tighter), as in the grammar.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div => 5,
            BinOp::Pow => 7,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    pub pattern: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ExprKind {
    /// A number, with its source text (the formatter keeps `3e-4` as written).
    Number {
        value: f64,
        text: String,
    },
    /// A number with a unit: `32 prompts`.
    Quantity {
        value: f64,
        text: String,
        unit: Ident,
    },
    Str(String),
    Bool(bool),
    Name(String),
    Field {
        base: Box<Expr>,
        field: Ident,
    },
    Call {
        callee: Box<Expr>,
        args: Vec<Arg>,
    },
    Unary {
        op: UnaryOp,
        arg: Box<Expr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    If {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    Match {
        scrutinee: Box<Expr>,
        arms: Vec<Arm>,
    },
    Tuple(Vec<Expr>),
    List(Vec<Expr>),
    /// `a -> b`, the range of a schedule.
    Arrow {
        from: Box<Expr>,
        to: Box<Expr>,
    },
}

impl Expr {
    /// Direct children, in source order.
    pub fn children(&self) -> Vec<&Expr> {
        match &self.kind {
            ExprKind::Number { .. }
            | ExprKind::Quantity { .. }
            | ExprKind::Str(_)
            | ExprKind::Bool(_)
            | ExprKind::Name(_) => vec![],
            ExprKind::Field { base, .. } => vec![base],
            ExprKind::Call { callee, args } => {
                let mut v = vec![&**callee];
                v.extend(args.iter().map(|a| &a.value));
                v
            }
            ExprKind::Unary { arg, .. } => vec![arg],
            ExprKind::Binary { lhs, rhs, .. } => vec![lhs, rhs],
            ExprKind::If {
                cond,
                then,
                otherwise,
            } => vec![cond, then, otherwise],
            ExprKind::Match { scrutinee, arms } => {
                let mut v = vec![&**scrutinee];
                v.extend(arms.iter().map(|a| &a.value));
                v
            }
            ExprKind::Tuple(xs) | ExprKind::List(xs) => xs.iter().collect(),
            ExprKind::Arrow { from, to } => vec![from, to],
        }
    }
}
