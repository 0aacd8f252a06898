//! What a run is told and what it reports: its settings (space defaults
//! overridden by flags), the flags that steer it, its errors, and the
//! space's training settings and stored scores as every file of the run
//! loop reads them.

use super::halving::Halving;
use super::model::ModelSettings;
use super::strategy::StrategyKind;
use crate::eval::{DeviceKind, TrainConfig};
use crate::space::Space;
use crate::store::Cause;
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;

pub use crate::space::Confirm;

/// Flags another thread (signal handler, dashboard) sets to steer a run.
#[derive(Debug, Default)]
pub struct RunControl {
    /// Stop after the evaluations in flight; the run stays resumable.
    pub stop: AtomicBool,
    /// Propose nothing new until cleared (evaluations in flight finish).
    pub pause: AtomicBool,
}

/// Settings of one run (space defaults overridden by flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub name: String,
    pub strategy: StrategyKind,
    /// New candidates trained (duplicates are free).
    pub budget: usize,
    pub seed: u64,
    /// Candidates trained at once (each on one core).
    pub workers: usize,
    pub population: usize,
    pub tournament: usize,
    /// Training steps per candidate (the top rung's, with halving).
    pub steps: usize,
    pub device: DeviceKind,
    /// Successive halving over training steps; `strategy` is its source.
    #[serde(default)]
    pub halving: Option<Halving>,
    /// The confirm stage after the search (None: `--no-confirm`, and runs
    /// recorded before the stage existed).
    #[serde(default)]
    pub confirm: Option<Confirm>,
    /// Evolution's seed re-evaluation of candidates entering the
    /// population's best `reeval` (0: none; see `SearchSettings::reeval`).
    #[serde(default)]
    pub reeval: usize,
    /// The model-based strategy's pool and acquisition (runs recorded
    /// before these were settable used the defaults).
    #[serde(default)]
    pub model: ModelSettings,
}

/// Why a run (or a command on a run) stopped. Each variant keeps its cause;
/// the CLI picks the exit code by variant.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The user's input is wrong (a flag, a run folder, the space's task).
    #[error("{what}")]
    BadInput {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Reading or writing one of the run's files failed.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The run's records ask for something that cannot be done (a
    /// candidate that is missing or no longer lowers), or a resource could
    /// not be set up.
    #[error("{what}")]
    Failed {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl SearchError {
    pub fn bad(what: impl Into<String>) -> Self {
        SearchError::BadInput {
            what: what.into(),
            cause: None,
        }
    }

    pub fn bad_because(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        SearchError::BadInput {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        SearchError::Io {
            what: what.into(),
            source,
        }
    }

    pub fn failed(what: impl Into<String>, cause: Option<Cause>) -> Self {
        SearchError::Failed {
            what: what.into(),
            cause,
        }
    }
}

/// The space's training settings for a candidate.
pub fn train_config(space: &Space, seed: u64, steps: usize, device: DeviceKind) -> TrainConfig {
    let mut train = space.file.train.clone();
    train.warmup_steps = train.warmup_steps.min(steps / 2);
    train.steps = steps;
    TrainConfig {
        train,
        seed,
        device,
        ..TrainConfig::default()
    }
}

/// Whether a stored outcome trained without failing.
pub fn trained_ok(outcome: &serde_json::Value) -> bool {
    outcome["status"] == "ok"
}

/// Score of a stored outcome (0 for a failed one).
pub fn score_of(outcome: &serde_json::Value) -> f64 {
    if trained_ok(outcome) {
        outcome["score"].as_f64().unwrap_or(0.0)
    } else {
        0.0
    }
}

/// A stored outcome's score under `metric` (`accuracy` or `likelihood`),
/// whichever the run ranked by: every outcome records the accuracy and the
/// held-out loss. 0 for a failed one; None for a metric it cannot give
/// (an outcome stored before both were recorded, or an unknown metric).
pub fn score_under(outcome: &serde_json::Value, metric: &str) -> Option<f64> {
    if !trained_ok(outcome) {
        return Some(0.0);
    }
    if outcome["metric"] == metric {
        return outcome["score"].as_f64();
    }
    use crate::eval::ScoreRule;
    if metric == ScoreRule::Accuracy.name() {
        outcome["accuracy"].as_f64()
    } else if metric == ScoreRule::Likelihood.name() {
        outcome["test_loss"].as_f64().map(ScoreRule::likelihood)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_outcome_gives_its_score_under_either_metric() {
        let by_accuracy = json!({"status": "ok", "metric": "accuracy", "score": 0.5,
                                 "accuracy": 0.5, "test_loss": 2.0});
        assert_eq!(score_under(&by_accuracy, "accuracy"), Some(0.5));
        assert_eq!(
            score_under(&by_accuracy, "likelihood"),
            Some((-2.0f64).exp())
        );
        let by_likelihood = json!({"status": "ok", "metric": "likelihood", "score": 0.3,
                                   "accuracy": 0.7, "test_loss": 1.2});
        assert_eq!(score_under(&by_likelihood, "likelihood"), Some(0.3));
        assert_eq!(score_under(&by_likelihood, "accuracy"), Some(0.7));
        // Stored before the held-out loss was recorded.
        let old = json!({"status": "ok", "metric": "accuracy", "score": 0.5});
        assert_eq!(score_under(&old, "likelihood"), None);
        assert_eq!(score_under(&old, "perplexity"), None);
        let failed = json!({"status": "failed", "reason": "x", "metric": "accuracy", "score": 0.0});
        assert_eq!(score_under(&failed, "likelihood"), Some(0.0));
    }

    /// Ranking reads an outcome's brief (`store::OutcomeBrief`) in place
    /// of the outcome: every field the scores here read must be in it. A
    /// score that starts to read a field the brief leaves out fails here.
    #[test]
    fn the_scores_of_an_outcome_brief_are_the_outcomes() {
        use crate::eval::{Outcome, TrainConfig};
        use crate::store::OutcomeBrief;
        let mut trained = Outcome::new(crate::arch::Cost::default(), &TrainConfig::default());
        trained.score = 0.25;
        trained.accuracy = Some(0.25);
        trained.test_loss = Some(1.5);
        trained.final_loss = 1.4;
        trained.loss_curve = vec![(0, 3.0), (10, 1.4)];
        let failed = trained.clone().failed("loss became NaN at step 3".into());
        for o in [trained, failed] {
            let full = serde_json::to_value(&o).unwrap();
            let brief = OutcomeBrief::of(&full);
            assert!(brief.get("loss_curve").is_none());
            assert_eq!(trained_ok(&brief), trained_ok(&full));
            assert_eq!(score_of(&brief), score_of(&full));
            for metric in ["accuracy", "likelihood"] {
                assert_eq!(score_under(&brief, metric), score_under(&full, metric));
            }
            assert_eq!(brief["wall_secs"], full["wall_secs"]);
        }
    }
}
