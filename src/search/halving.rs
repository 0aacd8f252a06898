//! Successive halving over training steps (Jamieson & Talwalkar 2016), in
//! its asynchronous form (ASHA, Li et al. 2020): every new candidate trains
//! for the lowest rung's steps; whenever a rung holds `eta` results per
//! promotion made so far, its best unpromoted candidate trains again with
//! `eta` times the steps, up to the space's full step count at the top
//! rung. The candidate source (random or evolution) is unchanged.
//!
//! With `brackets` > 1 it is Hyperband (Li et al. 2018) in the same
//! asynchronous form: bracket b starts its candidates at rung b, so later
//! brackets halve less aggressively and a low rung that misranks cannot
//! discard every candidate. New candidates are dealt to brackets in
//! Hyperband's proportions, η^s/(s+1) for a bracket with s halvings.

pub use crate::space::Halving;
use std::collections::BTreeSet;

/// Results per rung and promotions made.
#[derive(Clone, Debug, Default)]
pub struct Rungs {
    /// Per rung: (candidate id, score, architecture's first candidate id).
    results: Vec<Vec<(u64, f64, u64)>>,
    /// Architectures (by first candidate id) promoted out of each rung.
    promoted: Vec<BTreeSet<u64>>,
}

impl Rungs {
    pub fn new(rungs: usize) -> Rungs {
        Rungs {
            results: vec![Vec::new(); rungs.max(1)],
            promoted: vec![BTreeSet::new(); rungs.max(1)],
        }
    }

    /// A finished evaluation at `rung` of the architecture first seen as
    /// `root` (itself, or the candidate it was promoted from).
    pub fn record(&mut self, rung: usize, id: u64, score: f64, root: u64) {
        if rung > 0 {
            self.promoted[rung - 1].insert(root);
        }
        if let Some(r) = self.results.get_mut(rung) {
            r.push((id, score, root));
        }
    }

    /// Marks a promotion as started (so it is not handed out twice).
    pub fn start(&mut self, rung: usize, root: u64) {
        self.promoted[rung].insert(root);
    }

    /// The next promotion due, highest rung first: (candidate to retrain,
    /// its root, the rung it moves to).
    pub fn next(&self, eta: usize) -> Option<(u64, u64, usize)> {
        let eta = eta.max(2);
        for r in (0..self.results.len().saturating_sub(1)).rev() {
            let done = &self.results[r];
            let allowed = done.len() / eta;
            if self.promoted[r].len() >= allowed {
                continue;
            }
            let mut ranked: Vec<&(u64, f64, u64)> = done.iter().collect();
            // Best score first; earlier candidates win ties.
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if let Some(c) = ranked
                .iter()
                .take(allowed)
                .find(|c| !self.promoted[r].contains(&c.2))
            {
                return Some((c.0, c.2, r + 1));
            }
        }
        None
    }
}

/// Hyperband's brackets, each a set of rungs of its own.
#[derive(Clone, Debug)]
pub struct Brackets {
    rungs: Vec<Rungs>,
    /// New candidates dealt to each bracket so far.
    dealt: Vec<usize>,
    weights: Vec<f64>,
}

impl Brackets {
    pub fn new(h: &Halving) -> Brackets {
        let rungs = h.rungs.max(1);
        let n = h.brackets.clamp(1, rungs);
        let eta = h.eta.max(2) as f64;
        Brackets {
            rungs: vec![Rungs::new(rungs); n],
            dealt: vec![0; n],
            weights: (0..n)
                .map(|b| {
                    let s = (rungs - 1 - b) as f64;
                    eta.powf(s) / (s + 1.0)
                })
                .collect(),
        }
    }

    /// The bracket the next new candidate joins (the one furthest below
    /// its share; the most aggressive on ties), counted as dealt.
    pub fn deal(&mut self) -> usize {
        let b = (0..self.dealt.len())
            .min_by(|&a, &b| {
                let (fa, fb) = (
                    (self.dealt[a] + 1) as f64 / self.weights[a],
                    (self.dealt[b] + 1) as f64 / self.weights[b],
                );
                fa.total_cmp(&fb).then(a.cmp(&b))
            })
            .unwrap_or(0);
        self.dealt[b] += 1;
        b
    }

    /// Counts a new candidate of bracket `b` found in the store (resume).
    pub fn dealt_to(&mut self, b: usize) {
        if let Some(d) = self.dealt.get_mut(b) {
            *d += 1;
        }
    }

    pub fn record(&mut self, bracket: usize, rung: usize, id: u64, score: f64, root: u64) {
        if let Some(r) = self.rungs.get_mut(bracket) {
            r.record(rung, id, score, root);
        }
    }

    /// The next promotion due in any bracket: (bracket, candidate to
    /// retrain, its root, the rung it moves to), marked as started.
    pub fn promote(&mut self, eta: usize) -> Option<(usize, u64, u64, usize)> {
        for (b, r) in self.rungs.iter_mut().enumerate() {
            if let Some((from, root, rung)) = r.next(eta) {
                r.start(rung - 1, root);
                return Some((b, from, root, rung));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_grow_by_eta_to_the_full_count() {
        let h = Halving::default();
        assert_eq!(
            (0..3).map(|r| h.steps_at(r, 270)).collect::<Vec<_>>(),
            vec![30, 90, 270]
        );
    }

    #[test]
    fn brackets_deal_candidates_in_hyperbands_proportions() {
        let h = Halving {
            brackets: 3,
            ..Halving::default()
        };
        let mut b = Brackets::new(&h);
        let mut n = [0usize; 3];
        for _ in 0..55 {
            n[b.deal()] += 1;
        }
        // η = 3, 3 rungs: weights 9/3, 3/2, 1/1, so 30 : 15 : 10 of 55.
        assert_eq!(n, [30, 15, 10]);
        // A bracket starting at the top rung never promotes; one starting
        // at rung 1 promotes its best of three to rung 2.
        for (id, s) in [(0, 0.2), (1, 0.9), (2, 0.4)] {
            b.record(1, 1, id, s, id);
            b.record(2, 2, 10 + id, s, 10 + id);
        }
        assert_eq!(b.promote(3), Some((1, 1, 1, 2)));
        assert_eq!(b.promote(3), None, "started promotions are not repeated");
    }

    #[test]
    fn promotes_the_best_of_every_eta_results() {
        let mut r = Rungs::new(3);
        for (id, s) in [(0, 0.1), (1, 0.5), (2, 0.3)] {
            assert_eq!(r.next(3), None);
            r.record(0, id, s, id);
        }
        // 3 results at rung 0: the best (id 1) goes to rung 1.
        assert_eq!(r.next(3), Some((1, 1, 1)));
        r.start(0, 1);
        assert_eq!(r.next(3), None);
        r.record(1, 10, 0.6, 1);
        for (id, s) in [(3, 0.9), (4, 0.0), (5, 0.2)] {
            r.record(0, id, s, id);
        }
        // 6 results allow two promotions: id 3 next, never id 1 again.
        assert_eq!(r.next(3), Some((3, 3, 1)));
    }
}
