//! A linear map over the last axis.

use super::{rule, Broken, CostAt, Fields, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::{Axis, Dim, Shape};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `y = x·W (+ b)` over the last axis, `W: in × out`. With `token_mixing`
/// the last axis is a token axis (in = out = S) and, when `causal`,
/// `W[j][i] = 0` for `j > i` (output position i reads inputs j ≤ i only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Linear {
    pub out: usize,
    pub bias: bool,
    pub token_mixing: bool,
    pub causal: bool,
}

impl OpDef for Linear {
    fn kind(&self) -> &'static str {
        "linear"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(3)
            .size(self.out)
            .flag(self.bias)
            .flag(self.token_mixing)
            .flag(self.causal);
    }

    fn infer(&self, ins: &[Shape], causal: bool) -> Result<Option<Shape>, Broken> {
        rule::arity(ins, 1)?;
        let s = ins[0];
        let over_tokens = s.cols.axis == Axis::Tok;
        if over_tokens != self.token_mixing {
            return Err("token_mixing does not match the input's last axis".into());
        }
        if over_tokens && (self.out != s.cols.size || (causal && !self.causal)) {
            return Err(
                "token-mixing linear must keep the length and be masked when causal".into(),
            );
        }
        Ok(Some(Shape {
            rows: s.rows,
            cols: Dim {
                axis: s.cols.axis,
                size: self.out,
            },
        }))
    }

    fn cost(&self, at: &CostAt) -> Cost {
        let i = at.in0.cols.size as f64;
        let o = self.out as f64;
        let p = i * o + if self.bias { o } else { 0.0 };
        at.dense(p, 2.0 * at.in0.rows.size as f64 * i * o)
    }

    fn has_weights(&self) -> bool {
        true
    }
}

impl fmt::Display for Linear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "linear({}", self.out)?;
        if self.token_mixing {
            f.write_str(", tokens")?;
        }
        if self.causal {
            f.write_str(", causal")?;
        }
        if !self.bias {
            f.write_str(", no bias")?;
        }
        f.write_str(")")
    }
}
