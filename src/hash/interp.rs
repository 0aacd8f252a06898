//! A plain f64 interpreter of every op (the reference semantics in
//! `arch::ops`), one sequence at a time, in a fixed order. Used by the
//! functional hash and by tests that compare backends.

use super::structural::Canon;
use crate::arch::{Activation, Arch, Axis, DotMask, NormKind, Op, RouterKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use xxhash_rust::xxh3::xxh3_64;

/// A per-sequence matrix, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub v: Vec<f64>,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Mat {
        Mat {
            rows,
            cols,
            v: vec![0.0; rows * cols],
        }
    }

    fn at(&self, r: usize, c: usize) -> f64 {
        self.v[r * self.cols + c]
    }

    fn map(&self, f: impl Fn(f64) -> f64) -> Mat {
        Mat {
            rows: self.rows,
            cols: self.cols,
            v: self.v.iter().map(|&x| f(x)).collect(),
        }
    }

    fn matmul(&self, b: &Mat) -> Mat {
        let mut out = Mat::zeros(self.rows, b.cols);
        for i in 0..self.rows {
            for k in 0..self.cols {
                let a = self.at(i, k);
                if a == 0.0 {
                    continue;
                }
                for j in 0..b.cols {
                    out.v[i * b.cols + j] += a * b.v[k * b.cols + j];
                }
            }
        }
        out
    }

    fn transpose(&self) -> Mat {
        let mut out = Mat::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                out.v[j * self.rows + i] = self.at(i, j);
            }
        }
        out
    }

    fn rows_softmax(&mut self, causal: bool) {
        for i in 0..self.rows {
            let row = &mut self.v[i * self.cols..(i + 1) * self.cols];
            let end = if causal {
                (i + 1).min(row.len())
            } else {
                row.len()
            };
            let m = row[..end].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut s = 0.0;
            for x in row[..end].iter_mut() {
                *x = (*x - m).exp();
                s += *x;
            }
            for x in row[..end].iter_mut() {
                *x /= s;
            }
            for x in row[end..].iter_mut() {
                *x = 0.0;
            }
        }
    }
}

/// Deterministic weights keyed by a byte string (the parameter's canonical
/// position), so relabelled graphs draw the same values.
pub struct Weights {
    pub salt: u64,
}

impl Weights {
    fn draw(&self, key: &[u8], n: usize, mean: f64, std: f64) -> Vec<f64> {
        let mut k = key.to_vec();
        k.extend_from_slice(&self.salt.to_le_bytes());
        let mut rng = ChaCha8Rng::seed_from_u64(xxh3_64(&k));
        let d = Normal::new(mean, std.max(1e-12)).expect("valid normal");
        (0..n).map(|_| d.sample(&mut rng)).collect()
    }

    fn matrix(&self, key: &[u8], name: &str, rows: usize, cols: usize) -> Mat {
        let mut k = key.to_vec();
        k.extend_from_slice(name.as_bytes());
        Mat {
            rows,
            cols,
            v: self.draw(&k, rows * cols, 0.0, 1.0 / (rows.max(1) as f64).sqrt()),
        }
    }

    /// Parameters that are identities at init (gains 1, biases 0) drawn
    /// away from it, so the hash sees a generic member of the family.
    fn vector(&self, key: &[u8], name: &str, n: usize, mean: f64) -> Vec<f64> {
        let mut k = key.to_vec();
        k.extend_from_slice(name.as_bytes());
        self.draw(&k, n, mean, 0.5)
    }
}

fn act(f: Activation, x: f64) -> f64 {
    match f {
        Activation::Relu => x.max(0.0),
        Activation::Gelu => {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::LeakyRelu => {
            if x >= 0.0 {
                x
            } else {
                0.01 * x
            }
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn norm(x: &Mat, kind: NormKind, g: &[f64], b: Option<&[f64]>) -> Mat {
    let mut out = x.clone();
    let n = x.cols as f64;
    for i in 0..x.rows {
        let row = &mut out.v[i * x.cols..(i + 1) * x.cols];
        match kind {
            NormKind::Layer => {
                let mean = row.iter().sum::<f64>() / n;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let inv = 1.0 / (var + 1e-5).sqrt();
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (*v - mean) * inv * g[j] + b.map_or(0.0, |b| b[j]);
                }
            }
            NormKind::Rms => {
                let ms = row.iter().map(|v| v * v).sum::<f64>() / n;
                let inv = 1.0 / (ms + 1e-5).sqrt();
                for (j, v) in row.iter_mut().enumerate() {
                    *v = *v * inv * g[j];
                }
            }
        }
    }
    out
}

fn causal_zero(m: &mut Mat) {
    for i in 0..m.rows {
        for j in i + 1..m.cols {
            m.v[i * m.cols + j] = 0.0;
        }
    }
}

/// Runs `arch` on `x` with weights keyed under `prefix`.
pub fn run(arch: &Arch, x: &Mat, w: &Weights, prefix: &[u8]) -> Mat {
    let c = Canon::new(arch);
    let mut vals: Vec<Option<Mat>> = vec![None; c.nodes.len()];
    for i in 0..c.nodes.len() {
        let node = arch.node(c.nodes[i]);
        let mut key = prefix.to_vec();
        key.extend_from_slice(&c.param_cone[i].to_le_bytes());
        let mut ins: Vec<&Mat> = c.inputs[i]
            .iter()
            .map(|&j| vals[j].as_ref().expect("topological order"))
            .collect();
        if node.op.is_commutative() {
            // A fixed summation order, independent of how the graph was written.
            let mut order: Vec<usize> = (0..ins.len()).collect();
            order.sort_by_key(|&k| c.cone[c.inputs[i][k]]);
            ins = order.into_iter().map(|k| ins[k]).collect();
        }
        let in_shape = c.inputs[i].first().map(|&j| arch.node(c.nodes[j]).shape);
        let along_rows =
            |sh: crate::arch::Shape| sh.rows.axis == Axis::Feat && sh.cols.axis == Axis::Tok;
        let rows = match node.op {
            Op::Split { .. } => in_shape.is_some_and(along_rows),
            Op::Concat => along_rows(node.shape),
            _ => false,
        };
        let out = eval_op(&node.op, &ins, x, w, &key, rows);
        vals[i] = Some(out);
    }
    vals[c.output].take().expect("output computed")
}

/// `rows`: a split or concat works on the row axis (features of a transposed tensor).
fn eval_op(op: &Op, ins: &[&Mat], input: &Mat, w: &Weights, key: &[u8], rows: bool) -> Mat {
    let x = ins.first().copied();
    match op {
        Op::Input => input.clone(),
        Op::Output => x.expect("input").clone(),
        Op::Linear {
            out,
            bias,
            token_mixing,
            causal: masked,
        } => {
            let x = x.expect("input");
            let mut wm = w.matrix(key, "w", x.cols, *out);
            if *token_mixing && *masked {
                for j in 0..wm.rows {
                    for i in 0..j.min(wm.cols) {
                        wm.v[j * wm.cols + i] = 0.0;
                    }
                }
            }
            let mut y = x.matmul(&wm);
            if *bias {
                let b = w.vector(key, "b", *out, 0.0);
                for r in 0..y.rows {
                    for (j, bj) in b.iter().enumerate() {
                        y.v[r * y.cols + j] += bj;
                    }
                }
            }
            y
        }
        Op::Norm { kind } => {
            let x = x.expect("input");
            let g = w.vector(key, "g", x.cols, 1.0);
            let b = (*kind == NormKind::Layer).then(|| w.vector(key, "b", x.cols, 0.0));
            norm(x, *kind, &g, b.as_deref())
        }
        Op::Act { f } => x.expect("input").map(|v| act(*f, v)),
        Op::Softmax { causal: c } => {
            let mut y = x.expect("input").clone();
            y.rows_softmax(*c);
            y
        }
        Op::PosEnc => {
            let x = x.expect("input");
            let t = w.vector(key, "pos", x.v.len(), 0.0);
            Mat {
                rows: x.rows,
                cols: x.cols,
                v: x.v.iter().zip(&t).map(|(a, b)| a + b).collect(),
            }
        }
        Op::Transpose => x.expect("input").transpose(),
        Op::Split { part, parts } => split(x.expect("input"), *part, *parts, rows),
        Op::Add | Op::Mul => {
            let mut acc = ins[0].clone();
            for other in &ins[1..] {
                for (a, b) in acc.v.iter_mut().zip(&other.v) {
                    if matches!(op, Op::Add) {
                        *a += b;
                    } else {
                        *a *= b;
                    }
                }
            }
            acc
        }
        Op::Concat if rows => concat(
            &ins.iter()
                .map(|m| m.transpose())
                .collect::<Vec<_>>()
                .iter()
                .collect::<Vec<_>>(),
        )
        .transpose(),
        Op::Concat => concat(ins),
        Op::Dot { scaled, mask } => {
            let mut a = ins[0].clone();
            if *mask == DotMask::Left {
                causal_zero(&mut a);
            }
            let mut y = a.matmul(ins[1]);
            if *scaled {
                let s = 1.0 / (a.cols as f64).sqrt();
                y.v.iter_mut().for_each(|v| *v *= s);
            }
            if *mask == DotMask::Output {
                causal_zero(&mut y);
            }
            y
        }
        Op::Attention {
            heads,
            head_dim,
            causal: c,
        } => attention(x.expect("input"), *heads, *head_dim, *c, None, w, key),
        Op::Moh {
            heads,
            active,
            shared,
            head_dim,
            causal: c,
        } => {
            let x = x.expect("input");
            let routed = heads - shared;
            let mut gates = vec![vec![1.0; *heads]; x.rows];
            if routed > 0 {
                let probs = softmax_rows(&x.matmul(&w.matrix(key, "router", x.cols, routed)));
                for (t, g) in gates.iter_mut().enumerate() {
                    let p = &probs.v[t * routed..(t + 1) * routed];
                    let chosen = top(p, *active);
                    let mass: f64 = chosen.iter().map(|&h| p[h]).sum();
                    for h in 0..routed {
                        g[shared + h] = if chosen.contains(&h) {
                            p[h] / (mass + 1e-9)
                        } else {
                            0.0
                        };
                    }
                }
            }
            attention(x, *heads, *head_dim, *c, Some(&gates), w, key)
        }
        Op::Mlp {
            hidden,
            act: f,
            gated,
        } => {
            let x = x.expect("input");
            let mut h = x
                .matmul(&w.matrix(key, "w1", x.cols, *hidden))
                .map(|v| act(*f, v));
            if *gated {
                let g = x.matmul(&w.matrix(key, "w3", x.cols, *hidden));
                h.v.iter_mut().zip(&g.v).for_each(|(a, b)| *a *= b);
            }
            h.matmul(&w.matrix(key, "w2", *hidden, x.cols))
        }
        Op::Moe { spec, expert } => {
            let x = x.expect("input");
            let e = spec.experts;
            let probs = softmax_rows(&x.matmul(&w.matrix(key, "router", x.cols, e)));
            let routing = crate::routing::route_tokens(
                &probs.v.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                1,
                x.rows,
                spec,
            );
            let mut out = Mat::zeros(x.rows, x.cols);
            let renorm = spec.router == RouterKind::TopP
                || (spec.router == RouterKind::TokenChoice && spec.top_k > 1);
            let gate = |t: usize, i: usize| -> f64 {
                let sel = routing.select[t * e + i] as f64;
                let g = probs.at(t, i) * sel;
                if renorm {
                    let mass: f64 = (0..e)
                        .map(|j| probs.at(t, j) * routing.select[t * e + j] as f64)
                        .sum();
                    g / (mass + 1e-9)
                } else {
                    g
                }
            };
            for i in 0..e {
                let mut k = key.to_vec();
                k.extend_from_slice(format!("expert{i}").as_bytes());
                let y = run(expert, x, w, &k);
                for t in 0..x.rows {
                    let g = gate(t, i);
                    for j in 0..x.cols {
                        out.v[t * x.cols + j] += g * y.at(t, j);
                    }
                }
            }
            for s in 0..spec.shared {
                let mut k = key.to_vec();
                k.extend_from_slice(format!("shared{s}").as_bytes());
                let y = run(expert, x, w, &k);
                out.v.iter_mut().zip(&y.v).for_each(|(a, b)| *a += b);
            }
            out
        }
        Op::Mod {
            capacity,
            causal,
            body,
        } => {
            let x = x.expect("input");
            let r = x.matmul(&w.matrix(key, "router", x.cols, 1));
            // A causal router is hashed as it computes at inference.
            let chosen: Vec<usize> = if *causal {
                (0..x.rows).filter(|&t| r.v[t] > 0.0).collect()
            } else {
                let sel = crate::routing::top_tokens(
                    &r.v.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    1,
                    x.rows,
                    *capacity,
                );
                (0..x.rows).filter(|&t| sel[t] > 0.0).collect()
            };
            let gates: Vec<f64> = chosen.iter().map(|&t| sigmoid(r.v[t])).collect();
            on_routed_rows(body, x, w, &[key, b"body"].concat(), &chosen, &gates)
        }
        Op::LayerSkip { capacity, body } => {
            let x = x.expect("input");
            let r = x.matmul(&w.matrix(key, "router", x.cols, 1));
            let c = capacity.clamp(1e-3, 1.0 - 1e-3);
            let b = (c / (1.0 - c)).ln() + w.vector(key, "router_b", 1, 0.0)[0];
            let (chosen, gates): (Vec<usize>, Vec<f64>) = (0..x.rows)
                .map(|t| (t, sigmoid(r.v[t] + b)))
                .filter(|&(_, g)| g >= 0.5)
                .unzip();
            on_routed_rows(body, x, w, &[key, b"body"].concat(), &chosen, &gates)
        }
    }
}

/// x + gate·body(routed rows) at the routed rows, x elsewhere: the body
/// runs on the routed tokens alone, in order (mixture-of-depths semantics).
fn on_routed_rows(
    body: &Arch,
    x: &Mat,
    w: &Weights,
    key: &[u8],
    chosen: &[usize],
    gates: &[f64],
) -> Mat {
    let mut out = x.clone();
    if chosen.is_empty() {
        return out;
    }
    let c = x.cols;
    let sub = Mat {
        rows: chosen.len(),
        cols: c,
        v: chosen
            .iter()
            .flat_map(|&t| x.v[t * c..(t + 1) * c].iter().copied())
            .collect(),
    };
    let y = run(body, &sub, w, key);
    for (i, (&t, &g)) in chosen.iter().zip(gates).enumerate() {
        for j in 0..c {
            out.v[t * c + j] += g * y.at(i, j);
        }
    }
    out
}

fn split(x: &Mat, part: usize, parts: usize, rows: bool) -> Mat {
    if rows {
        let n = x.rows / parts;
        Mat {
            rows: n,
            cols: x.cols,
            v: x.v[part * n * x.cols..(part + 1) * n * x.cols].to_vec(),
        }
    } else {
        let n = x.cols / parts;
        let mut out = Mat::zeros(x.rows, n);
        for r in 0..x.rows {
            out.v[r * n..(r + 1) * n]
                .copy_from_slice(&x.v[r * x.cols + part * n..r * x.cols + (part + 1) * n]);
        }
        out
    }
}

fn concat(ins: &[&Mat]) -> Mat {
    let rows = ins[0].rows;
    let cols: usize = ins.iter().map(|m| m.cols).sum();
    let mut out = Mat::zeros(rows, cols);
    for r in 0..rows {
        let mut at = 0;
        for m in ins {
            out.v[r * cols + at..r * cols + at + m.cols]
                .copy_from_slice(&m.v[r * m.cols..(r + 1) * m.cols]);
            at += m.cols;
        }
    }
    out
}

fn softmax_rows(x: &Mat) -> Mat {
    let mut y = x.clone();
    y.rows_softmax(false);
    y
}

fn top(p: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

fn attention(
    x: &Mat,
    heads: usize,
    hd: usize,
    causal: bool,
    gates: Option<&Vec<Vec<f64>>>,
    w: &Weights,
    key: &[u8],
) -> Mat {
    let mut cat = Mat::zeros(x.rows, heads * hd);
    for h in 0..heads {
        let q = x.matmul(&w.matrix(key, &format!("h{h}q"), x.cols, hd));
        let k = x.matmul(&w.matrix(key, &format!("h{h}k"), x.cols, hd));
        let v = x.matmul(&w.matrix(key, &format!("h{h}v"), x.cols, hd));
        let mut s = q.matmul(&k.transpose());
        let scale = 1.0 / (hd as f64).sqrt();
        s.v.iter_mut().for_each(|a| *a *= scale);
        s.rows_softmax(causal);
        let o = s.matmul(&v);
        for t in 0..x.rows {
            let g = gates.map_or(1.0, |g| g[t][h]);
            for j in 0..hd {
                cat.v[t * heads * hd + h * hd + j] = g * o.at(t, j);
            }
        }
    }
    cat.matmul(&w.matrix(key, "o", heads * hd, x.cols))
}
