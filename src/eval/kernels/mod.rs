//! Device-specific kernels behind one trait. Every op has a composition of
//! dfdx ops as its default (`composite`), which is what the CUDA device
//! runs; the CPU overrides them (`cpu`) with fused kernels of its own, each
//! one tape entry with a hand-written backward, computed by plain functions
//! over row-major buffers (`attention`, `mlp`, `norm`, `fastmath`). Knows
//! tensors and arithmetic only: nothing of programs, routers or tasks.
//!
//! Why: profiling the 2-layer transformer bench (perf, one thread) put a
//! third of the step in libm's scalar `tanhf`/`expm1f` inside dfdx's GELU,
//! and after that most of the non-GEMM time in the dozen small broadcast
//! kernels (and their backward passes) that dfdx's attention, softmax and
//! normalisation are made of.

mod attention;
pub mod composite;
mod cpu;
mod fastmath;
mod mlp;
mod norm;
#[cfg(test)]
mod tests;

use crate::arch::Activation;
use dfdx::prelude::*;

pub use norm::EPS as NORM_EPS;

/// Elements from which a row-wise or elementwise pass (norms,
/// activations) splits over the pool's threads: each element or row is
/// computed alone, so the result is the same either way.
const PARALLEL_ELEMENTS: usize = 1 << 17;

/// Whether a pass of `work` units runs over the pool's threads, `from`
/// being where splitting is taken to pay. Each threshold sits between the
/// `train_step` bench's `sizes/tiny`, whose steps were slower split, and
/// `sizes/medium`, faster; none is tuned finer.
fn split_over_threads(work: usize, from: usize) -> bool {
    work >= from && rayon::current_num_threads() > 1
}

type T3<D, T> = Tensor<(usize, usize, usize), f32, D, T>;
type T2<D, T> = Tensor<(usize, usize), f32, D, T>;
type T1<D, T> = Tensor<(usize,), f32, D, T>;
type T0<D, T> = Tensor<(), f32, D, T>;

/// A dfdx device archgram can train on.
pub trait Backend: Device<f32> + dfdx::tensor::Cache + 'static {
    /// Train with dfdx's cache of freed buffers on: on a GPU every tensor
    /// would otherwise be a device allocation.
    const KEEP_FREED_BUFFERS: bool = true;

    /// GELU, tanh approximation (Hendrycks & Gimpel 2016).
    fn gelu<S: Shape, T: Tape<f32, Self>>(x: Tensor<S, f32, Self, T>) -> Tensor<S, f32, Self, T> {
        x.fast_gelu()
    }

    /// Multi-head attention on packed projections: `qkv` is (batch, seq,
    /// 3·heads·head_dim) with all queries, then all keys, then all values,
    /// head h at columns h·head_dim of each; returns (batch, seq,
    /// heads·head_dim), softmax(q·kᵀ/√head_dim, causally masked)·v per head.
    /// With `gates` (batch, seq, heads), head h's output at each position is
    /// scaled by its gate there (mixture-of-heads). Where a gate is exactly
    /// zero a fused kernel may skip that head for that query and give the
    /// gate a zero gradient: pass zeros only for heads left out by a hard
    /// choice (a constant 0/1 mask), whose gradient goes nowhere anyway.
    fn attention_core<T: Tape<f32, Self>>(
        qkv: T3<Self, T>,
        gates: Option<T3<Self, T>>,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> T3<Self, T> {
        composite::attention_core(qkv, gates, heads, head_dim, causal)
    }

    /// Layer norm (`center`) or RMS norm over the last axis, times `gain`,
    /// plus `bias`.
    fn norm<T: Tape<f32, Self>>(
        x: T3<Self, T>,
        center: bool,
        gain: T1<Self, T>,
        bias: Option<T1<Self, T>>,
    ) -> T3<Self, T> {
        composite::norm(x, center, gain, bias)
    }

    /// Matrices with the same row count side by side (r × Σ cols).
    fn pack_columns<T: Tape<f32, Self>>(parts: Vec<T2<Self, T>>) -> T2<Self, T> {
        composite::pack_columns(parts)
    }

    /// An MLP block on x (b × r × d): f(x·W₁)·W₂, or (f(x·W₁) ⊙ x·W₃)·W₂
    /// when gated; W₁, W₃ are (d × h), W₂ (h × d).
    fn mlp<T: Tape<f32, Self>>(
        x: T3<Self, T>,
        w1: T2<Self, T>,
        w2: T2<Self, T>,
        w3: Option<T2<Self, T>>,
        act: Activation,
    ) -> T3<Self, T> {
        composite::mlp(x, w1, w2, w3, act)
    }

    /// −Σ w·log softmax(logits) over the last axis: cross-entropy with
    /// per-class target weights `w` (same shape as `logits`).
    fn weighted_nll<T: Tape<f32, Self>>(logits: T3<Self, T>, w: Vec<f32>) -> T0<Self, T> {
        composite::weighted_nll(logits, w)
    }

    /// Rows `idx` of `x` (n × d), in that order (m × d).
    fn gather_rows<T: Tape<f32, Self>>(x: T2<Self, T>, idx: &[usize]) -> T2<Self, T> {
        composite::gather_rows(x, idx)
    }

    /// (n × d): row o is `Σ g·parts[part][row]` over the picks with out = o,
    /// `g = gates[gate]` (1 without gates); rows no pick names are zero. How
    /// routed tokens' outputs go back in place.
    fn combine_rows<T: Tape<f32, Self>>(
        parts: Vec<T2<Self, T>>,
        picks: &[Pick],
        n: usize,
        gates: Option<T1<Self, T>>,
    ) -> T2<Self, T> {
        composite::combine_rows(parts, picks, n, gates)
    }
}

/// One routed row's way back: `parts[part]` row `row` goes to output row
/// `out`, scaled by gate value `gate` (an index into the gates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    pub out: usize,
    pub part: usize,
    pub row: usize,
    pub gate: usize,
}

#[cfg(feature = "cuda")]
impl Backend for Cuda {}
