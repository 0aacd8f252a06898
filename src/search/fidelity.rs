//! Proxy fidelity, measured on a run: retrain its top candidates (and a
//! spread of the rest) with fresh seeds at the run's step count and at a
//! longer budget, and report how well the run's own single-seed scores
//! rank them — overall and where selection happens, among the top.
//!
//! Every retraining is a trial in the run's store, so an interrupted
//! measurement continues where it stopped and a repeated one costs nothing.

use super::confirm::{ranked, table, train_trials, trial_seed, Ranked, TrialJob};
use super::settings::{score_of, score_under, RunControl, RunSettings, SearchError};
use crate::space::Space;
use crate::stats::{kendall_tau, mean, sd, spearman_rho};
use crate::store::events::FidelityStarted;
use crate::store::{Event, EventKind, Store, StoreError};
use crate::tasks::Task;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Purpose label of fidelity trials in the store.
pub const FIDELITY: &str = "fidelity";

/// What to measure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FidelityPlan {
    /// The run's best K (by its own score) are all retrained.
    pub top: usize,
    /// Candidates from the rest of the ranking, evenly spaced.
    pub spread: usize,
    /// The longer budget the proxy is compared against.
    pub long_steps: usize,
    /// Fresh seeds per candidate, at the run's steps and at `long_steps`.
    pub seeds: usize,
    /// Further step counts (e.g. halving's lower rungs) to train each
    /// candidate at once, to see where ranking starts to carry over.
    pub ladder: Vec<usize>,
}

impl FidelityPlan {
    /// Defaults for a run: top 8, a spread of 4, 4× the steps, 2 seeds,
    /// and the lower rungs of a halving run.
    pub fn for_run(settings: &RunSettings) -> FidelityPlan {
        FidelityPlan {
            top: 8,
            spread: 4,
            long_steps: settings.steps * 4,
            seeds: 2,
            ladder: settings.halving.as_ref().map_or(Vec::new(), |h| {
                (0..h.rungs.max(1) - 1)
                    .map(|r| h.steps_at(r, settings.steps))
                    .collect()
            }),
        }
    }
}

/// One retrained candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FidelityRow {
    pub id: u64,
    /// Its place in the run's ranking (1 = the run's best).
    pub rank: usize,
    /// The run's score (one seed; mean if the search re-evaluated it).
    #[serde(deserialize_with = "crate::store::events::float")]
    pub proxy: f64,
    /// Steps behind `proxy`.
    pub proxy_steps: usize,
    /// Fresh seeds at the run's steps.
    pub short: Vec<f64>,
    /// Fresh seeds at the long budget.
    pub long: Vec<f64>,
    /// (steps, score with the first fresh seed) for each ladder step count.
    pub ladder: Vec<(usize, f64)>,
}

impl FidelityRow {
    pub fn short_mean(&self) -> f64 {
        mean(&self.short)
    }
    pub fn long_mean(&self) -> f64 {
        mean(&self.long)
    }
}

/// Rank agreement of two scorings of the same candidates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// Candidates compared.
    pub n: usize,
    pub kendall_tau: Option<f64>,
    pub spearman_rho: Option<f64>,
}

fn agreement(x: &[f64], y: &[f64]) -> Agreement {
    Agreement {
        n: x.len().min(y.len()),
        kendall_tau: kendall_tau(x, y),
        spearman_rho: spearman_rho(x, y),
    }
}

/// How one ladder step count ranks the candidates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LadderFidelity {
    pub steps: usize,
    /// Against the mean of fresh seeds at the run's steps.
    pub to_run_steps: Agreement,
    /// Against the mean of fresh seeds at the long budget.
    pub to_long: Agreement,
}

/// The confirmed winner measured again with fidelity's fresh seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WinnerCheck {
    pub id: u64,
    #[serde(deserialize_with = "crate::store::events::float")]
    pub confirmed_mean: f64,
    #[serde(deserialize_with = "crate::store::events::float")]
    pub confirmed_sd: f64,
    /// Fidelity's fresh seeds at the run's steps.
    pub fresh: Vec<f64>,
    /// |confirmed mean − fresh mean| ≤ confirmed sd.
    pub within_one_sd: bool,
}

/// Whether candidates differ at the long budget by more than seed noise:
/// a one-way analysis of variance of their fresh-seed scores. When they do
/// not, no proxy can rank them, and τ among them measures noise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Separation {
    /// Candidates (groups) and seeds per candidate.
    pub candidates: usize,
    pub seeds: usize,
    /// Between-candidate mean square over within-candidate mean square.
    #[serde(deserialize_with = "crate::store::events::float")]
    pub f: f64,
    /// Reliability of a candidate's mean over the seeds, 1 − 1/F (0 when
    /// F ≤ 1): the share of the means' variance that is real, not noise.
    #[serde(deserialize_with = "crate::store::events::float")]
    pub reliability: f64,
    /// The Kendall τ a perfect proxy would be expected to reach against
    /// these means, (2/π)·asin(√reliability): Greiner's relation between τ
    /// and the correlation of a bivariate normal (Kendall 1949), with the
    /// correlation between true and measured means √reliability.
    #[serde(deserialize_with = "crate::store::events::float")]
    pub tau_ceiling: f64,
}

/// [`Separation`] of groups of equal size (the candidates' seeds); `None`
/// with fewer than two groups or fewer than two seeds each.
pub fn separation(groups: &[&[f64]]) -> Option<Separation> {
    let k = groups.len();
    let n = groups.first().map_or(0, |g| g.len());
    if k < 2 || n < 2 || groups.iter().any(|g| g.len() != n) {
        return None;
    }
    let means: Vec<f64> = groups.iter().map(|g| mean(g)).collect();
    let grand = mean(&means);
    let between =
        n as f64 * means.iter().map(|m| (m - grand).powi(2)).sum::<f64>() / (k - 1) as f64;
    let within = groups
        .iter()
        .zip(&means)
        .map(|(g, m)| g.iter().map(|x| (x - m).powi(2)).sum::<f64>())
        .sum::<f64>()
        / (k * (n - 1)) as f64;
    let f = if within > 0.0 {
        between / within
    } else if between > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    let reliability = if f > 1.0 { 1.0 - 1.0 / f } else { 0.0 };
    Some(Separation {
        candidates: k,
        seeds: n,
        f,
        reliability,
        tau_ceiling: std::f64::consts::FRAC_2_PI * reliability.sqrt().asin(),
    })
}

/// Everything `archgram fidelity` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FidelityReport {
    pub metric: String,
    pub steps: usize,
    pub plan: FidelityPlan,
    pub rows: Vec<FidelityRow>,
    /// The run's scores against the long budget's mean: every row, and the
    /// top K (rows whose proxy was measured at the run's steps).
    pub proxy_vs_long: Agreement,
    pub proxy_vs_long_top: Agreement,
    /// The mean of fresh seeds at the run's steps against the long mean:
    /// what the proxy would rank with `seeds` seeds instead of one.
    pub short_vs_long: Agreement,
    pub short_vs_long_top: Agreement,
    /// Mean over rows of the sd across fresh seeds, at the run's steps and
    /// at the long budget.
    #[serde(deserialize_with = "crate::store::events::float")]
    pub seed_sd_short: f64,
    #[serde(deserialize_with = "crate::store::events::float")]
    pub seed_sd_long: f64,
    /// Mean of (proxy − fresh mean) over the top K: how much the run's
    /// scores of its best flatter them (selection on noise).
    #[serde(deserialize_with = "crate::store::events::float")]
    pub top_optimism: f64,
    /// How far apart the top K are at the long budget (see [`Separation`]);
    /// absent in reports stored before it existed.
    #[serde(default)]
    pub top_long_separation: Option<Separation>,
    /// The run's pick (its confirmed winner, or its best score).
    pub pick: u64,
    /// The retrained candidate with the best long mean.
    pub best_long: u64,
    /// Long mean of `best_long` minus long mean of `pick` (0 is ideal).
    #[serde(deserialize_with = "crate::store::events::float")]
    pub regret: f64,
    pub ladder: Vec<LadderFidelity>,
    pub winner: Option<WinnerCheck>,
    /// The same trainings judged by the score the run did not rank by;
    /// absent where the outcomes cannot give it (and in reports stored
    /// before it existed).
    #[serde(default)]
    pub other: Option<OtherScore>,
}

/// Fidelity under the other score (likelihood for a run ranked by
/// accuracy, and the reverse), from the same trainings: every outcome
/// records both, so which score ranks the top better is seen without
/// training anything again. Only rows scored at the run's steps count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OtherScore {
    pub metric: String,
    /// The run's trainings (one seed; a re-evaluated candidate's first)
    /// under this score against the long budget's mean under it: every
    /// row, and the best `top` rows by this score. Those are taken among
    /// the retrained rows, which the run's own score chose, so where the
    /// two scores disagree about who is in the top they are an estimate.
    pub proxy_vs_long: Agreement,
    pub proxy_vs_long_top: Agreement,
    /// The fresh seeds' mean at the run's steps against the long mean,
    /// among the same top rows.
    pub short_vs_long_top: Agreement,
    #[serde(deserialize_with = "crate::store::events::float")]
    pub seed_sd_long: f64,
    /// How far apart those top rows are at the long budget.
    pub top_long_separation: Option<Separation>,
}

/// Per row: this score's proxy, fresh seeds at the run's steps, and at
/// the long budget.
type Scored3 = (f64, Vec<f64>, Vec<f64>);

/// The report's measures under the score `metric` the run did not rank
/// by; None when an outcome cannot give it.
fn other_score(
    store: &dyn Store,
    metric: &str,
    settings: &RunSettings,
    plan: &FidelityPlan,
    rows: &[FidelityRow],
    trials: &HashMap<(u64, usize, u64), serde_json::Value>,
) -> Result<Option<OtherScore>, SearchError> {
    use crate::eval::ScoreRule::{Accuracy, Likelihood};
    let other = if metric == Accuracy.name() {
        Likelihood.name()
    } else if metric == Likelihood.name() {
        Accuracy.name()
    } else {
        return Ok(None);
    };
    let seed = |i| trial_seed(settings.seed, FIDELITY, i);
    let under = |id: u64, steps: usize| -> Option<Vec<f64>> {
        (0..plan.seeds)
            .filter_map(|i| trials.get(&(id, steps, seed(i))))
            .map(|o| score_under(o, other))
            .collect()
    };
    let mut scored: Vec<Scored3> = Vec::new();
    for r in rows.iter().filter(|r| r.proxy_steps == settings.steps) {
        let Some(outcome) = store.outcome_brief(r.id)? else {
            return Ok(None);
        };
        let got = score_under(&outcome, other).and_then(|p| {
            Some((
                p,
                under(r.id, settings.steps)?,
                under(r.id, plan.long_steps)?,
            ))
        });
        let Some(row) = got else {
            return Ok(None);
        };
        scored.push(row);
    }
    let proxy = |v: &[&Scored3]| v.iter().map(|r| r.0).collect::<Vec<_>>();
    let short = |v: &[&Scored3]| v.iter().map(|r| mean(&r.1)).collect::<Vec<_>>();
    let long = |v: &[&Scored3]| v.iter().map(|r| mean(&r.2)).collect::<Vec<_>>();
    let all: Vec<&Scored3> = scored.iter().collect();
    let mut top = all.clone();
    top.sort_by(|a, b| b.0.total_cmp(&a.0));
    top.truncate(plan.top);
    Ok(Some(OtherScore {
        metric: other.to_string(),
        proxy_vs_long: agreement(&proxy(&all), &long(&all)),
        proxy_vs_long_top: agreement(&proxy(&top), &long(&top)),
        short_vs_long_top: agreement(&short(&top), &long(&top)),
        seed_sd_long: mean(
            &all.iter()
                .filter(|r| r.2.len() > 1)
                .map(|r| sd(&r.2))
                .collect::<Vec<_>>(),
        ),
        top_long_separation: separation(&top.iter().map(|r| r.2.as_slice()).collect::<Vec<_>>()),
    }))
}

impl FidelityReport {
    /// The `fidelity` event: the report's fields.
    pub fn to_event(&self) -> Result<Event, StoreError> {
        match serde_json::to_value(self).map_err(StoreError::Encode)? {
            serde_json::Value::Object(fields) => Ok(Event::new(EventKind::Fidelity(fields))),
            other => Err(StoreError::Encode(serde::ser::Error::custom(format!(
                "a fidelity report encoded as {other}, not an object"
            )))),
        }
    }

    /// The report a `fidelity` event carries (a measure that came out NaN
    /// or infinite, written as null, reads as NaN); None for one that does
    /// not read as a report (written by another version).
    pub fn from_event(fields: &serde_json::Map<String, serde_json::Value>) -> Option<Self> {
        serde_json::from_value(serde_json::Value::Object(fields.clone())).ok()
    }
}

/// The candidates to retrain: the top `top`, then `spread` evenly spaced
/// through the rest of the ranking, then the pick if it is not among them.
fn choose(ranking: &[Ranked], plan: &FidelityPlan, pick: u64) -> Vec<(usize, Ranked)> {
    let ok: Vec<(usize, &Ranked)> = ranking.iter().enumerate().filter(|(_, r)| r.ok).collect();
    let mut out: Vec<(usize, Ranked)> = ok
        .iter()
        .take(plan.top)
        .map(|(i, r)| (i + 1, (*r).clone()))
        .collect();
    let rest = &ok[out.len()..];
    for k in 0..plan.spread.min(rest.len()) {
        // Evenly through the rest, including its last.
        let i = if plan.spread <= 1 {
            0
        } else {
            k * (rest.len() - 1) / (plan.spread - 1).min(rest.len() - 1).max(1)
        };
        let (rank, r) = rest[i.min(rest.len() - 1)];
        if !out.iter().any(|(_, o)| o.id == r.id) {
            out.push((rank + 1, r.clone()));
        }
    }
    if !out.iter().any(|(_, o)| o.id == pick) {
        if let Some((i, r)) = ok.iter().find(|(_, r)| r.id == pick) {
            out.push((i + 1, (*r).clone()));
        }
    }
    out
}

/// The trainings a plan needs that the store does not hold yet.
fn jobs(
    store: &dyn Store,
    settings: &RunSettings,
    chosen: &[(usize, Ranked)],
    plan: &FidelityPlan,
) -> Result<Vec<TrialJob>, SearchError> {
    let mut done: std::collections::HashSet<(u64, usize, u64)> = store
        .trials()?
        .into_iter()
        .filter(|t| t.purpose == FIDELITY)
        .map(|t| (t.candidate, t.steps, t.seed))
        .collect();
    let mut out = Vec::new();
    for (_, r) in chosen {
        let mut want: Vec<(usize, usize)> = Vec::new();
        for index in 0..plan.seeds {
            want.push((settings.steps, index));
            want.push((plan.long_steps, index));
        }
        for &s in &plan.ladder {
            want.push((s, 0));
        }
        for (steps, index) in want {
            let seed = trial_seed(settings.seed, FIDELITY, index);
            if done.insert((r.id, steps, seed)) {
                out.push(TrialJob {
                    id: r.id,
                    steps,
                    index,
                    seed,
                });
            }
        }
    }
    Ok(out)
}

/// Trainings `measure` would still run for `plan` (for a cost estimate).
pub fn pending(
    store: &dyn Store,
    settings: &RunSettings,
    plan: &FidelityPlan,
) -> Result<Vec<TrialJob>, SearchError> {
    let ranking = ranked(store)?;
    let pick = pick_of(store, settings, &ranking)?;
    jobs(store, settings, &choose(&ranking, plan, pick), plan)
}

fn pick_of(
    store: &dyn Store,
    settings: &RunSettings,
    ranking: &[Ranked],
) -> Result<u64, SearchError> {
    let confirmed = match settings.confirm {
        Some(c) => table(store, settings, c, "")?.and_then(|t| t.winner().map(|w| w.id)),
        None => None,
    };
    confirmed
        .or_else(|| ranking.iter().find(|r| r.ok).map(|r| r.id))
        .ok_or_else(|| SearchError::bad("the run has no evaluated candidates yet"))
}

/// Trains what `plan` still needs and reports. Returns None when `ctl.stop`
/// interrupted it (what finished is kept).
#[allow(clippy::too_many_arguments)]
pub fn measure(
    store: &dyn Store,
    space: &Space,
    settings: &RunSettings,
    plan: &FidelityPlan,
    task: &dyn Task,
    pool: &rayon::ThreadPool,
    ctl: &RunControl,
    emit: &mut dyn FnMut(Event) -> Result<(), SearchError>,
) -> Result<Option<FidelityReport>, SearchError> {
    if plan.seeds == 0 || plan.long_steps == 0 {
        return Err(SearchError::bad(
            "fidelity needs at least one seed and a long budget of at least one step",
        ));
    }
    let ranking = ranked(store)?;
    let pick = pick_of(store, settings, &ranking)?;
    let chosen = choose(&ranking, plan, pick);
    let todo = jobs(store, settings, &chosen, plan)?;
    emit(Event::new(EventKind::FidelityStarted(FidelityStarted {
        candidates: chosen.len(),
        long_steps: plan.long_steps,
        seeds: plan.seeds,
        trainings: todo.len(),
    })))?;
    if !train_trials(
        store, space, settings, task, pool, ctl, FIDELITY, &todo, emit,
    )? {
        return Ok(None);
    }
    let report = report(store, space.metric, settings, plan, &chosen, pick)?;
    emit(report.to_event()?)?;
    Ok(Some(report))
}

fn report(
    store: &dyn Store,
    metric: &str,
    settings: &RunSettings,
    plan: &FidelityPlan,
    chosen: &[(usize, Ranked)],
    pick: u64,
) -> Result<FidelityReport, SearchError> {
    let mut trials: HashMap<(u64, usize, u64), serde_json::Value> = HashMap::new();
    for t in store.trials()? {
        if t.purpose == FIDELITY {
            trials.insert((t.candidate, t.steps, t.seed), t.outcome);
        }
    }
    let got: HashMap<(u64, usize, u64), f64> =
        trials.iter().map(|(k, o)| (*k, score_of(o))).collect();
    let seed = |i| trial_seed(settings.seed, FIDELITY, i);
    let scores = |id, steps| -> Vec<f64> {
        (0..plan.seeds)
            .filter_map(|i| got.get(&(id, steps, seed(i))).copied())
            .collect()
    };
    let rows: Vec<FidelityRow> = chosen
        .iter()
        .map(|(rank, r)| FidelityRow {
            id: r.id,
            rank: *rank,
            proxy: r.score,
            proxy_steps: r.steps,
            short: scores(r.id, settings.steps),
            long: scores(r.id, plan.long_steps),
            ladder: plan
                .ladder
                .iter()
                .filter_map(|&s| got.get(&(r.id, s, seed(0))).map(|&v| (s, v)))
                .collect(),
        })
        .collect();
    let at_run_steps: Vec<&FidelityRow> = rows
        .iter()
        .filter(|r| r.proxy_steps == settings.steps)
        .collect();
    let top: Vec<&FidelityRow> = rows.iter().filter(|r| r.rank <= plan.top).collect();
    let top_at_run_steps: Vec<&FidelityRow> = at_run_steps
        .iter()
        .copied()
        .filter(|r| r.rank <= plan.top)
        .collect();
    let col = |rs: &[&FidelityRow], f: &dyn Fn(&FidelityRow) -> f64| -> Vec<f64> {
        rs.iter().map(|r| f(r)).collect()
    };
    let all: Vec<&FidelityRow> = rows.iter().collect();
    let proxy = |r: &FidelityRow| r.proxy;
    let short = |r: &FidelityRow| r.short_mean();
    let long = |r: &FidelityRow| r.long_mean();
    let sds = |f: &dyn Fn(&FidelityRow) -> &Vec<f64>| {
        mean(
            &rows
                .iter()
                .filter(|r| f(r).len() > 1)
                .map(|r| sd(f(r)))
                .collect::<Vec<_>>(),
        )
    };
    let best_long = rows
        .iter()
        .max_by(|a, b| a.long_mean().total_cmp(&b.long_mean()))
        .map_or(pick, |r| r.id);
    let long_of = |id: u64| {
        rows.iter()
            .find(|r| r.id == id)
            .map_or(0.0, |r| r.long_mean())
    };
    let ladder = plan
        .ladder
        .iter()
        .map(|&s| {
            let with: Vec<&FidelityRow> = rows
                .iter()
                .filter(|r| r.ladder.iter().any(|l| l.0 == s))
                .collect();
            let at = col(&with, &|r| {
                r.ladder.iter().find(|l| l.0 == s).map_or(0.0, |l| l.1)
            });
            LadderFidelity {
                steps: s,
                to_run_steps: agreement(&at, &col(&with, &short)),
                to_long: agreement(&at, &col(&with, &long)),
            }
        })
        .collect();
    let winner = match settings.confirm {
        Some(c) => table(store, settings, c, metric)?
            .and_then(|t| t.winner().cloned())
            .and_then(|w| {
                let row = rows.iter().find(|r| r.id == w.id)?;
                let fresh = row.short.clone();
                Some(WinnerCheck {
                    id: w.id,
                    within_one_sd: (w.mean - mean(&fresh)).abs() <= w.sd,
                    confirmed_mean: w.mean,
                    confirmed_sd: w.sd,
                    fresh,
                })
            }),
        None => None,
    };
    let other = other_score(store, metric, settings, plan, &rows, &trials)?;
    Ok(FidelityReport {
        metric: metric.to_string(),
        steps: settings.steps,
        plan: plan.clone(),
        proxy_vs_long: agreement(&col(&at_run_steps, &proxy), &col(&at_run_steps, &long)),
        proxy_vs_long_top: agreement(
            &col(&top_at_run_steps, &proxy),
            &col(&top_at_run_steps, &long),
        ),
        short_vs_long: agreement(&col(&all, &short), &col(&all, &long)),
        short_vs_long_top: agreement(&col(&top, &short), &col(&top, &long)),
        seed_sd_short: sds(&|r| &r.short),
        seed_sd_long: sds(&|r| &r.long),
        top_optimism: mean(
            &top_at_run_steps
                .iter()
                .map(|r| r.proxy - r.short_mean())
                .collect::<Vec<_>>(),
        ),
        top_long_separation: separation(&top.iter().map(|r| r.long.as_slice()).collect::<Vec<_>>()),
        pick,
        best_long,
        regret: long_of(best_long) - long_of(pick),
        ladder,
        winner,
        other,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separation_is_an_analysis_of_variance_of_the_seeds() {
        // Means 2 and 6: between = 2·(4 + 4)/1 = 16, within = 4/2 = 2.
        let s = separation(&[&[1.0, 3.0], &[5.0, 7.0]]).unwrap();
        assert_eq!((s.candidates, s.seeds), (2, 2));
        assert!((s.f - 8.0).abs() < 1e-12, "{s:?}");
        assert!((s.reliability - 0.875).abs() < 1e-12);
        let ceiling = std::f64::consts::FRAC_2_PI * 0.875f64.sqrt().asin();
        assert!((s.tau_ceiling - ceiling).abs() < 1e-12);
    }

    #[test]
    fn candidates_tied_within_seed_noise_leave_no_rank_to_find() {
        let s = separation(&[&[1.0, 2.0], &[2.0, 1.0], &[1.4, 1.6]]).unwrap();
        assert_eq!(s.f, 0.0);
        assert_eq!((s.reliability, s.tau_ceiling), (0.0, 0.0));
        // Spread below the noise: F < 1, still nothing real to rank.
        let s = separation(&[&[0.0, 1.0], &[0.1, 1.1], &[0.2, 0.9]]).unwrap();
        assert!(s.f < 1.0 && s.reliability == 0.0, "{s:?}");
    }

    #[test]
    fn separation_needs_two_candidates_with_equal_seed_counts() {
        assert!(separation(&[&[1.0, 2.0]]).is_none());
        assert!(separation(&[&[1.0], &[2.0]]).is_none());
        assert!(separation(&[&[1.0, 2.0], &[2.0]]).is_none());
    }
}
