//! Concatenation along the feature axis.

use super::{Broken, CostAt, Fields, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::Shape;
use std::fmt;

/// Concatenation along the feature axis, inputs in port order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Concat;

impl OpDef for Concat {
    fn kind(&self) -> &'static str {
        "concat"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(12);
    }

    fn infer(&self, ins: &[Shape], _causal: bool) -> Result<Option<Shape>, Broken> {
        let f0 = ins
            .first()
            .and_then(|s| s.feat())
            .ok_or("no inputs with a feature axis")?;
        let total: usize = ins.iter().map(|s| s.feat().unwrap_or(0)).sum();
        if ins.iter().any(|s| s.with_feat(f0) != ins[0]) {
            return Err("inputs differ outside the feature axis".into());
        }
        Ok(Some(ins[0].with_feat(total)))
    }

    fn cost(&self, at: &CostAt) -> Cost {
        at.dense(0.0, 0.0)
    }

    fn has_weights(&self) -> bool {
        false
    }
}

impl fmt::Display for Concat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}
