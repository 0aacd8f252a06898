//! Model-based search (sequential model-based optimisation, as in SMAC,
//! Hutter et al. 2011, and BANANAS, White et al. 2021): a surrogate fitted
//! on every trained candidate ranks a pool of untrained ones, fresh samples
//! and mutations of the best so far, and only the most promising is
//! trained. The pool is built by the run loop (it owns the space); this
//! file keeps what was trained, refits the surrogate and chooses.

use crate::stats::mean;
use crate::surrogate::{cross_validated_tau, ModelKind, Surrogate};

pub use crate::space::ModelSettings;

/// What the model-based strategy knows: the features and score of every
/// trained candidate, and the surrogate fitted on them.
pub struct Guide {
    pub settings: ModelSettings,
    seed: u64,
    ids: Vec<u64>,
    xs: Vec<Vec<f64>>,
    ys: Vec<f64>,
    model: Option<Surrogate>,
    /// Points the current model was fitted on.
    fitted_on: usize,
    /// Validations reported so far, one per `REPORT_EVERY` trained.
    reported: usize,
}

/// The surrogate's validation τ is reported after every this many trained
/// candidates: often enough to watch it grow, rarely enough not to crowd
/// the log.
pub const REPORT_EVERY: usize = 5;

impl Guide {
    pub fn new(settings: ModelSettings, seed: u64) -> Guide {
        Guide {
            settings,
            seed,
            ids: Vec::new(),
            xs: Vec::new(),
            ys: Vec::new(),
            model: None,
            fitted_on: 0,
            reported: 0,
        }
    }

    /// A trained candidate's features and score (0 for a failed one, as
    /// the strategies are told).
    pub fn observe(&mut self, id: u64, features: Vec<f64>, score: f64) {
        if let Some(i) = self.ids.iter().position(|&x| x == id) {
            // A re-evaluation: the candidate's mean.
            self.ys[i] = mean(&[self.ys[i], score]);
            return;
        }
        self.ids.push(id);
        self.xs.push(features);
        self.ys.push(score);
    }

    pub fn trained(&self) -> usize {
        self.ids.len()
    }

    /// The ids of the `parents` best trained candidates, best first.
    pub fn parents(&self) -> Vec<u64> {
        let mut order: Vec<usize> = (0..self.ids.len()).collect();
        order.sort_by(|&a, &b| self.ys[b].total_cmp(&self.ys[a]).then(a.cmp(&b)));
        order
            .into_iter()
            .take(self.settings.parents)
            .map(|i| self.ids[i])
            .collect()
    }

    fn refit(&mut self) {
        if self.fitted_on == self.ids.len() && self.model.is_some() {
            return;
        }
        self.model = Surrogate::fit(
            ModelKind::Forest,
            &self.xs,
            &self.ys,
            self.seed ^ self.ids.len() as u64,
        )
        .ok();
        self.fitted_on = self.ids.len();
    }

    /// The index in `pool` (feature rows) with the highest upper
    /// confidence bound; the first row when no model can be fitted yet.
    pub fn choose(&mut self, pool: &[Vec<f64>]) -> Option<usize> {
        if pool.is_empty() {
            return None;
        }
        self.refit();
        let Some(model) = &self.model else {
            return Some(0);
        };
        let p = model.predict(pool).ok()?;
        let kappa = self.settings.kappa;
        (0..p.len()).max_by(|&a, &b| {
            let ua = p[a].mean + kappa * p[a].sd;
            let ub = p[b].mean + kappa * p[b].sd;
            // Ties go to the earlier row, so the choice is deterministic.
            ua.total_cmp(&ub).then(b.cmp(&a))
        })
    }

    /// (trained, validation τ) when another `REPORT_EVERY` candidates were
    /// trained since the last report. Reports fall on the same counts in a
    /// resumed run as in an unbroken one (see `skip_reports`).
    pub fn due_report(&mut self) -> Option<(usize, Option<f64>)> {
        let blocks = self.trained() / REPORT_EVERY;
        if blocks <= self.reported {
            return None;
        }
        self.reported = blocks;
        Some((self.trained(), self.validation_tau()))
    }

    /// A resumed run's earlier reports were logged before it stopped.
    pub fn skip_reports(&mut self) {
        self.reported = self.trained() / REPORT_EVERY;
    }

    /// The surrogate's 5-fold cross-validated Kendall τ on what was
    /// trained so far (`None` with too few points).
    pub fn validation_tau(&self) -> Option<f64> {
        cross_validated_tau(ModelKind::Forest, &self.xs, &self.ys, 5, self.seed)
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(a: f64, b: f64) -> Vec<f64> {
        vec![a, b, 1.0]
    }

    #[test]
    fn it_chooses_what_the_trained_points_predict_best() {
        let mut g = Guide::new(ModelSettings::default(), 1);
        // Score rises with the first feature.
        for i in 0..30u64 {
            let a = (i % 10) as f64;
            g.observe(i, row(a, (i * 7 % 5) as f64), a / 10.0);
        }
        let pool = vec![row(1.0, 2.0), row(9.0, 2.0), row(4.0, 2.0)];
        assert_eq!(g.choose(&pool), Some(1));
        assert!(g.validation_tau().unwrap() > 0.5);
        assert_eq!(&g.parents()[..2], &[9, 19]);
    }

    #[test]
    fn before_it_can_fit_it_takes_the_first_and_a_repeat_is_averaged() {
        let mut g = Guide::new(ModelSettings::default(), 1);
        assert_eq!(g.choose(&[]), None);
        assert_eq!(g.choose(&[row(0.0, 0.0), row(1.0, 1.0)]), Some(0));
        g.observe(4, row(1.0, 0.0), 0.2);
        g.observe(4, row(1.0, 0.0), 0.4);
        assert_eq!(g.trained(), 1);
        assert!((g.ys[0] - 0.3).abs() < 1e-12);
        assert_eq!(g.validation_tau(), None);
    }

    #[test]
    fn validation_is_reported_after_every_five_trained_and_not_again_after_a_resume() {
        let mut g = Guide::new(ModelSettings::default(), 1);
        let mut reports = Vec::new();
        for i in 0..23u64 {
            g.observe(i, row(i as f64, 0.0), i as f64);
            if i == 11 {
                // A repeat adds no point and so no report.
                g.observe(i, row(i as f64, 0.0), i as f64);
            }
            if let Some((n, tau)) = g.due_report() {
                reports.push((n, tau.is_some()));
            }
        }
        assert_eq!(
            reports,
            [(5, true), (10, true), (15, true), (20, true)],
            "a τ needs 5 folds of at least one point"
        );
        let mut resumed = Guide::new(ModelSettings::default(), 1);
        for i in 0..12u64 {
            resumed.observe(i, row(i as f64, 0.0), i as f64);
        }
        resumed.skip_reports();
        assert_eq!(resumed.due_report(), None);
        for i in 12..15u64 {
            resumed.observe(i, row(i as f64, 0.0), i as f64);
        }
        assert_eq!(resumed.due_report().map(|r| r.0), Some(15));
    }

    #[test]
    fn the_same_observations_give_the_same_choice() {
        let run = || {
            let mut g = Guide::new(ModelSettings::default(), 5);
            for i in 0..12u64 {
                g.observe(i, row(i as f64, (i % 3) as f64), ((i * 37) % 11) as f64);
            }
            let pool: Vec<Vec<f64>> = (0..50)
                .map(|k| row(k as f64 / 4.0, (k % 3) as f64))
                .collect();
            g.choose(&pool)
        };
        assert_eq!(run(), run());
    }
}
