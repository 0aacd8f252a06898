//! Lowering: a derivation becomes an `Arch` graph.
//!
//! Uses the same shape rules as the sampler's semantics ([`super::forms`]),
//! so any tree the semantics accepts lowers without error.

use super::context::ArchContext;
use super::forms::{self, Placement, Scope};
use super::graph::Arch;
use super::ops::Op;
use super::shape::Shape;
use crate::arch::ops::{Norm, Split};
use crate::grammar::{Derivation, Node, Reject};
use petgraph::graph::NodeIndex;

/// Builds the graph of a whole network (embedding in, head out excluded).
pub fn lower(d: &Derivation, ctx: &ArchContext) -> Result<Arch, Reject> {
    let mut arch = Arch::start(Shape::seq(ctx.seq_len, ctx.width), ctx.causal);
    let x = arch.input;
    let y = lower_into(d, &mut arch, x, ctx, Scope::Sequence)?;
    arch.finish(y);
    Ok(arch)
}

fn lower_into(
    d: &Derivation,
    arch: &mut Arch,
    x: NodeIndex,
    ctx: &ArchContext,
    scope: Scope,
) -> Result<NodeIndex, Reject> {
    let node = Node {
        form: &d.form,
        params: &d.params,
    };
    let s = arch.node(x).shape;
    match d.form.as_str() {
        "seq" | "repeat" => {
            if d.form == "repeat" && d.children.len() != forms::arity(&node, 1) {
                return Err(Reject::new(
                    "shape",
                    format!(
                        "repeat has {} children, n says {}",
                        d.children.len(),
                        forms::arity(&node, 1)
                    ),
                ));
            }
            d.children
                .iter()
                .try_fold(x, |y, c| lower_into(c, arch, y, ctx, scope))
        }
        "branch" => {
            let split = forms::name(&node, "split")?;
            let merge = forms::name(&node, "merge")?;
            let factor = forms::get_int(&node, "factor").unwrap_or(2).max(1) as usize;
            let replicated = d.children.len() == 1 && factor > 2;
            if !replicated && d.children.len() != factor {
                return Err(Reject::new(
                    "shape",
                    format!(
                        "a branch of factor {factor} has {} children",
                        d.children.len()
                    ),
                ));
            }
            let part_shape = forms::split_shape(split, factor, s)?;
            let inputs: Vec<NodeIndex> = (0..factor)
                .map(|part| {
                    if split == "group" {
                        arch.add(
                            Op::Split(Split {
                                part,
                                parts: factor,
                            }),
                            part_shape,
                            &[x],
                        )
                    } else {
                        x
                    }
                })
                .collect();
            let mut outs = Vec::with_capacity(factor);
            for (b, &input) in inputs.iter().enumerate() {
                let child = &d.children[if replicated { 0 } else { b }];
                outs.push(lower_into(child, arch, input, ctx, scope)?);
            }
            let shapes: Vec<Shape> = outs.iter().map(|&o| arch.node(o).shape).collect();
            let (op, out) = forms::merge(merge, &shapes, ctx)?;
            Ok(arch.add(op, out, &outs))
        }
        "route" => {
            let child = only_child(d)?;
            let mut y = x;
            if forms::name(&node, "pre")? == "transpose" {
                let t = forms::transpose(s, ctx, scope)?;
                y = arch.add(Op::Transpose, t, &[y]);
            }
            y = lower_into(child, arch, y, ctx, scope)?;
            if forms::name(&node, "post")? == "transpose" {
                let t = forms::transpose(arch.node(y).shape, ctx, scope)?;
                y = arch.add(Op::Transpose, t, &[y]);
            }
            Ok(y)
        }
        "block" => {
            let b = forms::block(&node, ctx)?;
            let child = only_child(d)?;
            let norm = Op::Norm(Norm { kind: b.norm });
            let mut y = x;
            if matches!(b.placement, Placement::Pre | Placement::Peri) {
                y = arch.add(norm.clone(), s, &[y]);
            }
            y = lower_into(child, arch, y, ctx, scope)?;
            let out = forms::block_shapes(&b, s, arch.node(y).shape)?;
            if b.placement == Placement::Peri {
                y = arch.add(norm.clone(), out, &[y]);
            }
            if b.residual {
                y = arch.add(Op::Add, out, &[x, y]);
            }
            if b.placement == Placement::Post {
                y = arch.add(norm, out, &[y]);
            }
            Ok(y)
        }
        "moe" | "mod" | "layer_skip" => {
            forms::nested_routing(&d.form, scope)?;
            forms::need_seq(&d.form, s)?;
            let child = only_child(d)?;
            let mut body = Arch::start(s, ctx.causal);
            let bin = body.input;
            let by = lower_into(child, &mut body, bin, ctx, scope.inside(&d.form))?;
            body.finish(by);
            if body.output_shape() != s {
                return Err(Reject::new(
                    "shape",
                    format!(
                        "a routed body must keep the shape {s}, got {}",
                        body.output_shape()
                    ),
                ));
            }
            let op = forms::routed(&node, body, ctx)?;
            Ok(arch.add(op, s, &[x]))
        }
        _ => {
            if !d.children.is_empty() {
                return Err(Reject::new(
                    "form",
                    format!("`{}` takes no children", d.form),
                ));
            }
            match forms::terminal(&node, s, ctx, scope)? {
                Some((op, out)) => Ok(arch.add(op, out, &[x])),
                None => Ok(x),
            }
        }
    }
}

fn only_child(d: &Derivation) -> Result<&Derivation, Reject> {
    match d.children.as_slice() {
        [c] => Ok(c),
        other => Err(Reject::new(
            "form",
            format!("`{}` takes one child, found {}", d.form, other.len()),
        )),
    }
}
