//! Mixture-of-heads attention.

use super::{rule, Broken, CostAt, Fields, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::Shape;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Mixture-of-heads attention (Jin et al. 2024, arXiv 2410.11842):
/// attention as [`super::Attention`] with `heads` heads; `shared` heads
/// always on, and per token the top `active` of the other heads by router
/// softmax (x·Wr, width → heads − shared); head outputs are weighted by
/// their gate (shared: 1, routed: renormalised probability) before Wo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moh {
    pub heads: usize,
    pub active: usize,
    pub shared: usize,
    pub head_dim: usize,
    pub causal: bool,
}

impl OpDef for Moh {
    fn kind(&self) -> &'static str {
        "moh"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(19)
            .size(self.heads)
            .size(self.active)
            .size(self.shared)
            .size(self.head_dim)
            .flag(self.causal);
    }

    fn infer(&self, ins: &[Shape], causal: bool) -> Result<Option<Shape>, Broken> {
        rule::attends(ins, causal, self.causal)
    }

    fn cost(&self, at: &CostAt) -> Cost {
        // Q and O only for the heads a token uses; K and V for all heads,
        // since other tokens' queries may pick any head (docs/routing.md#costs-of-routed-blocks).
        let d = at.in0.cols.size as f64;
        let s = at.seq as f64;
        let hd = self.head_dim as f64;
        let h = self.heads as f64;
        let used = (self.active + self.shared) as f64;
        let router = d * (h - self.shared as f64).max(1.0);
        let p = 4.0 * d * h * hd + router;
        let active_p = (2.0 * used + 2.0 * h) * d * hd + router;
        let f = 2.0 * s * active_p + 4.0 * s * rule::attended(at.seq, self.causal) * hd * used;
        Cost {
            params: p,
            active_params: active_p,
            flops: f / s.max(1.0),
            nodes: 1.0,
        }
    }

    fn has_weights(&self) -> bool {
        true
    }
}

impl fmt::Display for Moh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "moh(heads={}, active={}, shared={}, head_dim={}{})",
            self.heads,
            self.active,
            self.shared,
            self.head_dim,
            if self.causal { ", causal" } else { "" }
        )
    }
}
