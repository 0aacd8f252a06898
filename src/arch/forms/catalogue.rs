//! The catalogue of grammar forms: each form's parameters (kinds, ranges,
//! defaults) and children, the load-time check of an alternative against
//! it, and typed access to a node's parameters with those defaults.

use crate::arch::context::ArchContext;
use crate::arch::ops::{Activation, Balance, NormKind, RouterKind};
use crate::grammar::{Alternative, FormProblem, Node, Reject, Value};

/// Kinds of parameter values.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Bool,
    /// An integer in min..=[`LARGEST`].
    Int {
        min: i64,
    },
    /// A number in (min, max].
    Float {
        min: f64,
        max: f64,
    },
    Name(&'static [&'static str]),
    /// An integer in 1..=[`LARGEST`], or one of the names.
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

/// The largest count, width or factor a form parameter may take. Sizes are
/// checked against it when a grammar loads, before anything is sized from
/// them (a `repeat n=4000000000` once asked for 448 GB while sampling).
pub const LARGEST: i64 = 65_536;

const ONE: Kind = Kind::Int { min: 1 };
const FRACTION: Kind = Kind::Float { min: 0.0, max: 1.0 };
const POSITIVE: Kind = Kind::Float {
    min: 0.0,
    max: LARGEST as f64,
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
        name: "layer_scale",
        params: &[p("init", FRACTION, Some("0.1"))],
        children: Children::None,
        doc: "a learned gain per feature filled with `init` (LayerScale, CaiT), for the end of a residual branch",
    },
    FormSpec {
        name: "affine",
        params: &[],
        children: Children::None,
        doc: "a learned gain and bias per feature, from 1 and 0 (ResMLP's Aff)",
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
        params: &[
            p("capacity", FRACTION, None),
            p("causal", Kind::Bool, Some("false")),
        ],
        children: Children::One,
        doc: "mixture-of-depths: the top capacity fraction of tokens run the child (a residual branch); causal=true routes each token by its own router logit at inference",
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
        (Kind::Int { min }, Value::Int(i)) if *i < min => {
            Err(format!("{i} is below the minimum {min}"))
        }
        (Kind::Int { .. } | Kind::IntOrName(_), Value::Int(i)) if *i > LARGEST => {
            Err(format!("{i} is above the maximum {LARGEST}"))
        }
        (Kind::Int { .. }, Value::Int(_)) => Ok(()),
        (Kind::Float { min, max }, v) if v.as_float().is_some() => {
            let x = v.as_float().unwrap_or(f64::NAN);
            if x > min && x <= max {
                Ok(())
            } else {
                Err(format!("{v} is outside ({min}, {max}]"))
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

pub(super) fn param<'a>(node: &'a Node, name: &str) -> Option<&'a Value> {
    node.param(name)
}

fn default_of(form: &str, name: &str) -> Option<&'static str> {
    spec(form)?.params.iter().find(|p| p.name == name)?.default
}

/// A missing required parameter (only in hand-built trees; grammars are
/// checked on load).
pub(super) fn missing(node: &Node, name: &str) -> Reject {
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

pub(super) fn int(node: &Node, name: &str) -> Result<i64, Reject> {
    get_int(node, name).ok_or_else(|| missing(node, name))
}

pub(super) fn float(node: &Node, name: &str) -> Result<f64, Reject> {
    match param(node, name) {
        Some(v) => v.as_float().ok_or_else(|| missing(node, name)),
        None => default_of(node.form, name)
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| missing(node, name)),
    }
}

pub(super) fn boolean(node: &Node, name: &str, ctx: &ArchContext) -> Result<bool, Reject> {
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
