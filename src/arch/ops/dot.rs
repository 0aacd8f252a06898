//! A matrix product of two inputs.

use super::{rule, Broken, CostAt, DotMask, Fields, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::{Axis, Shape};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Matrix product of port 0 `(a×k)` and port 1 `(k×c)`, scaled by
/// 1/sqrt(k) when `scaled`. `Output` zeroes result entries (i, j > i);
/// `Left` zeroes port 0's entries (i, j > i) before the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dot {
    pub scaled: bool,
    pub mask: DotMask,
}

impl OpDef for Dot {
    fn kind(&self) -> &'static str {
        "dot"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(13).flag(self.scaled).tag(self.mask.tag());
    }

    fn infer(&self, ins: &[Shape], causal: bool) -> Result<Option<Shape>, Broken> {
        rule::arity(ins, 2)?;
        let (a, b) = (ins[0], ins[1]);
        if a.cols != b.rows {
            return Err(format!("cannot multiply {a} by {b}").into());
        }
        let out = Shape {
            rows: a.rows,
            cols: b.cols,
        };
        if causal {
            let need = if a.cols.axis == Axis::Tok {
                if a.rows.axis == Axis::Feat {
                    return Err("contracts over tokens with a feature×token left operand".into());
                }
                DotMask::Left
            } else if out.is_tok_tok() {
                DotMask::Output
            } else {
                DotMask::None
            };
            if self.mask != need {
                return Err(format!("causal mask should be {need:?}, is {:?}", self.mask).into());
            }
        }
        Ok(Some(out))
    }

    fn cost(&self, at: &CostAt) -> Cost {
        let b = at.in1.unwrap_or(at.out);
        let f = 2.0 * at.in0.rows.size as f64 * at.in0.cols.size as f64 * b.cols.size as f64;
        at.dense(0.0, f)
    }

    fn has_weights(&self) -> bool {
        false
    }
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.scaled { "scaled_dot" } else { "dot" })?;
        match self.mask {
            DotMask::None => Ok(()),
            DotMask::Output => f.write_str("(causal out)"),
            DotMask::Left => f.write_str("(causal left)"),
        }
    }
}
