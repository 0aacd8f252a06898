//! The catalogue of grammar forms: their parameters, children, and the
//! shape rules shared by the sampler's semantics and the lowering.
//!
//! Causality rules (decoder tasks), which keep "position t sees only ≤ t"
//! true by construction:
//! - a token axis never changes size;
//! - a (token × token) tensor's row i depends only on tokens ≤ i: row-wise
//!   ops keep that, transposing it is refused, and contracting over its
//!   columns masks them (`DotMask::Left`); a dot product that creates one
//!   masks it (`DotMask::Output`);
//! - a (feature × token) tensor's column t depends only on tokens ≤ t: a
//!   linear map over its token axis is lower-triangular, and norms, softmax
//!   or contractions over that axis are refused.

use super::context::ArchContext;
use super::ops::{Activation, Balance, DotMask, MoeSpec, NormKind, Op, RouterKind};
use super::shape::{Axis, Dim, Shape};
use crate::grammar::{Alternative, FormProblem, Node, Reject, Value};

/// Kinds of parameter values.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Bool,
    Int {
        min: i64,
    },
    /// A number in (min, max].
    Float {
        min: f64,
        max: f64,
    },
    Name(&'static [&'static str]),
    /// An integer ≥ 1, or one of the names.
    IntOrName(&'static [&'static str]),
}

#[derive(Clone, Copy, Debug)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: Kind,
    /// Default when the grammar leaves the parameter out; `None` = required.
    pub default: Option<&'static str>,
}

/// How many child symbols an alternative of a form declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Children {
    None,
    One,
    AtLeastOne,
    /// One (replicated for factors above 2) or exactly `factor`.
    Branch,
}

#[derive(Clone, Copy, Debug)]
pub struct FormSpec {
    pub name: &'static str,
    pub params: &'static [ParamSpec],
    pub children: Children,
    pub doc: &'static str,
}

const fn p(name: &'static str, kind: Kind, default: Option<&'static str>) -> ParamSpec {
    ParamSpec {
        name,
        kind,
        default,
    }
}

const ONE: Kind = Kind::Int { min: 1 };
const FRACTION: Kind = Kind::Float { min: 0.0, max: 1.0 };
const POSITIVE: Kind = Kind::Float {
    min: 0.0,
    max: f64::INFINITY,
};
const SPLITS: &[&str] = &["clone", "group"];
const MERGES: &[&str] = &["add", "mul", "concat", "dot", "scaled_dot"];
const ROUTES: &[&str] = &["identity", "transpose"];
const PLACEMENTS: &[&str] = &["pre", "post", "peri", "none"];

/// Every form a grammar may use.
pub const FORMS: &[FormSpec] = &[
    FormSpec {
        name: "seq",
        params: &[],
        children: Children::AtLeastOne,
        doc: "children one after another",
    },
    FormSpec {
        name: "repeat",
        params: &[p("n", ONE, None)],
        children: Children::One,
        doc: "n independent expansions of the child symbol, one after another",
    },
    FormSpec {
        name: "branch",
        params: &[
            p("split", Kind::Name(SPLITS), None),
            p("factor", Kind::Int { min: 2 }, None),
            p("merge", Kind::Name(MERGES), None),
        ],
        children: Children::Branch,
        doc: "clone the input or split its features into `factor` groups, run a child on each, merge",
    },
    FormSpec {
        name: "route",
        params: &[
            p("pre", Kind::Name(ROUTES), Some("identity")),
            p("post", Kind::Name(ROUTES), Some("identity")),
        ],
        children: Children::One,
        doc: "permute the axes around the child",
    },
    FormSpec {
        name: "identity",
        params: &[],
        children: Children::None,
        doc: "the input unchanged",
    },
    FormSpec {
        name: "linear",
        params: &[
            p("width", Kind::IntOrName(&["model", "same"]), None),
            p("bias", Kind::Bool, Some("true")),
        ],
        children: Children::None,
        doc: "linear map over the last axis (mixes tokens when that axis is the token axis)",
    },
    FormSpec {
        name: "norm",
        params: &[p("kind", Kind::Name(NormKind::NAMES), Some("layer"))],
        children: Children::None,
        doc: "normalisation over the last axis",
    },
    FormSpec {
        name: "act",
        params: &[p("fn", Kind::Name(Activation::NAMES), None)],
        children: Children::None,
        doc: "elementwise activation",
    },
    FormSpec {
        name: "softmax",
        params: &[],
        children: Children::None,
        doc: "softmax over the last axis",
    },
    FormSpec {
        name: "posenc",
        params: &[],
        children: Children::None,
        doc: "learnable positional encoding, added",
    },
    FormSpec {
        name: "block",
        params: &[
            p("norm", Kind::Name(PLACEMENTS), Some("pre")),
            p("residual", Kind::Bool, Some("true")),
            p("norm_kind", Kind::Name(NormKind::NAMES), Some("layer")),
        ],
        children: Children::One,
        doc: "a sublayer with norm placement (pre/post/peri/none) and an optional residual",
    },
    FormSpec {
        name: "attention",
        params: &[
            p("heads", ONE, None),
            p("head_dim", Kind::IntOrName(&["auto"]), Some("auto")),
            p("causal", Kind::Bool, Some("task")),
        ],
        children: Children::None,
        doc: "multi-head self-attention (causal defaults to the task's)",
    },
    FormSpec {
        name: "mlp",
        params: &[
            p("ratio", POSITIVE, None),
            p("act", Kind::Name(Activation::NAMES), Some("gelu")),
            p("gated", Kind::Bool, Some("false")),
        ],
        children: Children::None,
        doc: "two-layer MLP with hidden width ratio·input (GLU when gated)",
    },
    FormSpec {
        name: "moe",
        params: &[
            p("experts", ONE, None),
            p("top_k", ONE, Some("1")),
            p("shared", Kind::Int { min: 0 }, Some("0")),
            p("router", Kind::Name(RouterKind::NAMES), Some("token_choice")),
            p("capacity", POSITIVE, Some("1.25")),
            p("top_p", FRACTION, Some("0.5")),
            p("balance", Kind::Name(Balance::NAMES), Some("aux_loss")),
        ],
        children: Children::One,
        doc: "mixture of experts; the child symbol is the expert body (token-wise)",
    },
    FormSpec {
        name: "mod",
        params: &[p("capacity", FRACTION, None)],
        children: Children::One,
        doc: "mixture-of-depths: the top capacity fraction of tokens run the child (a residual branch)",
    },
    FormSpec {
        name: "layer_skip",
        params: &[p("capacity", FRACTION, None)],
        children: Children::One,
        doc: "routed layer skip: each token decides whether to run the child (a residual branch)",
    },
    FormSpec {
        name: "moh",
        params: &[
            p("heads", ONE, None),
            p("active", Kind::Int { min: 0 }, None),
            p("shared", Kind::Int { min: 0 }, Some("0")),
            p("head_dim", Kind::IntOrName(&["auto"]), Some("auto")),
            p("causal", Kind::Bool, Some("task")),
        ],
        children: Children::None,
        doc: "mixture-of-heads attention: shared heads plus `active` routed heads per token",
    },
];

pub fn spec(form: &str) -> Option<&'static FormSpec> {
    FORMS.iter().find(|f| f.name == form)
}

fn kind_accepts(kind: Kind, v: &Value) -> Result<(), String> {
    match (kind, v) {
        (Kind::Bool, Value::Bool(_)) => Ok(()),
        (Kind::Int { min }, Value::Int(i)) if *i >= min => Ok(()),
        (Kind::Int { min }, Value::Int(i)) => Err(format!("{i} is below the minimum {min}")),
        (Kind::Float { min, max }, v) if v.as_float().is_some() => {
            let x = v.as_float().unwrap_or(f64::NAN);
            if x > min && x <= max {
                Ok(())
            } else if max.is_finite() {
                Err(format!("{v} is outside ({min}, {max}]"))
            } else {
                Err(format!("{v} must be above {min}"))
            }
        }
        (Kind::Name(names), Value::Name(n)) | (Kind::IntOrName(names), Value::Name(n)) => {
            if names.contains(&n.as_str()) {
                Ok(())
            } else {
                Err(format!("`{n}` is not one of: {}", names.join(", ")))
            }
        }
        (Kind::IntOrName(_), Value::Int(i)) if *i >= 1 => Ok(()),
        (Kind::IntOrName(_), Value::Int(i)) => Err(format!("{i} must be at least 1")),
        (k, v) => Err(format!(
            "expected {}, found {} `{v}`",
            kind_name(k),
            v.kind()
        )),
    }
}

fn kind_name(k: Kind) -> String {
    match k {
        Kind::Bool => "true or false".into(),
        Kind::Int { .. } => "an integer".into(),
        Kind::Float { .. } => "a number".into(),
        Kind::Name(n) => format!("one of {}", n.join(", ")),
        Kind::IntOrName(n) => format!("an integer or one of {}", n.join(", ")),
    }
}

/// Load-time check of one alternative against the catalogue.
pub fn check_alternative(alt: &Alternative) -> Result<(), FormProblem> {
    let problem = |message: String, near: Option<String>| FormProblem { message, near };
    let Some(spec) = spec(&alt.form) else {
        let known: Vec<&str> = FORMS.iter().map(|f| f.name).collect();
        return Err(problem(
            format!(
                "unknown form `{}`; known forms: {}",
                alt.form,
                known.join(", ")
            ),
            Some(format!("\"{}\"", alt.form)),
        ));
    };
    for (name, choices) in &alt.params {
        let near = Some(format!("\"{name}\""));
        let Some(ps) = spec.params.iter().find(|p| p.name == name) else {
            let known: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
            return Err(problem(
                format!(
                    "`{}` has no parameter `{name}` (it has: {})",
                    spec.name,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
                near,
            ));
        };
        if choices.0.is_empty() {
            return Err(problem(format!("parameter `{name}` has no choices"), near));
        }
        for (v, _) in &choices.0 {
            kind_accepts(ps.kind, v).map_err(|m| {
                problem(
                    format!("parameter `{name}` of `{}`: {m}", spec.name),
                    near.clone(),
                )
            })?;
        }
    }
    for ps in spec.params {
        if ps.default.is_none() && !alt.params.iter().any(|(n, _)| n == ps.name) {
            return Err(problem(
                format!("`{}` needs parameter `{}`", spec.name, ps.name),
                None,
            ));
        }
    }
    let n = alt.children.len();
    let ok = match spec.children {
        Children::None => n == 0,
        Children::One => n == 1,
        Children::AtLeastOne => n >= 1,
        Children::Branch => {
            n == 1
                || alt
                    .params
                    .iter()
                    .find(|(k, _)| k == "factor")
                    .is_some_and(|(_, c)| c.0.iter().all(|(v, _)| v.as_int() == Some(n as i64)))
        }
    };
    if !ok {
        let want = match spec.children {
            Children::None => "no children".to_string(),
            Children::One => "exactly one child symbol".to_string(),
            Children::AtLeastOne => "at least one child symbol".to_string(),
            Children::Branch => {
                "one child symbol, or one per branch (as many as `factor`)".to_string()
            }
        };
        return Err(problem(
            format!("`{}` takes {want}, found {n}", spec.name),
            Some("children".into()),
        ));
    }
    Ok(())
}

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

fn param<'a>(node: &'a Node, name: &str) -> Option<&'a Value> {
    node.param(name)
}

fn default_of(form: &str, name: &str) -> Option<&'static str> {
    spec(form)?.params.iter().find(|p| p.name == name)?.default
}

/// A missing required parameter (only in hand-built trees; grammars are
/// checked on load).
fn missing(node: &Node, name: &str) -> Reject {
    Reject::new(
        "parameter",
        format!("`{}` needs parameter `{name}`", node.form),
    )
}

pub fn get_int(node: &Node, name: &str) -> Option<i64> {
    match param(node, name) {
        Some(v) => v.as_int(),
        None => default_of(node.form, name)?.parse().ok(),
    }
}

fn int(node: &Node, name: &str) -> Result<i64, Reject> {
    get_int(node, name).ok_or_else(|| missing(node, name))
}

fn float(node: &Node, name: &str) -> Result<f64, Reject> {
    match param(node, name) {
        Some(v) => v.as_float().ok_or_else(|| missing(node, name)),
        None => default_of(node.form, name)
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| missing(node, name)),
    }
}

fn boolean(node: &Node, name: &str, ctx: &ArchContext) -> Result<bool, Reject> {
    match param(node, name) {
        Some(v) => v.as_bool().ok_or_else(|| missing(node, name)),
        None => match default_of(node.form, name) {
            Some("task") => Ok(ctx.causal),
            Some(d) => d.parse().map_err(|_| missing(node, name)),
            None => Err(missing(node, name)),
        },
    }
}

pub fn name<'a>(node: &'a Node, key: &str) -> Result<&'a str, Reject> {
    match param(node, key) {
        Some(v) => v.as_name().ok_or_else(|| missing(node, key)),
        None => default_of(node.form, key).ok_or_else(|| missing(node, key)),
    }
}

fn shape_err(detail: String) -> Reject {
    Reject::new("shape", detail)
}

fn causal_err(detail: String) -> Reject {
    Reject::new("causality", detail)
}

/// Where a form sits, which limits what it may do with tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
                Op::Linear {
                    out,
                    bias,
                    token_mixing: last_tok,
                    causal: last_tok && ctx.causal,
                },
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
                Op::Norm {
                    kind: NormKind::parse(kind).ok_or_else(|| missing(node, "kind"))?,
                }
            } else {
                Op::Softmax {
                    causal: ctx.causal && s.is_tok_tok(),
                }
            };
            (op, s)
        }
        "act" => {
            let f = Activation::parse(name(node, "fn")?).ok_or_else(|| missing(node, "fn"))?;
            (Op::Act { f }, s)
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
                Op::Attention {
                    heads,
                    head_dim,
                    causal,
                },
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
                Op::Moh {
                    heads,
                    active,
                    shared,
                    head_dim,
                    causal,
                },
                s,
            )
        }
        "mlp" => {
            let d = need_feat_last("mlp", s)?;
            let ratio = float(node, "ratio")?;
            let hidden = (ratio * d as f64).round().max(1.0) as usize;
            let act = Activation::parse(name(node, "act")?).ok_or_else(|| missing(node, "act"))?;
            let gated = boolean(node, "gated", ctx)?;
            (Op::Mlp { hidden, act, gated }, s)
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
                Op::Dot {
                    scaled: merge == "scaled_dot",
                    mask,
                },
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
pub fn routed(node: &Node, body: super::graph::Arch, ctx: &ArchContext) -> Result<Op, Reject> {
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
            let spec = MoeSpec {
                experts: int(node, "experts")? as usize,
                top_k: int(node, "top_k")? as usize,
                shared: int(node, "shared")? as usize,
                router: RouterKind::parse(name(node, "router")?)
                    .ok_or_else(|| missing(node, "router"))?,
                capacity: float(node, "capacity")?,
                top_p: float(node, "top_p")?,
                balance: Balance::parse(name(node, "balance")?)
                    .ok_or_else(|| missing(node, "balance"))?,
            };
            if spec.top_k > spec.experts {
                return Err(Reject::new(
                    "routing",
                    format!("top_k {} exceeds {} experts", spec.top_k, spec.experts),
                ));
            }
            if spec.router == RouterKind::ExpertChoice {
                noncausal("expert-choice routing")?;
            }
            Ok(Op::Moe { spec, expert: body })
        }
        "mod" => {
            noncausal("mixture-of-depths top-k routing")?;
            Ok(Op::Mod {
                capacity: float(node, "capacity")?,
                body,
            })
        }
        "layer_skip" => Ok(Op::LayerSkip {
            capacity: float(node, "capacity")?,
            body,
        }),
        other => Err(Reject::new("form", format!("`{other}` is not routed"))),
    }
}

/// Routed forms: their child is a nested body.
pub fn is_routed(form: &str) -> bool {
    matches!(form, "moe" | "mod" | "layer_skip")
}
