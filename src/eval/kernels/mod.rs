//! Device-specific kernels behind one trait. Every op has a composition of
//! dfdx ops as its default (`composite`), which is what the CUDA device
//! runs; the CPU overrides them with fused kernels of its own, each one
//! tape entry with a hand-written backward.
//!
//! Why: profiling the 2-layer transformer bench (perf, one thread) put a
//! third of the step in libm's scalar `tanhf`/`expm1f` inside dfdx's GELU,
//! and after that most of the non-GEMM time in the dozen small broadcast
//! kernels (and their backward passes) that dfdx's attention, softmax and
//! normalisation are made of.

mod attention;
pub mod composite;
mod fastmath;
mod mlp;
mod norm;

use crate::arch::Activation;
use dfdx::prelude::*;

pub use norm::EPS as NORM_EPS;

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
    fn attention_core<T: Tape<f32, Self>>(
        qkv: T3<Self, T>,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> T3<Self, T> {
        composite::attention_core(qkv, heads, head_dim, causal)
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

    /// (n × d): row o is Σ g·parts[part][row] over the picks with out = o,
    /// g = gates[gate] (1 without gates); rows no pick names are zero. How
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

/// A CPU tensor's elements in logical order (one memcpy: dfdx keeps a
/// tensor's buffer private).
fn host<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut v = vec![0.0f32; t.shape().num_elements()];
    t.copy_into(&mut v);
    v
}

impl Backend for Cpu {
    /// Off: the fused kernels' outputs are allocated outside dfdx's cache,
    /// which then kept every one of them when freed, so each step faulted
    /// in fresh pages (the reference transformer's step went from 25 ms to
    /// 15 ms without it; the allocator reuses the memory itself).
    const KEEP_FREED_BUFFERS: bool = false;

    fn pack_columns<T: Tape<f32, Self>>(parts: Vec<T2<Self, T>>) -> T2<Self, T> {
        let mut tape = T::default();
        let mut ghosts = Vec::with_capacity(parts.len());
        let mut hosts = Vec::with_capacity(parts.len());
        let first = parts.first().expect("at least one part");
        let (dev, rows) = (first.device().clone(), first.shape().0);
        for p in parts {
            let (p, t) = p.split_tape();
            tape = tape.merge(t);
            assert_eq!(p.shape().0, rows, "packed matrices share their rows");
            hosts.push((host(&p), p.shape().1));
            ghosts.push(p.ghost());
        }
        let width: usize = hosts.iter().map(|h| h.1).sum();
        let mut packed = vec![0.0f32; rows * width];
        let mut at = 0;
        for (h, c) in &hosts {
            for (dst, src) in packed.chunks_exact_mut(width).zip(h.chunks_exact(*c)) {
                dst[at..at + c].copy_from_slice(src);
            }
            at += c;
        }
        let out = dev.tensor_from_vec(packed, (rows, width));
        let out_ghost = out.ghost();
        let cols: Vec<usize> = hosts.iter().map(|h| h.1).collect();
        drop(hosts);
        tape.add_backward_op(move |grads| {
            let go = grads.get_or_alloc_mut(&out_ghost)?.to_vec();
            let mut at = 0;
            for (g, c) in ghosts.iter().zip(&cols) {
                let dst = grads.get_or_alloc_mut(g)?;
                for (d, src) in dst.chunks_exact_mut(*c).zip(go.chunks_exact(width)) {
                    d.iter_mut()
                        .zip(&src[at..at + c])
                        .for_each(|(a, &b)| *a += b);
                }
                at += c;
            }
            Ok(())
        });
        out.put_tape(tape)
    }

    fn gelu<S: Shape, T: Tape<f32, Self>>(x: Tensor<S, f32, Self, T>) -> Tensor<S, f32, Self, T> {
        let (x, mut tape) = x.contiguous().split_tape();
        let xs = host(&x);
        let mut out = vec![0.0f32; xs.len()];
        fastmath::gelu_forward(&xs, &mut out);
        let out = x.device().tensor_from_vec(out, *x.shape());
        let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let og = grads.get_or_alloc_mut(&out_ghost)?.to_vec();
            fastmath::gelu_backward(&xs, &og, grads.get_or_alloc_mut(&x_ghost)?);
            Ok(())
        });
        out.put_tape(tape)
    }

    fn mlp<T: Tape<f32, Self>>(
        x: T3<Self, T>,
        w1: T2<Self, T>,
        w2: T2<Self, T>,
        w3: Option<T2<Self, T>>,
        act: Activation,
    ) -> T3<Self, T> {
        let (x, mut tape) = x.contiguous().split_tape();
        let shape = *x.shape();
        let (rows, d, h) = (shape.0 * shape.1, shape.2, w1.shape().1);
        let mut weight = |w: T2<Self, T>| {
            let (w, t) = w.split_tape();
            tape = std::mem::take(&mut tape).merge(t);
            (host(&w), w.ghost())
        };
        let (w1, g1) = weight(w1);
        let (w2, g2) = weight(w2);
        let (w3, g3) = w3.map(&mut weight).unzip();
        let xs = host(&x);
        let w = mlp::Weights {
            w1,
            w2,
            w3,
            d,
            h,
            act,
        };
        let (y, saved) = mlp::forward(&xs, rows, &w);
        let out = x.device().tensor_from_vec(y, shape);
        let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let dy = grads.get_or_alloc_mut(&out_ghost)?.to_vec();
            let dx = grads.get_or_alloc_mut(&x_ghost)?;
            let (dw1, dw2, dw3) = mlp::backward(&xs, rows, &w, saved, &dy, dx);
            let mut add = |g, dw: Vec<f32>| -> Result<(), CpuError> {
                let buf = grads.get_or_alloc_mut(g)?;
                buf.iter_mut().zip(&dw).for_each(|(a, &b)| *a += b);
                Ok(())
            };
            add(&g1, dw1)?;
            add(&g2, dw2)?;
            if let (Some(g3), Some(dw3)) = (&g3, dw3) {
                add(g3, dw3)?;
            }
            Ok(())
        });
        out.put_tape(tape)
    }

    fn weighted_nll<T: Tape<f32, Self>>(logits: T3<Self, T>, w: Vec<f32>) -> T0<Self, T> {
        let (z, mut tape) = logits.contiguous().split_tape();
        let v = z.shape().2;
        let zs = host(&z);
        assert_eq!(w.len(), zs.len(), "one weight per logit");
        // Softmax rows, kept for the backward pass.
        let mut p = zs;
        let mut loss = 0.0f64;
        for (row, wr) in p.chunks_exact_mut(v).zip(w.chunks_exact(v)) {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
            let sum: f32 = row.iter().map(|&x| (x - m).exp()).sum();
            let lse = m + sum.ln();
            loss -= wr
                .iter()
                .zip(row.iter())
                .map(|(&w, &x)| (w * (x - lse)) as f64)
                .sum::<f64>();
            row.iter_mut().for_each(|x| *x = (*x - lse).exp());
        }
        let out = z.device().tensor_from_vec(vec![loss as f32], ());
        let (z_ghost, out_ghost) = (z.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let g = grads.get_or_alloc_mut(&out_ghost)?[0];
            let dz = grads.get_or_alloc_mut(&z_ghost)?;
            let rows = dz
                .chunks_exact_mut(v)
                .zip(p.chunks_exact(v))
                .zip(w.chunks_exact(v));
            for ((dr, pr), wr) in rows {
                let total: f32 = wr.iter().sum();
                for ((d, &p), &w) in dr.iter_mut().zip(pr).zip(wr) {
                    *d += g * (total * p - w);
                }
            }
            Ok(())
        });
        out.put_tape(tape)
    }

    fn gather_rows<T: Tape<f32, Self>>(x: T2<Self, T>, idx: &[usize]) -> T2<Self, T> {
        let (x, mut tape) = x.contiguous().split_tape();
        let (n, d) = *x.shape();
        assert!(idx.iter().all(|&i| i < n), "row index out of range");
        let xs = host(&x);
        let mut out = vec![0.0f32; idx.len() * d];
        for (o, &i) in out.chunks_exact_mut(d).zip(idx) {
            o.copy_from_slice(&xs[i * d..(i + 1) * d]);
        }
        drop(xs);
        let out = x.device().tensor_from_vec(out, (idx.len(), d));
        let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
        let idx = idx.to_vec();
        tape.add_backward_op(move |grads| {
            let go = grads.get_or_alloc_mut(&out_ghost)?.to_vec();
            let dx = grads.get_or_alloc_mut(&x_ghost)?;
            for (g, &i) in go.chunks_exact(d).zip(&idx) {
                dx[i * d..(i + 1) * d]
                    .iter_mut()
                    .zip(g)
                    .for_each(|(a, &b)| *a += b);
            }
            Ok(())
        });
        out.put_tape(tape)
    }

    fn combine_rows<T: Tape<f32, Self>>(
        parts: Vec<T2<Self, T>>,
        picks: &[Pick],
        n: usize,
        gates: Option<T1<Self, T>>,
    ) -> T2<Self, T> {
        let first = parts.first().expect("at least one part");
        let (dev, d) = (first.device().clone(), first.shape().1);
        let mut tape = T::default();
        let (mut ys, mut ghosts) = (Vec::new(), Vec::new());
        for p in parts {
            let (p, t) = p.contiguous().split_tape();
            tape = tape.merge(t);
            assert_eq!(p.shape().1, d, "combined rows share their width");
            ys.push(host(&p));
            ghosts.push(p.ghost());
        }
        let gates = gates.map(|g| {
            let (g, t) = g.split_tape();
            tape = std::mem::take(&mut tape).merge(t);
            (host(&g), g.ghost())
        });
        let gate = |p: &Pick| gates.as_ref().map_or(1.0, |g| g.0[p.gate]);
        let mut out = vec![0.0f32; n * d];
        for p in picks {
            let (g, src) = (gate(p), &ys[p.part][p.row * d..(p.row + 1) * d]);
            out[p.out * d..(p.out + 1) * d]
                .iter_mut()
                .zip(src)
                .for_each(|(o, &v)| *o += g * v);
        }
        let out = dev.tensor_from_vec(out, (n, d));
        let out_ghost = out.ghost();
        let picks = picks.to_vec();
        tape.add_backward_op(move |grads| {
            let go = grads.get_or_alloc_mut(&out_ghost)?.to_vec();
            let row = |o: usize| &go[o * d..(o + 1) * d];
            for (part, ghost) in ghosts.iter().enumerate() {
                let dy = grads.get_or_alloc_mut(ghost)?;
                for p in picks.iter().filter(|p| p.part == part) {
                    let g = gates.as_ref().map_or(1.0, |g| g.0[p.gate]);
                    dy[p.row * d..(p.row + 1) * d]
                        .iter_mut()
                        .zip(row(p.out))
                        .for_each(|(a, &b)| *a += g * b);
                }
            }
            if let Some((_, gate_ghost)) = &gates {
                let dg = grads.get_or_alloc_mut(gate_ghost)?;
                for p in &picks {
                    let y = &ys[p.part][p.row * d..(p.row + 1) * d];
                    dg[p.gate] += y.iter().zip(row(p.out)).map(|(a, b)| a * b).sum::<f32>();
                }
            }
            Ok(())
        });
        out.put_tape(tape)
    }

    fn attention_core<T: Tape<f32, Self>>(
        qkv: T3<Self, T>,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> T3<Self, T> {
        let (qkv, mut tape) = qkv.contiguous().split_tape();
        let (batch, seq, cols) = *qkv.shape();
        assert_eq!(cols, 3 * heads * head_dim, "packed q, k, v");
        let d = attention::Dims {
            batch,
            seq,
            heads,
            head_dim,
            causal,
        };
        let x = host(&qkv);
        let mut out = vec![0.0f32; batch * seq * heads * head_dim];
        let mut probs = vec![0.0f32; if T::OWNS_TAPE { d.probs_len() } else { 0 }];
        let keep = T::OWNS_TAPE.then_some(&mut probs[..]);
        attention::forward(&x, &d, &mut out, keep);
        let out = qkv
            .device()
            .tensor_from_vec(out, (batch, seq, heads * head_dim));
        let (in_ghost, out_ghost) = (qkv.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let go = grads.get_or_alloc_mut(&out_ghost)?.to_vec();
            let dx = grads.get_or_alloc_mut(&in_ghost)?;
            attention::backward(&x, &probs, &go, &d, dx);
            Ok(())
        });
        out.put_tape(tape)
    }

    fn norm<T: Tape<f32, Self>>(
        x: T3<Self, T>,
        center: bool,
        gain: T1<Self, T>,
        bias: Option<T1<Self, T>>,
    ) -> T3<Self, T> {
        let (x, tx) = x.contiguous().split_tape();
        let (gain, tg) = gain.split_tape();
        let mut tape = tx.merge(tg);
        let bias = bias.map(|b| {
            let (b, tb) = b.split_tape();
            tape = std::mem::take(&mut tape).merge(tb);
            b
        });
        let shape = *x.shape();
        let cols = shape.2;
        let rows = shape.0 * shape.1;
        let xs = host(&x);
        let gs = host(&gain);
        let bs = bias.as_ref().map(host);
        let mut y = vec![0.0f32; rows * cols];
        let (mut xhat, mut rstd) = if T::OWNS_TAPE {
            (vec![0.0f32; rows * cols], vec![0.0f32; rows])
        } else {
            (Vec::new(), Vec::new())
        };
        let saved = T::OWNS_TAPE.then_some((&mut xhat[..], &mut rstd[..]));
        norm::forward(&xs, cols, center, &gs, bs.as_deref(), &mut y, saved);
        drop(xs);
        let out = x.device().tensor_from_vec(y, shape);
        let (x_ghost, g_ghost, out_ghost) = (x.ghost(), gain.ghost(), out.ghost());
        let b_ghost = bias.as_ref().map(|b| b.ghost());
        tape.add_backward_op(move |grads| {
            let dy = grads.get_or_alloc_mut(&out_ghost)?.to_vec();
            let mut dgain = vec![0.0f32; cols];
            let mut dbias = b_ghost.as_ref().map(|_| vec![0.0f32; cols]);
            let dx = grads.get_or_alloc_mut(&x_ghost)?;
            norm::backward(
                &dy,
                &xhat,
                &rstd,
                cols,
                center,
                &gs,
                dx,
                &mut dgain,
                dbias.as_deref_mut(),
            );
            let g = grads.get_or_alloc_mut(&g_ghost)?;
            g.iter_mut().zip(&dgain).for_each(|(a, &b)| *a += b);
            if let (Some(bg), Some(db)) = (b_ghost, dbias) {
                let b = grads.get_or_alloc_mut(&bg)?;
                b.iter_mut().zip(&db).for_each(|(a, &v)| *a += v);
            }
            Ok(())
        });
        out.put_tape(tape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    type Owned = OwnedTape<f32, Cpu>;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-1.5f32..1.5)).collect()
    }

    fn close(what: &str, a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(y.abs()) + 1e-5,
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// Output and the gradients of Σ out·R for `leaves` (leaf tensors,
    /// traced), running `f` on them.
    fn run3(
        leaves: &[Tensor<(usize,), f32, Cpu>],
        f: impl Fn(Vec<Tensor<(usize,), f32, Cpu, Owned>>) -> T3<Cpu, Owned>,
    ) -> (Vec<f32>, Vec<Vec<f32>>) {
        let traced = leaves.iter().map(|t| t.retaped::<Owned>()).collect();
        let out = f(traced);
        let r = random(out.shape().num_elements(), 99);
        let r = out.device().tensor_from_vec(r, *out.shape());
        let value = out.with_empty_tape().as_vec();
        let mut grads = (out * r).sum::<(), _>().backward();
        let g = leaves
            .iter()
            .map(|t| {
                grads.try_alloc_for(t).unwrap();
                grads.get(t).as_vec()
            })
            .collect::<Vec<_>>();
        (value, g)
    }

    #[test]
    fn cpu_attention_matches_the_composition() {
        let dev = Cpu::default();
        for (b, s, heads, hd, causal) in
            [(2, 5, 3, 4, true), (3, 7, 2, 3, false), (1, 1, 1, 2, true)]
        {
            let x =
                dev.tensor_from_vec(random(b * s * 3 * heads * hd, 1), (b * s * 3 * heads * hd,));
            let shape = (b, s, 3 * heads * hd);
            let fused = run3(std::slice::from_ref(&x), |v| {
                <Cpu as Backend>::attention_core(
                    v.into_iter().next().unwrap().reshape_like(&shape),
                    heads,
                    hd,
                    causal,
                )
            });
            let reference = run3(std::slice::from_ref(&x), |v| {
                composite::attention_core(
                    v.into_iter().next().unwrap().reshape_like(&shape),
                    heads,
                    hd,
                    causal,
                )
            });
            close("attention", &fused.0, &reference.0);
            close("d attention", &fused.1[0], &reference.1[0]);
        }
    }

    #[test]
    fn cpu_norms_match_the_composition() {
        let dev = Cpu::default();
        let (b, s, c) = (2, 3, 6);
        let x = dev.tensor_from_vec(random(b * s * c, 2), (b * s * c,));
        let g = dev.tensor_from_vec(random(c, 3), (c,));
        let bias = dev.tensor_from_vec(random(c, 4), (c,));
        for center in [true, false] {
            for with_bias in [true, false] {
                let leaves = [x.clone(), g.clone(), bias.clone()];
                let args = |v: Vec<Tensor<(usize,), f32, Cpu, Owned>>| {
                    let mut v = v.into_iter();
                    let x = v.next().unwrap().reshape_like(&(b, s, c));
                    let g = v.next().unwrap();
                    let bias = v.next().unwrap();
                    (x, g, with_bias.then_some(bias))
                };
                let fused = run3(&leaves, |v| {
                    let (x, g, bias) = args(v);
                    <Cpu as Backend>::norm(x, center, g, bias)
                });
                let reference = run3(&leaves, |v| {
                    let (x, g, bias) = args(v);
                    composite::norm(x, center, g, bias)
                });
                close("norm", &fused.0, &reference.0);
                for (a, r) in fused.1.iter().zip(&reference.1) {
                    close("d norm", a, r);
                }
            }
        }
    }

    #[test]
    fn cpu_packing_matches_the_composition() {
        let dev = Cpu::default();
        let widths = [3, 1, 4];
        let leaves: Vec<_> = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| dev.tensor_from_vec(random(5 * w, 10 + i as u64), (5 * w,)))
            .collect();
        let parts = |v: Vec<Tensor<(usize,), f32, Cpu, Owned>>| {
            v.into_iter()
                .zip(widths)
                .map(|(t, w)| t.reshape_like(&(5, w)))
                .collect::<Vec<_>>()
        };
        let fused = run3(&leaves, |v| {
            <Cpu as Backend>::pack_columns(parts(v)).reshape_like(&(1, 5, 8))
        });
        let reference = run3(&leaves, |v| {
            composite::pack_columns(parts(v)).reshape_like(&(1, 5, 8))
        });
        close("packed", &fused.0, &reference.0);
        for (a, r) in fused.1.iter().zip(&reference.1) {
            close("d packed", a, r);
        }
    }

    #[test]
    fn cpu_row_gather_and_combine_match_the_composition() {
        let dev = Cpu::default();
        let d = 3;
        // x (5 × d); two parts of 3 and 2 rows gathered from it; output of
        // 4 rows: row 0 takes two picks, row 2 none.
        let leaves = vec![
            dev.tensor_from_vec(random(5 * d, 20), (5 * d,)),
            dev.tensor_from_vec(random(8, 21), (8,)),
        ];
        let picks = [
            Pick {
                out: 0,
                part: 0,
                row: 0,
                gate: 1,
            },
            Pick {
                out: 1,
                part: 0,
                row: 1,
                gate: 2,
            },
            Pick {
                out: 3,
                part: 0,
                row: 2,
                gate: 7,
            },
            Pick {
                out: 0,
                part: 1,
                row: 1,
                gate: 4,
            },
            Pick {
                out: 1,
                part: 1,
                row: 0,
                gate: 0,
            },
        ];
        for gated in [true, false] {
            let go = |cpu: bool| {
                run3(&leaves, |v| {
                    let mut v = v.into_iter();
                    let x = v.next().unwrap().reshape_like(&(5, d));
                    let g = v.next().unwrap();
                    let (a, b) = (x.with_empty_tape(), x);
                    let out = if cpu {
                        let parts = vec![
                            <Cpu as Backend>::gather_rows(a, &[4, 0, 2]),
                            <Cpu as Backend>::gather_rows(b, &[1, 1]),
                        ];
                        <Cpu as Backend>::combine_rows(parts, &picks, 4, gated.then_some(g))
                    } else {
                        let parts = vec![
                            composite::gather_rows(a, &[4, 0, 2]),
                            composite::gather_rows(b, &[1, 1]),
                        ];
                        composite::combine_rows(parts, &picks, 4, gated.then_some(g))
                    };
                    out.reshape_like(&(1, 4, d))
                })
            };
            let (fused, reference) = (go(true), go(false));
            close("combined", &fused.0, &reference.0);
            for (a, r) in fused.1.iter().zip(&reference.1) {
                close("d combined", a, r);
            }
            // Output row 2 has no pick.
            assert!(fused.0[2 * d..3 * d].iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn cpu_cross_entropy_matches_the_composition() {
        let dev = Cpu::default();
        let (b, s, v) = (2, 3, 5);
        let leaves = [dev.tensor_from_vec(random(b * s * v, 30), (b * s * v,))];
        let mut w = vec![0.0f32; b * s * v];
        for (i, t) in [(0, 2), (1, 4), (3, 0), (5, 1)] {
            w[i * v + t] = 0.25;
        }
        let go = |cpu: bool| {
            run3(&leaves, |l| {
                let z = l.into_iter().next().unwrap().reshape_like(&(b, s, v));
                let loss = if cpu {
                    <Cpu as Backend>::weighted_nll(z, w.clone())
                } else {
                    composite::weighted_nll(z, w.clone())
                };
                loss.broadcast_like::<_, Axes3<0, 1, 2>>(&(1, 1, 1))
            })
        };
        let (fused, reference) = (go(true), go(false));
        close("loss", &fused.0, &reference.0);
        close("d loss", &fused.1[0], &reference.1[0]);
    }

    #[test]
    fn cpu_mlp_matches_the_composition() {
        let dev = Cpu::default();
        let (b, r, d, h) = (2, 5, 4, 6);
        let leaves = [
            dev.tensor_from_vec(random(b * r * d, 40), (b * r * d,)),
            dev.tensor_from_vec(random(d * h, 41), (d * h,)),
            dev.tensor_from_vec(random(h * d, 42), (h * d,)),
            dev.tensor_from_vec(random(d * h, 43), (d * h,)),
        ];
        let acts = [
            Activation::Relu,
            Activation::Gelu,
            Activation::Silu,
            Activation::LeakyRelu,
        ];
        for act in acts {
            for gated in [false, true] {
                let go = |cpu: bool| {
                    run3(&leaves, |v| {
                        let mut v = v.into_iter();
                        let x = v.next().unwrap().reshape_like(&(b, r, d));
                        let w1 = v.next().unwrap().reshape_like(&(d, h));
                        let w2 = v.next().unwrap().reshape_like(&(h, d));
                        let w3 = v.next().unwrap().reshape_like(&(d, h));
                        let w3 = gated.then_some(w3);
                        if cpu {
                            <Cpu as Backend>::mlp(x, w1, w2, w3, act)
                        } else {
                            composite::mlp(x, w1, w2, w3, act)
                        }
                    })
                };
                let (fused, reference) = (go(true), go(false));
                close(&format!("{act:?} mlp"), &fused.0, &reference.0);
                for (a, r) in fused.1.iter().zip(&reference.1) {
                    close(&format!("d {act:?} mlp"), a, r);
                }
            }
        }
    }
}
