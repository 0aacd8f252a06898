//! The graph's input and output markers.

use super::{rule, Broken, CostAt, Fields, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::Shape;
use std::fmt;

/// Token embeddings, (tokens, width). Inside a routed body: the tokens
/// given to the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Input;

/// Identity marker on the graph's result. At the top level the evaluator
/// maps it to the vocabulary with a linear head (with bias).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output;

/// A marker is one node and nothing else.
fn marker_cost() -> Cost {
    Cost {
        nodes: 1.0,
        ..Cost::default()
    }
}

impl OpDef for Input {
    fn kind(&self) -> &'static str {
        "input"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(1);
    }

    fn infer(&self, ins: &[Shape], _causal: bool) -> Result<Option<Shape>, Broken> {
        rule::arity(ins, 0)?;
        Ok(None)
    }

    fn cost(&self, _at: &CostAt) -> Cost {
        marker_cost()
    }

    fn has_weights(&self) -> bool {
        false
    }
}

impl OpDef for Output {
    fn kind(&self) -> &'static str {
        "output"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(2);
    }

    fn infer(&self, ins: &[Shape], _causal: bool) -> Result<Option<Shape>, Broken> {
        rule::arity(ins, 1)?;
        Ok(Some(ins[0]))
    }

    fn cost(&self, _at: &CostAt) -> Cost {
        marker_cost()
    }

    fn has_weights(&self) -> bool {
        false
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}
