//! The typed ops of the IR, one file per op kind.
//!
//! Each file holds everything the op *is*, behind [`OpDef`]: its parameters
//! (the struct) and what they mean (its doc), its kind name and text form,
//! the bytes its hash label is made of, the rule that gives its output shape
//! and keeps a causal graph causal, and its parameter and FLOP cost. What a
//! backend *does* with it (the dfdx evaluator, the f64 interpreter of the
//! functional hash, the PyTorch export) lives in that backend, except for
//! kinds written over primitives ([`composite`]), which every backend runs
//! from their recipe; ARCHITECTURE.md lists the steps to add an op.

mod act;
mod affine;
mod attention;
pub mod composite;
mod concat;
mod dot;
mod elementwise;
mod input;
mod layer_scale;
mod layer_skip;
mod linear;
mod mixture_of_depths;
mod mlp;
mod moe;
mod moh;
mod norm;
pub mod params;
mod posenc;
mod softmax;
mod split;
mod transpose;

pub use act::Act;
pub use affine::Affine;
pub use attention::Attention;
pub use concat::Concat;
pub use dot::Dot;
pub use elementwise::{Add, Mul};
pub use input::{Input, Output};
pub use layer_scale::LayerScale;
pub use layer_skip::LayerSkip;
pub use linear::Linear;
pub use mixture_of_depths::Mod;
pub use mlp::Mlp;
pub use moe::Moe;
pub use moh::Moh;
pub use norm::Norm;
pub use params::{Activation, Balance, DotMask, MoeSpec, NormKind, RouterKind};
pub use posenc::PosEnc;
pub use softmax::Softmax;
pub use split::Split;
pub use transpose::Transpose;

use super::cost::Cost;
use super::graph::Arch;
use super::shape::{Axis, Shape};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An op of the IR. Tensors are per sequence and two-dimensional (the batch
/// axis is implicit); each axis is a token or a feature axis (see
/// [`super::shape`]). "Last axis" means the columns. Each variant's struct
/// documents what it computes; that doc is the reference every backend
/// follows.
///
/// Adding a kind: its file here, one variant below and one arm in
/// [`crate::with_op!`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Input,
    Output,
    Linear(Linear),
    Norm(Norm),
    Act(Act),
    Softmax(Softmax),
    PosEnc,
    Transpose,
    Split(Split),
    Add,
    Mul,
    Concat,
    Dot(Dot),
    Attention(Attention),
    Mlp(Mlp),
    Moe(Moe),
    Mod(Mod),
    LayerSkip(LayerSkip),
    Moh(Moh),
    LayerScale(LayerScale),
    Affine(Affine),
}

impl Op {
    /// What this op is: the one place its kind's rules live.
    pub fn def(&self) -> &dyn OpDef {
        crate::with_op!(self, o => o)
    }

    /// Short kind name (for hashing labels, tables and graph files).
    pub fn kind(&self) -> &'static str {
        self.def().kind()
    }

    /// Inputs may be reordered without changing the result.
    pub fn is_commutative(&self) -> bool {
        self.def().is_commutative()
    }

    /// Nested body, for routed ops.
    pub fn body(&self) -> Option<&Arch> {
        self.def().routed().map(|r| r.body())
    }

    /// Routers whose choice of tokens depends on later tokens of the sequence.
    pub fn is_noncausal_router(&self) -> bool {
        self.def().routed().is_some_and(|r| r.is_noncausal())
    }
}

/// Evaluates `$body` with `$o` bound to a reference to the op's struct,
/// whatever its kind (a unit struct for the kinds without parameters).
/// Backends dispatch to their per-kind trait through it
/// (`with_op!(op, o => o.interpret(..))`), so a new kind needs its impl in
/// each backend and no arm there: this is the one list of kinds.
#[macro_export]
macro_rules! with_op {
    ($op:expr, $o:ident => $body:expr) => {{
        use $crate::arch::ops as ops_;
        match $op {
            ops_::Op::Input => {
                let $o = &ops_::Input;
                $body
            }
            ops_::Op::Output => {
                let $o = &ops_::Output;
                $body
            }
            ops_::Op::Linear($o) => $body,
            ops_::Op::Norm($o) => $body,
            ops_::Op::Act($o) => $body,
            ops_::Op::Softmax($o) => $body,
            ops_::Op::PosEnc => {
                let $o = &ops_::PosEnc;
                $body
            }
            ops_::Op::Transpose => {
                let $o = &ops_::Transpose;
                $body
            }
            ops_::Op::Split($o) => $body,
            ops_::Op::Add => {
                let $o = &ops_::Add;
                $body
            }
            ops_::Op::Mul => {
                let $o = &ops_::Mul;
                $body
            }
            ops_::Op::Concat => {
                let $o = &ops_::Concat;
                $body
            }
            ops_::Op::Dot($o) => $body,
            ops_::Op::Attention($o) => $body,
            ops_::Op::Mlp($o) => $body,
            ops_::Op::Moe($o) => $body,
            ops_::Op::Mod($o) => $body,
            ops_::Op::LayerSkip($o) => $body,
            ops_::Op::Moh($o) => $body,
            ops_::Op::LayerScale($o) => $body,
            ops_::Op::Affine($o) => $body,
        }
    }};
}

impl fmt::Display for Op {
    /// One-line label with the op's parameters (bodies not included).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.def().fmt(f)
    }
}

/// Everything an op kind is, apart from what a backend does with it.
pub trait OpDef: fmt::Display {
    /// Short kind name: labels, tables, graph files, surrogate features.
    fn kind(&self) -> &'static str;

    /// The op's fixed kind tag and its parameters in a fixed order, for the
    /// hash labels (`hash::encode`). A new kind takes the next unused tag; a
    /// tag is never reused, and a routed op's body is not included.
    fn encode(&self, e: &mut Fields);

    /// The output shape on inputs `ins` (in port order), or the rule they
    /// break; `causal` says whether the graph must keep positions from
    /// seeing later ones. `None` only for the graph's input marker.
    fn infer(&self, ins: &[Shape], causal: bool) -> Result<Option<Shape>, Broken>;

    /// Parameters and FLOPs of the op itself (a routed op's body and router
    /// are costed through [`Routed`]).
    fn cost(&self, at: &CostAt) -> Cost;

    /// Whether the op owns trainable weights (the functional hash draws
    /// weights only for these).
    fn has_weights(&self) -> bool;

    /// Inputs may be reordered without changing the result.
    fn is_commutative(&self) -> bool {
        false
    }

    /// The routing side of an op that runs a body on chosen tokens.
    fn routed(&self) -> Option<&dyn Routed> {
        None
    }

    /// A composite kind's recipe ([`composite`]); `None` for a primitive.
    fn as_recipe(&self) -> Option<composite::Recipe> {
        None
    }
}

/// An op that routes tokens through a body graph (mixture of experts,
/// mixture of depths, layer skip).
pub trait Routed {
    fn body(&self) -> &Arch;

    /// Whether its choice of tokens depends on later tokens of the sequence.
    fn is_noncausal(&self) -> bool;

    /// Tokens per sequence the body runs on, for a sequence of `seq`.
    fn body_seq(&self, seq: usize) -> usize {
        seq
    }

    /// How it scales the cost of one copy of its body on a sequence of
    /// `seq` tokens: (copies holding parameters, copies a token touches,
    /// FLOP multiplier). By default one copy, run on `body_seq` of the
    /// `seq` tokens.
    fn scales(&self, seq: usize) -> (f64, f64, f64) {
        (1.0, 1.0, self.body_seq(seq) as f64 / seq.max(1) as f64)
    }

    /// The router's own (parameters, FLOPs per token) on width `d`.
    fn router(&self, d: usize) -> (f64, f64);
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

/// Where an op is costed: its first input and, for two-input ops, its
/// second, with the token axes set to `seq` positions (a depth-routed body
/// runs on fewer tokens than the shapes it was built with).
pub struct CostAt {
    pub in0: Shape,
    pub in1: Option<Shape>,
    pub out: Shape,
    /// Number of inputs.
    pub arity: usize,
    pub seq: usize,
}

impl CostAt {
    /// Elements of the output.
    pub fn elems(&self) -> f64 {
        self.out.elements() as f64
    }

    /// Cost of an op whose every parameter every token touches.
    pub fn dense(&self, params: f64, flops_per_seq: f64) -> Cost {
        Cost {
            params,
            active_params: params,
            flops: flops_per_seq / self.seq.max(1) as f64,
            nodes: 1.0,
        }
    }
}

/// An op's hashed fields as bytes: integers little-endian at fixed width,
/// floats as their IEEE bits. Written by hand so that renaming a field or a
/// variant, or changing how an op prints, cannot change a stored hash.
pub struct Fields(pub Vec<u8>);

impl Fields {
    pub fn tag(&mut self, t: u8) -> &mut Self {
        self.0.push(t);
        self
    }

    pub fn flag(&mut self, b: bool) -> &mut Self {
        self.tag(b as u8)
    }

    pub fn size(&mut self, n: usize) -> &mut Self {
        self.0.extend_from_slice(&(n as u64).to_le_bytes());
        self
    }

    pub fn real(&mut self, x: f64) -> &mut Self {
        self.0.extend_from_slice(&x.to_bits().to_le_bytes());
        self
    }
}

/// Rules several kinds share.
mod rule {
    use super::{Axis, Broken, Shape};

    pub fn arity(ins: &[Shape], n: usize) -> Result<(), Broken> {
        if ins.len() == n {
            Ok(())
        } else {
            Err(format!("expects {n} input(s), has {}", ins.len()).into())
        }
    }

    /// One input whose last axis is a feature axis: a token-wise op or a
    /// routed block, which keeps the shape.
    pub fn token_wise(ins: &[Shape]) -> Result<Option<Shape>, Broken> {
        arity(ins, 1)?;
        if ins[0].cols.axis != Axis::Feat {
            return Err("needs features on the last axis".into());
        }
        Ok(Some(ins[0]))
    }

    /// A normalisation over the last axis mixes tokens when that axis is
    /// the token axis of a (features × tokens) tensor.
    pub fn normalises(ins: &[Shape], causal: bool) -> Result<Shape, Broken> {
        arity(ins, 1)?;
        let s = ins[0];
        if causal && s.is_transposed_seq() {
            return Err("normalises over tokens in a causal graph".into());
        }
        Ok(s)
    }

    /// Self-attention on (tokens × features), masked in a causal graph.
    pub fn attends(ins: &[Shape], causal: bool, masked: bool) -> Result<Option<Shape>, Broken> {
        arity(ins, 1)?;
        if !ins[0].is_seq() {
            return Err("attention needs (tokens × features)".into());
        }
        if causal && !masked {
            return Err("non-causal attention in a causal graph".into());
        }
        Ok(Some(ins[0]))
    }

    /// Mean number of keys a query attends to.
    pub fn attended(seq: usize, causal: bool) -> f64 {
        if causal {
            (seq as f64 + 1.0) / 2.0
        } else {
            seq as f64
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One op of every kind. The match below has no wildcard, so a new kind
    /// does not compile until it is listed here.
    pub(crate) fn one_of_each() -> Vec<Op> {
        let body = || Box::new(Arch::start(Shape::seq(4, 8), true));
        let spec = MoeSpec {
            experts: 4,
            top_k: 1,
            shared: 0,
            router: RouterKind::TokenChoice,
            capacity: 1.0,
            top_p: MoeSpec::TOP_P,
            balance: Balance::AuxLoss,
        };
        let all = vec![
            Op::Input,
            Op::Output,
            Op::Linear(Linear {
                out: 8,
                bias: true,
                token_mixing: false,
                causal: false,
            }),
            Op::Norm(Norm {
                kind: NormKind::Rms,
            }),
            Op::Act(Act {
                f: Activation::Gelu,
            }),
            Op::Softmax(Softmax { causal: true }),
            Op::PosEnc,
            Op::Transpose,
            Op::Split(Split { part: 0, parts: 2 }),
            Op::Add,
            Op::Mul,
            Op::Concat,
            Op::Dot(Dot {
                scaled: true,
                mask: DotMask::Output,
            }),
            Op::Attention(Attention {
                heads: 2,
                head_dim: 4,
                causal: true,
            }),
            Op::Mlp(Mlp {
                hidden: 16,
                act: Activation::Relu,
                gated: false,
            }),
            Op::Moe(Moe {
                spec,
                expert: body(),
            }),
            Op::Mod(Mod {
                capacity: 0.5,
                causal: true,
                body: body(),
            }),
            Op::LayerSkip(LayerSkip {
                capacity: 0.5,
                body: body(),
            }),
            Op::Moh(Moh {
                heads: 4,
                active: 2,
                shared: 1,
                head_dim: 4,
                causal: true,
            }),
            Op::LayerScale(LayerScale { init: 0.1 }),
            Op::Affine(Affine),
        ];
        for op in &all {
            match op {
                Op::Input
                | Op::Output
                | Op::Linear(_)
                | Op::Norm(_)
                | Op::Act(_)
                | Op::Softmax(_)
                | Op::PosEnc
                | Op::Transpose
                | Op::Split(_)
                | Op::Add
                | Op::Mul
                | Op::Concat
                | Op::Dot(_)
                | Op::Attention(_)
                | Op::Mlp(_)
                | Op::Moe(_)
                | Op::Mod(_)
                | Op::LayerSkip(_)
                | Op::Moh(_)
                | Op::LayerScale(_)
                | Op::Affine(_) => {}
            }
        }
        all
    }

    #[test]
    fn every_kind_has_its_own_name_and_hash_tag() {
        let all = one_of_each();
        let mut names = std::collections::BTreeSet::new();
        let mut tags = std::collections::BTreeSet::new();
        for op in &all {
            assert!(names.insert(op.kind()), "{} named twice", op.kind());
            let mut e = Fields(Vec::new());
            op.def().encode(&mut e);
            assert!(tags.insert(e.0[0]), "{}: tag {} taken", op.kind(), e.0[0]);
        }
        assert_eq!(names.len(), 21);
        // Tags are 1..=21 today; a new kind takes 22.
        assert_eq!(tags, (1..=21).collect());
    }

    /// Every composite kind's recipe is well formed (the backends rely on
    /// it; see `Recipe::check`), and only composite kinds have one.
    #[test]
    fn every_composite_recipe_is_well_formed() {
        let mut composite = Vec::new();
        for op in one_of_each() {
            if let Some(r) = op.def().as_recipe() {
                assert_eq!(r.check(), Ok(()), "{}: {r:?}", op.kind());
                composite.push(op.kind());
            }
        }
        assert_eq!(composite, ["layer_scale", "affine"]);
    }

    #[test]
    fn only_routed_kinds_have_bodies_and_only_their_choices_can_be_noncausal() {
        for op in one_of_each() {
            let routed = matches!(op, Op::Moe(_) | Op::Mod(_) | Op::LayerSkip(_));
            assert_eq!(op.body().is_some(), routed, "{}", op.kind());
            assert_eq!(op.is_commutative(), matches!(op, Op::Add | Op::Mul));
        }
        let noncausal = |op: &Op| op.is_noncausal_router();
        let mut ops = one_of_each();
        assert!(ops.iter().all(|op| !noncausal(op)));
        for op in &mut ops {
            match op {
                Op::Moe(m) => m.spec.router = RouterKind::ExpertChoice,
                Op::Mod(m) => m.causal = false,
                _ => {}
            }
        }
        let flagged: Vec<&str> = ops.iter().filter(|o| noncausal(o)).map(Op::kind).collect();
        assert_eq!(flagged, ["moe", "mod"]);
    }

    #[test]
    fn the_shared_rules_refuse_what_they_should() {
        let seq = Shape::seq(4, 8);
        let tok_last = seq.transposed();
        // A norm over a (features × tokens) tensor mixes tokens.
        let norm = Norm {
            kind: NormKind::Layer,
        };
        assert!(norm.infer(&[tok_last], true).is_err());
        assert_eq!(norm.infer(&[tok_last], false), Ok(Some(tok_last)));
        // Attention needs (tokens × features) and a mask in a causal graph.
        let open = Attention {
            heads: 2,
            head_dim: 4,
            causal: false,
        };
        assert!(open.infer(&[seq], true).is_err());
        assert_eq!(open.infer(&[seq], false), Ok(Some(seq)));
        assert!(open.infer(&[tok_last], false).is_err());
        // Token-wise kinds need features on the last axis, and one input.
        let mlp = Mlp {
            hidden: 16,
            act: Activation::Relu,
            gated: true,
        };
        assert!(mlp.infer(&[tok_last], false).is_err());
        assert!(mlp.infer(&[seq, seq], false).is_err());
        assert_eq!(mlp.infer(&[seq], false), Ok(Some(seq)));
    }
}
