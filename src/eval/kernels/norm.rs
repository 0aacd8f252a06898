//! Layer and RMS normalisation with gain and optional bias over the last
//! axis of row-major rows, forward and backward in one pass each.
//!
//! Layer norm (Ba et al. 2016): x̂ = (x − μ)·r with r = 1/√(σ² + ε);
//! RMS norm (Zhang & Sennrich 2019): x̂ = x·r with r = 1/√(mean(x²) + ε);
//! y = x̂·g + b. With x̂ and r kept, the input gradient is
//! dx = r·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)), without the mean(dx̂) term for
//! RMS, where dx̂ = dy·g.

use multiversion::multiversion;

pub const EPS: f32 = 1e-5;

/// Rows per part of a forward pass split over the pool's threads (from
/// `PARALLEL_ELEMENTS` rows × columns).
const ROWS_PER_PART: usize = 64;

/// Writes y; with `saved` = (x̂, r) storage, keeps what `backward` needs.
pub fn forward(
    x: &[f32],
    cols: usize,
    center: bool,
    gain: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    saved: Option<(&mut [f32], &mut [f32])>,
) {
    if cols == 0 || !super::split_over_threads(y.len(), super::PARALLEL_ELEMENTS) {
        return forward_rows(x, cols, center, gain, bias, y, saved);
    }
    use rayon::prelude::*;
    let len = ROWS_PER_PART * cols;
    let parts = y.len().div_ceil(len);
    let saved: Vec<Option<(&mut [f32], &mut [f32])>> = match saved {
        Some((xhat, rs)) => xhat
            .chunks_mut(len)
            .zip(rs.chunks_mut(ROWS_PER_PART))
            .map(Some)
            .collect(),
        None => (0..parts).map(|_| None).collect(),
    };
    x.par_chunks(len)
        .zip(y.par_chunks_mut(len))
        .zip(saved)
        .for_each(|((x, y), saved)| forward_rows(x, cols, center, gain, bias, y, saved));
}

/// [`forward`] on this thread.
#[multiversion(targets("x86_64+avx2+fma"))]
fn forward_rows(
    x: &[f32],
    cols: usize,
    center: bool,
    gain: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    mut saved: Option<(&mut [f32], &mut [f32])>,
) {
    for (r, (xr, yr)) in x
        .chunks_exact(cols)
        .zip(y.chunks_exact_mut(cols))
        .enumerate()
    {
        let mean = if center {
            xr.iter().sum::<f32>() / cols as f32
        } else {
            0.0
        };
        let var = xr.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
        let rstd = 1.0 / (var + EPS).sqrt();
        for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(gain) {
            *o = (v - mean) * rstd * g;
        }
        if let Some(b) = bias {
            yr.iter_mut().zip(b).for_each(|(o, &b)| *o += b);
        }
        if let Some((xhat, rs)) = saved.as_mut() {
            rs[r] = rstd;
            for (h, &v) in xhat[r * cols..(r + 1) * cols].iter_mut().zip(xr) {
                *h = (v - mean) * rstd;
            }
        }
    }
}

/// Gradients of the loss for x (accumulated into `dx`), gain and bias
/// (accumulated into `dgain`, `dbias`) from dy and the forward's (x̂, r).
/// Split over the pool's threads like [`forward`]: dx by rows, the gain and
/// bias sums by columns, each column still summed in row order, so the
/// result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dy: &[f32],
    xhat: &[f32],
    rstd: &[f32],
    cols: usize,
    center: bool,
    gain: &[f32],
    dx: &mut [f32],
    dgain: &mut [f32],
    dbias: Option<&mut [f32]>,
) {
    if cols == 0 || !super::split_over_threads(dy.len(), super::PARALLEL_ELEMENTS) {
        return backward_rows(dy, xhat, rstd, cols, center, gain, dx, Some((dgain, dbias)));
    }
    use rayon::prelude::*;
    let len = ROWS_PER_PART * cols;
    rayon::join(
        || {
            dy.par_chunks(len)
                .zip(xhat.par_chunks(len))
                .zip(rstd.par_chunks(ROWS_PER_PART))
                .zip(dx.par_chunks_mut(len))
                .for_each(|(((dy, xhat), rstd), dx)| {
                    backward_rows(dy, xhat, rstd, cols, center, gain, dx, None)
                })
        },
        || {
            let part = cols.div_ceil(rayon::current_num_threads());
            let dbias: Vec<Option<&mut [f32]>> = match dbias {
                Some(db) => db.chunks_mut(part).map(Some).collect(),
                None => dgain.chunks(part).map(|_| None).collect(),
            };
            dgain
                .par_chunks_mut(part)
                .zip(dbias)
                .enumerate()
                .for_each(|(i, (dg, db))| param_grads(dy, xhat, cols, i * part, dg, db))
        },
    );
}

/// [`backward`] on this thread for whole rows; the gain and bias
/// gradients too when `params` is given.
#[multiversion(targets("x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn backward_rows(
    dy: &[f32],
    xhat: &[f32],
    rstd: &[f32],
    cols: usize,
    center: bool,
    gain: &[f32],
    dx: &mut [f32],
    mut params: Option<(&mut [f32], Option<&mut [f32]>)>,
) {
    let mut dxhat = vec![0.0f32; cols];
    let rows = dy.chunks_exact(cols).zip(xhat.chunks_exact(cols));
    for (r, (dyr, hr)) in rows.enumerate() {
        for ((d, &g), &dyv) in dxhat.iter_mut().zip(gain).zip(dyr) {
            *d = dyv * g;
        }
        if let Some((dgain, dbias)) = params.as_mut() {
            param_grads_row(dyr, hr, dgain, dbias.as_deref_mut());
        }
        let m1 = if center {
            dxhat.iter().sum::<f32>() / cols as f32
        } else {
            0.0
        };
        let m2 = dxhat.iter().zip(hr).map(|(a, b)| a * b).sum::<f32>() / cols as f32;
        let rs = rstd[r];
        for ((o, &d), &h) in dx[r * cols..(r + 1) * cols].iter_mut().zip(&dxhat).zip(hr) {
            *o += rs * (d - m1 - h * m2);
        }
    }
}

/// The gain and bias gradients of columns `from..from + dgain.len()`, over
/// every row in order.
#[multiversion(targets("x86_64+avx2+fma"))]
fn param_grads(
    dy: &[f32],
    xhat: &[f32],
    cols: usize,
    from: usize,
    dgain: &mut [f32],
    mut dbias: Option<&mut [f32]>,
) {
    let to = from + dgain.len();
    for (dyr, hr) in dy.chunks_exact(cols).zip(xhat.chunks_exact(cols)) {
        param_grads_row(&dyr[from..to], &hr[from..to], dgain, dbias.as_deref_mut());
    }
}

/// One row's share of the gain and bias gradients: dg += dy·x̂, db += dy.
#[inline(always)]
fn param_grads_row(dy: &[f32], xhat: &[f32], dgain: &mut [f32], dbias: Option<&mut [f32]>) {
    for ((dg, &dyv), &h) in dgain.iter_mut().zip(dy).zip(xhat) {
        *dg += dyv * h;
    }
    if let Some(db) = dbias {
        db.iter_mut().zip(dy).for_each(|(b, &v)| *b += v);
    }
}
