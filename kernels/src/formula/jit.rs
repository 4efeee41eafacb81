//! Cranelift code generation for fusion regions: one function per kernel, an F32X4 loop over the
//! elements of a row with the region's expression inlined, uniform (per-call) subexpressions
//! hoisted out of the loop, and inline polynomial `exp`/`log` (Cranelift has no transcendental
//! instructions). ABI of every kernel:
//!
//! `extern "C" fn(n: i64, cols: *const *const f32, uni: *const f32, outs: *const *mut f32) -> f32`
//!
//! `n` is a multiple of 4; `outs[k][i]` receives output `k`; the return value is the sum over the
//! elements of the `reduce` node (0 when there is none).

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, Endianness, InstBuilder, MemFlagsData, Type, UserFuncName, Value, types,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};

use super::ir::{Dag, Fn1, Fn2, Node, NodeId};

/// What a kernel computes from a DAG.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelSpec {
    pub n_cols: u32,
    pub n_uni: u32,
    /// Stored to `outs[k]` for each element.
    pub outputs: Vec<NodeId>,
    /// Summed over the elements and returned.
    pub reduce: Option<NodeId>,
}

impl KernelSpec {
    pub fn roots(&self) -> Vec<NodeId> {
        let mut r = self.outputs.clone();
        r.extend(self.reduce);
        r
    }
}

pub type KernelFn =
    unsafe extern "C" fn(i64, *const *const f32, *const f32, *const *mut f32) -> f32;

/// A compiled kernel and the module that owns its machine code.
pub struct JitKernel {
    func: KernelFn,
    /// The Cranelift IR before compilation, for `post compile --emit kernels`.
    pub ir: String,
    _module: JITModule,
}

// SAFETY: after `finalize_definitions` the module is never touched again (it is only kept so the
// code memory it owns stays mapped); the compiled function is pure, reads only the pointers it is
// given and writes only `outs`, so calling it from several threads at once is sound.
unsafe impl Send for JitKernel {}
// SAFETY: see `Send`: no method mutates the kernel after construction.
unsafe impl Sync for JitKernel {}

impl JitKernel {
    /// Runs the kernel over `n` elements (a multiple of 4).
    ///
    /// # Safety
    /// Every `cols[k]` must be valid for `n` f32 reads, `uni` for `n_uni` reads, and every
    /// `outs[k]` for `n` f32 writes, where `n_cols`, `n_uni` and the output count are those of the
    /// [`KernelSpec`] this kernel was compiled from.
    pub unsafe fn call(
        &self,
        n: usize,
        cols: &[*const f32],
        uni: &[f32],
        outs: &[*mut f32],
    ) -> f32 {
        debug_assert!(n.is_multiple_of(4));
        // SAFETY: forwarded to the caller's contract above; the ABI matches `KernelFn`.
        unsafe { (self.func)(n as i64, cols.as_ptr(), uni.as_ptr(), outs.as_ptr()) }
    }
}

const F32X4: Type = types::F32X4;
const I32X4: Type = types::I32X4;

/// Compiles `spec` over `dag` into machine code for the host.
pub fn compile(dag: &Dag, spec: &KernelSpec, name: &str) -> Result<JitKernel, String> {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(|e| e.to_string())?;
    let isa_builder = cranelift_native::builder().map_err(|e| e.to_string())?;
    let isa = isa_builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| e.to_string())?;
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let ptr = module.target_config().pointer_type();
    let mut ctx = module.make_context();
    ctx.func.signature.params.push(AbiParam::new(types::I64));
    for _ in 0..3 {
        ctx.func.signature.params.push(AbiParam::new(ptr));
    }
    ctx.func.signature.returns.push(AbiParam::new(types::F32));
    ctx.func.name = UserFuncName::testcase(name);
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let mut g = Gen {
            b: &mut b,
            splats: HashMap::new(),
        };
        g.body(dag, spec, ptr);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    let ir = ctx.func.display().to_string();
    let id = module
        .declare_function(name, Linkage::Export, &ctx.func.signature)
        .map_err(|e| e.to_string())?;
    module
        .define_function(id, &mut ctx)
        .map_err(|e| format!("{e:?}"))?;
    module.clear_context(&mut ctx);
    module.finalize_definitions().map_err(|e| e.to_string())?;
    let code = module.get_finalized_function(id);
    // SAFETY: `code` is the entry of the function just defined with exactly `KernelFn`'s
    // signature (i64, 3 pointers) -> f32 in the host's default calling convention.
    let func = unsafe { std::mem::transmute::<*const u8, KernelFn>(code) };
    Ok(JitKernel {
        func,
        ir,
        _module: module,
    })
}

struct Gen<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    splats: HashMap<u32, Value>,
}

fn vec_flags() -> MemFlagsData {
    // Rows start at any f32 boundary: no alignment promise, but never trapping (bounds are the
    // caller's contract).
    MemFlagsData::new().with_notrap()
}

fn le() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

impl Gen<'_, '_> {
    fn body(&mut self, dag: &Dag, spec: &KernelSpec, ptr: Type) {
        let entry = self.b.create_block();
        let header = self.b.create_block();
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let params = self.b.block_params(entry).to_vec();
        let (n, cols, uni, outs) = (params[0], params[1], params[2], params[3]);

        let order = dag.topo(&spec.roots());
        let varying = dag.varying(&order);
        let mut vals: HashMap<NodeId, Value> = HashMap::new();

        let col_ptrs: Vec<Value> = (0..spec.n_cols)
            .map(|k| {
                self.b
                    .ins()
                    .load(ptr, MemFlagsData::trusted(), cols, (8 * k) as i32)
            })
            .collect();
        let out_ptrs: Vec<Value> = (0..spec.outputs.len())
            .map(|k| {
                self.b
                    .ins()
                    .load(ptr, MemFlagsData::trusted(), outs, (8 * k) as i32)
            })
            .collect();
        // Hoisted: everything that does not vary per element, computed once per call.
        for &id in &order {
            if !varying[&id] {
                let v = self.node(dag, id, &vals, uni, &col_ptrs, None);
                vals.insert(id, v);
            }
        }
        let i_var = self.b.declare_var(types::I64);
        let acc_var = self.b.declare_var(F32X4);
        let zero_i = self.b.ins().iconst(types::I64, 0);
        self.b.def_var(i_var, zero_i);
        let zero = self.splat(0.0);
        self.b.def_var(acc_var, zero);
        self.b.ins().jump(header, &[]);

        self.b.switch_to_block(header);
        let i = self.b.use_var(i_var);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, i, n);
        self.b.ins().brif(more, body, &[], exit, &[]);

        self.b.switch_to_block(body);
        let i = self.b.use_var(i_var);
        let off = self.b.ins().ishl_imm_u(i, 2);
        let mut inner = vals.clone();
        for &id in &order {
            if varying[&id] {
                let v = self.node(dag, id, &inner, uni, &col_ptrs, Some(off));
                inner.insert(id, v);
            }
        }
        for (k, &o) in spec.outputs.iter().enumerate() {
            let addr = self.b.ins().iadd(out_ptrs[k], off);
            self.b.ins().store(vec_flags(), inner[&o], addr, 0);
        }
        if let Some(r) = spec.reduce {
            let acc = self.b.use_var(acc_var);
            let acc = self.b.ins().fadd(acc, inner[&r]);
            self.b.def_var(acc_var, acc);
        }
        let next = self.b.ins().iadd_imm_s(i, 4);
        self.b.def_var(i_var, next);
        self.b.ins().jump(header, &[]);

        self.b.switch_to_block(exit);
        let acc = self.b.use_var(acc_var);
        let l: Vec<Value> = (0..4u8).map(|k| self.b.ins().extractlane(acc, k)).collect();
        let s01 = self.b.ins().fadd(l[0], l[1]);
        let s23 = self.b.ins().fadd(l[2], l[3]);
        let s = self.b.ins().fadd(s01, s23);
        self.b.ins().return_(&[s]);
    }

    fn splat(&mut self, v: f32) -> Value {
        if let Some(&x) = self.splats.get(&v.to_bits()) {
            return x;
        }
        let s = self.b.ins().f32const(v);
        let x = self.b.ins().splat(F32X4, s);
        self.splats.insert(v.to_bits(), x);
        x
    }

    fn splat_i(&mut self, v: i32) -> Value {
        let s = self.b.ins().iconst(types::I32, v as i64);
        self.b.ins().splat(I32X4, s)
    }

    fn mask(&mut self, cc: FloatCC, a: Value, b: Value) -> Value {
        let m = self.b.ins().fcmp(cc, a, b);
        self.b.ins().bitcast(F32X4, le(), m)
    }

    fn pick(&mut self, mask: Value, a: Value, b: Value) -> Value {
        self.b.ins().bitselect(mask, a, b)
    }

    fn node(
        &mut self,
        dag: &Dag,
        id: NodeId,
        vals: &HashMap<NodeId, Value>,
        uni: Value,
        col_ptrs: &[Value],
        off: Option<Value>,
    ) -> Value {
        let v = |x: NodeId| vals[&x];
        match dag.node(id) {
            Node::Const(bits) => {
                let c = f32::from_bits(bits);
                // Constants hoisted to the entry block are cached; inside the loop they reuse them.
                self.splat(c)
            }
            Node::Col(k) => {
                // A Col is always varying, so `off` is set (the loop body).
                let off = off.unwrap_or_else(|| self.b.ins().iconst(types::I64, 0));
                let addr = self.b.ins().iadd(col_ptrs[k as usize], off);
                self.b.ins().load(F32X4, vec_flags(), addr, 0)
            }
            Node::Uni(k) => {
                let s = self
                    .b
                    .ins()
                    .load(types::F32, MemFlagsData::trusted(), uni, (4 * k) as i32);
                self.b.ins().splat(F32X4, s)
            }
            Node::Stop(a) => v(a),
            Node::Select(c, a, b) => {
                let zero = self.splat(0.0);
                let m = self.mask(FloatCC::GreaterThan, v(c), zero);
                self.pick(m, v(a), v(b))
            }
            Node::Un(f, a) => self.unary(f, v(a)),
            Node::Bin(f, a, b) => self.binary(f, v(a), v(b)),
        }
    }

    fn binary(&mut self, f: Fn2, a: Value, b: Value) -> Value {
        let cmp = |cc| Some(cc);
        let cc = match f {
            Fn2::Add => return self.b.ins().fadd(a, b),
            Fn2::Sub => return self.b.ins().fsub(a, b),
            Fn2::Mul => return self.b.ins().fmul(a, b),
            Fn2::Div => return self.b.ins().fdiv(a, b),
            Fn2::Min => return self.b.ins().fmin(a, b),
            Fn2::Max => return self.b.ins().fmax(a, b),
            Fn2::Pow => {
                let l = self.log(a);
                let t = self.b.ins().fmul(b, l);
                return self.exp(t);
            }
            Fn2::Gt => cmp(FloatCC::GreaterThan),
            Fn2::Ge => cmp(FloatCC::GreaterThanOrEqual),
            Fn2::Lt => cmp(FloatCC::LessThan),
            Fn2::Le => cmp(FloatCC::LessThanOrEqual),
        };
        let cc = cc.unwrap_or(FloatCC::Equal);
        let m = self.mask(cc, a, b);
        let one = self.splat(1.0);
        let zero = self.splat(0.0);
        self.pick(m, one, zero)
    }

    fn unary(&mut self, f: Fn1, x: Value) -> Value {
        match f {
            Fn1::Neg => self.b.ins().fneg(x),
            Fn1::Abs => self.b.ins().fabs(x),
            Fn1::Sqrt => self.b.ins().sqrt(x),
            Fn1::Relu => {
                let zero = self.splat(0.0);
                self.b.ins().fmax(x, zero)
            }
            Fn1::Exp => self.exp(x),
            Fn1::Log => self.log(x),
            Fn1::Log1p => self.log1p(x),
            Fn1::Sigmoid => {
                let nx = self.b.ins().fneg(x);
                let e = self.exp(nx);
                let one = self.splat(1.0);
                let d = self.b.ins().fadd(one, e);
                self.b.ins().fdiv(one, d)
            }
            Fn1::LogSigmoid => {
                // min(x, 0) - log1p(exp(-|x|)): no overflow for any x.
                let zero = self.splat(0.0);
                let m = self.b.ins().fmin(x, zero);
                let ax = self.b.ins().fabs(x);
                let nax = self.b.ins().fneg(ax);
                let e = self.exp(nax);
                let l = self.log1p(e);
                self.b.ins().fsub(m, l)
            }
            Fn1::Tanh => self.tanh(x),
        }
    }

    fn horner(&mut self, x: Value, coeffs: &[f32]) -> Value {
        let mut p = self.splat(coeffs[0]);
        for &c in &coeffs[1..] {
            let t = self.b.ins().fmul(p, x);
            let c = self.splat(c);
            p = self.b.ins().fadd(t, c);
        }
        p
    }

    /// Cephes `expf`: x = n ln2 + r, degree-6 polynomial in r, 2^n built in the exponent bits.
    /// Below the smallest normal result (x < -87.34) the 2^n trick cannot build the exponent,
    /// so such x are shifted up by 64 ln 2 and the result scaled by 2^-64: the multiply rounds
    /// into the subnormal range and to 0 exactly as `expf` does, instead of sticking at 1.2e-38.
    fn exp(&mut self, x: Value) -> Value {
        let lo = self.splat(-87.336_54);
        let small = self.mask(FloatCC::LessThan, x, lo);
        let shift = self.splat(64.0 * std::f32::consts::LN_2);
        let shifted = self.b.ins().fadd(x, shift);
        let x = self.pick(small, shifted, x);
        let y = self.exp_normal(x);
        let tiny = self.splat(f32::from_bits((127 - 64) << 23));
        let scaled = self.b.ins().fmul(y, tiny);
        let y = self.pick(small, scaled, y);
        // Past ln(f32::MAX) the result overflows, as in libm (not the clamped maximum).
        let hi = self.splat(88.722_84);
        let big = self.mask(FloatCC::GreaterThan, x, hi);
        let inf = self.splat(f32::INFINITY);
        self.pick(big, inf, y)
    }

    /// `exp` for results in the normal range (x clamped to it).
    fn exp_normal(&mut self, x: Value) -> Value {
        let lo = self.splat(-87.336_54);
        let hi = self.splat(88.376_26);
        let x = self.b.ins().fmax(x, lo);
        let x = self.b.ins().fmin(x, hi);
        let log2e = self.splat(std::f32::consts::LOG2_E);
        let magic = self.splat(12_582_912.0);
        let t = self.b.ins().fmul(x, log2e);
        let t = self.b.ins().fadd(t, magic);
        let n = self.b.ins().fsub(t, magic);
        let ln2_hi = self.splat(0.693_359_4);
        let ln2_lo = self.splat(-2.121_944_4e-4);
        let a = self.b.ins().fmul(n, ln2_hi);
        let r = self.b.ins().fsub(x, a);
        let a = self.b.ins().fmul(n, ln2_lo);
        let r = self.b.ins().fsub(r, a);
        let p = self.horner(
            r,
            &[
                1.987_569_1e-4,
                1.398_2e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                1.666_666_5e-1,
                5e-1,
            ],
        );
        let pr = self.b.ins().fmul(p, r);
        let prr = self.b.ins().fmul(pr, r);
        let y = self.b.ins().fadd(prr, r);
        let one = self.splat(1.0);
        let y = self.b.ins().fadd(y, one);
        let ni = self.b.ins().fcvt_to_sint_sat(I32X4, n);
        let bias = self.splat_i(127);
        let e = self.b.ins().iadd(ni, bias);
        let e = self.b.ins().ishl_imm_u(e, 23);
        let scale = self.b.ins().bitcast(F32X4, le(), e);
        self.b.ins().fmul(y, scale)
    }

    /// Cephes `logf`: frexp by bit manipulation (subnormals rescaled first), degree-8 polynomial,
    /// then the IEEE special cases (0 -> -inf, negative -> NaN, inf -> inf, NaN -> NaN).
    fn log(&mut self, x: Value) -> Value {
        let min_normal = self.splat(f32::MIN_POSITIVE);
        let small = self.mask(FloatCC::LessThan, x, min_normal);
        let two23 = self.splat(8_388_608.0);
        let scaled = self.b.ins().fmul(x, two23);
        let xs = self.pick(small, scaled, x);
        let bits = self.b.ins().bitcast(I32X4, le(), xs);
        let eraw = self.b.ins().ushr_imm_u(bits, 23);
        let ff = self.splat_i(0xff);
        let eraw = self.b.ins().band(eraw, ff);
        let b126 = self.splat_i(126);
        let ei = self.b.ins().isub(eraw, b126);
        let mut e = self.b.ins().fcvt_from_sint(F32X4, ei);
        let c23 = self.splat(23.0);
        let zero = self.splat(0.0);
        let adj = self.pick(small, c23, zero);
        e = self.b.ins().fsub(e, adj);
        let mmask = self.splat_i(0x007f_ffff);
        let half_bits = self.splat_i(0x3f00_0000);
        let mb = self.b.ins().band(bits, mmask);
        let mb = self.b.ins().bor(mb, half_bits);
        let m = self.b.ins().bitcast(F32X4, le(), mb);
        let sqrthf = self.splat(std::f32::consts::FRAC_1_SQRT_2);
        let lt = self.mask(FloatCC::LessThan, m, sqrthf);
        let one = self.splat(1.0);
        let e_lo = self.b.ins().fsub(e, one);
        let e = self.pick(lt, e_lo, e);
        let m2 = self.b.ins().fadd(m, m);
        let m_lo = self.b.ins().fsub(m2, one);
        let m_hi = self.b.ins().fsub(m, one);
        let m = self.pick(lt, m_lo, m_hi);
        let z = self.b.ins().fmul(m, m);
        let p = self.horner(
            m,
            &[
                7.037_683_6e-2,
                -1.151_461e-1,
                1.167_699_9e-1,
                -1.242_014_1e-1,
                1.424_932_3e-1,
                -1.666_805_8e-1,
                2.000_071_4e-1,
                -2.499_999_4e-1,
                3.333_333e-1,
            ],
        );
        let y = self.b.ins().fmul(p, m);
        let y = self.b.ins().fmul(y, z);
        let c1 = self.splat(-2.121_944_4e-4);
        let t = self.b.ins().fmul(e, c1);
        let y = self.b.ins().fadd(y, t);
        let h = self.splat(0.5);
        let t = self.b.ins().fmul(z, h);
        let y = self.b.ins().fsub(y, t);
        let r = self.b.ins().fadd(m, y);
        let c2 = self.splat(0.693_359_4);
        let t = self.b.ins().fmul(e, c2);
        let r = self.b.ins().fadd(r, t);
        let is_zero = self.mask(FloatCC::Equal, x, zero);
        let ninf = self.splat(f32::NEG_INFINITY);
        let r = self.pick(is_zero, ninf, r);
        let neg = self.mask(FloatCC::LessThan, x, zero);
        let nan = self.splat(f32::NAN);
        let r = self.pick(neg, nan, r);
        let inf = self.splat(f32::INFINITY);
        let is_inf = self.mask(FloatCC::Equal, x, inf);
        let r = self.pick(is_inf, inf, r);
        let uno = self.mask(FloatCC::Unordered, x, x);
        self.pick(uno, x, r)
    }

    /// `log(1 + x)` accurately for small x: `log(u) * x / (u - 1)` with `u = 1 + x` (Goldberg).
    fn log1p(&mut self, x: Value) -> Value {
        let one = self.splat(1.0);
        let u = self.b.ins().fadd(one, x);
        let d = self.b.ins().fsub(u, one);
        let l = self.log(u);
        let t = self.b.ins().fmul(l, x);
        let r = self.b.ins().fdiv(t, d);
        let zero = self.splat(0.0);
        let d0 = self.mask(FloatCC::Equal, d, zero);
        let r = self.pick(d0, x, r);
        let inf = self.splat(f32::INFINITY);
        let uinf = self.mask(FloatCC::Equal, u, inf);
        self.pick(uinf, u, r)
    }

    /// Cephes `tanhf`: an odd polynomial below |x| = 0.625, `1 - 2 / (exp(2|x|) + 1)` above.
    fn tanh(&mut self, x: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        let z = self.b.ins().fmul(x, x);
        let p = self.horner(
            z,
            &[
                -5.704_988_7e-3,
                2.063_909e-2,
                -5.373_971_6e-2,
                1.333_144_2e-1,
                -3.333_328e-1,
            ],
        );
        let p = self.b.ins().fmul(p, z);
        let p = self.b.ins().fmul(p, x);
        let small = self.b.ins().fadd(p, x);
        let two = self.splat(2.0);
        let ax2 = self.b.ins().fmul(ax, two);
        let e = self.exp(ax2);
        let one = self.splat(1.0);
        let d = self.b.ins().fadd(e, one);
        let q = self.b.ins().fdiv(two, d);
        let big = self.b.ins().fsub(one, q);
        let nbig = self.b.ins().fneg(big);
        let zero = self.splat(0.0);
        let neg = self.mask(FloatCC::LessThan, x, zero);
        let big = self.pick(neg, nbig, big);
        let lim = self.splat(0.625);
        let is_small = self.mask(FloatCC::LessThan, ax, lim);
        self.pick(is_small, small, big)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f(col0)` element-wise through a compiled kernel.
    fn run(f: Fn1, xs: &[f32]) -> Vec<f32> {
        let mut dag = Dag::default();
        let x = dag.col(0);
        let y = dag.un(f, x);
        let spec = KernelSpec {
            n_cols: 1,
            n_uni: 0,
            outputs: vec![y],
            reduce: None,
        };
        let k = compile(&dag, &spec, "t").unwrap();
        let mut padded = xs.to_vec();
        padded.resize(xs.len().div_ceil(4) * 4, 1.0);
        let mut out = vec![0.0f32; padded.len()];
        // SAFETY: one column and one output of `padded.len()` values, a multiple of 4.
        unsafe { k.call(padded.len(), &[padded.as_ptr()], &[], &[out.as_mut_ptr()]) };
        out.truncate(xs.len());
        out
    }

    fn check(f: Fn1, xs: &[f32], want: impl Fn(f64) -> f64, tol: f64) {
        let got = run(f, xs);
        for (&x, &g) in xs.iter().zip(&got) {
            let w = want(x as f64);
            if w.is_nan() {
                assert!(g.is_nan(), "{f:?}({x}) = {g}, want NaN");
            } else if w.is_infinite() {
                assert_eq!(g as f64, w, "{f:?}({x})");
            } else {
                let err = (g as f64 - w).abs() / w.abs().max(1e-30);
                // Relative error, or absolute below the smallest normal float.
                assert!(
                    err < tol || (g as f64 - w).abs() < 1e-37,
                    "{f:?}({x}) = {g}, want {w} (rel {err:e})"
                );
            }
        }
    }

    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
            .collect()
    }

    #[test]
    fn polynomial_exp_and_log_are_accurate() {
        check(Fn1::Exp, &grid(-87.0, 88.0, 10_001), f64::exp, 5e-7);
        let mut xs: Vec<f32> = grid(1e-6, 1e4, 10_001);
        xs.extend([1e-40, 1e-30, 1.0, f32::MIN_POSITIVE, 3e38]);
        check(Fn1::Log, &xs, f64::ln, 5e-7);
        check(
            Fn1::Log,
            &[0.0, -1.0, f32::INFINITY, f32::NAN],
            f64::ln,
            0.0,
        );
        check(Fn1::Exp, &[f32::NAN], f64::exp, 0.0);
    }

    #[test]
    fn exp_underflows_like_expf() {
        let xs = [
            -87.5f32, -90.0, -95.0, -100.0, -103.0, -104.0, -110.0, -200.0, -1e30,
        ];
        let got = run(Fn1::Exp, &xs);
        for (x, g) in xs.iter().zip(got) {
            let want = x.exp();
            // Subnormals carry fewer bits: compare to within a couple of units in the last place.
            let ulp = f32::from_bits(1);
            assert!(
                (g - want).abs() <= 2.0 * ulp + want * 1e-6,
                "exp({x}) = {g:e}, expf gives {want:e}"
            );
        }
    }

    #[test]
    fn derived_functions_are_accurate() {
        let xs = grid(-30.0, 30.0, 6_001);
        check(Fn1::Sigmoid, &xs, |x| 1.0 / (1.0 + (-x).exp()), 2e-6);
        check(Fn1::LogSigmoid, &xs, |x| -(-x).exp().ln_1p(), 2e-6);
        check(Fn1::Tanh, &grid(-9.0, 9.0, 6_001), f64::tanh, 2e-6);
        check(Fn1::Log1p, &grid(-0.999, 50.0, 6_001), f64::ln_1p, 2e-6);
        check(Fn1::Log1p, &[1e-10, -1e-8, 0.0], f64::ln_1p, 2e-6);
        check(Fn1::Sqrt, &grid(0.0, 100.0, 1_001), f64::sqrt, 2e-7);
        check(Fn1::Relu, &[-1.0, 0.0, 2.5], |x| x.max(0.0), 0.0);
        check(Fn1::Abs, &[-1.5, 0.0, 2.5], f64::abs, 0.0);
    }
}
