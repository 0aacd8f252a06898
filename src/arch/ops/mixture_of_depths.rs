//! Mixture-of-depths.

use super::{rule, Broken, CostAt, Fields, OpDef, Routed};
use crate::arch::cost::{depth_tokens, Cost};
use crate::arch::graph::Arch;
use crate::arch::shape::Shape;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Mixture-of-depths (Raposo et al. 2024): router score r = x·w (width →
/// 1); the ceil(capacity·T) highest-scoring tokens of each sequence,
/// gathered in order, form the shorter sequence `body` runs on (its
/// attention sees only them), and get x + sigmoid(r)·body; the rest pass
/// through unchanged. `body` is the residual branch (it does not add x
/// itself) and may not depend on positions. The top-k is over the whole
/// sequence, so it is non-causal, unless `causal`: then training also
/// teaches the router, by a binary cross-entropy loss, to predict from
/// x alone whether a token is in the top-k, and at inference a token is
/// routed when r > 0 (Raposo et al. 2024, §3.5, first method).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mod {
    pub capacity: f64,
    pub causal: bool,
    pub body: Box<Arch>,
}

impl OpDef for Mod {
    fn kind(&self) -> &'static str {
        "mod"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(17).real(self.capacity).flag(self.causal);
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

impl Routed for Mod {
    fn body(&self) -> &Arch {
        &self.body
    }

    fn is_noncausal(&self) -> bool {
        !self.causal
    }

    /// Depth-routed bodies see only their routed tokens, so their attention
    /// costs fall with ρ² (docs/routing.md#costs-of-routed-blocks).
    fn body_seq(&self, seq: usize) -> usize {
        depth_tokens(self.capacity, seq)
    }

    fn router(&self, d: usize) -> (f64, f64) {
        (d as f64, 2.0 * d as f64)
    }
}

impl fmt::Display for Mod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mod(capacity={}", self.capacity)?;
        if self.causal {
            f.write_str(", causal")?;
        }
        f.write_str(")")
    }
}
