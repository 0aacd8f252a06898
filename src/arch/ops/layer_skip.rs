//! Routed layer skip.

use super::{rule, Broken, CostAt, Fields, OpDef, Routed};
use crate::arch::cost::{depth_tokens, Cost};
use crate::arch::graph::Arch;
use crate::arch::shape::Shape;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Routed layer skip, decided by each token alone (causal): g =
/// sigmoid(x·w + b); the tokens with g ≥ 0.5, gathered in order, form
/// the sequence `body` runs on and get x + g·body, the others keep x.
/// No routed layer may nest inside `body`.
/// `capacity` is the target fraction of tokens that run `body` (the bias
/// starts at logit(capacity); a routing loss holds the rate there).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSkip {
    pub capacity: f64,
    pub body: Box<Arch>,
}

impl OpDef for LayerSkip {
    fn kind(&self) -> &'static str {
        "layer_skip"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(18).real(self.capacity);
    }

    fn infer(&self, ins: &[Shape], _causal: bool) -> Result<Option<Shape>, Broken> {
        rule::token_wise(ins)
    }

    fn cost(&self, _at: &CostAt) -> Cost {
        Cost::default()
    }

    fn has_weights(&self) -> bool {
        true
    }

    fn routed(&self) -> Option<&dyn Routed> {
        Some(self)
    }
}

impl Routed for LayerSkip {
    fn body(&self) -> &Arch {
        &self.body
    }

    fn is_noncausal(&self) -> bool {
        false
    }

    /// Charged at its target rate.
    fn body_seq(&self, seq: usize) -> usize {
        depth_tokens(self.capacity, seq)
    }

    /// A scalar router and its bias.
    fn router(&self, d: usize) -> (f64, f64) {
        (d as f64 + 1.0, 2.0 * d as f64)
    }
}

impl fmt::Display for LayerSkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer_skip(capacity={})", self.capacity)
    }
}
