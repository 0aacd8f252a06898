//! What each form builds: the op a leaf becomes, the shapes of branches,
//! blocks and routes, and the scope and causality rules (see `forms`).

use super::catalogue::{boolean, float, get_int, int, missing, name, param};
use crate::arch::context::ArchContext;
use crate::arch::ops::{
    Act, Affine, Attention, Dot, LayerScale, LayerSkip, Linear, Mlp, Mod, Moe, Moh, Norm, Softmax,
};
use crate::arch::ops::{Activation, Balance, DotMask, MoeSpec, NormKind, Op, RouterKind};
use crate::arch::shape::{Axis, Dim, Shape};
use crate::grammar::{Node, Reject, Value};
use smallvec::SmallVec;

/// Number of child subtrees (see [`crate::grammar::Semantics::arity`]).
pub fn arity(node: &Node, declared: usize) -> usize {
    match node.form {
        "repeat" => get_int(node, "n").unwrap_or(1).max(1) as usize,
        // Factor 2 from one symbol draws two independent children (einspace);
        // larger factors replicate one child's structure.
        "branch" if declared == 1 => {
            if get_int(node, "factor") == Some(2) {
                2
            } else {
                1
            }
        }
        _ => declared,
    }
}

/// Copies the lowering makes of each child of a branch.
pub fn replication(node: &Node, children: usize) -> usize {
    let factor = get_int(node, "factor").unwrap_or(2).max(1) as usize;
    if children == 1 {
        factor
    } else {
        1
    }
}

fn shape_err(detail: String) -> Reject {
    Reject::new("shape", detail)
}

fn causal_err(detail: String) -> Reject {
    Reject::new("causality", detail)
}

/// Where a form sits, which limits what it may do with tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The network's own sequence.
    #[default]
    Sequence,
    /// A mixture-of-depths body: it runs on the routed tokens only,
    /// gathered in order, so nothing in it may depend on positions or on the
    /// sequence length (attention among the routed tokens is fine).
    Routed,
    /// A layer-skip body: as `Routed`, and since sequences route different
    /// numbers of tokens it runs once per group of equal counts, so no
    /// routed layer may nest inside it.
    SkipBody,
    /// An MoE expert: no op may mix tokens or positions.
    Expert,
}

impl Scope {
    /// The scope of a routed form's body.
    pub fn inside(self, form: &str) -> Scope {
        match (form, self) {
            ("moe", _) => Scope::Expert,
            ("layer_skip", _) => Scope::SkipBody,
            (_, Scope::Sequence) => Scope::Routed,
            (_, s) => s,
        }
    }
}

/// Rejects forms that depend on positions outside the network's sequence.
fn positional(form: &str, scope: Scope) -> Result<(), Reject> {
    match scope {
        Scope::Sequence => Ok(()),
        Scope::Expert => Err(token_wise_err(form)),
        Scope::Routed | Scope::SkipBody => Err(Reject::new(
            "routed_body",
            format!(
                "`{form}` depends on positions, which a mixture-of-depths or layer-skip body may not: it sees only the routed tokens"
            ),
        )),
    }
}

/// Rejects routed forms where they cannot nest.
pub fn nested_routing(form: &str, scope: Scope) -> Result<(), Reject> {
    let inside = match scope {
        Scope::Sequence | Scope::Routed => return Ok(()),
        Scope::Expert => "an expert",
        Scope::SkipBody => "a layer-skip body",
    };
    Err(Reject::new(
        "nesting",
        format!("`{form}` cannot be nested inside {inside}"),
    ))
}

fn token_wise_err(form: &str) -> Reject {
    Reject::new(
        "token_wise",
        format!("`{form}` mixes tokens or positions, which an expert body may not"),
    )
}

/// The feature axis is last: what norms, MLPs and blocks work on.
fn need_feat_last(form: &str, s: Shape) -> Result<usize, Reject> {
    if s.cols.axis == Axis::Feat {
        Ok(s.cols.size)
    } else {
        Err(shape_err(format!(
            "`{form}` needs features on the last axis, got {s}"
        )))
    }
}

/// A (tokens × features) input: what attention and routed blocks take.
pub fn need_seq(form: &str, s: Shape) -> Result<usize, Reject> {
    if s.is_seq() {
        Ok(s.cols.size)
    } else {
        Err(shape_err(format!(
            "`{form}` needs a (tokens × features) input, got {s}"
        )))
    }
}

fn head_dim(node: &Node, heads: usize, d: usize) -> Result<usize, Reject> {
    match param(node, "head_dim") {
        Some(Value::Int(h)) => Ok(*h as usize),
        _ if d % heads == 0 => Ok(d / heads),
        _ => Err(shape_err(format!(
            "width {d} is not divisible by {heads} heads"
        ))),
    }
}

/// The op a leaf form becomes (`None` for identity) and its output shape.
pub fn terminal(
    node: &Node,
    s: Shape,
    ctx: &ArchContext,
    scope: Scope,
) -> Result<Option<(Op, Shape)>, Reject> {
    let token_wise = scope == Scope::Expert;
    let last_tok = s.cols.axis == Axis::Tok;
    let op = match node.form {
        "identity" => return Ok(None),
        "linear" => {
            let bias = boolean(node, "bias", ctx)?;
            let out = match param(node, "width") {
                Some(Value::Int(w)) => *w as usize,
                Some(Value::Name(n)) if n == "model" => ctx.width,
                Some(Value::Name(n)) if n == "same" => s.cols.size,
                _ => return Err(missing(node, "width")),
            };
            if last_tok {
                if token_wise {
                    return Err(token_wise_err("linear over tokens"));
                }
                if out != s.cols.size {
                    return Err(shape_err(format!(
                        "linear over the token axis must keep its {} positions, not map to {out}",
                        s.cols.size
                    )));
                }
            }
            (
                Op::Linear(Linear {
                    out,
                    bias,
                    token_mixing: last_tok,
                    causal: last_tok && ctx.causal,
                }),
                Shape {
                    rows: s.rows,
                    cols: Dim {
                        axis: s.cols.axis,
                        size: out,
                    },
                },
            )
        }
        "norm" | "softmax" => {
            if last_tok && s.rows.axis == Axis::Feat && ctx.causal {
                return Err(causal_err(format!(
                    "`{}` over the token axis of {s} would let a position see later ones",
                    node.form
                )));
            }
            let op = if node.form == "norm" {
                let kind = name(node, "kind")?;
                Op::Norm(Norm {
                    kind: NormKind::parse(kind).ok_or_else(|| missing(node, "kind"))?,
                })
            } else {
                Op::Softmax(Softmax {
                    causal: ctx.causal && s.is_tok_tok(),
                })
            };
            (op, s)
        }
        "act" => {
            let f = Activation::parse(name(node, "fn")?).ok_or_else(|| missing(node, "fn"))?;
            (Op::Act(Act { f }), s)
        }
        "layer_scale" => {
            need_feat_last("layer_scale", s)?;
            let init = float(node, "init")?;
            (Op::LayerScale(LayerScale { init }), s)
        }
        "affine" => {
            need_feat_last("affine", s)?;
            (Op::Affine(Affine), s)
        }
        "posenc" => {
            positional("posenc", scope)?;
            (Op::PosEnc, s)
        }
        "attention" => {
            if token_wise {
                return Err(token_wise_err("attention"));
            }
            let d = need_seq("attention", s)?;
            let heads = int(node, "heads")? as usize;
            let causal = boolean(node, "causal", ctx)?;
            check_attention_causal(causal, ctx)?;
            let head_dim = head_dim(node, heads, d)?;
            (
                Op::Attention(Attention {
                    heads,
                    head_dim,
                    causal,
                }),
                s,
            )
        }
        "moh" => {
            if token_wise {
                return Err(token_wise_err("moh"));
            }
            nested_routing("moh", scope)?;
            let d = need_seq("moh", s)?;
            let heads = int(node, "heads")? as usize;
            let active = int(node, "active")? as usize;
            let shared = int(node, "shared")? as usize;
            if shared + active > heads || shared + active == 0 {
                return Err(Reject::new(
                    "routing",
                    format!("moh needs 1 ≤ shared + active ≤ heads; got shared {shared}, active {active}, heads {heads}"),
                ));
            }
            let causal = boolean(node, "causal", ctx)?;
            check_attention_causal(causal, ctx)?;
            let head_dim = head_dim(node, heads, d)?;
            (
                Op::Moh(Moh {
                    heads,
                    active,
                    shared,
                    head_dim,
                    causal,
                }),
                s,
            )
        }
        "mlp" => {
            let d = need_feat_last("mlp", s)?;
            let ratio = float(node, "ratio")?;
            let hidden = (ratio * d as f64).round().max(1.0) as usize;
            let act = Activation::parse(name(node, "act")?).ok_or_else(|| missing(node, "act"))?;
            let gated = boolean(node, "gated", ctx)?;
            (Op::Mlp(Mlp { hidden, act, gated }), s)
        }
        other => return Err(Reject::new("form", format!("`{other}` is not a leaf form"))),
    };
    Ok(Some(op))
}

fn check_attention_causal(causal: bool, ctx: &ArchContext) -> Result<(), Reject> {
    if ctx.causal && !causal {
        Err(causal_err(
            "non-causal attention in a causal (decoder) task".into(),
        ))
    } else {
        Ok(())
    }
}

/// The transpose a `route` applies, checked against the causality rules.
pub fn transpose(s: Shape, ctx: &ArchContext, scope: Scope) -> Result<Shape, Reject> {
    positional("transpose", scope)?;
    if ctx.causal && s.is_tok_tok() {
        return Err(causal_err(
            "transposing a (token × token) tensor swaps queries and keys".into(),
        ));
    }
    Ok(s.transposed())
}

/// Input shape of each branch for a split.
pub fn split_shape(split: &str, factor: usize, s: Shape) -> Result<Shape, Reject> {
    if split == "clone" {
        return Ok(s);
    }
    let f = s
        .feat()
        .ok_or_else(|| shape_err(format!("group split needs a feature axis, got {s}")))?;
    if f % factor != 0 || f < factor {
        return Err(shape_err(format!(
            "{f} features do not split into {factor} groups"
        )));
    }
    Ok(s.with_feat(f / factor))
}

/// The op joining a branch's outputs, and its output shape.
pub fn merge(merge: &str, outs: &[Shape], ctx: &ArchContext) -> Result<(Op, Shape), Reject> {
    let first = *outs
        .first()
        .ok_or_else(|| shape_err("a branch needs children".into()))?;
    match merge {
        "add" | "mul" => {
            if let Some(o) = outs.iter().find(|o| **o != first) {
                return Err(shape_err(format!("{merge} of {first} and {o}")));
            }
            let op = if merge == "add" { Op::Add } else { Op::Mul };
            Ok((op, first))
        }
        "concat" => {
            let f = first
                .feat()
                .ok_or_else(|| shape_err(format!("concat needs a feature axis, got {first}")))?;
            let mut total = 0;
            for o in outs {
                let same_layout = o.rows.axis == first.rows.axis && o.cols.axis == first.cols.axis;
                if !same_layout || o.with_feat(f) != first {
                    return Err(shape_err(format!("concat of {first} and {o}")));
                }
                total += o.feat().unwrap_or(0);
            }
            Ok((Op::Concat, first.with_feat(total)))
        }
        "dot" | "scaled_dot" => {
            let [a, b] = outs else {
                return Err(shape_err(format!(
                    "a dot product joins 2 branches, not {}",
                    outs.len()
                )));
            };
            if a.cols != b.rows {
                return Err(shape_err(format!("dot product of {a} and {b}")));
            }
            let out = Shape {
                rows: a.rows,
                cols: b.cols,
            };
            let mut mask = DotMask::None;
            if ctx.causal {
                if a.cols.axis == Axis::Tok {
                    if a.rows.axis == Axis::Feat {
                        return Err(causal_err(format!(
                            "contracting over tokens with a {a} left operand mixes every position"
                        )));
                    }
                    mask = DotMask::Left;
                } else if out.is_tok_tok() {
                    mask = DotMask::Output;
                }
            }
            Ok((
                Op::Dot(Dot {
                    scaled: merge == "scaled_dot",
                    mask,
                }),
                out,
            ))
        }
        other => Err(Reject::new("form", format!("unknown merge `{other}`"))),
    }
}

/// Norm placement of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Pre,
    Post,
    Peri,
    None,
}

pub struct BlockSpec {
    pub placement: Placement,
    pub residual: bool,
    pub norm: NormKind,
}

pub fn block(node: &Node, ctx: &ArchContext) -> Result<BlockSpec, Reject> {
    let placement = match name(node, "norm")? {
        "pre" => Placement::Pre,
        "post" => Placement::Post,
        "peri" => Placement::Peri,
        _ => Placement::None,
    };
    let norm =
        NormKind::parse(name(node, "norm_kind")?).ok_or_else(|| missing(node, "norm_kind"))?;
    Ok(BlockSpec {
        placement,
        residual: boolean(node, "residual", ctx)?,
        norm,
    })
}

/// Checks a block's input and its sublayer's output shapes.
pub fn block_shapes(b: &BlockSpec, input: Shape, body_out: Shape) -> Result<Shape, Reject> {
    if b.placement != Placement::None {
        need_feat_last("block norm", input)?;
        need_feat_last("block norm", body_out)?;
    }
    if b.residual && body_out != input {
        return Err(shape_err(format!(
            "a residual block's sublayer must keep the shape {input}, got {body_out}"
        )));
    }
    Ok(body_out)
}

/// The routed op for a `moe`, `mod` or `layer_skip` node, given its body.
pub fn routed(
    node: &Node,
    body: crate::arch::graph::Arch,
    ctx: &ArchContext,
) -> Result<Op, Reject> {
    let body = Box::new(body);
    let noncausal = |what: &str| {
        if ctx.causal && !ctx.allow_noncausal_routing {
            Err(causal_err(format!(
                "{what} picks tokens by looking at the whole sequence; this space does not allow it in a causal task"
            )))
        } else {
            Ok(())
        }
    };
    match node.form {
        "moe" => {
            let spec = moe_spec(node)?;
            if spec.top_k > spec.experts {
                return Err(Reject::new(
                    "routing",
                    format!("top_k {} exceeds {} experts", spec.top_k, spec.experts),
                ));
            }
            if spec.router == RouterKind::ExpertChoice {
                noncausal("expert-choice routing")?;
            }
            Ok(Op::Moe(Moe {
                spec: spec.canonical(),
                expert: body,
            }))
        }
        "mod" => {
            let causal = boolean(node, "causal", ctx)?;
            if !causal {
                noncausal("mixture-of-depths top-k routing")?;
            }
            Ok(Op::Mod(Mod {
                capacity: float(node, "capacity")?,
                causal,
                body,
            }))
        }
        "layer_skip" => Ok(Op::LayerSkip(LayerSkip {
            capacity: float(node, "capacity")?,
            body,
        })),
        other => Err(Reject::new("form", format!("`{other}` is not routed"))),
    }
}

/// A `moe` node's router settings as written (defaults filled in).
fn moe_spec(node: &Node) -> Result<MoeSpec, Reject> {
    Ok(MoeSpec {
        experts: int(node, "experts")? as usize,
        top_k: int(node, "top_k")? as usize,
        shared: int(node, "shared")? as usize,
        router: RouterKind::parse(name(node, "router")?).ok_or_else(|| missing(node, "router"))?,
        capacity: float(node, "capacity")?,
        top_p: float(node, "top_p")?,
        balance: Balance::parse(name(node, "balance")?).ok_or_else(|| missing(node, "balance"))?,
    })
}

/// The node's parameters with every one that has no effect given the
/// others set to the one value it canonically takes (see
/// [`MoeSpec::canonical`]; a block without norms ignores `norm_kind`,
/// which becomes `layer`). Parameters left out stay out: their defaults
/// are canonicalised where they are used. Equal networks then have equal
/// derivations, and so equal text forms and hashes.
pub fn canonical_params(node: &Node) -> Vec<(String, Value)> {
    let mut params = node.params.to_vec();
    canonicalise(node.form, &mut params);
    params
}

/// [`canonical_params`] in place: most forms have nothing to fix, and a
/// lowering canonicalises every node of a tree.
pub fn canonicalise(form: &str, params: &mut [(String, Value)]) {
    let node = Node { form, params };
    let fixes: SmallVec<[(&str, Value); 4]> = match form {
        "moe" => match moe_spec(&node) {
            Ok(spec) => {
                let c = spec.canonical();
                smallvec::smallvec![
                    ("top_k", Value::Int(c.top_k as i64)),
                    ("capacity", Value::Float(c.capacity)),
                    ("top_p", Value::Float(c.top_p)),
                    ("balance", Value::Name(c.balance.name().into())),
                ]
            }
            Err(_) => SmallVec::new(),
        },
        "block" if name(&node, "norm") == Ok("none") => {
            smallvec::smallvec![("norm_kind", Value::Name(NormKind::Layer.name().into()))]
        }
        _ => return,
    };
    for (key, v) in fixes {
        if let Some(slot) = params.iter_mut().find(|(n, _)| n == key) {
            if !slot.1.same(&v) {
                slot.1 = v;
            }
        }
    }
}

/// Routed forms: their child is a nested body.
pub fn is_routed(form: &str) -> bool {
    matches!(form, "moe" | "mod" | "layer_skip")
}
