//! A plain f64 interpreter of every op (the reference semantics in
//! `arch::ops`), one sequence at a time, in a fixed order, watching for
//! blind spots of the functional hash (`watch`). Routed experts run on the
//! tokens sent to them only.

mod ops;

use super::keys::weight_keys;
pub use super::mat::Mat;
use super::structural::Canon;
use super::watch::Watch;
use crate::arch::{Activation, Arch, NormKind, Op};
use ops::Interpret;
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
                Op::Split(_) => in_shape.is_some_and(|s| s.is_transposed_seq()),
                Op::Concat => node.shape.is_transposed_seq(),
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
        crate::with_op!(self.op, o => o.interpret(self, ins, watch))
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
