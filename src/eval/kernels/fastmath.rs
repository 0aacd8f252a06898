//! Branch-free scalar math the compiler vectorises, for the CPU kernels.

use multiversion::multiversion;

pub const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// e^x for x in about [-87, 88], relative error below 1e-5, no branches:
/// 2^n · p(r) with n = round(x / ln 2), r = x − n ln 2, p a degree-6 Taylor
/// polynomial (|r| ≤ ln2/2).
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const SHIFTER: f32 = 12_582_912.0; // 1.5 · 2^23
    #[allow(clippy::manual_clamp)] // clamp's NaN rules keep it from vectorising
    let x = x.max(-87.0).min(88.0);
    // Round to nearest by adding 1.5·2^23: the low mantissa bits of `t` then
    // hold n as an integer, read back with bit operations only (vectorises,
    // unlike round() or an `as i32` cast).
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let n_bits = t.to_bits().wrapping_sub(SHIFTER.to_bits());
    let r = x - n * std::f32::consts::LN_2;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    f32::from_bits(p.to_bits().wrapping_add(n_bits << 23))
}

#[inline(always)]
fn sigmoid_2u(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    1.0 / (1.0 + exp_fast(-2.0 * u))
}

/// GELU, tanh approximation (Hendrycks & Gimpel 2016), as x·σ(2u) =
/// ½x(1 + tanh u).
#[inline(always)]
pub fn gelu_value(x: f32) -> f32 {
    x * sigmoid_2u(x)
}

/// d/dx [x·σ(2u)] = σ + 2x·σ(1−σ)·u'.
#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    let s = sigmoid_2u(x);
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
    s + 2.0 * x * s * (1.0 - s) * du
}

/// out[i] = GELU(x[i]).
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn gelu_forward(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = gelu_value(v);
    }
}

/// dx[i] += dy[i]·GELU'(x[i]).
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((g, &d), &v) in dx.iter_mut().zip(dy).zip(x) {
        *g += d * gelu_grad(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let e = exp_fast(x) as f64;
            let r = (x as f64).exp();
            worst = worst.max(((e - r) / r).abs());
            x += 0.0137;
        }
        assert!(worst < 1e-5, "{worst}");
    }

    #[test]
    fn gelu_matches_the_tanh_formula_and_its_derivative() {
        let f = |v: f64| {
            0.5 * v * (1.0 + ((SQRT_2_OVER_PI as f64) * (v + 0.044715 * v.powi(3))).tanh())
        };
        for i in -400..400 {
            let x = i as f32 * 0.02;
            assert!((gelu_value(x) as f64 - f(x as f64)).abs() < 1e-5, "{x}");
            let h = 1e-3f64;
            let d = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
            assert!(
                (gelu_grad(x) as f64 - d).abs() < 1e-4,
                "{x}: {} vs {d}",
                gelu_grad(x)
            );
        }
    }
}
