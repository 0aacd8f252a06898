//! Element-wise activations.

use super::{rule, Activation, Broken, CostAt, Fields, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::Shape;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Elementwise: relu, gelu (tanh approximation), silu = x·sigmoid(x),
/// leaky_relu with slope 0.01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Act {
    pub f: Activation,
}

impl OpDef for Act {
    fn kind(&self) -> &'static str {
        "act"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(5).tag(self.f.tag());
    }

    fn infer(&self, ins: &[Shape], _causal: bool) -> Result<Option<Shape>, Broken> {
        rule::arity(ins, 1)?;
        Ok(Some(ins[0]))
    }

    fn cost(&self, at: &CostAt) -> Cost {
        at.dense(0.0, at.elems())
    }

    fn has_weights(&self) -> bool {
        false
    }
}

impl fmt::Display for Act {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.f.name())
    }
}
