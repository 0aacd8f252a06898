//! Multi-head scaled dot-product attention on the CPU, forward and backward
//! in one pass each over packed projections.
//!
//! Layout: `qkv` is (batch, seq, 3·H·hd) row-major with every head's query
//! in columns [h·hd, (h+1)·hd), keys after all queries, values after all
//! keys; the output is (batch, seq, H·hd) with head h in the same columns
//! as its query. Every inner loop is an axpy over a contiguous row (keys and
//! values are transposed per head first), so it vectorises without
//! reassociating a float reduction.

use super::fastmath::exp_fast;
use multiversion::multiversion;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub causal: bool,
}

impl Dims {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    /// Keys a query at position i attends to.
    fn keys(&self, i: usize) -> usize {
        if self.causal {
            i + 1
        } else {
            self.seq
        }
    }

    /// Offsets of query, key and value of head h at (b, t) in `qkv`.
    fn qkv_at(&self, b: usize, t: usize, h: usize) -> (usize, usize, usize) {
        let w = self.width();
        let row = (b * self.seq + t) * 3 * w + h * self.head_dim;
        (row, row + w, row + 2 * w)
    }

    fn out_at(&self, b: usize, t: usize, h: usize) -> usize {
        (b * self.seq + t) * self.width() + h * self.head_dim
    }

    /// Head h's gate at (b, t) in (batch, seq, heads) gates; 1 without.
    fn gate(&self, gates: Option<&[f32]>, b: usize, t: usize, h: usize) -> f32 {
        gates.map_or(1.0, |g| g[(b * self.seq + t) * self.heads + h])
    }

    /// Elements of the probability tensor the backward pass needs.
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.seq * self.seq
    }

    fn probs_at(&self, b: usize, h: usize, i: usize) -> usize {
        ((b * self.heads + h) * self.seq + i) * self.seq
    }

    /// Elements of `n` batches in `qkv`, the gates, the output (and its
    /// gradient) and the probabilities.
    fn part_lens(&self, n: usize) -> [usize; 4] {
        let rows = n * self.seq;
        [
            rows * 3 * self.width(),
            rows * self.heads,
            rows * self.width(),
            n * self.heads * self.seq * self.seq,
        ]
    }

    /// These dims for the batches whose output has `out_len` elements.
    fn part(&self, out_len: usize) -> Dims {
        Dims {
            batch: out_len / (self.seq * self.width()),
            ..*self
        }
    }
}

/// Multiply-adds of one attention pass (scores and the weighted sum,
/// per head and query) from which its batches are split over threads;
/// set between the bench's tiny model (7·10⁴, kept on one thread) and its
/// medium one (2·10⁶, split), not tuned finer.
const PARALLEL_WORK: usize = 1 << 18;

/// Batches per part when a pass over `d` is split over the threads of
/// the pool it runs in (each part is whole batches, so every part writes
/// its own contiguous rows); `None` to run it on this thread.
fn batches_per_part(d: &Dims) -> Option<usize> {
    let work = d.batch * d.heads * d.seq * d.seq * d.head_dim;
    if d.batch < 2 || !super::split_over_threads(work, PARALLEL_WORK) {
        return None;
    }
    Some(d.batch.div_ceil(rayon::current_num_threads().min(d.batch)))
}

/// `x` in parts of `len` (one per part of `d`'s batches, `n` each), or
/// `None` for each part.
fn part_chunks<'a>(
    x: Option<&'a [f32]>,
    len: usize,
    d: &Dims,
    n: usize,
) -> Box<dyn Iterator<Item = Option<&'a [f32]>> + 'a> {
    match x {
        Some(x) => Box::new(x.chunks(len).map(Some)),
        None => Box::new(std::iter::repeat_n(None, d.batch.div_ceil(n))),
    }
}

/// [`part_chunks`] of a slice written to.
fn part_chunks_mut<'a>(
    x: Option<&'a mut [f32]>,
    len: usize,
    d: &Dims,
    n: usize,
) -> Box<dyn Iterator<Item = Option<&'a mut [f32]>> + 'a> {
    match x {
        Some(x) => Box::new(x.chunks_mut(len).map(Some)),
        None => Box::new(std::iter::repeat_with(|| None).take(d.batch.div_ceil(n))),
    }
}

/// Vector lanes the inner loops are written in: rows are padded to a
/// multiple of this so every loop is whole `[f32; LANES]` blocks, which the
/// compiler turns into vector instructions (a plain loop over a short,
/// variable length ran mostly in its scalar remainder).
const LANES: usize = 8;

fn padded(n: usize) -> usize {
    n.div_ceil(LANES) * LANES
}

/// y = Σ_r a[r]·x[r·stride ..][..y.len()] (y's length a multiple of
/// `LANES`), up to four blocks of y at a time so the sums stay in
/// registers while the rows stream past.
#[inline(always)]
fn combine(y: &mut [f32], a: &[f32], x: &[f32], stride: usize) {
    let mut at = 0;
    while at < y.len() {
        let blocks = ((y.len() - at) / LANES).min(4);
        let (y, x) = (&mut y[at..], &x[at..]);
        match blocks {
            1 => combine_blocks::<1>(y, a, x, stride),
            2 => combine_blocks::<2>(y, a, x, stride),
            3 => combine_blocks::<3>(y, a, x, stride),
            _ => combine_blocks::<4>(y, a, x, stride),
        }
        at += blocks * LANES;
    }
}

#[inline(always)]
fn combine_blocks<const B: usize>(y: &mut [f32], a: &[f32], x: &[f32], stride: usize) {
    let mut acc = [[0.0f32; LANES]; B];
    for (r, &ar) in a.iter().enumerate() {
        let row = &x[r * stride..r * stride + B * LANES];
        for (b, acc) in acc.iter_mut().enumerate() {
            for k in 0..LANES {
                acc[k] += ar * row[b * LANES + k];
            }
        }
    }
    for (b, acc) in acc.iter().enumerate() {
        y[b * LANES..(b + 1) * LANES].copy_from_slice(acc);
    }
}

/// Σ x over whole blocks, lane-wise first (a plain sum is one long chain
/// of dependent scalar adds).
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for c in x.chunks_exact(LANES) {
        for k in 0..LANES {
            acc[k] += c[k];
        }
    }
    acc.iter().sum()
}

/// Σ x·y over whole blocks, lane-wise first.
#[inline(always)]
fn lane_dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for (a, b) in x.chunks_exact(LANES).zip(y.chunks_exact(LANES)) {
        for k in 0..LANES {
            acc[k] += a[k] * b[k];
        }
    }
    acc.iter().sum()
}

/// max x over whole blocks, lane-wise first.
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::MIN; LANES];
    for c in x.chunks_exact(LANES) {
        for k in 0..LANES {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    acc.iter().fold(f32::MIN, |a, &b| if b > a { b } else { a })
}

/// One head of one sequence, gathered into padded row-major blocks.
struct Head {
    /// Rows of `hp` (head_dim padded): queries, keys, values or gradients.
    rows: Vec<f32>,
    hp: usize,
}

impl Head {
    fn new(seq: usize, head_dim: usize) -> Self {
        let hp = padded(head_dim);
        Head {
            rows: vec![0.0; seq * hp],
            hp,
        }
    }

    #[inline(always)]
    fn row(&self, t: usize) -> &[f32] {
        &self.rows[t * self.hp..(t + 1) * self.hp]
    }

    #[inline(always)]
    fn row_mut(&mut self, t: usize) -> &mut [f32] {
        &mut self.rows[t * self.hp..(t + 1) * self.hp]
    }

    /// Rows t = 0..seq from `src` at `at(t)`, times `scale`.
    #[inline(always)]
    fn gather(&mut self, src: &[f32], hd: usize, scale: f32, at: impl Fn(usize) -> usize) {
        for t in 0..self.rows.len() / self.hp {
            let a = at(t);
            self.row_mut(t)[..hd].copy_from_slice(&src[a..a + hd]);
        }
        if scale != 1.0 {
            self.rows.iter_mut().for_each(|v| *v *= scale);
        }
    }

    /// Adds rows t = 0..seq into `dst` at `at(t)`.
    #[inline(always)]
    fn scatter_add(&self, dst: &mut [f32], hd: usize, at: impl Fn(usize) -> usize) {
        for t in 0..self.rows.len() / self.hp {
            let a = at(t);
            for (d, &v) in dst[a..a + hd].iter_mut().zip(self.row(t)) {
                *d += v;
            }
        }
    }
}

/// `tr[c·sp + j]` = element c of the head-wide slice at `at(j)`; columns
/// j ≥ seq stay zero.
#[inline(always)]
fn transpose_head(src: &[f32], d: &Dims, sp: usize, at: impl Fn(usize) -> usize, tr: &mut [f32]) {
    for j in 0..d.seq {
        let a = at(j);
        for (c, &v) in src[a..a + d.head_dim].iter().enumerate() {
            tr[c * sp + j] = v;
        }
    }
}

/// out = g·softmax(q·kᵀ/√hd + mask)·v per head, g the head's gate at the
/// query (1 without `gates`). A query whose gate is zero is skipped: its
/// rows of `out`, `probs` and `plain` are left as they are, so pass them
/// zeroed. With `probs` (`d.probs_len()` elements), keeps the probabilities
/// for `backward`; with `plain` (the size of `out`), the output before the
/// gate, which the gates' gradient needs.
pub fn forward(
    qkv: &[f32],
    gates: Option<&[f32]>,
    d: &Dims,
    out: &mut [f32],
    probs: Option<&mut [f32]>,
    plain: Option<&mut [f32]>,
) {
    let Some(n) = batches_per_part(d) else {
        return forward_part(qkv, gates, d, out, probs, plain);
    };
    let [qkv_len, gates_len, out_len, probs_len] = d.part_lens(n);
    let parts: Vec<_> = qkv
        .chunks(qkv_len)
        .zip(part_chunks(gates, gates_len, d, n))
        .zip(out.chunks_mut(out_len))
        .zip(part_chunks_mut(probs, probs_len, d, n))
        .zip(part_chunks_mut(plain, out_len, d, n))
        .collect();
    parts
        .into_par_iter()
        .for_each(|((((qkv, gates), out), probs), plain)| {
            forward_part(qkv, gates, &d.part(out.len()), out, probs, plain)
        });
}

/// [`forward`] over the batches of `d`, on this thread.
#[multiversion(targets("x86_64+avx2+fma"))]
fn forward_part(
    qkv: &[f32],
    gates: Option<&[f32]>,
    d: &Dims,
    out: &mut [f32],
    mut probs: Option<&mut [f32]>,
    mut plain: Option<&mut [f32]>,
) {
    let (s, hd, sp) = (d.seq, d.head_dim, padded(d.seq));
    let mut q = Head::new(s, hd);
    let mut v = Head::new(s, hd);
    let mut kt = vec![0.0f32; hd * sp];
    let mut row = vec![0.0f32; sp];
    let mut o = vec![0.0f32; q.hp];
    for b in 0..d.batch {
        for h in 0..d.heads {
            q.gather(qkv, hd, d.scale(), |t| d.qkv_at(b, t, h).0);
            v.gather(qkv, hd, 1.0, |t| d.qkv_at(b, t, h).2);
            transpose_head(qkv, d, sp, |t| d.qkv_at(b, t, h).1, &mut kt);
            for i in 0..s {
                let g = d.gate(gates, b, i, h);
                if g == 0.0 {
                    continue;
                }
                let n = d.keys(i);
                combine(&mut row, &q.row(i)[..hd], &kt, sp);
                row[n..].fill(f32::MIN);
                let m = lane_max(&row);
                row.iter_mut().for_each(|x| *x = exp_fast(*x - m));
                row[n..].fill(0.0);
                let inv = 1.0 / lane_sum(&row);
                row.iter_mut().for_each(|x| *x *= inv);
                combine(&mut o, &row[..n], &v.rows, v.hp);
                let at = d.out_at(b, i, h);
                for (y, &x) in out[at..at + hd].iter_mut().zip(&o) {
                    *y = g * x;
                }
                if let Some(plain) = plain.as_deref_mut() {
                    plain[at..at + hd].copy_from_slice(&o[..hd]);
                }
                if let Some(probs) = probs.as_deref_mut() {
                    let at = d.probs_at(b, h, i);
                    probs[at..at + s].copy_from_slice(&row[..s]);
                }
            }
        }
    }
}

/// Accumulates into `dqkv` the gradient of the loss with respect to `qkv`,
/// given the output gradient `dout`, the forward pass's `probs` and its
/// `gates`: with dO = g·dout, dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP −
/// rowsum(P ⊙ dP)), dQ = dS·K/√hd, dK = dSᵀ·Q/√hd. dS and P are kept
/// transposed per head so that dK and dV, like the rest, are sums over rows
/// in registers. Queries with a zero gate add nothing and are skipped.
pub fn backward(
    qkv: &[f32],
    gates: Option<&[f32]>,
    probs: &[f32],
    dout: &[f32],
    d: &Dims,
    dqkv: &mut [f32],
) {
    let Some(n) = batches_per_part(d) else {
        return backward_part(qkv, gates, probs, dout, d, dqkv);
    };
    let [qkv_len, gates_len, out_len, probs_len] = d.part_lens(n);
    let parts: Vec<_> = qkv
        .chunks(qkv_len)
        .zip(part_chunks(gates, gates_len, d, n))
        .zip(probs.chunks(probs_len))
        .zip(dout.chunks(out_len))
        .zip(dqkv.chunks_mut(qkv_len))
        .collect();
    parts
        .into_par_iter()
        .for_each(|((((qkv, gates), probs), dout), dqkv)| {
            backward_part(qkv, gates, probs, dout, &d.part(dout.len()), dqkv)
        });
}

/// [`backward`] over the batches of `d`, on this thread.
#[multiversion(targets("x86_64+avx2+fma"))]
fn backward_part(
    qkv: &[f32],
    gates: Option<&[f32]>,
    probs: &[f32],
    dout: &[f32],
    d: &Dims,
    dqkv: &mut [f32],
) {
    let (s, hd, sp, scale) = (d.seq, d.head_dim, padded(d.seq), d.scale());
    let [mut q, mut k, mut go, mut dq, mut dk, mut dv] = std::array::from_fn(|_| Head::new(s, hd));
    let mut vt = vec![0.0f32; hd * sp];
    // Transposed: row j holds column j of P (or dS) over queries i.
    let mut pt = vec![0.0f32; s * sp];
    let mut dst = vec![0.0f32; s * sp];
    let mut ds = vec![0.0f32; sp];
    // One row of P, zero past the sequence.
    let mut p = vec![0.0f32; sp];
    for b in 0..d.batch {
        for h in 0..d.heads {
            q.gather(qkv, hd, 1.0, |t| d.qkv_at(b, t, h).0);
            k.gather(qkv, hd, 1.0, |t| d.qkv_at(b, t, h).1);
            go.gather(dout, hd, 1.0, |t| d.out_at(b, t, h));
            if gates.is_some() {
                for t in 0..s {
                    let g = d.gate(gates, b, t, h);
                    go.row_mut(t).iter_mut().for_each(|v| *v *= g);
                }
            }
            transpose_head(qkv, d, sp, |t| d.qkv_at(b, t, h).2, &mut vt);
            for i in 0..s {
                let n = d.keys(i);
                if d.gate(gates, b, i, h) == 0.0 {
                    for j in 0..n {
                        dst[j * sp + i] = 0.0;
                        pt[j * sp + i] = 0.0;
                    }
                    dq.row_mut(i).fill(0.0);
                    continue;
                }
                let at = d.probs_at(b, h, i);
                p[..s].copy_from_slice(&probs[at..at + s]);
                combine(&mut ds, &go.row(i)[..hd], &vt, sp);
                let dot = lane_dot(&p, &ds);
                for (j, (x, &pj)) in ds[..n].iter_mut().zip(&p[..n]).enumerate() {
                    *x = pj * (*x - dot) * scale;
                    dst[j * sp + i] = *x;
                    pt[j * sp + i] = pj;
                }
                combine(dq.row_mut(i), &ds[..n], &k.rows, k.hp);
            }
            for j in 0..s {
                // Queries that see key j: i ≥ j when causal.
                let first = if d.causal { j } else { 0 };
                let rows = first * q.hp..;
                combine(
                    dk.row_mut(j),
                    &dst[j * sp + first..j * sp + s],
                    &q.rows[rows.clone()],
                    q.hp,
                );
                combine(
                    dv.row_mut(j),
                    &pt[j * sp + first..j * sp + s],
                    &go.rows[rows],
                    go.hp,
                );
            }
            dq.scatter_add(dqkv, hd, |t| d.qkv_at(b, t, h).0);
            dk.scatter_add(dqkv, hd, |t| d.qkv_at(b, t, h).1);
            dv.scatter_add(dqkv, hd, |t| d.qkv_at(b, t, h).2);
        }
    }
}

/// Adds to `dgates` (batch, seq, heads) each gate's gradient: the dot
/// product of its head's output gradient with the head's output before the
/// gate (`plain`, from `forward`).
pub fn gate_grads(dout: &[f32], plain: &[f32], d: &Dims, dgates: &mut [f32]) {
    let hd = d.head_dim;
    for (i, g) in dgates.iter_mut().enumerate() {
        let at = i * hd;
        *g += dout[at..at + hd]
            .iter()
            .zip(&plain[at..at + hd])
            .map(|(a, b)| a * b)
            .sum::<f32>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-1.5f32..1.5)).collect()
    }

    /// Forward's output, probabilities and pre-gate output, and backward's
    /// gradient, on `threads` threads.
    fn passes(d: &Dims, gates: Option<&[f32]>, threads: usize) -> [Vec<f32>; 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            assert_eq!(batches_per_part(d).is_some(), threads > 1);
            let w = d.width();
            let n = d.batch * d.seq;
            let qkv = random(n * 3 * w, 1);
            let (mut out, mut plain) = (vec![0.0; n * w], vec![0.0; n * w]);
            let mut probs = vec![0.0; d.probs_len()];
            forward(&qkv, gates, d, &mut out, Some(&mut probs), Some(&mut plain));
            let mut dqkv = vec![0.0; n * 3 * w];
            backward(&qkv, gates, &probs, &random(n * w, 2), d, &mut dqkv);
            [out, probs, plain, dqkv]
        })
    }

    /// Split over threads by whole batches (5 over 2 threads: 3 and 2),
    /// every pass gives the same numbers as on one thread, to the bit.
    #[test]
    fn batches_split_over_threads_give_what_one_thread_gives() {
        for causal in [true, false] {
            let d = Dims {
                batch: 5,
                seq: 32,
                heads: 4,
                head_dim: 16,
                causal,
            };
            let gates: Vec<f32> = random(d.batch * d.seq * d.heads, 3)
                .into_iter()
                .map(|g| if g < -0.5 { 0.0 } else { g })
                .collect();
            for g in [None, Some(&gates[..])] {
                assert_eq!(passes(&d, g, 2), passes(&d, g, 1), "causal {causal}");
            }
        }
    }
}
