//! A plain f64 interpreter of every op (the reference semantics in
//! `arch::ops`), one sequence at a time, in a fixed order, watching for
//! blind spots of the functional hash (`watch`). Routed experts run on the
//! tokens sent to them only.

use super::keys::weight_keys;
pub use super::mat::Mat;
use super::structural::Canon;
use super::watch::Watch;
use crate::arch::{Activation, Arch, Axis, DotMask, NormKind, Op, RouterKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use xxhash_rust::xxh3::xxh3_64;

/// Deterministic weights keyed by a byte string (the parameter's canonical
/// position), so relabelled graphs draw the same values. Draws are kept:
/// every probe (and every weight assignment tried) reuses them.
pub struct Weights {
    pub salt: u64,
    drawn: RefCell<HashMap<Vec<u8>, Rc<Vec<f64>>>>,
}

impl Weights {
    pub fn new(salt: u64) -> Weights {
        Weights {
            salt,
            drawn: RefCell::new(HashMap::new()),
        }
    }

    fn draw(&self, key: &[u8], name: &str, n: usize, mean: f64, std: f64) -> Rc<Vec<f64>> {
        let mut k = key.to_vec();
        k.extend_from_slice(name.as_bytes());
        if let Some(v) = self.drawn.borrow().get(&k) {
            if v.len() == n {
                return v.clone();
            }
        }
        let mut seed = k.clone();
        seed.extend_from_slice(&self.salt.to_le_bytes());
        let mut rng = ChaCha8Rng::seed_from_u64(xxh3_64(&seed));
        let d = Normal::new(mean, std.max(1e-12)).expect("valid normal");
        let v: Rc<Vec<f64>> = Rc::new((0..n).map(|_| d.sample(&mut rng)).collect());
        self.drawn.borrow_mut().insert(k, v.clone());
        v
    }

    /// A `rows × cols` matrix, row-major.
    fn matrix(&self, key: &[u8], name: &str, rows: usize, cols: usize) -> Rc<Vec<f64>> {
        self.draw(
            key,
            name,
            rows * cols,
            0.0,
            1.0 / (rows.max(1) as f64).sqrt(),
        )
    }

    /// Parameters that are identities at init (gains 1, biases 0) drawn
    /// away from it, so the hash sees a generic member of the family.
    fn vector(&self, key: &[u8], name: &str, n: usize, mean: f64) -> Rc<Vec<f64>> {
        self.draw(key, name, n, mean, 0.5)
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

/// A graph prepared for running: its canonical form, its routed bodies'
/// plans, the order commutative ops sum in and every node's weight key.
pub struct Plan<'a> {
    pub canon: Canon<'a>,
    bodies: Vec<Option<Plan<'a>>>,
    /// Per node: a split or concat along the row axis (features of a
    /// transposed tensor).
    rows: Vec<bool>,
    /// Per node: the order its inputs are combined in (commutative ops in
    /// a fixed order, independent of how the graph was written).
    order: Vec<Vec<usize>>,
    /// Weight keys with ties ranked by structure (bodies always use these;
    /// the functional hash ranks the top level's itself).
    pub keys: Vec<u128>,
}

impl<'a> Plan<'a> {
    pub fn new(arch: &'a Arch) -> Plan<'a> {
        let canon = Canon::new(arch);
        let n = canon.nodes.len();
        let along_rows =
            |sh: crate::arch::Shape| sh.rows.axis == Axis::Feat && sh.cols.axis == Axis::Tok;
        let mut bodies = Vec::with_capacity(n);
        let mut rows = Vec::with_capacity(n);
        let mut order = Vec::with_capacity(n);
        for i in 0..n {
            let node = arch.node(canon.nodes[i]);
            bodies.push(node.op.body().map(Plan::new));
            let in_shape = canon.inputs[i]
                .first()
                .map(|&j| arch.node(canon.nodes[j]).shape);
            rows.push(match node.op {
                Op::Split { .. } => in_shape.is_some_and(along_rows),
                Op::Concat => along_rows(node.shape),
                _ => false,
            });
            let mut o: Vec<usize> = (0..canon.inputs[i].len()).collect();
            if node.op.is_commutative() {
                o.sort_by_key(|&k| canon.cone[canon.inputs[i][k]]);
            }
            order.push(o);
        }
        let keys = weight_keys(&canon, &mut |group, _| group.to_vec());
        Plan {
            canon,
            bodies,
            rows,
            order,
            keys,
        }
    }

    /// Runs the graph on `x` with its own keys under `prefix`.
    pub fn run(&self, x: &Mat, w: &Weights, prefix: &[u8], watch: &mut Watch) -> Mat {
        let mut vals = vec![None; self.canon.nodes.len()];
        self.eval(
            self.canon.output,
            x,
            w,
            prefix,
            &self.keys,
            &mut vals,
            watch,
        );
        vals[self.canon.output].take().expect("output computed")
    }

    /// Computes node `i` and whatever it reads that `vals` lacks, on input
    /// `x` with weight keys `keys` (only those of nodes it reads are used).
    #[allow(clippy::too_many_arguments)]
    pub fn eval(
        &self,
        i: usize,
        x: &Mat,
        w: &Weights,
        prefix: &[u8],
        keys: &[u128],
        vals: &mut [Option<Mat>],
        watch: &mut Watch,
    ) {
        let c = &self.canon;
        let mut need = vec![false; i + 1];
        let mut stack = vec![i];
        while let Some(j) = stack.pop() {
            if need[j] || vals[j].is_some() {
                continue;
            }
            need[j] = true;
            stack.extend(c.inputs[j].iter().copied());
        }
        for j in (0..=i).filter(|&j| need[j]) {
            let node = c.arch.node(c.nodes[j]);
            let mut key = prefix.to_vec();
            key.extend_from_slice(&keys[j].to_le_bytes());
            let ins: Vec<&Mat> = self.order[j]
                .iter()
                .map(|&k| vals[c.inputs[j][k]].as_ref().expect("topological order"))
                .collect();
            let at = || format!("{} %{}", node.op, c.nodes[j].index());
            let step = Step {
                op: &node.op,
                body: self.bodies[j].as_ref(),
                input: x,
                w,
                key: &key,
                rows: self.rows[j],
                at: &at,
            };
            let out = step.eval(&ins, watch);
            vals[j] = Some(out);
        }
    }
}

/// One op applied, with what it needs to know.
struct Step<'s, 'a> {
    op: &'s Op,
    body: Option<&'s Plan<'a>>,
    /// The graph's input.
    input: &'s Mat,
    w: &'s Weights,
    key: &'s [u8],
    rows: bool,
    at: &'s dyn Fn() -> String,
}

impl Step<'_, '_> {
    fn eval(&self, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let (w, key, at) = (self.w, self.key, self.at);
        let x = ins.first().copied();
        match self.op {
            Op::Input => self.input.clone(),
            Op::Output => x.expect("input").clone(),
            Op::Linear {
                out,
                bias,
                token_mixing,
                causal: masked,
            } => {
                let x = x.expect("input");
                let wm = w.matrix(key, "w", x.cols, *out);
                let mut y = if *token_mixing && *masked {
                    let mut m = wm.to_vec();
                    for j in 0..x.cols {
                        for i in 0..j.min(*out) {
                            m[j * out + i] = 0.0;
                        }
                    }
                    x.times(&m, *out)
                } else {
                    x.times(&wm, *out)
                };
                if *bias {
                    let b = w.vector(key, "b", *out, 0.0);
                    let bb: Vec<f64> = (0..y.rows).flat_map(|_| b.iter().copied()).collect();
                    // The input must show beside the bias (the bias need not).
                    if super::watch::rms(&y.v) * 2f64.powi(super::watch::SEEN_BITS)
                        < super::watch::rms(&bb)
                    {
                        watch.sum(at, "sum", &[&y.v, &bb]);
                    }
                    y.v.iter_mut().zip(&bb).for_each(|(a, b)| *a += b);
                }
                y
            }
            Op::Norm { kind } => {
                let x = x.expect("input");
                let g = w.vector(key, "g", x.cols, 1.0);
                let b = (*kind == NormKind::Layer).then(|| w.vector(key, "b", x.cols, 0.0));
                norm(x, *kind, &g, b.as_deref().map(|v| v.as_slice()))
            }
            Op::Act { f } => {
                let x = x.expect("input");
                let y = x.map(|v| act(*f, v));
                watch.curve(at, *f, &x.v, &y.v);
                y
            }
            Op::Softmax { causal: c } => {
                let mut y = x.expect("input").clone();
                y.rows_softmax(*c);
                watch.softmax(at, &y, *c);
                y
            }
            Op::PosEnc => {
                let x = x.expect("input");
                let t = w.vector(key, "pos", x.v.len(), 0.0);
                watch.sum(at, "sum", &[&x.v, &t]);
                Mat {
                    rows: x.rows,
                    cols: x.cols,
                    v: x.v.iter().zip(t.iter()).map(|(a, b)| a + b).collect(),
                }
            }
            Op::Transpose => x.expect("input").transpose(),
            Op::Split { part, parts } => split(x.expect("input"), *part, *parts, self.rows),
            Op::Add | Op::Mul => {
                if matches!(self.op, Op::Add) {
                    let terms: Vec<&[f64]> = ins.iter().map(|m| m.v.as_slice()).collect();
                    watch.sum(at, "sum", &terms);
                }
                let mut acc = ins[0].clone();
                for other in &ins[1..] {
                    for (a, b) in acc.v.iter_mut().zip(&other.v) {
                        if matches!(self.op, Op::Add) {
                            *a += b;
                        } else {
                            *a *= b;
                        }
                    }
                }
                acc
            }
            Op::Concat => {
                let parts: Vec<&[f64]> = ins.iter().map(|m| m.v.as_slice()).collect();
                watch.sum(at, "concatenation", &parts);
                if self.rows {
                    let t: Vec<Mat> = ins.iter().map(|m| m.transpose()).collect();
                    concat(&t.iter().collect::<Vec<_>>()).transpose()
                } else {
                    concat(ins)
                }
            }
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
            } => {
                let x = x.expect("input");
                attention(x, *heads, *head_dim, *c, None, w, key, at, watch)
            }
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
                    let r = w.matrix(key, "router", x.cols, routed);
                    let probs = softmax_rows(&x.times(&r, routed));
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
                attention(x, *heads, *head_dim, *c, Some(&gates), w, key, at, watch)
            }
            Op::Mlp {
                hidden,
                act: f,
                gated,
            } => {
                let x = x.expect("input");
                let pre = x.times(&w.matrix(key, "w1", x.cols, *hidden), *hidden);
                let mut h = pre.map(|v| act(*f, v));
                watch.curve(at, *f, &pre.v, &h.v);
                if *gated {
                    let g = x.times(&w.matrix(key, "w3", x.cols, *hidden), *hidden);
                    h.v.iter_mut().zip(&g.v).for_each(|(a, b)| *a *= b);
                }
                h.times(&w.matrix(key, "w2", *hidden, x.cols), x.cols)
            }
            Op::Moe { spec, .. } => {
                let x = x.expect("input");
                let body = self.body.expect("an expert body");
                let e = spec.experts;
                let probs = softmax_rows(&x.times(&w.matrix(key, "router", x.cols, e), e));
                let routing = crate::routing::route_tokens(
                    &probs.v.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    1,
                    x.rows,
                    spec,
                );
                let renorm = spec.router == RouterKind::TopP
                    || (spec.router == RouterKind::TokenChoice && spec.top_k > 1);
                let mut gates: Vec<f64> = probs
                    .v
                    .iter()
                    .zip(&routing.select)
                    .map(|(p, &s)| p * s as f64)
                    .collect();
                if renorm {
                    for row in gates.chunks_mut(e) {
                        let mass: f64 = row.iter().sum::<f64>() + 1e-9;
                        row.iter_mut().for_each(|g| *g /= mass);
                    }
                }
                let mut out = Mat::zeros(x.rows, x.cols);
                for i in 0..e {
                    // Experts are token-wise: running one on its tokens
                    // alone computes what it would in place.
                    let tokens: Vec<usize> = (0..x.rows)
                        .filter(|&t| routing.select[t * e + i] > 0.0)
                        .collect();
                    if tokens.is_empty() {
                        continue;
                    }
                    let k = [key, format!("expert{i}").as_bytes()].concat();
                    let y = body.run(&x.gather(&tokens), w, &k, watch);
                    for (r, &t) in tokens.iter().enumerate() {
                        let g = gates[t * e + i];
                        for j in 0..x.cols {
                            out.v[t * x.cols + j] += g * y.at(r, j);
                        }
                    }
                }
                for s in 0..spec.shared {
                    let k = [key, format!("shared{s}").as_bytes()].concat();
                    let y = body.run(x, w, &k, watch);
                    out.v.iter_mut().zip(&y.v).for_each(|(a, b)| *a += b);
                }
                out
            }
            Op::Mod {
                capacity, causal, ..
            } => {
                let x = x.expect("input");
                let r = x.times(&w.matrix(key, "router", x.cols, 1), 1);
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
                self.on_routed_rows(x, &chosen, &gates, watch)
            }
            Op::LayerSkip { capacity, .. } => {
                let x = x.expect("input");
                let r = x.times(&w.matrix(key, "router", x.cols, 1), 1);
                let c = capacity.clamp(1e-3, 1.0 - 1e-3);
                let b = (c / (1.0 - c)).ln() + w.vector(key, "router_b", 1, 0.0)[0];
                let (chosen, gates): (Vec<usize>, Vec<f64>) = (0..x.rows)
                    .map(|t| (t, sigmoid(r.v[t] + b)))
                    .filter(|&(_, g)| g >= 0.5)
                    .unzip();
                self.on_routed_rows(x, &chosen, &gates, watch)
            }
        }
    }

    /// x + gate·body(routed rows) at the routed rows, x elsewhere: the body
    /// runs on the routed tokens alone, in order (mixture-of-depths semantics).
    fn on_routed_rows(&self, x: &Mat, chosen: &[usize], gates: &[f64], watch: &mut Watch) -> Mat {
        let mut out = x.clone();
        if chosen.is_empty() {
            return out;
        }
        let body = self.body.expect("a routed body");
        let sub = x.gather(chosen);
        let k = [self.key, b"body"].concat();
        let mut y = body.run(&sub, self.w, &k, watch);
        for (i, g) in gates.iter().enumerate() {
            y.v[i * y.cols..(i + 1) * y.cols]
                .iter_mut()
                .for_each(|v| *v *= g);
        }
        watch.sum(self.at, "sum", &[&sub.v, &y.v]);
        let c = x.cols;
        for (i, &t) in chosen.iter().enumerate() {
            for j in 0..c {
                out.v[t * c + j] += y.at(i, j);
            }
        }
        out
    }
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

#[allow(clippy::too_many_arguments)]
fn attention(
    x: &Mat,
    heads: usize,
    hd: usize,
    causal: bool,
    gates: Option<&Vec<Vec<f64>>>,
    w: &Weights,
    key: &[u8],
    at: &dyn Fn() -> String,
    watch: &mut Watch,
) -> Mat {
    let mut cat = Mat::zeros(x.rows, heads * hd);
    for h in 0..heads {
        let q = x.times(&w.matrix(key, &format!("h{h}q"), x.cols, hd), hd);
        let k = x.times(&w.matrix(key, &format!("h{h}k"), x.cols, hd), hd);
        let v = x.times(&w.matrix(key, &format!("h{h}v"), x.cols, hd), hd);
        let mut s = q.matmul(&k.transpose());
        let scale = 1.0 / (hd as f64).sqrt();
        s.v.iter_mut().for_each(|a| *a *= scale);
        s.rows_softmax(causal);
        watch.softmax(at, &s, causal);
        let o = s.matmul(&v);
        for t in 0..x.rows {
            let g = gates.map_or(1.0, |g| g[t][h]);
            for j in 0..hd {
                cat.v[t * heads * hd + h * hd + j] = g * o.at(t, j);
            }
        }
    }
    cat.times(&w.matrix(key, "o", heads * hd, x.cols), x.cols)
}
