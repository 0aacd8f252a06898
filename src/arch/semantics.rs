//! What grammar forms mean to the sampler: shapes, causality and costs
//! carried down a derivation so that only valid, in-limit networks come out.
//!
//! Costs are accumulated exactly as [`super::lower()`] will build the graph
//! (same ops, same shapes, same `op_cost`), so a finished sample's cost
//! equals its lowered graph's; a property test holds the two together.

use super::context::{ArchContext, Limits};
use super::cost::{body_seq, embedding_cost, head_cost, op_cost, routed_scales, router_cost, Cost};
use super::forms::{self, Placement, Scope};
use super::graph::Arch;
use super::ops::{NormKind, Op};
use super::shape::Shape;
use crate::arch::ops::{Norm, Split};
use crate::grammar::{Alternative, FormProblem, Node, Reject, Semantics, Value};

/// Multipliers an enclosing structure applies to the cost of a subtree:
/// replicated branches copy everything, MoE experts copy parameters and
/// scale per-token work, mixture-of-depths scales work by its capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    pub params: f64,
    pub active: f64,
    pub flops: f64,
    pub nodes: f64,
}

impl Scale {
    pub const ONE: Scale = Scale {
        params: 1.0,
        active: 1.0,
        flops: 1.0,
        nodes: 1.0,
    };

    fn times(self, params: f64, active: f64, flops: f64, nodes: f64) -> Scale {
        Scale {
            params: self.params * params,
            active: self.active * active,
            flops: self.flops * flops,
            nodes: self.nodes * nodes,
        }
    }

    fn apply(self, c: Cost) -> Cost {
        c.scaled(self.params, self.active, self.flops, self.nodes)
    }
}

/// The state flowing through a derivation.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub shape: Shape,
    /// What the enclosing routed forms allow (see `forms::Scope`).
    pub scope: Scope,
    pub scale: Scale,
    /// Cost of the whole network built so far (embedding included).
    pub cost: Cost,
    /// Tokens per sequence the ops here run on (fewer in a depth-routed body).
    pub seq: usize,
}

/// The architecture meaning of every form, for one task shape and limits.
#[derive(Clone, Debug)]
pub struct ArchSemantics {
    pub ctx: ArchContext,
    pub limits: Limits,
}

const MARKER: Cost = Cost {
    params: 0.0,
    active_params: 0.0,
    flops: 0.0,
    nodes: 1.0,
};

impl ArchSemantics {
    pub fn new(ctx: ArchContext, limits: Limits) -> Self {
        ArchSemantics { ctx, limits }
    }

    /// The state at the network's input: token embeddings.
    pub fn start(&self) -> State {
        State {
            shape: Shape::seq(self.ctx.seq_len, self.ctx.width),
            scope: Scope::Sequence,
            scale: Scale::ONE,
            cost: embedding_cost(self.ctx.vocab, self.ctx.width) + MARKER,
            seq: self.ctx.seq_len,
        }
    }

    /// The whole network's cost once `out` reaches the head.
    pub fn total(&self, out: &State) -> Cost {
        out.cost + MARKER + head_cost(out.shape.cols.size, self.ctx.vocab)
    }

    /// `op`'s cost where `at` stands.
    fn op(&self, at: &State, op: &Op, inputs: &[Shape], out: Shape) -> Cost {
        op_cost(op, inputs, out, at.seq)
    }

    fn check_limits(&self, c: &Cost) -> Result<(), Reject> {
        let l = &self.limits;
        let over = |key: &'static str, what: &'static str, v: f64, max: Option<f64>| match max {
            Some(m) if v > m => Err(Reject::over(key, what, v, m)),
            _ => Ok(()),
        };
        over("max_params", "parameters", c.params, l.max_params)?;
        over(
            "max_active_params",
            "active parameters",
            c.active_params,
            l.max_active_params,
        )?;
        over("max_flops", "FLOPs per token", c.flops, l.max_flops)?;
        over("max_nodes", "nodes", c.nodes, l.max_nodes)
    }

    /// `state` advanced by `c` (scaled), checked against the limits.
    fn charge(&self, mut state: State, c: Cost) -> Result<State, Reject> {
        state.cost += state.scale.apply(c);
        self.check_limits(&state.cost)?;
        Ok(state)
    }

    fn norm_cost(&self, at: &State, kind: NormKind, s: Shape) -> Cost {
        self.op(at, &Op::Norm(Norm { kind }), &[s], s)
    }

    fn routed_op(&self, node: &Node, s: Shape) -> Result<Op, Reject> {
        forms::routed(node, Arch::start(s, self.ctx.causal), &self.ctx)
    }
}

fn branch_params<'a>(node: &'a Node) -> Result<(&'a str, usize, &'a str), Reject> {
    let factor = forms::get_int(node, "factor").unwrap_or(2).max(1) as usize;
    Ok((
        forms::name(node, "split")?,
        factor,
        forms::name(node, "merge")?,
    ))
}

impl Semantics for ArchSemantics {
    type State = State;

    fn check_alternative(&self, alt: &Alternative) -> Result<(), FormProblem> {
        forms::check_alternative(alt)
    }

    fn arity(&self, node: &Node, declared: usize) -> usize {
        forms::arity(node, declared)
    }

    /// A node's rules read the shape, the scope and the tokens per
    /// sequence, never the cost so far or the scale.
    type Key = (Shape, Scope, usize);

    /// What the node adds (unscaled), if anything.
    type Charge = Option<Cost>;

    fn admit_key(&self, input: &State) -> Self::Key {
        (input.shape, input.scope, input.seq)
    }

    fn admit_charge(&self, node: &Node, input: &State) -> Result<Option<Cost>, Reject> {
        let s = input.shape;
        match node.form {
            "seq" | "repeat" => Ok(None),
            "branch" => {
                let (split, factor, merge) = branch_params(node)?;
                if matches!(merge, "dot" | "scaled_dot") && factor != 2 {
                    return Err(Reject::new(
                        "shape",
                        format!("a dot product joins 2 branches, not {factor}"),
                    ));
                }
                forms::split_shape(split, factor, s).map(|_| None)
            }
            "route" => {
                if forms::name(node, "pre")? == "transpose" {
                    forms::transpose(s, &self.ctx, input.scope)?;
                }
                Ok(None)
            }
            "block" => {
                let b = forms::block(node, &self.ctx)?;
                if b.placement != Placement::None {
                    forms::block_shapes(&b, s, s.with_feat(s.cols.size))?;
                }
                Ok(None)
            }
            "moe" | "mod" | "layer_skip" => {
                forms::nested_routing(node.form, input.scope)?;
                let d = forms::need_seq(node.form, s)?;
                let op = self.routed_op(node, s)?;
                Ok(Some(router_cost(&op, d)))
            }
            _ => Ok(forms::terminal(node, s, &self.ctx, input.scope)?
                .map(|(op, out)| self.op(input, &op, &[s], out))),
        }
    }

    fn admit_within(&self, charge: &Option<Cost>, input: &State) -> Result<(), Reject> {
        match charge {
            Some(c) => self.charge(input.clone(), *c).map(|_| ()),
            None => Ok(()),
        }
    }

    fn child_input(
        &self,
        node: &Node,
        input: &State,
        i: usize,
        n: usize,
        done: &[State],
    ) -> Result<State, Reject> {
        let s = input.shape;
        let prev_cost = done.last().map_or(input.cost, |d| d.cost);
        let mut st = State {
            cost: prev_cost,
            ..input.clone()
        };
        match node.form {
            "seq" | "repeat" => {
                if let Some(d) = done.last() {
                    st.shape = d.shape;
                }
                Ok(st)
            }
            "branch" => {
                let (split, factor, _) = branch_params(node)?;
                st.shape = forms::split_shape(split, factor, s)?;
                if i == 0 && split == "group" {
                    let one = self.op(
                        &st,
                        &Op::Split(Split {
                            part: 0,
                            parts: factor,
                        }),
                        &[s],
                        st.shape,
                    );
                    st = self.charge(st, one.scaled(1.0, 1.0, 1.0, factor as f64))?;
                }
                if n == 1 && factor > 2 {
                    let f = factor as f64;
                    st.scale = st.scale.times(f, f, f, f);
                }
                Ok(st)
            }
            "route" => {
                if forms::name(node, "pre")? == "transpose" {
                    st.shape = forms::transpose(s, &self.ctx, input.scope)?;
                    let c = self.op(&st, &Op::Transpose, &[s], s.transposed());
                    st = self.charge(st, c)?;
                }
                Ok(st)
            }
            "block" => {
                let b = forms::block(node, &self.ctx)?;
                if matches!(b.placement, Placement::Pre | Placement::Peri) {
                    let c = self.norm_cost(&st, b.norm, s);
                    st = self.charge(st, c)?;
                }
                Ok(st)
            }
            "moe" | "mod" | "layer_skip" => {
                let op = self.routed_op(node, s)?;
                let d = forms::need_seq(node.form, s)?;
                st = self.charge(st, router_cost(&op, d))?;
                let (copies, touched, flops) = routed_scales(&op, input.seq);
                st.scale = st.scale.times(copies, touched, flops, 1.0);
                st.seq = body_seq(&op, input.seq);
                st.scope = input.scope.inside(node.form);
                self.charge(st, MARKER)
            }
            other => Err(Reject::new("form", format!("`{other}` takes no children"))),
        }
    }

    fn output(&self, node: &Node, input: &State, children: &[State]) -> Result<State, Reject> {
        let s = input.shape;
        let last = children.last().cloned();
        let restore = |mut st: State| {
            st.scale = input.scale;
            st.scope = input.scope;
            st.seq = input.seq;
            st
        };
        match node.form {
            "seq" | "repeat" => Ok(restore(last.unwrap_or_else(|| input.clone()))),
            "branch" => {
                let (_, factor, merge) = branch_params(node)?;
                let replicated = children.len() == 1 && factor > 2;
                if !replicated && children.len() != factor {
                    return Err(Reject::new(
                        "shape",
                        format!(
                            "a branch of factor {factor} has {} children",
                            children.len()
                        ),
                    ));
                }
                let outs: Vec<Shape> = if replicated {
                    vec![children[0].shape; factor]
                } else {
                    children.iter().map(|c| c.shape).collect()
                };
                let (op, out) = forms::merge(merge, &outs, &self.ctx)?;
                let mut st = restore(last.unwrap_or_else(|| input.clone()));
                let c = self.op(&st, &op, &outs, out);
                st = self.charge(st, c)?;
                st.shape = out;
                Ok(st)
            }
            "route" => {
                let mut st = restore(last.unwrap_or_else(|| input.clone()));
                if forms::name(node, "post")? == "transpose" {
                    let t = forms::transpose(st.shape, &self.ctx, input.scope)?;
                    let c = self.op(&st, &Op::Transpose, &[st.shape], t);
                    st = self.charge(st, c)?;
                    st.shape = t;
                }
                Ok(st)
            }
            "block" => {
                let b = forms::block(node, &self.ctx)?;
                let body = last.ok_or_else(|| Reject::new("shape", "a block needs a child"))?;
                let out = forms::block_shapes(&b, s, body.shape)?;
                let mut st = restore(body);
                if b.placement == Placement::Peri {
                    let c = self.norm_cost(&st, b.norm, out);
                    st = self.charge(st, c)?;
                }
                if b.residual {
                    let c = self.op(&st, &Op::Add, &[s, out], out);
                    st = self.charge(st, c)?;
                }
                if b.placement == Placement::Post {
                    let c = self.norm_cost(&st, b.norm, out);
                    st = self.charge(st, c)?;
                }
                st.shape = out;
                Ok(st)
            }
            "moe" | "mod" | "layer_skip" => {
                let body =
                    last.ok_or_else(|| Reject::new("shape", "a routed block needs a body"))?;
                if body.shape != s {
                    return Err(Reject::new(
                        "shape",
                        format!("a routed body must keep the shape {s}, got {}", body.shape),
                    ));
                }
                let st = self.charge(body, MARKER)?;
                Ok(restore(st))
            }
            _ => match forms::terminal(node, s, &self.ctx, input.scope)? {
                Some((op, out)) => {
                    let mut st = self.charge(input.clone(), self.op(input, &op, &[s], out))?;
                    st.shape = out;
                    Ok(st)
                }
                None => Ok(input.clone()),
            },
        }
    }

    fn canonical(&self, node: &Node) -> Vec<(String, Value)> {
        forms::canonical_params(node)
    }

    fn make_canonical(&self, form: &str, params: &mut Vec<(String, Value)>) {
        forms::canonicalise(form, params);
    }

    fn finish(&self, out: &State) -> Result<(), Reject> {
        let s = out.shape;
        if !s.is_seq() || s.rows.size != self.ctx.seq_len {
            return Err(Reject::new(
                "output",
                format!(
                    "the network must end in ({} tokens × features) for the head, got {s}",
                    self.ctx.seq_len
                ),
            ));
        }
        self.check_limits(&self.total(out))
    }
}
