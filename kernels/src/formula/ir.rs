//! The element-wise IR of a fusion region: a hash-consed DAG (so equal subexpressions are one
//! node), smart constructors that simplify as they build (constant folding, `x*1`, `x+0`, `x*0`,
//! double negation, small integer powers), and forward-mode symbolic differentiation.
//!
//! Leaves are `Col(k)` (varies per element: a token's log-prob, a sequence's reward in a
//! sequence region) and `Uni(k)` (one value per kernel call: a hyperparameter, or a sequence-level
//! value inside a token region, since a token kernel is called once per sequence).

use std::collections::HashMap;
use std::fmt::Write as _;

use post_graph::{BinaryOp, UnaryOp, scalar};

/// What a fusion region computes: a **token** region is the argument of a token reduction (its
/// kernel fuses the masked sum over a sequence), a **sequence** region an element-wise
/// expression over sequences. Here, below both the region planner and the code generators, so
/// neither imports the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegionKind {
    Token,
    Seq,
}

/// Index of a node in its [`Dag`].
pub type NodeId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fn1 {
    Neg,
    Exp,
    Log,
    Log1p,
    Sigmoid,
    LogSigmoid,
    Abs,
    Sqrt,
    Tanh,
    Relu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fn2 {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    /// `exp(b * log(a))` (constant integer exponents are expanded into products when built).
    Pow,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Fn2 {
    fn commutative(self) -> bool {
        matches!(self, Fn2::Add | Fn2::Mul | Fn2::Min | Fn2::Max)
    }

    pub fn is_cmp(self) -> bool {
        matches!(self, Fn2::Gt | Fn2::Ge | Fn2::Lt | Fn2::Le)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// An f32 constant, stored as its bits so nodes hash.
    Const(u32),
    Col(u32),
    Uni(u32),
    Un(Fn1, NodeId),
    Bin(Fn2, NodeId, NodeId),
    /// `c > 0 ? a : b`.
    Select(NodeId, NodeId, NodeId),
    /// The value of the argument with no derivative (a `detach` inside the region).
    Stop(NodeId),
}

#[derive(Debug, Clone, Default)]
pub struct Dag {
    nodes: Vec<Node>,
    index: HashMap<Node, NodeId>,
}

impl Dag {
    pub fn node(&self, id: NodeId) -> Node {
        self.nodes[id as usize]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn intern(&mut self, n: Node) -> NodeId {
        if let Some(&id) = self.index.get(&n) {
            return id;
        }
        let id = self.nodes.len() as NodeId;
        self.nodes.push(n);
        self.index.insert(n, id);
        id
    }

    pub fn constant(&mut self, v: f32) -> NodeId {
        // One zero: -0.0 and 0.0 behave the same in every simplification used here.
        let v = if v == 0.0 { 0.0 } else { v };
        self.intern(Node::Const(v.to_bits()))
    }

    pub fn col(&mut self, k: u32) -> NodeId {
        self.intern(Node::Col(k))
    }

    pub fn uni(&mut self, k: u32) -> NodeId {
        self.intern(Node::Uni(k))
    }

    pub fn const_value(&self, id: NodeId) -> Option<f32> {
        match self.node(id) {
            Node::Const(b) => Some(f32::from_bits(b)),
            _ => None,
        }
    }

    fn is_const(&self, id: NodeId, v: f32) -> bool {
        self.const_value(id) == Some(v)
    }

    pub fn stop(&mut self, a: NodeId) -> NodeId {
        match self.node(a) {
            Node::Const(_) | Node::Stop(_) => a,
            _ => self.intern(Node::Stop(a)),
        }
    }

    pub fn un(&mut self, f: Fn1, a: NodeId) -> NodeId {
        if let Some(v) = self.const_value(a) {
            return self.constant(eval1(f, v));
        }
        if f == Fn1::Neg
            && let Node::Un(Fn1::Neg, inner) = self.node(a)
        {
            return inner;
        }
        self.intern(Node::Un(f, a))
    }

    pub fn neg(&mut self, a: NodeId) -> NodeId {
        self.un(Fn1::Neg, a)
    }

    pub fn bin(&mut self, f: Fn2, a: NodeId, b: NodeId) -> NodeId {
        if let (Some(x), Some(y)) = (self.const_value(a), self.const_value(b)) {
            return self.constant(eval2(f, x, y));
        }
        match f {
            Fn2::Add => {
                if self.is_const(a, 0.0) {
                    return b;
                }
                if self.is_const(b, 0.0) {
                    return a;
                }
                if let Node::Un(Fn1::Neg, nb) = self.node(b) {
                    return self.bin(Fn2::Sub, a, nb);
                }
            }
            Fn2::Sub => {
                if self.is_const(b, 0.0) {
                    return a;
                }
                if self.is_const(a, 0.0) {
                    return self.neg(b);
                }
                if let Node::Un(Fn1::Neg, nb) = self.node(b) {
                    return self.bin(Fn2::Add, a, nb);
                }
            }
            Fn2::Mul => {
                // x * 0 = 0 drops NaN/inf propagation, as every symbolic differentiator does: the
                // zero comes from a derivative that is identically zero.
                if self.is_const(a, 0.0) || self.is_const(b, 0.0) {
                    return self.constant(0.0);
                }
                if self.is_const(a, 1.0) {
                    return b;
                }
                if self.is_const(b, 1.0) {
                    return a;
                }
                if self.is_const(a, -1.0) {
                    return self.neg(b);
                }
                if self.is_const(b, -1.0) {
                    return self.neg(a);
                }
                if let (Node::Un(Fn1::Neg, x), Node::Un(Fn1::Neg, y)) = (self.node(a), self.node(b))
                {
                    return self.bin(Fn2::Mul, x, y);
                }
            }
            Fn2::Div => {
                if self.is_const(b, 1.0) {
                    return a;
                }
                if self.is_const(a, 0.0) {
                    return self.constant(0.0);
                }
                if let Some(c) = self.const_value(b)
                    && c != 0.0
                    && (1.0 / c).is_finite()
                    && (c.abs().log2().fract() == 0.0)
                {
                    // Division by a power of two is exactly a multiplication by its inverse.
                    let inv = self.constant(1.0 / c);
                    return self.bin(Fn2::Mul, a, inv);
                }
            }
            Fn2::Pow => {
                // Integer exponents by repeated squaring: exact for negative bases, like powf.
                if let Some(e) = self.const_value(b)
                    && e.fract() == 0.0
                    && e.abs() <= 1024.0
                {
                    let mut n = e.abs() as u32;
                    let mut acc = self.constant(1.0);
                    let mut base = a;
                    while n > 0 {
                        if n & 1 == 1 {
                            acc = self.bin(Fn2::Mul, acc, base);
                        }
                        n >>= 1;
                        if n > 0 {
                            base = self.bin(Fn2::Mul, base, base);
                        }
                    }
                    return if e < 0.0 {
                        let one = self.constant(1.0);
                        self.bin(Fn2::Div, one, acc)
                    } else {
                        acc
                    };
                }
            }
            Fn2::Min | Fn2::Max if a == b => return a,
            _ => {}
        }
        let (a, b) = if f.commutative() && b < a {
            (b, a)
        } else {
            (a, b)
        };
        self.intern(Node::Bin(f, a, b))
    }

    pub fn select(&mut self, c: NodeId, a: NodeId, b: NodeId) -> NodeId {
        if a == b {
            return a;
        }
        if let Some(v) = self.const_value(c) {
            return if v > 0.0 { a } else { b };
        }
        self.intern(Node::Select(c, a, b))
    }

    /// The derivative of `root` with respect to column `wrt`, as new nodes in this DAG.
    pub fn derivative(&mut self, root: NodeId, wrt: u32) -> NodeId {
        let mut memo: HashMap<NodeId, NodeId> = HashMap::new();
        self.diff(root, wrt, &mut memo)
    }

    fn diff(&mut self, id: NodeId, wrt: u32, memo: &mut HashMap<NodeId, NodeId>) -> NodeId {
        if let Some(&d) = memo.get(&id) {
            return d;
        }
        let d = match self.node(id) {
            Node::Const(_) | Node::Uni(_) | Node::Stop(_) => self.constant(0.0),
            Node::Col(k) => self.constant(if k == wrt { 1.0 } else { 0.0 }),
            Node::Un(f, a) => {
                let da = self.diff(a, wrt, memo);
                if self.is_const(da, 0.0) {
                    da
                } else {
                    let local = self.local1(f, a, id);
                    self.bin(Fn2::Mul, local, da)
                }
            }
            Node::Bin(f, a, b) => {
                let da = self.diff(a, wrt, memo);
                let db = self.diff(b, wrt, memo);
                self.diff2(f, a, b, id, da, db)
            }
            Node::Select(c, a, b) => {
                let da = self.diff(a, wrt, memo);
                let db = self.diff(b, wrt, memo);
                self.select(c, da, db)
            }
        };
        memo.insert(id, d);
        d
    }

    /// d f(a) / d a, given the node `y = f(a)`.
    fn local1(&mut self, f: Fn1, a: NodeId, y: NodeId) -> NodeId {
        let one = self.constant(1.0);
        let zero = self.constant(0.0);
        match f {
            Fn1::Neg => self.constant(-1.0),
            Fn1::Exp => y,
            Fn1::Log => self.bin(Fn2::Div, one, a),
            Fn1::Log1p => {
                let u = self.bin(Fn2::Add, one, a);
                self.bin(Fn2::Div, one, u)
            }
            Fn1::Sigmoid => {
                let c = self.bin(Fn2::Sub, one, y);
                self.bin(Fn2::Mul, y, c)
            }
            Fn1::LogSigmoid => {
                let na = self.neg(a);
                self.un(Fn1::Sigmoid, na)
            }
            // candle's conventions at 0: d|x| = 1 and d relu = 1 (both use x >= 0).
            Fn1::Abs => {
                let m = self.constant(-1.0);
                let ge = self.bin(Fn2::Ge, a, zero);
                self.select(ge, one, m)
            }
            Fn1::Relu => self.bin(Fn2::Ge, a, zero),
            Fn1::Sqrt => {
                let two = self.constant(2.0);
                let t = self.bin(Fn2::Mul, two, y);
                self.bin(Fn2::Div, one, t)
            }
            Fn1::Tanh => {
                let sq = self.bin(Fn2::Mul, y, y);
                self.bin(Fn2::Sub, one, sq)
            }
        }
    }

    fn diff2(&mut self, f: Fn2, a: NodeId, b: NodeId, y: NodeId, da: NodeId, db: NodeId) -> NodeId {
        let zero = self.constant(0.0);
        if self.is_const(da, 0.0) && self.is_const(db, 0.0) {
            return zero;
        }
        match f {
            Fn2::Add => self.bin(Fn2::Add, da, db),
            Fn2::Sub => self.bin(Fn2::Sub, da, db),
            Fn2::Mul => {
                let l = self.bin(Fn2::Mul, da, b);
                let r = self.bin(Fn2::Mul, a, db);
                self.bin(Fn2::Add, l, r)
            }
            Fn2::Div => {
                // (da - y * db) / b
                let t = self.bin(Fn2::Mul, y, db);
                let n = self.bin(Fn2::Sub, da, t);
                self.bin(Fn2::Div, n, b)
            }
            Fn2::Min | Fn2::Max => {
                // The chosen side's derivative; at a tie the mean of both, which is exact when
                // both sides are the same function (PPO's unclipped vs clipped ratio at ratio 1).
                let half = self.constant(0.5);
                let sum = self.bin(Fn2::Add, da, db);
                let mean = self.bin(Fn2::Mul, half, sum);
                // Min takes `a` where a < b, Max where a > b.
                let (a_wins, b_wins) = if f == Fn2::Min {
                    (Fn2::Lt, Fn2::Gt)
                } else {
                    (Fn2::Gt, Fn2::Lt)
                };
                let pick_a = self.bin(a_wins, a, b);
                let pick_b = self.bin(b_wins, a, b);
                let inner = self.select(pick_b, db, mean);
                self.select(pick_a, da, inner)
            }
            Fn2::Pow => {
                // d(a^b) = b * a^(b-1) da + a^b ln(a) db
                let one = self.constant(1.0);
                let bm1 = self.bin(Fn2::Sub, b, one);
                let p = self.bin(Fn2::Pow, a, bm1);
                let t1 = self.bin(Fn2::Mul, b, p);
                let l = self.bin(Fn2::Mul, t1, da);
                let r = if self.is_const(db, 0.0) {
                    zero
                } else {
                    let ln = self.un(Fn1::Log, a);
                    let t2 = self.bin(Fn2::Mul, y, ln);
                    self.bin(Fn2::Mul, t2, db)
                };
                self.bin(Fn2::Add, l, r)
            }
            Fn2::Gt | Fn2::Ge | Fn2::Lt | Fn2::Le => zero,
        }
    }

    /// Every node `roots` depend on, each after its operands.
    pub fn topo(&self, roots: &[NodeId]) -> Vec<NodeId> {
        let mut seen = vec![false; self.nodes.len()];
        let mut out = Vec::new();
        let mut stack: Vec<(NodeId, bool)> = roots.iter().rev().map(|&r| (r, false)).collect();
        while let Some((id, expanded)) = stack.pop() {
            if expanded {
                out.push(id);
                continue;
            }
            if seen[id as usize] {
                continue;
            }
            seen[id as usize] = true;
            stack.push((id, true));
            for c in self.operands(id).into_iter().rev() {
                if !seen[c as usize] {
                    stack.push((c, false));
                }
            }
        }
        out
    }

    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        match self.node(id) {
            Node::Const(_) | Node::Col(_) | Node::Uni(_) => vec![],
            Node::Un(_, a) | Node::Stop(a) => vec![a],
            Node::Bin(_, a, b) => vec![a, b],
            Node::Select(c, a, b) => vec![c, a, b],
        }
    }

    /// For each node in `order`: whether it varies per element (depends on some `Col`).
    pub fn varying(&self, order: &[NodeId]) -> HashMap<NodeId, bool> {
        let mut v = HashMap::new();
        for &id in order {
            let x = match self.node(id) {
                Node::Col(_) => true,
                Node::Const(_) | Node::Uni(_) => false,
                _ => self.operands(id).iter().any(|c| v[c]),
            };
            v.insert(id, x);
        }
        v
    }

    /// A canonical text of the nodes `roots` need (used for hashing and for display).
    pub fn listing(&self, roots: &[NodeId]) -> String {
        let order = self.topo(roots);
        let mut s = String::new();
        for id in &order {
            let _ = writeln!(s, "  v{id} = {}", self.show(*id));
        }
        let r: Vec<String> = roots.iter().map(|r| format!("v{r}")).collect();
        let _ = writeln!(s, "  out = [{}]", r.join(", "));
        s
    }

    fn show(&self, id: NodeId) -> String {
        match self.node(id) {
            Node::Const(b) => format!("{:?}", f32::from_bits(b)),
            Node::Col(k) => format!("col{k}[i]"),
            Node::Uni(k) => format!("uni{k}"),
            Node::Un(f, a) => format!("{f:?}(v{a})").to_lowercase(),
            Node::Bin(f, a, b) => format!("{f:?}(v{a}, v{b})").to_lowercase(),
            Node::Select(c, a, b) => format!("v{c} > 0 ? v{a} : v{b}"),
            Node::Stop(a) => format!("detach(v{a})"),
        }
    }
}

impl Fn1 {
    /// The graph op this IR op implements.
    pub fn op(self) -> UnaryOp {
        match self {
            Fn1::Neg => UnaryOp::Neg,
            Fn1::Exp => UnaryOp::Exp,
            Fn1::Log => UnaryOp::Log,
            Fn1::Log1p => UnaryOp::Log1p,
            Fn1::Sigmoid => UnaryOp::Sigmoid,
            Fn1::LogSigmoid => UnaryOp::LogSigmoid,
            Fn1::Abs => UnaryOp::Abs,
            Fn1::Sqrt => UnaryOp::Sqrt,
            Fn1::Tanh => UnaryOp::Tanh,
            Fn1::Relu => UnaryOp::Relu,
        }
    }
}

impl Fn2 {
    /// The graph op this IR op implements.
    pub fn op(self) -> BinaryOp {
        match self {
            Fn2::Add => BinaryOp::Add,
            Fn2::Sub => BinaryOp::Sub,
            Fn2::Mul => BinaryOp::Mul,
            Fn2::Div => BinaryOp::Div,
            Fn2::Min => BinaryOp::Min,
            Fn2::Max => BinaryOp::Max,
            Fn2::Pow => BinaryOp::Pow,
            Fn2::Gt => BinaryOp::Gt,
            Fn2::Ge => BinaryOp::Ge,
            Fn2::Lt => BinaryOp::Lt,
            Fn2::Le => BinaryOp::Le,
        }
    }
}

/// Scalar semantics of every unary op: `post_graph::scalar` in f64, rounded to f32 once (one
/// definition for the compiler, the host evaluator and this reference; f64 then one rounding is
/// at least as accurate as f32 libm, and the kernels are checked against it with tolerances).
pub fn eval1(f: Fn1, v: f32) -> f32 {
    scalar::unary(f.op(), v as f64) as f32
}

/// Scalar semantics of every binary op, through `post_graph::scalar` like [`eval1`].
pub fn eval2(f: Fn2, a: f32, b: f32) -> f32 {
    scalar::binary(f.op(), a as f64, b as f64) as f32
}

/// Evaluates `roots` for one element with scalar f32 math (the interpreter the JIT is tested
/// against, and the fallback if the JIT cannot be built on this host).
pub fn interpret(dag: &Dag, order: &[NodeId], cols: &[f32], unis: &[f32], vals: &mut [f32]) {
    for &id in order {
        let v = match dag.node(id) {
            Node::Const(b) => f32::from_bits(b),
            Node::Col(k) => cols[k as usize],
            Node::Uni(k) => unis[k as usize],
            Node::Un(f, a) => eval1(f, vals[a as usize]),
            Node::Bin(f, a, b) => eval2(f, vals[a as usize], vals[b as usize]),
            Node::Select(c, a, b) => {
                if vals[c as usize] > 0.0 {
                    vals[a as usize]
                } else {
                    vals[b as usize]
                }
            }
            Node::Stop(a) => vals[a as usize],
        };
        vals[id as usize] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simplifies_while_building() {
        let mut d = Dag::default();
        let x = d.col(0);
        let one = d.constant(1.0);
        let zero = d.constant(0.0);
        assert_eq!(d.bin(Fn2::Mul, x, one), x);
        assert_eq!(d.bin(Fn2::Add, zero, x), x);
        let two = d.constant(2.0);
        let three = d.constant(3.0);
        let six = d.bin(Fn2::Mul, two, three);
        assert_eq!(d.const_value(six), Some(6.0));
        let nx = d.neg(x);
        assert_eq!(d.neg(nx), x);
        let y = d.col(1);
        // Commutative operands are ordered, so x*y and y*x are one node.
        assert_eq!(d.bin(Fn2::Mul, x, y), d.bin(Fn2::Mul, y, x));
    }

    #[test]
    fn derivative_of_exp_shares_the_forward_node() {
        let mut d = Dag::default();
        let x = d.col(0);
        let e = d.un(Fn1::Exp, x);
        assert_eq!(d.derivative(e, 0), e);
        let de = d.derivative(e, 1);
        assert_eq!(d.const_value(de), Some(0.0));
        let s = d.stop(x);
        let r = d.bin(Fn2::Sub, x, s);
        let dr = d.derivative(r, 0);
        assert_eq!(d.const_value(dr), Some(1.0));
    }
}
