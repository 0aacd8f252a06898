//! Numbers for people: counts of parameters and FLOPs, rates. Shared by
//! every module that prints them; imports nothing from the crate.

/// A rank correlation (Kendall τ, Spearman ρ) as the reports print it:
/// signed, two decimals, `n/a` where it is undefined.
pub fn fmt_tau(t: Option<f64>) -> String {
    t.map_or("n/a".to_string(), |t| format!("{t:+.2}"))
}

/// 1234567 → "1.23M".
pub fn fmt_count(v: f64) -> String {
    let a = v.abs();
    if a >= 1e15 || !a.is_finite() {
        // Exact decimal formatting of huge floats is slow; runaway
        // samples hit this path often.
        format!("{v:.2e}")
    } else if a >= 1e12 {
        format!("{:.2}T", v / 1e12)
    } else if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::{fmt_count, fmt_tau};

    #[test]
    fn a_rank_correlation_is_signed_with_two_decimals_or_na() {
        assert_eq!(fmt_tau(Some(0.4321)), "+0.43");
        assert_eq!(fmt_tau(Some(-0.125)), "-0.12");
        assert_eq!(fmt_tau(None), "n/a");
    }

    #[test]
    fn counts_take_si_suffixes_at_their_thresholds() {
        assert_eq!(fmt_count(0.0), "0");
        assert_eq!(fmt_count(9999.0), "9999");
        assert_eq!(fmt_count(10_000.0), "10.0k");
        assert_eq!(fmt_count(1_234_567.0), "1.23M");
        assert_eq!(fmt_count(-2.5e9), "-2.50G");
        assert_eq!(fmt_count(3e12), "3.00T");
        assert_eq!(fmt_count(1e15), "1.00e15");
        assert_eq!(fmt_count(f64::INFINITY), "inf");
    }
}
