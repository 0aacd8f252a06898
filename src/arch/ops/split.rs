//! One of several equal slices along the feature axis.

use super::{rule, Broken, CostAt, Fields, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::Shape;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Part `part` (0-based) of `parts` equal slices along the feature axis
/// (rows or columns, whichever is the feature axis).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub part: usize,
    pub parts: usize,
}

impl OpDef for Split {
    fn kind(&self) -> &'static str {
        "split"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(9).size(self.part).size(self.parts);
    }

    fn infer(&self, ins: &[Shape], _causal: bool) -> Result<Option<Shape>, Broken> {
        rule::arity(ins, 1)?;
        let (part, parts) = (self.part, self.parts);
        let f = ins[0].feat().ok_or("no feature axis to split")?;
        if parts == 0 || part >= parts || f % parts != 0 {
            return Err(format!("cannot take part {part} of {parts} from {f} features").into());
        }
        Ok(Some(ins[0].with_feat(f / parts)))
    }

    fn cost(&self, at: &CostAt) -> Cost {
        at.dense(0.0, 0.0)
    }

    fn has_weights(&self) -> bool {
        false
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "split({}/{})", self.part, self.parts)
    }
}
