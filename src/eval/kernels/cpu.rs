//! The CPU's fused kernels: each reads its inputs to the host, computes
//! with the slice kernels of the sibling modules, and records one backward
//! op that writes every input's gradient.

use super::{attention, fastmath, mlp, norm, Backend, Pick, T0, T1, T2, T3};
use crate::arch::Activation;
use dfdx::prelude::*;

/// A copy of a contiguous CPU tensor's elements, in logical order (one
/// memcpy, into memory that is not zero-filled first), for a backward pass
/// to keep.
fn host<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    t.cpu_slice().to_vec()
}

/// `t` without its tape, which joins `tape`: a fused op with several
/// inputs records its one backward op on all of their history.
fn detach<S: Shape, T: Tape<f32, Cpu>>(
    t: Tensor<S, f32, Cpu, T>,
    tape: &mut T,
) -> Tensor<S, f32, Cpu> {
    let (t, own) = t.split_tape();
    *tape = std::mem::take(tape).merge(own);
    t
}

/// y += a·x (gradient accumulation, gated rows).
fn add_scaled(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
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
            let p = detach(p, &mut tape);
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
                    add_scaled(d, 1.0, &src[at..at + c]);
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
            let w = detach(w, &mut tape);
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
            add_scaled(grads.get_or_alloc_mut(&g1)?, 1.0, &dw1);
            add_scaled(grads.get_or_alloc_mut(&g2)?, 1.0, &dw2);
            if let (Some(g3), Some(dw3)) = (&g3, dw3) {
                add_scaled(grads.get_or_alloc_mut(g3)?, 1.0, &dw3);
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
                add_scaled(&mut dx[i * d..(i + 1) * d], 1.0, g);
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
            let p = detach(p.contiguous(), &mut tape);
            assert_eq!(p.shape().1, d, "combined rows share their width");
            ys.push(host(&p));
            ghosts.push(p.ghost());
        }
        let (gates, gate_ghost) = gates
            .map(|g| {
                let g = detach(g, &mut tape);
                (host(&g), g.ghost())
            })
            .unzip();
        // A pick's gate value (1 without gates).
        fn gate(gates: &Option<Vec<f32>>, p: &Pick) -> f32 {
            gates.as_ref().map_or(1.0, |g| g[p.gate])
        }
        let mut out = vec![0.0f32; n * d];
        for p in picks {
            let src = &ys[p.part][p.row * d..(p.row + 1) * d];
            add_scaled(&mut out[p.out * d..(p.out + 1) * d], gate(&gates, p), src);
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
                    add_scaled(
                        &mut dy[p.row * d..(p.row + 1) * d],
                        gate(&gates, p),
                        row(p.out),
                    );
                }
            }
            if let Some(gate_ghost) = &gate_ghost {
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
        gates: Option<T3<Self, T>>,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> T3<Self, T> {
        let (qkv, mut tape) = qkv.contiguous().split_tape();
        let gates = gates.map(|g| detach(g.contiguous(), &mut tape));
        let (batch, seq, cols) = *qkv.shape();
        assert_eq!(cols, 3 * heads * head_dim, "packed q, k, v");
        if let Some(g) = &gates {
            assert_eq!(*g.shape(), (batch, seq, heads), "a gate per head");
        }
        let d = attention::Dims {
            batch,
            seq,
            heads,
            head_dim,
            causal,
        };
        let x = host(&qkv);
        let g = gates.as_ref().map(host);
        let width = heads * head_dim;
        let mut out = vec![0.0f32; batch * seq * width];
        let mut probs = vec![0.0f32; if T::OWNS_TAPE { d.probs_len() } else { 0 }];
        let keep_plain = T::OWNS_TAPE && gates.is_some();
        let mut plain = vec![0.0f32; if keep_plain { out.len() } else { 0 }];
        attention::forward(
            &x,
            g.as_deref(),
            &d,
            &mut out,
            T::OWNS_TAPE.then_some(&mut probs[..]),
            keep_plain.then_some(&mut plain[..]),
        );
        let out = qkv.device().tensor_from_vec(out, (batch, seq, width));
        let (in_ghost, out_ghost) = (qkv.ghost(), out.ghost());
        let gate_ghost = gates.as_ref().map(|g| g.ghost());
        tape.add_backward_op(move |grads| {
            let go = grads.get_or_alloc_mut(&out_ghost)?.to_vec();
            if let Some(ghost) = &gate_ghost {
                attention::gate_grads(&go, &plain, &d, grads.get_or_alloc_mut(ghost)?);
            }
            let dx = grads.get_or_alloc_mut(&in_ghost)?;
            attention::backward(&x, g.as_deref(), &probs, &go, &d, dx);
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
        let (x, mut tape) = x.contiguous().split_tape();
        let gain = detach(gain, &mut tape);
        let bias = bias.map(|b| detach(b, &mut tape));
        let shape = *x.shape();
        let cols = shape.2;
        let rows = shape.0 * shape.1;
        let gs = host(&gain);
        let bs = bias.as_ref().map(host);
        let mut y = vec![0.0f32; rows * cols];
        let (mut xhat, mut rstd) = if T::OWNS_TAPE {
            (vec![0.0f32; rows * cols], vec![0.0f32; rows])
        } else {
            (Vec::new(), Vec::new())
        };
        let saved = T::OWNS_TAPE.then_some((&mut xhat[..], &mut rstd[..]));
        norm::forward(
            x.cpu_slice(),
            cols,
            center,
            &gs,
            bs.as_deref(),
            &mut y,
            saved,
        );
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
            add_scaled(grads.get_or_alloc_mut(&g_ghost)?, 1.0, &dgain);
            if let (Some(bg), Some(db)) = (b_ghost, dbias) {
                add_scaled(grads.get_or_alloc_mut(&bg)?, 1.0, &db);
            }
            Ok(())
        });
        out.put_tape(tape)
    }
}
