//! Element-wise sums and products of two or more inputs.

use super::{Broken, CostAt, Fields, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::Shape;
use std::fmt;

/// The element-wise sum of two or more inputs of one shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Add;

/// The element-wise product of two or more inputs of one shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mul;

fn same_shapes(ins: &[Shape]) -> Result<Option<Shape>, Broken> {
    if ins.len() < 2 || ins.iter().any(|s| *s != ins[0]) {
        return Err("needs two or more inputs of one shape".into());
    }
    Ok(Some(ins[0]))
}

/// n inputs take n − 1 operations per element.
fn pairwise(at: &CostAt) -> Cost {
    at.dense(0.0, at.elems() * (at.arity.max(2) - 1) as f64)
}

impl OpDef for Add {
    fn kind(&self) -> &'static str {
        "add"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(10);
    }

    fn infer(&self, ins: &[Shape], _causal: bool) -> Result<Option<Shape>, Broken> {
        same_shapes(ins)
    }

    fn cost(&self, at: &CostAt) -> Cost {
        pairwise(at)
    }

    fn has_weights(&self) -> bool {
        false
    }

    fn is_commutative(&self) -> bool {
        true
    }
}

impl OpDef for Mul {
    fn kind(&self) -> &'static str {
        "mul"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(11);
    }

    fn infer(&self, ins: &[Shape], _causal: bool) -> Result<Option<Shape>, Broken> {
        same_shapes(ins)
    }

    fn cost(&self, at: &CostAt) -> Cost {
        pairwise(at)
    }

    fn has_weights(&self) -> bool {
        false
    }

    fn is_commutative(&self) -> bool {
        true
    }
}

impl fmt::Display for Add {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

impl fmt::Display for Mul {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}
