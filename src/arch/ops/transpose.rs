//! Swapping the two axes.

use super::{rule, Broken, CostAt, Fields, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::Shape;
use std::fmt;

/// Swaps rows and columns, so that the next op's "last axis" is the other one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transpose;

impl OpDef for Transpose {
    fn kind(&self) -> &'static str {
        "transpose"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(8);
    }

    fn infer(&self, ins: &[Shape], causal: bool) -> Result<Option<Shape>, Broken> {
        rule::arity(ins, 1)?;
        if causal && ins[0].is_tok_tok() {
            return Err("transposes a token×token tensor in a causal graph".into());
        }
        Ok(Some(ins[0].transposed()))
    }

    fn cost(&self, at: &CostAt) -> Cost {
        at.dense(0.0, 0.0)
    }

    fn has_weights(&self) -> bool {
        false
    }
}

impl fmt::Display for Transpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}
