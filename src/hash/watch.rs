//! Blind spots of one probe: places where the functional hash's grid could
//! not tell two different networks apart, because one part of a value is
//! too small to reach the grid beside another. Two networks that differ
//! only there would get equal outputs on this probe:
//!
//! - a sum (an `add`, a residual, a bias or positional table, a routed
//!   body's update) whose smaller term is below the larger one's grid;
//! - a contraction or norm whose input features (or, for the right operand
//!   of a product, rows) span more magnitudes than the grid holds: the
//!   small ones vanish in the sums;
//! - a softmax with a one-hot row (it acts as a hard selection, as
//!   `softmax(q·qᵀ)·v = v` does for an unscaled wide q);
//! - a gelu or silu whose inputs all lie where it equals relu.
//!
//! A probe with a blind spot still adds its outputs to the hash; a network
//! whose every probe has one is never merged (degenerate).

use super::interp::Mat;
use crate::arch::Activation;

/// Bits of a part that must reach the output grid for it to count as seen:
/// the grid keeps `GRID_BITS` bits, so a part `2^-(GRID_BITS - 8)` of the
/// whole keeps only 8.
pub const SEEN_BITS: i32 = 16;

fn seen_ratio() -> f64 {
    2f64.powi(SEEN_BITS)
}

/// The first blind spot met on one probe, if any.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    pub blind: Option<String>,
}

pub fn rms(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
}

fn log2_ratio(big: f64, small: f64) -> i32 {
    if small <= 0.0 {
        i32::MAX
    } else {
        (big / small).log2().floor() as i32
    }
}

impl Watch {
    fn flag(&mut self, why: impl FnOnce() -> String) {
        if self.blind.is_none() {
            self.blind = Some(why());
        }
    }

    /// `terms` are summed elementwise: each must reach the grid of the
    /// largest.
    pub fn sum(&mut self, at: &dyn Fn() -> String, terms: &[&[f64]]) {
        let r: Vec<f64> = terms.iter().map(|t| rms(t)).collect();
        let big = r.iter().copied().fold(0.0, f64::max);
        let small = r.iter().copied().fold(f64::INFINITY, f64::min);
        if big > 0.0 && big > small * seen_ratio() {
            self.flag(|| {
                let k = log2_ratio(big, small);
                if k == i32::MAX {
                    format!("{}: one term of a sum is zero", at())
                } else {
                    format!("{}: one term of a sum is 2^-{k} of another", at())
                }
            });
        }
    }

    /// `input` is contracted over its columns (or, with `rows`, its rows):
    /// every nonzero column must reach the grid of the largest.
    pub fn contraction(&mut self, at: &dyn Fn() -> String, input: &Mat, rows: bool) {
        let (lines, len) = if rows {
            (input.rows, input.cols)
        } else {
            (input.cols, input.rows)
        };
        let mut big = 0.0f64;
        let mut small = f64::INFINITY;
        for l in 0..lines {
            let mut s = 0.0;
            for k in 0..len {
                let v = if rows {
                    input.v[l * input.cols + k]
                } else {
                    input.v[k * input.cols + l]
                };
                s += v * v;
            }
            // An exactly zero line (a mask, a dead unit) is the same in
            // every spelling and carries nothing to lose.
            if s > 0.0 {
                big = big.max(s);
                small = small.min(s);
            }
        }
        if big > 0.0 && big.sqrt() > small.sqrt() * seen_ratio() {
            self.flag(|| {
                format!(
                    "{}: its input {} span 2^{} in magnitude",
                    at(),
                    if rows { "rows" } else { "features" },
                    log2_ratio(big.sqrt(), small.sqrt())
                )
            });
        }
    }

    /// Softmax probabilities, row by row (`causal`: row i has i + 1
    /// entries): a row with two or more entries must not be one-hot.
    pub fn softmax(&mut self, at: &dyn Fn() -> String, p: &Mat, causal: bool) {
        let limit = 1.0 - 1.0 / seen_ratio();
        for i in 0..p.rows {
            let end = if causal { (i + 1).min(p.cols) } else { p.cols };
            if end < 2 {
                continue;
            }
            let row = &p.v[i * p.cols..i * p.cols + end];
            if row.iter().copied().fold(0.0, f64::max) > limit {
                self.flag(|| format!("{}: softmax row {i} is one-hot", at()));
                return;
            }
        }
    }

    /// Inputs `x` of activation `f` giving outputs `y`: a curved activation
    /// must differ from relu somewhere by enough to reach the grid.
    pub fn curve(&mut self, at: &dyn Fn() -> String, f: Activation, x: &[f64], y: &[f64]) {
        if !matches!(f, Activation::Gelu | Activation::Silu) {
            return;
        }
        let off = x
            .iter()
            .zip(y)
            .map(|(a, b)| (b - a.max(0.0)).abs())
            .fold(0.0, f64::max);
        let scale = rms(y);
        if scale > 0.0 && off * seen_ratio() < scale {
            self.flag(|| format!("{}: {} acts as relu on every input", at(), f.name()));
        }
    }
}
