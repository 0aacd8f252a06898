//! A learnable positional encoding.

use super::{rule, Broken, CostAt, Fields, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::Shape;
use std::fmt;

/// Learnable positional encoding: a table of the input's shape, added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PosEnc;

impl OpDef for PosEnc {
    fn kind(&self) -> &'static str {
        "posenc"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(7);
    }

    fn infer(&self, ins: &[Shape], _causal: bool) -> Result<Option<Shape>, Broken> {
        rule::arity(ins, 1)?;
        Ok(Some(ins[0]))
    }

    fn cost(&self, at: &CostAt) -> Cost {
        at.dense(at.elems(), at.elems())
    }

    fn has_weights(&self) -> bool {
        true
    }
}

impl fmt::Display for PosEnc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}
