//! An independent check of a graph: every node's shape follows from its
//! op and inputs, and a causal graph has no op that lets a position see a
//! later one. Lowering never builds a graph that fails this; graphs read
//! from files or built by hand might.

use super::graph::Arch;
pub use super::ops::Broken;
use super::shape::Shape;
use petgraph::algo::is_cyclic_directed;

/// What is wrong with a graph, naming the node (`%index`, as `show`
/// prints it).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("the graph has a cycle")]
    Cycle,
    /// The node's op does not accept its inputs, or breaks causality.
    #[error("node %{node} ({op}): {rule}")]
    Rule {
        node: usize,
        op: String,
        rule: Broken,
    },
    #[error("node %{node} ({op}) says {said} but its inputs give {given}")]
    Shape {
        node: usize,
        op: String,
        said: Shape,
        given: Shape,
    },
    #[error("node %{node}: routed body changes the shape")]
    BodyShape { node: usize },
    /// The path to the node at fault is part of the message, like a
    /// location, so the inner error is shown in it rather than as a cause.
    #[error("in the body of node %{node}: {inner}")]
    Body { node: usize, inner: Box<GraphError> },
}

pub fn check(a: &Arch) -> Result<(), GraphError> {
    if is_cyclic_directed(&a.graph) {
        return Err(GraphError::Cycle);
    }
    for n in a.graph.node_indices() {
        let node = a.node(n);
        let ins: Vec<Shape> = a.inputs(n).iter().map(|&i| a.node(i).shape).collect();
        let want = node
            .op
            .def()
            .infer(&ins, a.causal)
            .map_err(|rule| GraphError::Rule {
                node: n.index(),
                op: node.op.to_string(),
                rule,
            })?;
        if let Some(w) = want {
            if w != node.shape {
                return Err(GraphError::Shape {
                    node: n.index(),
                    op: node.op.to_string(),
                    said: node.shape,
                    given: w,
                });
            }
        }
        if let Some(body) = node.op.body() {
            if body.input_shape() != node.shape || body.output_shape() != node.shape {
                return Err(GraphError::BodyShape { node: n.index() });
            }
            check(body).map_err(|e| GraphError::Body {
                node: n.index(),
                inner: Box::new(e),
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ops::{Attention, Dot, DotMask, Linear, Norm, NormKind, Op};

    fn seq() -> Shape {
        Shape::seq(4, 8)
    }

    /// input → transpose → norm → transpose → output.
    fn norm_over_tokens(causal: bool) -> Arch {
        let mut a = Arch::start(seq(), causal);
        let t = a.add(Op::Transpose, seq().transposed(), &[a.input]);
        let n = a.add(
            Op::Norm(Norm {
                kind: NormKind::Layer,
            }),
            seq().transposed(),
            &[t],
        );
        let back = a.add(Op::Transpose, seq(), &[n]);
        a.finish(back);
        a
    }

    #[test]
    fn a_norm_over_tokens_is_refused_only_in_a_causal_graph() {
        assert_eq!(check(&norm_over_tokens(false)), Ok(()));
        let e = check(&norm_over_tokens(true)).unwrap_err();
        assert!(
            matches!(&e, GraphError::Rule { rule, .. } if rule.to_string().contains("normalises over tokens")),
            "{e}"
        );
    }

    #[test]
    fn a_wrong_shape_names_its_node() {
        let mut a = Arch::start(seq(), false);
        let lin = Op::Linear(Linear {
            out: 6,
            bias: true,
            token_mixing: false,
            causal: false,
        });
        let n = a.add(lin, seq(), &[a.input]);
        a.finish(n);
        let e = check(&a).unwrap_err();
        assert!(
            matches!(e, GraphError::Shape { node, said, .. } if node == n.index() && said == seq()),
            "{e}"
        );
        assert!(
            e.to_string().contains(&format!("node %{}", n.index())),
            "{e}"
        );
    }

    #[test]
    fn causal_graphs_need_masked_attention_and_products() {
        let mut a = Arch::start(seq(), true);
        let att = Op::Attention(Attention {
            heads: 2,
            head_dim: 4,
            causal: false,
        });
        let n = a.add(att, seq(), &[a.input]);
        a.finish(n);
        assert!(check(&a)
            .unwrap_err()
            .to_string()
            .contains("non-causal attention"));
        // q·kᵀ makes a token×token tensor, which must be masked.
        let mut a = Arch::start(seq(), true);
        let kt = a.add(Op::Transpose, seq().transposed(), &[a.input]);
        let tok_tok = Shape {
            rows: seq().rows,
            cols: seq().rows,
        };
        let unmasked = Op::Dot(Dot {
            scaled: true,
            mask: DotMask::None,
        });
        let d = a.add(unmasked, tok_tok, &[a.input, kt]);
        a.finish(d);
        let e = check(&a).unwrap_err();
        assert!(e.to_string().contains("should be Output"), "{e}");
    }
}
