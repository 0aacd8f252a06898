//! Blind spots of one probe: places where the functional hash's grid could
//! not tell two different networks apart, because one part of a value is
//! too small to reach the grid beside another or a nonlinearity is
//! saturated. Two networks that differ only there would get equal outputs
//! on this probe:
//!
//! - a sum (an `add`, a residual, a bias or positional table, a routed
//!   body's update) whose smaller term is below the larger one's grid;
//! - a concatenation of parts that far apart: the small part vanishes in
//!   whatever mixes the features later (a linear map, a norm, a product),
//!   or on the output's grid;
//! - a softmax with mostly one-hot rows (it acts as a hard selection, as
//!   `softmax(q·qᵀ)·v = v` does for an unscaled wide q);
//! - a gelu or silu whose inputs all lie where it equals relu.
//!
//! A probe with a blind spot still adds its outputs to the hash; a network
//! whose every probe has one is never merged (degenerate).

use super::mat::Mat;
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

    /// `terms` are summed elementwise, or concatenated (`what`) and so
    /// mixed by whatever contracts or normalises the result, or quantised
    /// on one grid: each must reach the grid of the largest.
    pub fn sum(&mut self, at: &dyn Fn() -> String, what: &str, terms: &[&[f64]]) {
        let r: Vec<f64> = terms.iter().map(|t| rms(t)).collect();
        let big = r.iter().copied().fold(0.0, f64::max);
        let small = r.iter().copied().fold(f64::INFINITY, f64::min);
        if big > 0.0 && big > small * seen_ratio() {
            self.flag(|| {
                let k = log2_ratio(big, small);
                if k == i32::MAX {
                    format!("{}: one term of a {what} is zero", at())
                } else {
                    format!("{}: one term of a {what} is 2^-{k} of another", at())
                }
            });
        }
    }

    /// Softmax probabilities, row by row (`causal`: row i has i + 1
    /// entries): most rows with two or more entries must not be one-hot. A
    /// one-hot row acts as a hard selection, blind to its logits; two
    /// networks can only agree everywhere through it if the other rows
    /// agree too, so a few such rows leave enough to see.
    pub fn softmax(&mut self, at: &dyn Fn() -> String, p: &Mat, causal: bool) {
        let limit = 1.0 - 1.0 / seen_ratio();
        let (mut rows, mut hard) = (0, 0);
        for i in 0..p.rows {
            let end = if causal { (i + 1).min(p.cols) } else { p.cols };
            if end < 2 {
                continue;
            }
            rows += 1;
            let row = &p.v[i * p.cols..i * p.cols + end];
            if row.iter().copied().fold(0.0, f64::max) > limit {
                hard += 1;
            }
        }
        if 2 * hard > rows {
            self.flag(|| format!("{}: {hard} of {rows} softmax rows are one-hot", at()));
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
