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
///
/// Points are visited best score first (ties: fewer active params, then
/// FLOPs), so whatever dominates a point comes before it, and a point
/// dominated by anything is dominated by a point of the front kept so far:
/// each is checked against the front only, O(n · front) rather than O(n²)
/// (a run of 100,000 candidates has a front of tens).
pub fn front(points: &[Point]) -> Vec<Point> {
    let mut order: Vec<&Point> = points.iter().collect();
    order.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.active_params.total_cmp(&b.active_params))
            .then(a.flops.total_cmp(&b.flops))
    });
    let mut f: Vec<Point> = Vec::new();
    for p in order {
        if !f.iter().any(|q| dominates(q, p)) {
            f.push(p.clone());
        }
    }
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

    /// The front is the points nothing dominates (one of each set of equal
    /// points), on random sets with many ties and repeats.
    #[test]
    fn front_is_every_point_nothing_dominates() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for n in [0, 1, 2, 7, 40, 300] {
            let pts: Vec<Point> = (0..n)
                .map(|i| {
                    let grid = |r: &mut rand_chacha::ChaCha8Rng| r.gen_range(0..6) as f64;
                    p(i, grid(&mut rng) / 5.0, grid(&mut rng), grid(&mut rng))
                })
                .collect();
            let f = front(&pts);
            for q in &pts {
                let dominated = pts.iter().any(|r| dominates(r, q));
                let same_kept = f.iter().any(|k| {
                    (k.score, k.active_params, k.flops) == (q.score, q.active_params, q.flops)
                });
                assert_eq!(!dominated, same_kept, "n {n}: {q:?}");
            }
            for (i, a) in f.iter().enumerate() {
                for b in &f[i + 1..] {
                    assert!(!dominates(a, b) && !dominates(b, a));
                    assert_ne!(
                        (a.score, a.active_params, a.flops),
                        (b.score, b.active_params, b.flops)
                    );
                    assert!(a.score >= b.score);
                }
            }
        }
    }
}
