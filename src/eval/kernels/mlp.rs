//! A whole MLP block on the CPU — x·W₁, activation (times x·W₃ when
//! gated), ·W₂ — as one op whose backward is written out, so the hidden
//! activations are allocated once and never copied between dfdx ops.
//! Matrix products go to the `gemm` crate (the one dfdx uses).

use super::fastmath::{exp_fast, gelu_grad, gelu_value};
use crate::arch::Activation;
use multiversion::multiversion;

/// Multiply-adds of a matrix product from which it is split over the
/// pool's threads: the `train_step` bench's tiny model (products up to
/// 8·10⁵), whose step was slower with every product split, stays below;
/// the medium (1.7·10⁷) is above. Not tuned finer.
const PARALLEL_GEMM_WORK: usize = 1 << 20;

/// c (m × n) += a·b, all row-major; `a` is (m × k), or (k × m) read
/// transposed with `ta`; `b` is (k × n), or (n × k) with `tb`.
pub fn matmul_add(
    c: &mut [f32],
    a: &[f32],
    ta: bool,
    b: &[f32],
    tb: bool,
    dims: (usize, usize, usize),
) {
    assert!(c.len() == dims.0 * dims.2, "matmul shapes");
    // SAFETY: c holds m·n initialised elements.
    unsafe { gemm_into(c.as_mut_ptr(), true, a, ta, b, tb, dims) }
}

/// a·b as a new (m × n) row-major matrix, the operands as in [`matmul_add`].
/// The product is written into fresh memory: zero-filling it first (what
/// `vec![0.0; n]` does with memory the allocator recycles) ran on the
/// calling thread alone while the pool's threads waited (a profile of the
/// `train_step` bench's large model on two threads found zero-filling, this
/// and the other kernels' together, at a seventh of the step).
pub fn product(
    a: &[f32],
    ta: bool,
    b: &[f32],
    tb: bool,
    (m, k, n): (usize, usize, usize),
) -> Vec<f32> {
    if k == 0 {
        return vec![0.0; m * n];
    }
    let mut c = Vec::with_capacity(m * n);
    // SAFETY: with `accumulate` false gemm writes every one of the m·n
    // elements and reads none of them; only then is the length set.
    unsafe {
        gemm_into(c.as_mut_ptr(), false, a, ta, b, tb, (m, k, n));
        c.set_len(m * n);
    }
    c
}

/// c = [c +] a·b through the `gemm` crate, for k ≥ 1 or `accumulate`.
///
/// # Safety
/// `c` points to m·n writable f32s, initialised if `accumulate`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    c: *mut f32,
    accumulate: bool,
    a: &[f32],
    ta: bool,
    b: &[f32],
    tb: bool,
    (m, k, n): (usize, usize, usize),
) {
    assert!(a.len() == m * k && b.len() == k * n, "matmul shapes");
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let (a_rs, a_cs) = if ta { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if tb { (1, k) } else { (n, 1) };
    let par = if super::split_over_threads(m * n * k, PARALLEL_GEMM_WORK) {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the lengths asserted above cover every element the strides
    // reach: a spans m·k and b k·n elements; the caller vouches for c.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

/// Elements per chunk of a split elementwise pass.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// `f` over matching chunks of `x` and `out`, on the pool's threads when
/// there are enough elements.
pub fn elementwise(x: &[f32], out: &mut [f32], f: impl Fn(&[f32], &mut [f32]) + Sync) {
    if !super::split_over_threads(out.len(), super::PARALLEL_ELEMENTS) {
        return f(x, out);
    }
    use rayon::prelude::*;
    out.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(x.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(o, x)| f(x, o));
}

/// out = f(x).
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn activate(f: Activation, x: &[f32], out: &mut [f32]) {
    let pairs = out.iter_mut().zip(x);
    match f {
        Activation::Relu => pairs.for_each(|(o, &v)| *o = v.max(0.0)),
        Activation::Gelu => pairs.for_each(|(o, &v)| *o = gelu_value(v)),
        Activation::Silu => pairs.for_each(|(o, &v)| *o = v * sigmoid(v)),
        Activation::LeakyRelu => pairs.for_each(|(o, &v)| *o = if v > 0.0 { v } else { 0.01 * v }),
    }
}

/// d ← d·f'(x).
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn activate_backward(f: Activation, x: &[f32], d: &mut [f32]) {
    let pairs = d.iter_mut().zip(x);
    match f {
        Activation::Relu => pairs.for_each(|(g, &v)| *g = if v > 0.0 { *g } else { 0.0 }),
        Activation::Gelu => pairs.for_each(|(g, &v)| *g *= gelu_grad(v)),
        Activation::Silu => pairs.for_each(|(g, &v)| {
            let s = sigmoid(v);
            *g *= s * (1.0 + v * (1.0 - s));
        }),
        Activation::LeakyRelu => {
            pairs.for_each(|(g, &v)| *g = if v > 0.0 { *g } else { 0.01 * *g })
        }
    }
}

/// The block's weights, row-major: w1, w3 (d × h), w2 (h × d).
pub struct Weights {
    pub w1: Vec<f32>,
    pub w2: Vec<f32>,
    pub w3: Option<Vec<f32>>,
    pub d: usize,
    pub h: usize,
    pub act: Activation,
}

/// What the backward pass needs besides x and the weights.
pub struct Saved {
    /// x·W₁.
    pre: Vec<f32>,
    /// x·W₃ (gated blocks).
    gate: Option<Vec<f32>>,
    /// The hidden layer fed to W₂: f(x·W₁)[·x·W₃].
    hidden: Vec<f32>,
}

/// y (rows × d) for x (rows × d).
pub fn forward(x: &[f32], rows: usize, w: &Weights) -> (Vec<f32>, Saved) {
    let (d, h) = (w.d, w.h);
    let pre = product(x, false, &w.w1, false, (rows, d, h));
    let mut hidden = vec![0.0f32; rows * h];
    elementwise(&pre, &mut hidden, |x, o| activate(w.act, x, o));
    let gate = w.w3.as_ref().map(|w3| {
        let g = product(x, false, w3, false, (rows, d, h));
        hidden.iter_mut().zip(&g).for_each(|(a, &b)| *a *= b);
        g
    });
    let y = product(&hidden, false, &w.w2, false, (rows, h, d));
    (y, Saved { pre, gate, hidden })
}

/// Accumulates the gradient for x into `dx` and returns those for W₁, W₂
/// and W₃, from dy.
pub fn backward(
    x: &[f32],
    rows: usize,
    w: &Weights,
    s: Saved,
    dy: &[f32],
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let (d, h) = (w.d, w.h);
    let dw2 = product(&s.hidden, true, dy, false, (h, rows, d));
    drop(s.hidden);
    // d hidden = dy·W₂ᵀ.
    let mut dh = product(dy, false, &w.w2, true, (rows, d, h));
    let mut dw3 = None;
    if let (Some(gate), Some(w3)) = (&s.gate, &w.w3) {
        // hidden = f(pre)·gate: d gate = dh·f(pre), d f(pre) = dh·gate.
        let mut dg = vec![0.0f32; rows * h];
        elementwise(&s.pre, &mut dg, |x, o| activate(w.act, x, o));
        dg.iter_mut().zip(&dh).for_each(|(a, &b)| *a *= b);
        dh.iter_mut().zip(gate).for_each(|(a, &b)| *a *= b);
        let g3 = product(x, true, &dg, false, (d, rows, h));
        matmul_add(dx, &dg, false, w3, true, (rows, h, d));
        dw3 = Some(g3);
    }
    elementwise(&s.pre, &mut dh, |x, d| activate_backward(w.act, x, d));
    let dw1 = product(x, true, &dh, false, (d, rows, h));
    matmul_add(dx, &dh, false, &w.w1, true, (rows, h, d));
    (dw1, dw2, dw3)
}
