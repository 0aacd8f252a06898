//! The position-wise feed-forward block.

use super::{rule, Activation, Broken, CostAt, Fields, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::Shape;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Without biases: act(x·W1)·W2, or gated (GLU, Shazeer 2020)
/// (act(x·W1) ⊙ x·W3)·W2; W1, W3: width → hidden, W2: hidden → width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mlp {
    pub hidden: usize,
    pub act: Activation,
    pub gated: bool,
}

impl OpDef for Mlp {
    fn kind(&self) -> &'static str {
        "mlp"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(15)
            .size(self.hidden)
            .tag(self.act.tag())
            .flag(self.gated);
    }

    fn infer(&self, ins: &[Shape], _causal: bool) -> Result<Option<Shape>, Broken> {
        rule::token_wise(ins)
    }

    fn cost(&self, at: &CostAt) -> Cost {
        let d = at.in0.cols.size as f64;
        let p = if self.gated { 3.0 } else { 2.0 } * d * self.hidden as f64;
        at.dense(p, 2.0 * at.seq as f64 * p)
    }

    fn has_weights(&self) -> bool {
        true
    }
}

impl fmt::Display for Mlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mlp(hidden={}, {}{})",
            self.hidden,
            self.act.name(),
            if self.gated { ", gated" } else { "" }
        )
    }
}
