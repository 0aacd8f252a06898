//! Each op's f64 semantics: the functional hash's backend, one impl per
//! op kind (what the kinds compute is documented on their structs in
//! `arch::ops`).

use super::{act, attention, causal_zero, concat, norm, sigmoid, softmax_rows, split, top};
use super::{Mat, Step};
use crate::arch::ops::composite::{Composite, Prim};
use crate::arch::ops::{
    Act, Add, Attention, Concat, Dot, Input, LayerSkip, Linear, Mlp, Mod, Moe, Moh, Mul, Norm,
    Output, PosEnc, Softmax, Split, Transpose,
};
use crate::arch::{DotMask, NormKind, RouterKind};
use crate::hash::watch::{self, Watch};

/// An op kind's f64 semantics.
pub(super) trait Interpret {
    /// The op on its inputs `ins`, in the plan's order.
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat;
}

/// Every composite kind: its recipe run on matrices, each primitive by the
/// primitive kind's own impl (so sums are watched as `Add`'s are), a
/// learned vector drawn by name and repeated over the rows.
impl<C: Composite> Interpret for C {
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let recipe = self.recipe();
        let (rows, cols) = (ins[0].rows, ins[0].cols);
        let mut vals: Vec<Mat> = Vec::with_capacity(recipe.0.len());
        for p in &recipe.0 {
            let v = match *p {
                Prim::Input(i) => ins[i].clone(),
                Prim::Param { name, init } => {
                    let g = s.w.vector(s.key, name, cols, init);
                    Mat {
                        rows,
                        cols,
                        v: (0..rows).flat_map(|_| g.iter().copied()).collect(),
                    }
                }
                Prim::Add(a, b) => Add.interpret(s, &[&vals[a], &vals[b]], watch),
                Prim::Mul(a, b) => Mul.interpret(s, &[&vals[a], &vals[b]], watch),
                Prim::Act(f, a) => Act { f }.interpret(s, &[&vals[a]], watch),
            };
            vals.push(v);
        }
        vals.pop().expect("a recipe has an output")
    }
}

/// The element-wise sum, watched for terms too small to show in it.
impl Interpret for Add {
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let terms: Vec<&[f64]> = ins.iter().map(|m| m.v.as_slice()).collect();
        watch.sum(s.at, "sum", &terms);
        fold(ins, |a, b| *a += b)
    }
}

impl Interpret for Mul {
    fn interpret(&self, _s: &Step, ins: &[&Mat], _watch: &mut Watch) -> Mat {
        fold(ins, |a, b| *a *= b)
    }
}

fn fold(ins: &[&Mat], f: impl Fn(&mut f64, f64)) -> Mat {
    let mut acc = ins[0].clone();
    for other in &ins[1..] {
        for (a, &b) in acc.v.iter_mut().zip(&other.v) {
            f(a, b);
        }
    }
    acc
}

impl Interpret for Input {
    fn interpret(&self, s: &Step, _ins: &[&Mat], _watch: &mut Watch) -> Mat {
        s.input.clone()
    }
}

impl Interpret for Output {
    fn interpret(&self, _s: &Step, ins: &[&Mat], _watch: &mut Watch) -> Mat {
        ins[0].clone()
    }
}

impl Interpret for Linear {
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let Linear {
            out,
            bias,
            token_mixing,
            causal: masked,
        } = self;
        let (w, key, at) = (s.w, s.key, s.at);
        let x = ins[0];
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
            if watch::rms(&y.v) * 2f64.powi(watch::SEEN_BITS) < watch::rms(&bb) {
                watch.sum(at, "sum", &[&y.v, &bb]);
            }
            y.v.iter_mut().zip(&bb).for_each(|(a, b)| *a += b);
        }
        y
    }
}

impl Interpret for Norm {
    fn interpret(&self, s: &Step, ins: &[&Mat], _watch: &mut Watch) -> Mat {
        let Norm { kind } = self;
        let (w, key) = (s.w, s.key);
        let x = ins[0];
        let g = w.vector(key, "g", x.cols, 1.0);
        let b = (*kind == NormKind::Layer).then(|| w.vector(key, "b", x.cols, 0.0));
        norm(x, *kind, &g, b.as_deref().map(|v| v.as_slice()))
    }
}

impl Interpret for Act {
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let Act { f } = self;
        let at = s.at;
        let x = ins[0];
        let y = x.map(|v| act(*f, v));
        watch.curve(at, *f, &x.v, &y.v);
        y
    }
}

impl Interpret for Softmax {
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let Softmax { causal: c } = self;
        let at = s.at;
        let mut y = ins[0].clone();
        y.rows_softmax(*c);
        watch.softmax(at, &y, *c);
        y
    }
}

impl Interpret for PosEnc {
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let (w, key, at) = (s.w, s.key, s.at);
        let x = ins[0];
        let t = w.vector(key, "pos", x.v.len(), 0.0);
        watch.sum(at, "sum", &[&x.v, &t]);
        Mat {
            rows: x.rows,
            cols: x.cols,
            v: x.v.iter().zip(t.iter()).map(|(a, b)| a + b).collect(),
        }
    }
}

impl Interpret for Transpose {
    fn interpret(&self, _s: &Step, ins: &[&Mat], _watch: &mut Watch) -> Mat {
        ins[0].transpose()
    }
}

impl Interpret for Split {
    fn interpret(&self, s: &Step, ins: &[&Mat], _watch: &mut Watch) -> Mat {
        let Split { part, parts } = self;
        split(ins[0], *part, *parts, s.rows)
    }
}

impl Interpret for Concat {
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let at = s.at;
        let parts: Vec<&[f64]> = ins.iter().map(|m| m.v.as_slice()).collect();
        watch.sum(at, "concatenation", &parts);
        if s.rows {
            let t: Vec<Mat> = ins.iter().map(|m| m.transpose()).collect();
            concat(&t.iter().collect::<Vec<_>>()).transpose()
        } else {
            concat(ins)
        }
    }
}

impl Interpret for Dot {
    fn interpret(&self, _s: &Step, ins: &[&Mat], _watch: &mut Watch) -> Mat {
        let Dot { scaled, mask } = self;
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
}

impl Interpret for Attention {
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let Attention {
            heads,
            head_dim,
            causal: c,
        } = self;
        let (w, key, at) = (s.w, s.key, s.at);
        let x = ins[0];
        attention(x, *heads, *head_dim, *c, None, w, key, at, watch)
    }
}

impl Interpret for Moh {
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let Moh {
            heads,
            active,
            shared,
            head_dim,
            causal: c,
        } = self;
        let (w, key, at) = (s.w, s.key, s.at);
        let x = ins[0];
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
}

impl Interpret for Mlp {
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let Mlp {
            hidden,
            act: f,
            gated,
        } = self;
        let (w, key, at) = (s.w, s.key, s.at);
        let x = ins[0];
        let pre = x.times(&w.matrix(key, "w1", x.cols, *hidden), *hidden);
        let mut h = pre.map(|v| act(*f, v));
        watch.curve(at, *f, &pre.v, &h.v);
        if *gated {
            let g = x.times(&w.matrix(key, "w3", x.cols, *hidden), *hidden);
            h.v.iter_mut().zip(&g.v).for_each(|(a, b)| *a *= b);
        }
        h.times(&w.matrix(key, "w2", *hidden, x.cols), x.cols)
    }
}

impl Interpret for Moe {
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let Moe { spec, .. } = self;
        let (w, key) = (s.w, s.key);
        let x = ins[0];
        let body = s.body.expect("an expert body");
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
}

impl Interpret for Mod {
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let Mod {
            capacity, causal, ..
        } = self;
        let (w, key) = (s.w, s.key);
        let x = ins[0];
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
        s.on_routed_rows(x, &chosen, &gates, watch)
    }
}

impl Interpret for LayerSkip {
    fn interpret(&self, s: &Step, ins: &[&Mat], watch: &mut Watch) -> Mat {
        let LayerSkip { capacity, .. } = self;
        let (w, key) = (s.w, s.key);
        let x = ins[0];
        let r = x.times(&w.matrix(key, "router", x.cols, 1), 1);
        let c = capacity.clamp(1e-3, 1.0 - 1e-3);
        let b = (c / (1.0 - c)).ln() + w.vector(key, "router_b", 1, 0.0)[0];
        let (chosen, gates): (Vec<usize>, Vec<f64>) = (0..x.rows)
            .map(|t| (t, sigmoid(r.v[t] + b)))
            .filter(|&(_, g)| g >= 0.5)
            .unzip();
        s.on_routed_rows(x, &chosen, &gates, watch)
    }
}
