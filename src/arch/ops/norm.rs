//! Layer and RMS normalisation.

use super::{rule, Broken, CostAt, Fields, NormKind, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::Shape;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Over the last axis, eps 1e-5: layer = (x−mean)/sqrt(var+eps)·g + b;
/// rms = x/sqrt(mean(x²)+eps)·g.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Norm {
    pub kind: NormKind,
}

impl OpDef for Norm {
    fn kind(&self) -> &'static str {
        "norm"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(4).tag(self.kind.tag());
    }

    fn infer(&self, ins: &[Shape], causal: bool) -> Result<Option<Shape>, Broken> {
        rule::normalises(ins, causal).map(Some)
    }

    fn cost(&self, at: &CostAt) -> Cost {
        let last = at.out.cols.size as f64;
        let p = match self.kind {
            NormKind::Layer => 2.0 * last,
            NormKind::Rms => last,
        };
        at.dense(p, 5.0 * at.elems())
    }

    fn has_weights(&self) -> bool {
        true
    }
}

impl fmt::Display for Norm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "norm({})", self.kind.name())
    }
}
