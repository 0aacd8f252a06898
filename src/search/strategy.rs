//! Search strategies as ask/tell state machines over candidate ids and
//! scores. They see candidates only as ids, derivations and scores.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What to try next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proposal {
    /// A fresh sample from the grammar.
    Sample,
    /// A mutant of this evaluated candidate.
    Mutate(u64),
    /// A baseline architecture named in the space file.
    Baseline(String),
    /// The candidate a surrogate ranks best among many untrained ones
    /// (model-based search; the proposer builds and ranks the pool).
    Guided,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    Random,
    Evolution,
    Model,
}

impl StrategyKind {
    pub fn parse(s: &str) -> Option<StrategyKind> {
        match s {
            "random" => Some(StrategyKind::Random),
            "evolution" => Some(StrategyKind::Evolution),
            "model" => Some(StrategyKind::Model),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Random => "random",
            StrategyKind::Evolution => "evolution",
            StrategyKind::Model => "model",
        }
    }
}

/// Regularised (aging) evolution, Real et al. 2019: a FIFO population of
/// `population` members; each child mutates the best of `tournament`
/// members drawn with replacement; the oldest member leaves when a child
/// joins. Until the population is full, new members are baselines, then
/// fresh samples.
#[derive(Clone, Debug)]
pub struct Strategy {
    pub kind: StrategyKind,
    pub population: usize,
    pub tournament: usize,
    members: VecDeque<(u64, f64)>,
    baselines: VecDeque<String>,
    /// Members told so far (the population fills before mutation starts).
    told: usize,
    /// Proposals handed out whose results are not told yet.
    pending: usize,
}

impl Strategy {
    pub fn new(
        kind: StrategyKind,
        population: usize,
        tournament: usize,
        baselines: Vec<String>,
    ) -> Strategy {
        Strategy {
            kind,
            population: population.max(1),
            tournament: tournament.max(1),
            members: VecDeque::new(),
            baselines: baselines.into(),
            told: 0,
            pending: 0,
        }
    }

    pub fn propose(&mut self, rng: &mut ChaCha8Rng) -> Proposal {
        self.pending += 1;
        if let Some(b) = self.baselines.pop_front() {
            return Proposal::Baseline(b);
        }
        match self.kind {
            StrategyKind::Random => Proposal::Sample,
            // Warm-up: the surrogate needs a population's worth of fresh
            // samples before its ranking means anything.
            StrategyKind::Model if self.told + self.pending <= self.population => Proposal::Sample,
            StrategyKind::Model => Proposal::Guided,
            StrategyKind::Evolution => {
                if self.told + self.pending <= self.population || self.members.is_empty() {
                    return Proposal::Sample;
                }
                let mut best: Option<(u64, f64)> = None;
                for _ in 0..self.tournament {
                    let m = self.members[rng.gen_range(0..self.members.len())];
                    if best.is_none_or(|b| m.1 > b.1) {
                        best = Some(m);
                    }
                }
                Proposal::Mutate(best.expect("tournament of at least one").0)
            }
        }
    }

    /// A proposal that could not be turned into a candidate.
    pub fn withdraw(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// A proposal that turned out to be an architecture already evaluated:
    /// it costs nothing and does not join the population a second time
    /// (a copy would push out an older member and double its weight in
    /// tournaments).
    pub fn tell_duplicate(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// The result of a proposal: candidate `id` scored `score` (0 if it failed).
    pub fn tell(&mut self, id: u64, score: f64) {
        self.pending = self.pending.saturating_sub(1);
        self.told += 1;
        self.members.push_back((id, score));
        while self.members.len() > self.population {
            self.members.pop_front();
        }
    }

    /// Replays results in id order (resume); duplicates are left out, as
    /// `tell_duplicate` leaves them out.
    pub fn rebuild(&mut self, told: &[(u64, f64)], baselines_used: usize) {
        for _ in 0..baselines_used.min(self.baselines.len()) {
            self.baselines.pop_front();
        }
        for &(id, s) in told {
            self.told += 1;
            self.members.push_back((id, s));
            while self.members.len() > self.population {
                self.members.pop_front();
            }
        }
    }

    /// Whether a result scoring `score` would rank among the population's
    /// best `k` (evolution only: those are the members tournaments pick, so
    /// the ones a lucky seed misleads).
    pub fn enters_top(&self, score: f64, k: usize) -> bool {
        if self.kind != StrategyKind::Evolution || k == 0 {
            return false;
        }
        let mut scores: Vec<f64> = self.members.iter().map(|m| m.1).collect();
        if scores.len() < k {
            return true;
        }
        scores.sort_by(|a, b| b.total_cmp(a));
        score > scores[k - 1]
    }

    pub fn members(&self) -> impl Iterator<Item = &(u64, f64)> {
        self.members.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn evolution_fills_then_mutates_the_tournament_winner_and_ages_out() {
        let mut s = Strategy::new(StrategyKind::Evolution, 3, 3, vec!["base".into()]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(s.propose(&mut rng), Proposal::Baseline("base".into()));
        s.tell(0, 0.1);
        for id in 1..3 {
            assert_eq!(s.propose(&mut rng), Proposal::Sample);
            s.tell(id, id as f64);
        }
        // Population full: tournaments over {0.1, 1, 2}; with 3 draws the
        // best is usually id 2, never worse than what was drawn.
        let mut parents = Vec::new();
        for _ in 0..50 {
            if let Proposal::Mutate(p) = s.propose(&mut rng) {
                parents.push(p);
            }
            s.withdraw();
        }
        assert!(parents.iter().filter(|&&p| p == 2).count() > 25);
        // Aging: the oldest leaves even if it is good.
        s.tell(3, 0.0);
        assert_eq!(s.members().map(|m| m.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn duplicates_do_not_join_the_population() {
        let mut s = Strategy::new(StrategyKind::Evolution, 2, 2, vec![]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for id in 0..2 {
            assert_eq!(s.propose(&mut rng), Proposal::Sample);
            s.tell(id, 0.5);
        }
        // A duplicate of member 1 neither ages member 0 out nor counts.
        assert!(matches!(s.propose(&mut rng), Proposal::Mutate(_)));
        s.tell_duplicate();
        assert_eq!(s.members().map(|m| m.0).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(s.pending, 0);
    }

    #[test]
    fn only_results_that_beat_the_kth_best_member_enter_the_top() {
        let mut s = Strategy::new(StrategyKind::Evolution, 4, 2, vec![]);
        assert!(s.enters_top(0.0, 2), "an empty population has room");
        for (id, v) in [(0, 0.5), (1, 0.9), (2, 0.1)] {
            s.tell(id, v);
        }
        assert!(s.enters_top(0.6, 2));
        assert!(!s.enters_top(0.5, 2), "ties with the 2nd best stay out");
        assert!(!s.enters_top(0.99, 0));
        let mut r = Strategy::new(StrategyKind::Random, 4, 2, vec![]);
        r.tell(0, 0.1);
        assert!(!r.enters_top(1.0, 2), "random search ranks nothing");
    }

    #[test]
    fn rebuild_gives_the_same_state() {
        let mut a = Strategy::new(StrategyKind::Evolution, 4, 2, vec![]);
        let told: Vec<(u64, f64)> = (0..7).map(|i| (i, (i * 37 % 11) as f64)).collect();
        for &(i, s) in &told {
            a.propose(&mut ChaCha8Rng::seed_from_u64(i));
            a.tell(i, s);
        }
        let mut b = Strategy::new(StrategyKind::Evolution, 4, 2, vec![]);
        b.rebuild(&told, 0);
        let mut r1 = ChaCha8Rng::seed_from_u64(9);
        let mut r2 = ChaCha8Rng::seed_from_u64(9);
        assert_eq!(a.propose(&mut r1), b.propose(&mut r2));
        assert_eq!(
            a.members().collect::<Vec<_>>(),
            b.members().collect::<Vec<_>>()
        );
    }
}
