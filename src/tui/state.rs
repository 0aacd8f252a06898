//! Dashboard state: everything the screen shows, folded from events, plus
//! the selection and overlays. `apply` and `key` are the only ways it
//! changes, so the same events and keys always give the same screen.

use crate::grammar::Derivation;
use crate::search::fidelity::{Agreement, FidelityReport};
use crate::search::pareto::{dominates, front, Point};
use crate::store::{Counters, Event, EventKind};
use std::collections::{BTreeMap, VecDeque};

/// Routing summary of one routed layer (from an `evaluated` event).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerLoad {
    pub layer: usize,
    pub kind: String,
    pub load: Vec<f64>,
    pub drop_rate: f64,
    pub skip_rate: f64,
}

/// A kept candidate's state (failed and duplicate ones are not kept).
#[derive(Clone, Debug, PartialEq)]
pub enum CandStatus {
    Training,
    Done(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cand {
    pub id: u64,
    pub arch: String,
    pub origin: String,
    pub params: f64,
    pub active_params: f64,
    pub flops: f64,
    pub status: CandStatus,
    pub wall_secs: f64,
    pub tokens_per_sec: f64,
    pub routing: Vec<LayerLoad>,
    /// Later candidates the cache merged into this one.
    pub duplicates: usize,
    /// Mean and sd over the confirm stage's fresh seeds, for finalists.
    pub confirmed: Option<(f64, f64)>,
}

/// Which panel the arrow keys move in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Focus {
    #[default]
    Top,
    Log,
}

/// What a key asks the surrounding loop to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    None,
    Quit,
    /// Stop the search gracefully (it stays resumable), then quit.
    StopAndQuit,
    TogglePause,
    Export(u64),
}

#[derive(Clone, Debug, Default)]
pub struct Dashboard {
    pub name: String,
    pub space: String,
    pub strategy: String,
    pub metric: String,
    pub budget: usize,
    pub workers: usize,
    pub evaluations: usize,
    pub failed: usize,
    pub started_t: f64,
    /// Time of the latest event (the clock the screen is drawn at).
    pub now: f64,
    pub finished: Option<String>,
    /// Candidates in training and the best evaluated ones (at most
    /// 2 × [`KEPT`]; see `Dashboard::prune`).
    pub cands: BTreeMap<u64, Cand>,
    /// The single-seed Pareto front (score against active parameters) of
    /// every candidate evaluated, the dropped ones included.
    front: Vec<Point>,
    /// (evaluations, best score): the corners of the best-so-far line
    /// (a flat stretch is kept as its two ends).
    pub best_curve: Vec<(f64, f64)>,
    /// Cache hits and the training they saved, counted as the store counts
    /// them.
    pub cache: Counters,
    /// Confirm stage: trainings done and due, while it runs.
    pub confirming: Option<(usize, usize)>,
    /// The confirm stage's winner.
    pub winner: Option<u64>,
    /// The last fidelity measurement, in one line.
    pub fidelity: Option<String>,
    /// The model strategy's last surrogate validation, in a few words.
    pub surrogate: Option<String>,
    pub log: VecDeque<String>,
    // View state.
    pub selected: usize,
    pub log_scroll: usize,
    pub focus: Focus,
    pub help: bool,
    pub details: bool,
    pub confirm_quit: bool,
    /// Inside a running search (quit asks first; `p` pauses).
    pub live_search: bool,
    pub paused: bool,
    pub message: String,
}

const LOG_LINES: usize = 500;

/// Evaluated candidates kept in full, best first: what the top table
/// scrolls through and the Pareto chart scatters. Past twice this many the
/// rest are dropped, so a run of any length folds into bounded memory
/// (the front and the best line are kept apart).
pub const KEPT: usize = 1000;

impl Dashboard {
    pub fn new(live_search: bool) -> Dashboard {
        Dashboard {
            live_search,
            ..Dashboard::default()
        }
    }

    /// Folds one event into the state.
    pub fn apply(&mut self, e: &Event) {
        self.now = self.now.max(e.t);
        self.cache.count(&e.kind);
        let line = match &e.kind {
            EventKind::RunStarted(r) => {
                self.name = r.name.clone();
                self.space = r.space.clone();
                self.strategy = r.strategy.clone();
                self.metric = r.metric.clone();
                self.budget = r.budget;
                self.workers = r.workers;
                self.evaluations = self.evaluations.max(r.evaluations);
                if self.started_t == 0.0 {
                    self.started_t = e.t;
                }
                self.finished = None;
                format!(
                    "run {} started ({} strategy, budget {})",
                    self.name, self.strategy, self.budget
                )
            }
            EventKind::Sampled(c) => {
                self.cands.insert(
                    c.id,
                    Cand {
                        id: c.id,
                        arch: c.arch.clone(),
                        origin: c.origin.clone(),
                        params: c.params,
                        active_params: c.active_params,
                        flops: c.flops,
                        status: CandStatus::Training,
                        wall_secs: 0.0,
                        tokens_per_sec: 0.0,
                        routing: Vec::new(),
                        duplicates: 0,
                        confirmed: None,
                    },
                );
                return;
            }
            EventKind::Evaluated(ev) => {
                let (id, score) = (ev.id, ev.score);
                self.evaluations = ev.evaluations;
                let routing = ev
                    .routing
                    .iter()
                    .flatten()
                    .map(|l| LayerLoad {
                        layer: l.layer,
                        kind: l.kind.clone(),
                        load: l.load.iter().map(|&x| x as f64).collect(),
                        drop_rate: l.drop_rate,
                        skip_rate: l.skip_rate,
                    })
                    .collect();
                if let Some(c) = self.cands.get_mut(&id) {
                    c.status = CandStatus::Done(score);
                    c.wall_secs = ev.wall_secs;
                    c.tokens_per_sec = ev.tokens_per_sec;
                    c.routing = routing;
                }
                let active_params = self
                    .cands
                    .get(&id)
                    .map_or(ev.active_params, |c| c.active_params);
                self.add_to_front(Point {
                    id,
                    score,
                    active_params,
                    flops: 0.0,
                });
                let best = self.best_curve.last().map_or(score, |b| b.1.max(score));
                self.extend_best_curve(best);
                self.prune();
                format!("#{id} {} {score:.4} in {:.1}s", self.metric, ev.wall_secs)
            }
            EventKind::Failed(f) => {
                self.evaluations = f.evaluations;
                self.failed += 1;
                // Nothing shows a failed candidate but the log line.
                self.cands.remove(&f.id);
                let best = self.best_curve.last().map_or(0.0, |b| b.1);
                self.extend_best_curve(best);
                format!("#{} failed: {}", f.id, f.reason)
            }
            EventKind::Duplicate(d) => {
                // Nothing shows a duplicate but the log line and its
                // original's count.
                self.cands.remove(&d.id);
                if let Some(c) = self.cands.get_mut(&d.of) {
                    c.duplicates += 1;
                }
                format!("#{} duplicate of #{} ({} hash)", d.id, d.of, d.stage)
            }
            EventKind::NewBest(b) => format!("new best #{}: {:.4}", b.id, b.score),
            EventKind::ConfirmStarted(c) => {
                self.confirming = Some((0, c.trainings));
                format!(
                    "confirm: top {} retrained with {} fresh seeds ({} trainings)",
                    c.candidates.len(),
                    c.seeds,
                    c.trainings
                )
            }
            EventKind::Trial(t) => {
                if let Some((done, _)) = self.confirming.as_mut() {
                    *done += 1;
                }
                format!(
                    "#{} {} seed {}: {} {:.4}",
                    t.id,
                    t.purpose,
                    t.index + 1,
                    self.metric,
                    t.score
                )
            }
            EventKind::Confirmed(c) => {
                self.confirming = None;
                for cand in self.cands.values_mut() {
                    cand.confirmed = None;
                }
                for row in &c.finalists {
                    if let Some(cand) = self.cands.get_mut(&row.id) {
                        cand.confirmed = Some((row.mean, row.sd));
                    }
                }
                self.winner = c.winner;
                self.selected = 0;
                format!(
                    "winner #{} confirmed {:.4} ± {:.4} over {} fresh seeds",
                    self.winner.unwrap_or(0),
                    c.score.unwrap_or(0.0),
                    c.sd.unwrap_or(0.0),
                    c.seeds
                )
            }
            EventKind::Fidelity(fields) => {
                let Some(r) = FidelityReport::from_event(fields) else {
                    return;
                };
                let tau = |a: &Agreement| crate::fmt::fmt_tau(a.kendall_tau);
                let line = format!(
                    "fidelity vs {} steps: τ {} all, {} top {}; regret {:.4}",
                    r.plan.long_steps,
                    tau(&r.proxy_vs_long),
                    tau(&r.proxy_vs_long_top),
                    r.plan.top,
                    r.regret
                );
                self.fidelity = Some(line.clone());
                line
            }
            EventKind::Surrogate(v) => {
                let tau = crate::fmt::fmt_tau(v.tau);
                self.surrogate = Some(format!("surrogate τ {tau} ({} trained)", v.trained));
                format!("surrogate: 5-fold Kendall τ {tau} on {} trained", v.trained)
            }
            EventKind::RunFinished(r) => {
                self.finished = Some(r.reason.clone());
                format!("run finished ({})", r.reason)
            }
            _ => return,
        };
        self.log.push_back(line);
        while self.log.len() > LOG_LINES {
            self.log.pop_front();
        }
    }

    /// Evaluated candidates, best first: confirmed finalists by their
    /// mean, then the rest by their single-seed score (ties: earlier
    /// first); the best [`KEPT`] of them.
    pub fn ranked(&self) -> Vec<&Cand> {
        let mut v: Vec<&Cand> = self
            .cands
            .values()
            .filter(|c| matches!(c.status, CandStatus::Done(_)))
            .collect();
        v.sort_by(|a, b| {
            b.confirmed
                .is_some()
                .cmp(&a.confirmed.is_some())
                .then(score(b).total_cmp(&score(a)))
                .then(a.id.cmp(&b.id))
        });
        v.truncate(KEPT);
        v
    }

    pub fn selected_cand(&self) -> Option<&Cand> {
        self.ranked().get(self.selected).copied()
    }

    /// Score against active parameters: candidates no other beats on both,
    /// as (active params, score) by growing size.
    ///
    /// Drawn from the kept candidates (at their confirmed scores where
    /// confirmed) and the single-seed front of all: a dropped candidate is
    /// on it if nothing evaluated beat it, so the front is exact but for
    /// a dropped one that only a finalist's single-seed score dominated.
    pub fn pareto(&self) -> Vec<(f64, f64)> {
        // FLOPs are left out (all 0): the chart has two axes.
        let mut pts: Vec<Point> = self
            .ranked()
            .into_iter()
            .map(|c| Point {
                id: c.id,
                score: score(c),
                active_params: c.active_params,
                flops: 0.0,
            })
            .collect();
        // Front points outside the best `KEPT` (dropped, or held until the
        // next prune) at their single-seed score.
        let shown: std::collections::HashSet<u64> = pts.iter().map(|p| p.id).collect();
        pts.extend(
            self.front
                .iter()
                .filter(|p| !shown.contains(&p.id))
                .cloned(),
        );
        let mut f: Vec<(f64, f64)> = front(&pts)
            .iter()
            .map(|p| (p.active_params, p.score))
            .collect();
        f.sort_by(|a, b| a.0.total_cmp(&b.0));
        f
    }

    fn add_to_front(&mut self, p: Point) {
        if self.front.iter().any(|q| dominates(q, &p)) {
            return;
        }
        self.front.retain(|q| !dominates(&p, q));
        self.front.push(p);
    }

    /// Adds (evaluations, best) to the best line; a point that only
    /// lengthens a flat stretch moves its end instead.
    fn extend_best_curve(&mut self, best: f64) {
        let x = self.evaluations as f64;
        let n = self.best_curve.len();
        if n >= 2 && self.best_curve[n - 2].1 == best && self.best_curve[n - 1].1 == best {
            self.best_curve[n - 1].0 = x;
        } else {
            self.best_curve.push((x, best));
        }
    }

    /// Drops evaluated candidates beyond the best [`KEPT`], once twice that
    /// many are held (so ranking runs once per [`KEPT`] evaluations).
    /// Candidates in training and confirmed finalists stay.
    fn prune(&mut self) {
        if self.cands.len() <= 2 * KEPT {
            return;
        }
        let keep: std::collections::HashSet<u64> = self.ranked().iter().map(|c| c.id).collect();
        self.cands.retain(|id, c| {
            keep.contains(id) || c.status == CandStatus::Training || c.confirmed.is_some()
        });
    }

    /// Evaluations per minute since the run started.
    pub fn rate_per_min(&self) -> f64 {
        let mins = (self.now - self.started_t) / 60.0;
        if mins > 0.0 {
            self.evaluations as f64 / mins
        } else {
            0.0
        }
    }

    /// Seconds to the end of the budget at the current rate.
    pub fn eta_secs(&self) -> Option<f64> {
        let r = self.rate_per_min();
        (r > 0.0 && self.finished.is_none())
            .then(|| self.budget.saturating_sub(self.evaluations) as f64 / r * 60.0)
    }

    /// Mean training tokens/s of the last few evaluations.
    pub fn tokens_per_sec(&self) -> f64 {
        let recent: Vec<f64> = self
            .cands
            .values()
            .rev()
            .filter(|c| matches!(c.status, CandStatus::Done(_)))
            .take(8)
            .map(|c| c.tokens_per_sec)
            .collect();
        if recent.is_empty() {
            0.0
        } else {
            recent.iter().sum::<f64>() / recent.len() as f64
        }
    }

    /// Candidates being trained right now.
    pub fn training(&self) -> usize {
        if self.finished.is_some() {
            return 0;
        }
        self.cands
            .values()
            .filter(|c| c.status == CandStatus::Training)
            .count()
    }

    /// Handles one key; returns what the loop must do.
    pub fn key(&mut self, key: char) -> Action {
        if self.confirm_quit {
            self.confirm_quit = false;
            return match key {
                'y' | 'Y' => Action::StopAndQuit,
                _ => {
                    self.message = "search continues".into();
                    Action::None
                }
            };
        }
        if self.help || self.details {
            self.help = false;
            self.details = false;
            return if key == 'q' {
                self.quit()
            } else {
                Action::None
            };
        }
        let n = self.ranked().len();
        match key {
            'q' => return self.quit(),
            '?' => self.help = true,
            '\n' => self.details = n > 0,
            '\t' => {
                self.focus = match self.focus {
                    Focus::Top => Focus::Log,
                    Focus::Log => Focus::Top,
                }
            }
            'j' | '↓' => match self.focus {
                Focus::Top => self.selected = (self.selected + 1).min(n.saturating_sub(1)),
                Focus::Log => self.log_scroll = self.log_scroll.saturating_sub(1),
            },
            'k' | '↑' => match self.focus {
                Focus::Top => self.selected = self.selected.saturating_sub(1),
                Focus::Log => {
                    self.log_scroll = (self.log_scroll + 1).min(self.log.len().saturating_sub(1))
                }
            },
            'p' if self.live_search && self.finished.is_none() => {
                self.paused = !self.paused;
                self.message = if self.paused {
                    "paused: nothing new is proposed; evaluations in flight finish".into()
                } else {
                    "resumed".into()
                };
                return Action::TogglePause;
            }
            'e' => {
                if let Some(c) = self.selected_cand() {
                    return Action::Export(c.id);
                }
                self.message = "nothing evaluated to export yet".into();
            }
            _ => {}
        }
        Action::None
    }

    fn quit(&mut self) -> Action {
        if self.live_search && self.finished.is_none() {
            self.confirm_quit = true;
            Action::None
        } else {
            Action::Quit
        }
    }
}

/// A candidate's score: its confirmed mean if it was confirmed, else its
/// single-seed search score.
pub fn score(c: &Cand) -> f64 {
    match (c.confirmed, &c.status) {
        (Some((mean, _)), _) => mean,
        (None, CandStatus::Done(s)) => *s,
        _ => 0.0,
    }
}

/// The text form as an indented tree: one line per module, its
/// parameters beside it. A text that does not parse is shown as it is.
pub fn arch_tree(text: &str) -> Vec<String> {
    fn walk(d: &Derivation, depth: usize, lines: &mut Vec<String>) {
        let mut line = format!("{}{}", "  ".repeat(depth), d.form);
        for (k, v) in &d.params {
            line.push_str(&format!(" {k}={v}"));
        }
        lines.push(line);
        for c in &d.children {
            walk(c, depth + 1, lines);
        }
    }
    let mut lines = Vec::new();
    match Derivation::parse(text) {
        Ok(d) => walk(&d, 0, &mut lines),
        Err(_) if !text.is_empty() => lines.push(text.to_string()),
        Err(_) => {}
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The event a log line with these fields reads as.
    fn ev(t: f64, kind: &str, mut fields: serde_json::Value) -> Event {
        fields["t"] = json!(t);
        fields["event"] = json!(kind);
        serde_json::from_value(fields).unwrap()
    }

    fn run() -> Dashboard {
        let mut d = Dashboard::new(true);
        d.apply(&ev(
            0.0,
            "run_started",
            json!({"name": "r", "budget": 4, "metric": "accuracy"}),
        ));
        for (i, s) in [(0u64, 0.2), (1, 0.5), (2, 0.3)] {
            d.apply(&ev(i as f64, "sampled", json!({"id": i, "arch": "seq(linear(width=8))", "active_params": 100.0 * (i + 1) as f64})));
            d.apply(&ev(
                i as f64 + 0.5,
                "evaluated",
                json!({"id": i, "score": s, "evaluations": i + 1}),
            ));
        }
        d.apply(&ev(4.0, "sampled", json!({"id": 3})));
        d.apply(&ev(
            4.0,
            "duplicate",
            json!({"id": 3, "of": 1, "stage": "functional", "seconds_saved": 2.0}),
        ));
        d
    }

    #[test]
    fn folds_events_into_ranking_front_and_cache() {
        let d = run();
        let ids: Vec<u64> = d.ranked().iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![1, 2, 0]);
        assert_eq!(d.best_curve, vec![(1.0, 0.2), (2.0, 0.5), (3.0, 0.5)]);
        assert_eq!(d.pareto(), vec![(100.0, 0.2), (200.0, 0.5)]);
        assert_eq!((d.cache.functional_hits, d.cache.seconds_saved), (1, 2.0));
        assert_eq!(d.cands[&1].duplicates, 1);
        // 3 evaluations in 4 s: 45 per minute, 1 left → 1.33 s.
        assert!((d.rate_per_min() - 45.0).abs() < 1e-9);
    }

    /// The front of `points` as `Dashboard::pareto` lists it.
    fn front_of(points: &[Point]) -> Vec<(f64, f64)> {
        let mut f: Vec<(f64, f64)> = front(points)
            .iter()
            .map(|p| (p.active_params, p.score))
            .collect();
        f.sort_by(|a, b| a.0.total_cmp(&b.0));
        f
    }

    /// A run far longer than the dashboard keeps folds into bounded
    /// state that still shows the right top, front and best line.
    #[test]
    fn a_long_run_folds_into_bounded_state_with_the_same_top_front_and_best_line() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut d = Dashboard::new(false);
        let n = 6 * KEPT as u64;
        let mut all = Vec::new();
        let mut evaluations = 0;
        let mut best = f64::NEG_INFINITY;
        let mut full_curve = Vec::new();
        for id in 0..n {
            let active = rng.gen_range(1..400) as f64;
            d.apply(&ev(
                id as f64,
                "sampled",
                json!({"id": id, "arch": "seq(linear(width=8))", "active_params": active}),
            ));
            if id % 50 == 7 {
                d.apply(&ev(
                    id as f64,
                    "duplicate",
                    json!({"id": id, "of": id - 1, "stage": "structural"}),
                ));
                continue;
            }
            evaluations += 1;
            if id % 40 == 3 {
                d.apply(&ev(
                    id as f64,
                    "failed",
                    json!({"id": id, "reason": "x", "evaluations": evaluations}),
                ));
            } else {
                let score = rng.gen_range(0..100_000) as f64 / 100_000.0;
                d.apply(&ev(
                    id as f64,
                    "evaluated",
                    json!({"id": id, "score": score, "evaluations": evaluations}),
                ));
                all.push(Point {
                    id,
                    score,
                    active_params: active,
                    flops: 0.0,
                });
                best = best.max(score);
            }
            full_curve.push((
                evaluations as f64,
                if best.is_finite() { best } else { 0.0 },
            ));
            assert!(
                d.cands.len() <= 2 * KEPT + 1,
                "{} kept after #{id}",
                d.cands.len()
            );
            if id % 250 == 0 {
                assert_eq!(d.pareto(), front_of(&all), "after #{id}");
            }
        }
        let mut by_score = all.clone();
        by_score.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        let top: Vec<u64> = by_score.iter().take(KEPT).map(|p| p.id).collect();
        let shown: Vec<u64> = d.ranked().iter().map(|c| c.id).collect();
        assert_eq!(shown, top);
        assert_eq!(d.pareto(), front_of(&all));
        // Every point of the full best line lies on the kept corners.
        assert!(d.best_curve.len() < 100, "{} corners", d.best_curve.len());
        assert_eq!(d.best_curve.last(), full_curve.last());
        for &(x, y) in &full_curve {
            let i = d.best_curve.partition_point(|c| c.0 < x);
            let on = d.best_curve.get(i).is_some_and(|c| c.0 == x && c.1 == y)
                || (i > 0
                    && d.best_curve[i - 1].1 == y
                    && d.best_curve.get(i).is_some_and(|c| c.1 == y));
            assert!(on, "({x}, {y}) is off the drawn line");
        }
    }

    #[test]
    fn the_last_surrogate_validation_is_shown_and_logged() {
        let mut d = run();
        assert_eq!(d.surrogate, None);
        d.apply(&ev(5.0, "surrogate", json!({"trained": 5, "tau": null})));
        d.apply(&ev(6.0, "surrogate", json!({"trained": 10, "tau": 0.4321})));
        assert_eq!(
            d.surrogate.as_deref(),
            Some("surrogate τ +0.43 (10 trained)")
        );
        assert_eq!(
            d.log.back().map(String::as_str),
            Some("surrogate: 5-fold Kendall τ +0.43 on 10 trained")
        );
    }

    #[test]
    fn keys_select_confirm_and_export() {
        let mut d = run();
        assert_eq!(d.key('j'), Action::None);
        assert_eq!(d.selected_cand().unwrap().id, 2);
        d.key('j');
        d.key('j');
        assert_eq!(d.selected, 2, "selection stops at the last row");
        assert_eq!(d.key('e'), Action::Export(0));
        assert_eq!(d.key('q'), Action::None);
        assert!(d.confirm_quit);
        assert_eq!(d.key('n'), Action::None);
        d.key('q');
        assert_eq!(d.key('y'), Action::StopAndQuit);
        assert_eq!(d.key('p'), Action::TogglePause);
        assert!(d.paused);
    }

    #[test]
    fn tree_of_a_text_form() {
        let t = arch_tree("repeat(n=2, seq(block(norm=pre, mlp(ratio=4)), identity))");
        assert_eq!(
            t,
            vec![
                "repeat n=2",
                "  seq",
                "    block norm=pre",
                "      mlp ratio=4",
                "    identity"
            ]
        );
        // What is not a text form is shown whole, not half-parsed.
        assert_eq!(arch_tree("seq(mlp("), vec!["seq(mlp("]);
        assert!(arch_tree("").is_empty());
    }
}
