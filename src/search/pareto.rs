//! The Pareto front of score (higher is better) against active parameters
//! and FLOPs per token (lower is better).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub id: u64,
    pub score: f64,
    pub active_params: f64,
    pub flops: f64,
}

/// `a` is at least as good as `b` everywhere and better somewhere.
pub fn dominates(a: &Point, b: &Point) -> bool {
    let ge = a.score >= b.score && a.active_params <= b.active_params && a.flops <= b.flops;
    let gt = a.score > b.score || a.active_params < b.active_params || a.flops < b.flops;
    ge && gt
}

/// Non-dominated points, by descending score (ties: fewer active params, id).
pub fn front(points: &[Point]) -> Vec<Point> {
    let mut f: Vec<Point> = points
        .iter()
        .filter(|p| !points.iter().any(|q| dominates(q, p)))
        .cloned()
        .collect();
    f.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.active_params.total_cmp(&b.active_params))
            .then(a.id.cmp(&b.id))
    });
    f.dedup_by(|a, b| {
        a.score == b.score && a.active_params == b.active_params && a.flops == b.flops
    });
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: u64, score: f64, active: f64, flops: f64) -> Point {
        Point {
            id,
            score,
            active_params: active,
            flops,
        }
    }

    #[test]
    fn front_keeps_only_non_dominated() {
        let pts = vec![
            p(0, 0.9, 100.0, 10.0),
            p(1, 0.8, 50.0, 10.0),
            p(2, 0.7, 60.0, 20.0),
            p(3, 0.95, 200.0, 5.0),
        ];
        let f: Vec<u64> = front(&pts).iter().map(|x| x.id).collect();
        assert_eq!(f, vec![3, 0, 1]);
    }
}
