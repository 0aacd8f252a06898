//! Summary statistics for comparing scores: mean and sample standard
//! deviation, and the rank correlations (Kendall's τ-b, Spearman's ρ) that
//! fidelity reports and the search-quality bench use.

/// Arithmetic mean (NaN for no values).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample standard deviation (n − 1 in the denominator; 0 for one value,
/// NaN for none).
pub fn sd(v: &[f64]) -> f64 {
    match v.len() {
        0 => f64::NAN,
        1 => 0.0,
        n => {
            let m = mean(v);
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        }
    }
}

/// Kendall's τ-b of two paired samples (Kendall 1945): concordant minus
/// discordant pairs over the geometric mean of the pairs untied in each
/// sample, so ties count for neither side. `None` with fewer than two pairs
/// or when one sample is constant.
pub fn kendall_tau(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len().min(y.len());
    let (mut concordant, mut discordant) = (0i64, 0i64);
    let (mut untied_x, mut untied_y) = (0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let dx = (x[i] - x[j]).partial_cmp(&0.0)? as i64;
            let dy = (y[i] - y[j]).partial_cmp(&0.0)? as i64;
            untied_x += dx.abs();
            untied_y += dy.abs();
            match dx * dy {
                1 => concordant += 1,
                -1 => discordant += 1,
                _ => {}
            }
        }
    }
    if untied_x == 0 || untied_y == 0 {
        return None;
    }
    Some((concordant - discordant) as f64 / ((untied_x as f64) * (untied_y as f64)).sqrt())
}

/// Ranks from 1, ties given their average rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's ρ: Pearson's correlation of the average ranks. `None` with
/// fewer than two pairs or when one sample is constant.
pub fn spearman_rho(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len().min(y.len());
    if n < 2 || x[..n].iter().chain(&y[..n]).any(|v| v.is_nan()) {
        return None;
    }
    let (rx, ry) = (ranks(&x[..n]), ranks(&y[..n]));
    let (mx, my) = (mean(&rx), mean(&ry));
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    if vx == 0.0 || vy == 0.0 {
        return None;
    }
    Some(cov / (vx * vy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        assert_eq!(mean(&[1.0, 2.0, 3.0, 6.0]), 3.0);
        // Σ(x − 3)² = 4 + 1 + 0 + 9 = 14, over n − 1 = 3.
        assert!((sd(&[1.0, 2.0, 3.0, 6.0]) - (14.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(sd(&[5.0]), 0.0);
        assert!(mean(&[]).is_nan());
    }

    #[test]
    fn kendall_counts_pairs_and_handles_ties() {
        assert_eq!(
            kendall_tau(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]),
            Some(1.0)
        );
        assert_eq!(kendall_tau(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // Pairs (1,2) +, (1,3) +, (2,3) −: τ = (2 − 1) / 3.
        let t = kendall_tau(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]).unwrap();
        assert!((t - 1.0 / 3.0).abs() < 1e-12);
        // τ-b with a tie in y: pairs (1,2) tied in y, (1,3) +, (2,3) +;
        // untied x = 3, untied y = 2: τ = 2 / √6.
        let t = kendall_tau(&[1.0, 2.0, 3.0], &[1.0, 1.0, 2.0]).unwrap();
        assert!((t - 2.0 / 6f64.sqrt()).abs() < 1e-12);
        assert_eq!(kendall_tau(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(kendall_tau(&[1.0], &[1.0]), None);
        assert_eq!(kendall_tau(&[1.0, f64::NAN], &[1.0, 2.0]), None);
    }

    #[test]
    fn spearman_uses_average_ranks() {
        assert_eq!(spearman_rho(&[1.0, 5.0, 9.0], &[0.1, 0.2, 0.3]), Some(1.0));
        // Monotone but not linear: still 1.
        assert!(
            (spearman_rho(&[1.0, 2.0, 3.0, 4.0], &[1.0, 8.0, 27.0, 64.0]).unwrap() - 1.0).abs()
                < 1e-12
        );
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        // x ranks 1..4, y ranks 2,1,4,3: ρ = 1 − 6·Σd²/(n(n²−1)) = 1 − 6·4/60.
        let r = spearman_rho(&[1.0, 2.0, 3.0, 4.0], &[2.0, 1.0, 4.0, 3.0]).unwrap();
        assert!((r - 0.6).abs() < 1e-12);
        assert_eq!(spearman_rho(&[1.0, 2.0], &[3.0, 3.0]), None);
    }
}
