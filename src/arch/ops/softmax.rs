//! Softmax over the last axis.

use super::{rule, Broken, CostAt, Fields, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::Shape;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Softmax over the last axis; `causal` (only on a token×token tensor)
/// gives entry (i, j > i) probability 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Softmax {
    pub causal: bool,
}

impl OpDef for Softmax {
    fn kind(&self) -> &'static str {
        "softmax"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(6).flag(self.causal);
    }

    fn infer(&self, ins: &[Shape], causal: bool) -> Result<Option<Shape>, Broken> {
        let s = rule::normalises(ins, causal)?;
        if causal && !self.causal && s.is_tok_tok() {
            return Err("unmasked token×token softmax in a causal graph".into());
        }
        Ok(Some(s))
    }

    fn cost(&self, at: &CostAt) -> Cost {
        at.dense(0.0, 3.0 * at.elems())
    }

    fn has_weights(&self) -> bool {
        false
    }
}

impl fmt::Display for Softmax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "softmax{}", if self.causal { "(causal)" } else { "" })
    }
}
