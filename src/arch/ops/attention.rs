//! Multi-head self-attention.

use super::{rule, Broken, CostAt, Fields, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::Shape;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Multi-head self-attention without biases: Q, K, V = x·Wq, x·Wk, x·Wv
/// (width → heads·head_dim), per head softmax(Q·Kᵀ/sqrt(head_dim)) (causal
/// mask if set) · V, heads concatenated, then ·Wo back to the width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attention {
    pub heads: usize,
    pub head_dim: usize,
    pub causal: bool,
}

impl OpDef for Attention {
    fn kind(&self) -> &'static str {
        "attention"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(14)
            .size(self.heads)
            .size(self.head_dim)
            .flag(self.causal);
    }

    fn infer(&self, ins: &[Shape], causal: bool) -> Result<Option<Shape>, Broken> {
        rule::attends(ins, causal, self.causal)
    }

    fn cost(&self, at: &CostAt) -> Cost {
        let d = at.in0.cols.size as f64;
        let s = at.seq as f64;
        let inner = (self.heads * self.head_dim) as f64;
        let p = 4.0 * d * inner;
        let f = 2.0 * s * p + 4.0 * s * rule::attended(at.seq, self.causal) * inner;
        at.dense(p, f)
    }

    fn has_weights(&self) -> bool {
        true
    }
}

impl fmt::Display for Attention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attention(heads={}, head_dim={}{})",
            self.heads,
            self.head_dim,
            if self.causal { ", causal" } else { "" }
        )
    }
}
