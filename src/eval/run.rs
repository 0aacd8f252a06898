//! The state of one forward pass (`Run`: device, parameters, what routers
//! did, auxiliary losses) and the tensor types the evaluator passes around.
//! Running graphs is `forward.rs`; routed steps (`routed.rs`, `moe.rs`) run
//! their bodies through [`Run::body`].

use super::kernels::composite::{causal_neg, matmul_rows};
use super::kernels::Backend;
use super::params::Params;
use super::program::{Graph, Head};
use crate::routing::{LayerTrace, RouterSettings};
use dfdx::prelude::*;

pub type T3<D, T> = Tensor<(usize, usize, usize), f32, D, T>;
pub type T0<D, T> = Tensor<(), f32, D, T>;
pub type T2<D, T> = Tensor<(usize, usize), f32, D, T>;

/// Per routed layer, what the router did on one batch.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RouteRecord {
    /// `moe`, `mod`, `layer_skip` or `moh`.
    pub kind: String,
    /// Tokens routed in the batch.
    pub tokens: u32,
    /// Per expert (or head): tokens assigned. For mod/layer_skip one entry:
    /// tokens processed.
    pub load: Vec<u32>,
    /// Token–expert assignments dropped by capacity.
    pub dropped: u32,
    /// Hash of the exact selection (which token went where), to tell two
    /// routings apart when their loads agree.
    #[serde(skip)]
    pub fingerprint: u64,
}

/// Fingerprint of a 0/1 selection mask.
pub fn fingerprint(select: &[f32]) -> u64 {
    let bits: Vec<u8> = select.iter().map(|&v| (v > 0.0) as u8).collect();
    xxhash_rust::xxh3::xxh3_64(&bits)
}

/// Everything a forward pass collects beside its output.
pub struct Run<'a, D: Backend, T> {
    pub dev: &'a D,
    pub params: &'a Params<D>,
    pub batch: usize,
    /// Auxiliary losses (router balance, skip rate), added to the loss.
    pub aux: Vec<T0<D, T>>,
    pub routes: Vec<RouteRecord>,
    /// How routers balance and drop.
    pub routing: RouterSettings,
    /// Selection bias per routed layer (execution order); empty = none yet.
    pub bias: Vec<Vec<f32>>,
    /// Keep a full routing trace of this pass in `traces`.
    pub trace: bool,
    pub traces: Vec<LayerTrace>,
    /// Training semantics (routers that route differently at inference,
    /// such as a causal mixture-of-depths, train as they train); by default
    /// whether the pass records a tape.
    pub training: bool,
    /// The graph runner, for routed bodies (see [`Run::body`]).
    pub(super) run_body: BodyRunner<'a, D, T>,
}

/// Runs a graph on its input value.
pub(super) type BodyRunner<'a, D, T> = fn(&mut Run<'a, D, T>, &Graph, T3<D, T>) -> T3<D, T>;

impl<'a, D: Backend, T: Tape<f32, D>> Run<'a, D, T> {
    /// Runs a routed step's body graph: `forward::run_graph`, reached
    /// through the pointer `Run::new` sets so this file and the routed
    /// steps' files need not import the graph runner that calls them.
    pub fn body(&mut self, g: &Graph, x: T3<D, T>) -> T3<D, T> {
        (self.run_body)(self, g, x)
    }

    pub fn vector(&self, i: usize) -> Tensor<(usize,), f32, D, T> {
        self.params.tensors[i].retaped::<T>()
    }

    pub fn matrix(&self, i: usize, rows: usize, cols: usize) -> Tensor<(usize, usize), f32, D, T> {
        self.params.tensors[i]
            .retaped::<T>()
            .reshape_like(&(rows, cols))
    }

    /// `x · W` over the last axis.
    pub fn linear(&self, x: T3<D, T>, w: usize, inp: usize, out: usize) -> T3<D, T> {
        matmul_rows(x, self.matrix(w, inp, out))
    }

    /// (n × n) with 1 where column ≥ row: the lower-triangular mask of a
    /// token-mixing weight (input j feeds output i only if j ≤ i).
    pub fn upper_ones(&self, n: usize) -> Tensor<(usize, usize), f32, D> {
        let mut v = vec![0.0f32; n * n];
        for j in 0..n {
            for i in j..n {
                v[j * n + i] = 1.0;
            }
        }
        self.dev.tensor_from_vec(v, (n, n))
    }

    /// (batch × n × n) with 1 on and below the diagonal (row = query).
    pub fn causal_ones(&self, n: usize) -> Tensor<(usize, usize, usize), f32, D> {
        let mut v = vec![0.0f32; n * n];
        for i in 0..n {
            for j in 0..=i {
                v[i * n + j] = 1.0;
            }
        }
        self.dev
            .tensor_from_vec(v, (n, n))
            .broadcast_like::<_, Axis<0>>(&(self.batch, n, n))
    }

    /// Additive mask: 0 on and below the diagonal, -1e9 above.
    pub fn causal_neg(&self, n: usize) -> Tensor<(usize, usize, usize), f32, D> {
        causal_neg(self.dev, self.batch, n)
    }

    /// Broadcast a (batch, rows) tensor over a last axis of `cols`.
    pub fn over_cols<U: Tape<f32, D>>(
        &self,
        t: Tensor<(usize, usize), f32, D, U>,
        rows: usize,
        cols: usize,
    ) -> Tensor<(usize, usize, usize), f32, D, U> {
        t.broadcast_like::<_, Axis<2>>(&(self.batch, rows, cols))
    }

    /// Multi-head attention: one product for every head's query, key and
    /// value, the fused core, the output projection. With `gates` (batch,
    /// seq, heads), each head's output is scaled by its gate at each
    /// position (mixture-of-heads).
    pub fn attention(
        &mut self,
        x: T3<D, T>,
        heads: &[super::program::Head],
        o: usize,
        head_dim: usize,
        causal: bool,
        gates: Option<T3<D, T>>,
    ) -> T3<D, T> {
        let d = x.shape().2;
        let n = heads.len();
        let packed = [|h: &Head| h.q, |h: &Head| h.k, |h: &Head| h.v]
            .iter()
            .flat_map(|part| heads.iter().map(part))
            .map(|i| self.matrix(i, d, head_dim))
            .collect();
        let qkv = matmul_rows(x, D::pack_columns(packed));
        let out = D::attention_core(qkv, gates, n, head_dim, causal);
        self.linear(out, o, n * head_dim, d)
    }
}
