//! Running a compiled program on a batch, with or without a gradient tape.
//!
//! Tensors are `(batch, rows, cols)` with runtime sizes. dfdx records a
//! value's backward ops on the tape the value carries, so a value read by
//! several steps hands its tape to its last reader and an empty tape (same
//! id, so gradients still accumulate) to the others; binary ops merge tapes,
//! and every live step reaches the loss. Two inputs of one step that are the
//! same value are given distinct ids first, since dfdx's binary backward
//! borrows both gradients mutably.

use super::kernels::composite::{activate, concat_cols, matmul_rows};
use super::kernels::Backend;
use super::params::Params;
use super::program::{Graph, Program, Step, StepOp};
use super::routed;
use super::run::{Run, T3};
use crate::arch::ops::composite::{Prim, Recipe};
use crate::arch::{DotMask, NormKind};
use crate::routing::RouterSettings;
use dfdx::prelude::*;

impl<'a, D: Backend, T: Tape<f32, D>> Run<'a, D, T> {
    pub fn new(dev: &'a D, params: &'a Params<D>, batch: usize) -> Self {
        Run {
            dev,
            params,
            batch,
            aux: Vec::new(),
            routes: Vec::new(),
            routing: RouterSettings::default(),
            bias: Vec::new(),
            trace: false,
            traces: Vec::new(),
            training: T::OWNS_TAPE,
            run_body: run_graph::<D, T>,
        }
    }
}

fn concat_rows<D: Backend, T: Tape<f32, D>>(parts: Vec<T3<D, T>>) -> T3<D, T> {
    let mut it = parts.into_iter();
    let first = it.next().expect("at least one part");
    it.fold(first, |acc, p| (acc, p).concat_along(Axis::<1>))
}

/// Values of a graph being run, handing tapes to last readers.
struct Values<D: Backend, T> {
    vals: Vec<Option<T3<D, T>>>,
    left: Vec<usize>,
}

impl<D: Backend, T: Tape<f32, D>> Values<D, T> {
    fn take(&mut self, i: usize) -> T3<D, T> {
        self.left[i] = self.left[i].saturating_sub(1);
        if self.left[i] == 0 {
            self.vals[i].take().expect("value computed before use")
        } else {
            self.vals[i]
                .as_ref()
                .expect("value computed before use")
                .with_empty_tape()
        }
    }

    /// Both operands of a binary op, with distinct ids when they are one
    /// value (see the module doc).
    fn pair(&mut self, a: usize, b: usize) -> (T3<D, T>, T3<D, T>) {
        let x = self.take(a);
        let y = self.take(b);
        (x, if a == b { y * 1.0 } else { y })
    }
}

/// Runs `g` on `x` (the graph's input value).
pub fn run_graph<D: Backend, T: Tape<f32, D>>(
    run: &mut Run<'_, D, T>,
    g: &Graph,
    x: T3<D, T>,
) -> T3<D, T> {
    let mut values = Values {
        vals: (0..g.steps.len()).map(|_| None).collect(),
        left: g.uses.clone(),
    };
    let mut x = Some(x);
    for (i, step) in g.steps.iter().enumerate() {
        let mut ins: Vec<T3<D, T>> = step.inputs.iter().map(|&j| values.take(j)).collect();
        for a in 1..step.inputs.len() {
            if step.inputs[..a].contains(&step.inputs[a]) {
                let t = ins.remove(a);
                ins.insert(a, t * 1.0);
            }
        }
        let out = match step.op {
            StepOp::Input => x.take().expect("one input"),
            _ => apply(run, step, ins),
        };
        if g.uses[i] > 0 || i == g.output {
            values.vals[i] = Some(out);
            if i == g.output {
                values.left[i] += 1;
            }
        }
    }
    values.take(g.output)
}

fn apply<D: Backend, T: Tape<f32, D>>(
    run: &mut Run<'_, D, T>,
    step: &Step,
    mut ins: Vec<T3<D, T>>,
) -> T3<D, T> {
    let b = run.batch;
    let (mut rows, cols) = (step.shape.rows.size, step.shape.cols.size);
    // Row-preserving ops also run on gathered token subsets (MoE experts),
    // whose row count is the number of tokens routed there.
    if let (Some(x), StepOp::Linear { .. } | StepOp::Norm { .. }) = (ins.first(), &step.op) {
        rows = x.shape().1;
    }
    match &step.op {
        StepOp::Input => unreachable!("handled by run_graph"),
        StepOp::Output => ins.remove(0),
        StepOp::Linear {
            w,
            b: bias,
            inp,
            out,
            causal_mask,
        } => {
            let x = ins.remove(0);
            let mut wm = run.matrix(*w, *inp, *out);
            if *causal_mask {
                wm = wm * run.upper_ones(*inp);
            }
            let y = matmul_rows(x, wm);
            match bias {
                Some(bi) => {
                    y + run
                        .vector(*bi)
                        .broadcast_like::<_, Axes2<0, 1>>(&(b, rows, cols))
                }
                None => y,
            }
        }
        StepOp::Norm { kind, gain, bias } => D::norm(
            ins.remove(0),
            *kind == NormKind::Layer,
            run.vector(*gain),
            bias.map(|b| run.vector(b)),
        ),
        StepOp::Act(f) => activate(ins.remove(0), *f),
        StepOp::Softmax { causal } => {
            let x = ins.remove(0);
            if *causal {
                (x + run.causal_neg(rows)).softmax::<Axis<2>>()
            } else {
                x.softmax::<Axis<2>>()
            }
        }
        StepOp::PosEnc { table } => {
            let x = ins.remove(0);
            let t = run.params.tensors[*table]
                .retaped::<T>()
                .reshape_like(&(rows, cols))
                .broadcast_like::<_, Axis<0>>(&(b, rows, cols));
            x + t
        }
        // Scaling by 1 gives the transposed value its own id: dfdx's permute
        // keeps the id, and x · xᵀ would alias gradients.
        StepOp::Transpose => ins.remove(0).permute::<_, Axes3<0, 2, 1>>() * 1.0,
        StepOp::Split {
            part,
            parts,
            rows: along_rows,
        } => {
            let x = ins.remove(0);
            if *along_rows {
                let n = x.shape().1 / parts;
                x.slice((.., part * n..(part + 1) * n, ..))
            } else {
                let n = x.shape().2 / parts;
                x.slice((.., .., part * n..(part + 1) * n))
            }
        }
        StepOp::Add => {
            let mut it = ins.into_iter();
            let first = it.next().expect("inputs");
            it.fold(first, |a, x| a + x)
        }
        StepOp::Mul => {
            let mut it = ins.into_iter();
            let first = it.next().expect("inputs");
            it.fold(first, |a, x| a * x)
        }
        StepOp::Concat { rows: along_rows } => {
            if *along_rows {
                concat_rows(ins)
            } else {
                concat_cols(ins)
            }
        }
        StepOp::Dot { scaled, mask } => {
            let rhs = ins.remove(1);
            let mut lhs = ins.remove(0);
            let k = lhs.shape().2;
            if *mask == DotMask::Left {
                lhs = lhs * run.causal_ones(k);
            }
            let mut y = lhs.matmul(rhs);
            if *scaled {
                y = y * (1.0 / (k as f32).sqrt());
            }
            if *mask == DotMask::Output {
                y = y * run.causal_ones(rows);
            }
            y
        }
        StepOp::Attention {
            heads,
            o,
            head_dim,
            causal,
        } => run.attention(ins.remove(0), heads, *o, *head_dim, *causal, None),
        StepOp::Mlp {
            w1,
            w2,
            w3,
            act: f,
            hidden,
        } => {
            let (d, h) = (cols, *hidden);
            D::mlp(
                ins.remove(0),
                run.matrix(*w1, d, h),
                run.matrix(*w2, h, d),
                w3.map(|w3| run.matrix(w3, d, h)),
                *f,
            )
        }
        StepOp::Moe { .. } | StepOp::Mod { .. } | StepOp::Skip { .. } | StepOp::Moh { .. } => {
            routed::apply(run, step, ins.remove(0))
        }
        StepOp::Composite { recipe, params } => composite(run, recipe, params, ins),
    }
}

/// A composite kind's recipe on tensors: each learned vector broadcast over
/// the batch and rows (which may be a routed subset of tokens), each value
/// handed to its last reader as a graph's are.
fn composite<D: Backend, T: Tape<f32, D>>(
    run: &Run<'_, D, T>,
    recipe: &Recipe,
    params: &[usize],
    ins: Vec<T3<D, T>>,
) -> T3<D, T> {
    let shape = *ins[0].shape();
    let mut ins: Vec<Option<T3<D, T>>> = ins.into_iter().map(Some).collect();
    let mut values = Values {
        vals: (0..recipe.0.len()).map(|_| None).collect(),
        left: recipe.uses(),
    };
    let mut params = params.iter();
    for (i, p) in recipe.0.iter().enumerate() {
        let v = match *p {
            Prim::Input(k) => ins[k].take().expect("each input is read once"),
            Prim::Param { .. } => run
                .vector(*params.next().expect("an id per learned vector"))
                .broadcast_like::<_, Axes2<0, 1>>(&shape),
            Prim::Add(a, b) => {
                let (x, y) = values.pair(a, b);
                x + y
            }
            Prim::Mul(a, b) => {
                let (x, y) = values.pair(a, b);
                x * y
            }
            Prim::Act(f, a) => activate(values.take(a), f),
        };
        values.vals[i] = Some(v);
    }
    values.take(recipe.0.len() - 1)
}

/// Embedding, graph, head: logits (batch, seq, vocab).
pub fn forward<D: Backend, T: Tape<f32, D>>(
    run: &mut Run<'_, D, T>,
    prog: &Program,
    tokens: &[u32],
) -> T3<D, T> {
    let b = run.batch;
    let idx: Vec<usize> = tokens
        .iter()
        .map(|&t| (t as usize).min(prog.vocab - 1))
        .collect();
    let table = run.matrix(prog.embed, prog.vocab, prog.width);
    let x: T3<D, T> = D::gather_rows(table, &idx).reshape_like(&(b, prog.seq, prog.width));
    let y = run_graph(run, &prog.graph, x);
    let logits = run.linear(y, prog.head_w, prog.out_width, prog.vocab);
    logits
        + run
            .vector(prog.head_b)
            .broadcast_like::<_, Axes2<0, 1>>(&(b, prog.seq, prog.vocab))
}
