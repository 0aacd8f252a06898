//! An independent check of a graph: every node's shape follows from its
//! op and inputs, and a causal graph has no op that lets a position see a
//! later one. Lowering never builds a graph that fails this; graphs read
//! from files or built by hand might.

use super::graph::Arch;
use super::ops::{DotMask, Op};
use super::shape::{Axis, Shape};
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

/// The rule an op's inputs break.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Broken(String);

impl From<&str> for Broken {
    fn from(s: &str) -> Broken {
        Broken(s.to_string())
    }
}

impl From<String> for Broken {
    fn from(s: String) -> Broken {
        Broken(s)
    }
}

pub fn check(a: &Arch) -> Result<(), GraphError> {
    if is_cyclic_directed(&a.graph) {
        return Err(GraphError::Cycle);
    }
    for n in a.graph.node_indices() {
        let node = a.node(n);
        let ins: Vec<Shape> = a.inputs(n).iter().map(|&i| a.node(i).shape).collect();
        let want = infer(&node.op, &ins, a.causal).map_err(|rule| GraphError::Rule {
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

fn arity(ins: &[Shape], n: usize) -> Result<(), Broken> {
    if ins.len() == n {
        Ok(())
    } else {
        Err(format!("expects {n} input(s), has {}", ins.len()).into())
    }
}

/// The output shape of `op` on `ins` (`None` for the input marker).
fn infer(op: &Op, ins: &[Shape], causal: bool) -> Result<Option<Shape>, Broken> {
    let tok_last_of_feat = |s: Shape| s.cols.axis == Axis::Tok && s.rows.axis == Axis::Feat;
    let out = match op {
        Op::Input => {
            arity(ins, 0)?;
            return Ok(None);
        }
        Op::Output | Op::Act { .. } | Op::PosEnc => {
            arity(ins, 1)?;
            ins[0]
        }
        Op::Norm { .. } | Op::Softmax { .. } => {
            arity(ins, 1)?;
            if causal && tok_last_of_feat(ins[0]) {
                return Err("normalises over tokens in a causal graph".into());
            }
            if let Op::Softmax { causal: false } = op {
                if causal && ins[0].is_tok_tok() {
                    return Err("unmasked token×token softmax in a causal graph".into());
                }
            }
            ins[0]
        }
        Op::Linear {
            out,
            token_mixing,
            causal: masked,
            ..
        } => {
            arity(ins, 1)?;
            let s = ins[0];
            let over_tokens = s.cols.axis == Axis::Tok;
            if over_tokens != *token_mixing {
                return Err("token_mixing does not match the input's last axis".into());
            }
            if over_tokens && (*out != s.cols.size || (causal && !masked)) {
                return Err(
                    "token-mixing linear must keep the length and be masked when causal".into(),
                );
            }
            Shape {
                rows: s.rows,
                cols: super::shape::Dim {
                    axis: s.cols.axis,
                    size: *out,
                },
            }
        }
        Op::Transpose => {
            arity(ins, 1)?;
            if causal && ins[0].is_tok_tok() {
                return Err("transposes a token×token tensor in a causal graph".into());
            }
            ins[0].transposed()
        }
        Op::Split { part, parts } => {
            arity(ins, 1)?;
            let f = ins[0].feat().ok_or("no feature axis to split")?;
            if *parts == 0 || part >= parts || f % parts != 0 {
                return Err(format!("cannot take part {part} of {parts} from {f} features").into());
            }
            ins[0].with_feat(f / parts)
        }
        Op::Add | Op::Mul => {
            if ins.len() < 2 || ins.iter().any(|s| *s != ins[0]) {
                return Err("needs two or more inputs of one shape".into());
            }
            ins[0]
        }
        Op::Concat => {
            let f0 = ins
                .first()
                .and_then(|s| s.feat())
                .ok_or("no inputs with a feature axis")?;
            let total: usize = ins.iter().map(|s| s.feat().unwrap_or(0)).sum();
            if ins.iter().any(|s| s.with_feat(f0) != ins[0]) {
                return Err("inputs differ outside the feature axis".into());
            }
            ins[0].with_feat(total)
        }
        Op::Dot { mask, .. } => {
            arity(ins, 2)?;
            let (a, b) = (ins[0], ins[1]);
            if a.cols != b.rows {
                return Err(format!("cannot multiply {a} by {b}").into());
            }
            let out = Shape {
                rows: a.rows,
                cols: b.cols,
            };
            if causal {
                let need = if a.cols.axis == Axis::Tok {
                    if a.rows.axis == Axis::Feat {
                        return Err(
                            "contracts over tokens with a feature×token left operand".into()
                        );
                    }
                    DotMask::Left
                } else if out.is_tok_tok() {
                    DotMask::Output
                } else {
                    DotMask::None
                };
                if *mask != need {
                    return Err(format!("causal mask should be {need:?}, is {mask:?}").into());
                }
            }
            out
        }
        Op::Attention { causal: c, .. } | Op::Moh { causal: c, .. } => {
            arity(ins, 1)?;
            if !ins[0].is_seq() {
                return Err("attention needs (tokens × features)".into());
            }
            if causal && !c {
                return Err("non-causal attention in a causal graph".into());
            }
            ins[0]
        }
        Op::Mlp { .. } | Op::Moe { .. } | Op::Mod { .. } | Op::LayerSkip { .. } => {
            arity(ins, 1)?;
            if ins[0].cols.axis != Axis::Feat {
                return Err("needs features on the last axis".into());
            }
            ins[0]
        }
    };
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ops::NormKind;

    fn seq() -> Shape {
        Shape::seq(4, 8)
    }

    /// input → transpose → norm → transpose → output.
    fn norm_over_tokens(causal: bool) -> Arch {
        let mut a = Arch::start(seq(), causal);
        let t = a.add(Op::Transpose, seq().transposed(), &[a.input]);
        let n = a.add(
            Op::Norm {
                kind: NormKind::Layer,
            },
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
        let lin = Op::Linear {
            out: 6,
            bias: true,
            token_mixing: false,
            causal: false,
        };
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
        let att = Op::Attention {
            heads: 2,
            head_dim: 4,
            causal: false,
        };
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
        let unmasked = Op::Dot {
            scaled: true,
            mask: DotMask::None,
        };
        let d = a.add(unmasked, tok_tok, &[a.input, kt]);
        a.finish(d);
        let e = check(&a).unwrap_err();
        assert!(e.to_string().contains("should be Output"), "{e}");
    }
}
