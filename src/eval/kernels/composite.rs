//! The kernels as compositions of dfdx ops: the trait's defaults (what CUDA
//! runs), and the reference the CPU kernels are tested against.

use super::{Backend, Pick, T0, T1, T2, T3};
use crate::arch::Activation;
use dfdx::prelude::*;

/// (b, m, k) · (k, n) as one (b·m, k) · (k, n) product: dfdx runs a
/// batched-by-broadcast product, and its backward, as b small GEMMs, which
/// profiled at 2.5× the forward's cost on the reference transformer.
pub fn matmul_rows<D: Backend, T: Tape<f32, D>>(x: T3<D, T>, w: T2<D, T>) -> T3<D, T> {
    let (b, m, k) = *x.shape();
    let n = w.shape().1;
    x.contiguous()
        .reshape_like(&(b * m, k))
        .matmul(w)
        .reshape_like(&(b, m, n))
}

/// f(x), element-wise.
pub fn activate<D: Backend, T: Tape<f32, D>>(x: T3<D, T>, f: Activation) -> T3<D, T> {
    match f {
        Activation::Relu => x.relu(),
        Activation::Gelu => D::gelu(x),
        Activation::Silu => {
            let s = x.with_empty_tape().sigmoid();
            x * s
        }
        Activation::LeakyRelu => x.prelu(0.01),
    }
}

/// See `Backend::mlp`.
pub fn mlp<D: Backend, T: Tape<f32, D>>(
    x: T3<D, T>,
    w1: T2<D, T>,
    w2: T2<D, T>,
    w3: Option<T2<D, T>>,
    f: Activation,
) -> T3<D, T> {
    let h = match w3 {
        Some(w3) => {
            let gate = matmul_rows(x.with_empty_tape(), w3);
            activate(matmul_rows(x, w1), f) * gate
        }
        None => activate(matmul_rows(x, w1), f),
    };
    matmul_rows(h, w2)
}

/// (batch × n × n) additive causal mask: 0 on and below the diagonal, -1e9
/// above.
pub fn causal_neg<D: Backend>(dev: &D, batch: usize, n: usize) -> T3<D, NoneTape> {
    let mut v = vec![0.0f32; n * n];
    for i in 0..n {
        for j in i + 1..n {
            v[i * n + j] = -1e9;
        }
    }
    dev.tensor_from_vec(v, (n, n))
        .broadcast_like::<_, Axis<0>>(&(batch, n, n))
}

/// See `Backend::attention_core`.
pub fn attention_core<D: Backend, T: Tape<f32, D>>(
    qkv: T3<D, T>,
    gates: Option<T3<D, T>>,
    heads: usize,
    head_dim: usize,
    causal: bool,
) -> T3<D, T> {
    let (b, s, _) = *qkv.shape();
    let w = heads * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut src = Some(qkv);
    let reads = 3 * heads;
    let mut read = 0;
    // Each read slices the packed input; the last one takes its tape.
    let mut cols = |at: usize| {
        read += 1;
        let x = if read == reads {
            src.take().expect("qkv")
        } else {
            src.as_ref().expect("qkv").with_empty_tape()
        };
        x.slice((.., .., at..at + head_dim))
    };
    let mut outs = Vec::with_capacity(heads);
    for h in 0..heads {
        let q = cols(h * head_dim);
        let k = cols(w + h * head_dim);
        let v = cols(2 * w + h * head_dim);
        let mut scores = q.matmul(k.permute::<_, Axes3<0, 2, 1>>()) * scale;
        if causal {
            let mask = causal_neg(scores.device(), b, s);
            scores = scores + mask;
        }
        outs.push(scores.softmax::<Axis<2>>().matmul(v));
    }
    let out = concat_cols(outs);
    match gates {
        None => out,
        Some(g) => {
            let g = g
                .broadcast_like::<_, Axis<3>>(&(b, s, heads, head_dim))
                .reshape_like(&(b, s, w));
            out * g
        }
    }
}

/// See `Backend::norm`.
pub fn norm<D: Backend, T: Tape<f32, D>>(
    x: T3<D, T>,
    center: bool,
    gain: T1<D, T>,
    bias: Option<T1<D, T>>,
) -> T3<D, T> {
    let shape = *x.shape();
    let y = if center {
        x.normalize::<Axis<2>>(super::NORM_EPS)
    } else {
        let ms = x.with_empty_tape().square().mean::<_, Axis<2>>();
        let inv = (ms + super::NORM_EPS).sqrt().recip();
        x * inv.broadcast_like::<_, Axis<2>>(&shape)
    };
    let y = y * gain.broadcast_like::<_, Axes2<0, 1>>(&shape);
    match bias {
        Some(b) => y + b.broadcast_like::<_, Axes2<0, 1>>(&shape),
        None => y,
    }
}

/// Concatenates along the last axis.
pub fn concat_cols<D: Backend, T: Tape<f32, D>>(parts: Vec<T3<D, T>>) -> T3<D, T> {
    let mut it = parts.into_iter();
    let first = it.next().expect("at least one part");
    it.fold(first, |acc, p| (acc, p).concat_along(Axis::<2>))
}

/// See `Backend::pack_columns`.
pub fn pack_columns<D: Backend, T: Tape<f32, D>>(parts: Vec<T2<D, T>>) -> T2<D, T> {
    let mut it = parts.into_iter();
    let first = it.next().expect("at least one part");
    it.fold(first, |acc, p| (acc, p).concat_along(Axis::<1>))
}

/// See `Backend::gather_rows`.
pub fn gather_rows<D: Backend, T: Tape<f32, D>>(x: T2<D, T>, idx: &[usize]) -> T2<D, T> {
    let idx = x.device().tensor_from_vec(idx.to_vec(), (idx.len(),));
    x.gather(idx)
}

/// See `Backend::combine_rows`: each part (scaled row-wise by its gates)
/// is stacked with a zero row under the others, and output row o gathers
/// its k-th pick's row for k = 0, 1, …, the zero row where it has fewer;
/// the gathers' backward is the scatter-add.
pub fn combine_rows<D: Backend, T: Tape<f32, D>>(
    parts: Vec<T2<D, T>>,
    picks: &[Pick],
    n: usize,
    gates: Option<T1<D, T>>,
) -> T2<D, T> {
    let dev = parts.first().expect("at least one part").device().clone();
    let d = parts[0].shape().1;
    let mut offset = Vec::with_capacity(parts.len());
    let mut rows = 0;
    for p in &parts {
        offset.push(rows);
        rows += p.shape().0;
    }
    let mut gates = gates;
    let last = parts.len() - 1;
    let mut stacked: Option<T2<D, T>> = None;
    for (i, y) in parts.into_iter().enumerate() {
        let m = y.shape().0;
        let y = match gates.take() {
            Some(g) => {
                // The part's gate of each row, in row order.
                let mut idx = vec![0usize; m];
                for p in picks.iter().filter(|p| p.part == i) {
                    idx[p.row] = p.gate;
                }
                let gi = if i == last {
                    g.gather(dev.tensor_from_vec(idx, (m,)))
                } else {
                    let gi = g.with_empty_tape().gather(dev.tensor_from_vec(idx, (m,)));
                    gates = Some(g);
                    gi
                };
                y * gi.broadcast_like::<_, Axis<1>>(&(m, d))
            }
            None => y,
        };
        stacked = Some(match stacked {
            None => y,
            Some(acc) => (acc, y).concat_along(Axis::<0>),
        });
    }
    let zero = dev.zeros_like(&(1, d)).retaped::<T>();
    let stacked = (stacked.expect("a part"), zero).concat_along(Axis::<0>);
    let mut slots: Vec<Vec<usize>> = vec![Vec::new(); n];
    for p in picks {
        slots[p.out].push(offset[p.part] + p.row);
    }
    let depth = slots.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut src = Some(stacked);
    let mut acc: Option<T2<D, T>> = None;
    for k in 0..depth {
        let idx: Vec<usize> = slots
            .iter()
            .map(|s| s.get(k).copied().unwrap_or(rows))
            .collect();
        let from = if k + 1 == depth {
            src.take().expect("stacked")
        } else {
            src.as_ref().expect("stacked").with_empty_tape()
        };
        let y = from.gather(dev.tensor_from_vec(idx, (n,)));
        acc = Some(match acc {
            Some(a) => a + y,
            None => y,
        });
    }
    acc.expect("depth ≥ 1")
}

/// See `Backend::weighted_nll`.
pub fn weighted_nll<D: Backend, T: Tape<f32, D>>(logits: T3<D, T>, w: Vec<f32>) -> T0<D, T> {
    let shape = *logits.shape();
    let w = logits.device().tensor_from_vec(w, shape);
    -(logits.log_softmax::<Axis<2>>() * w).sum::<(), _>()
}
