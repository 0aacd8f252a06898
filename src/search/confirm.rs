//! The confirm stage that ends a search, and the ranking it starts from.
//!
//! A search ranks candidates by one training run each, so its best is
//! partly the luckiest seed (the winner's curse). The confirm stage
//! retrains the top `top` architectures with `seeds` fresh training seeds
//! at the run's full step count; the winner is the best mean, reported as
//! mean ± sd, and the search's own scores are only ever shown as
//! single-seed proxies beside it.

use super::settings::{
    score_of, train_config, trained_ok, Confirm, RunControl, RunSettings, SearchError,
};
use crate::eval::{evaluate_all, Outcome, Status};
use crate::space::Space;
use crate::stats::{mean, sd};
use crate::store::events::{ConfirmStarted, Confirmed, Trial};
use crate::store::{Event, EventKind, Finalist, Store, StoreError, TrialRecord};
use crate::tasks::Task;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

/// Purpose label of confirm trials in the store.
pub const CONFIRM: &str = "confirm";
/// Purpose label of seed re-evaluations a strategy asks for.
pub const REEVAL: &str = "reeval";

/// The training seed of trial `index` for `purpose` in a run seeded
/// `master`: one stream per purpose, so confirm, re-evaluation and fidelity
/// seeds are fresh against each other and against the search's own.
pub fn trial_seed(master: u64, purpose: &str, index: usize) -> u64 {
    crate::seed::derive(master, purpose, index as u64)
}

/// An architecture as the search ranked it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub id: u64,
    /// Training steps of the evaluations behind `score`.
    pub steps: usize,
    /// Mean of the search's scores (its evaluation and any re-evaluations).
    pub score: f64,
    /// How many trainings `score` averages.
    pub runs: usize,
    pub ok: bool,
}

/// Evaluated architectures, best first: each architecture (by structural
/// hash) once, at its highest step count (successive halving trains one
/// several times), ranked by step count, then mean search score; earlier
/// candidates win ties.
pub fn ranked(store: &dyn Store) -> Result<Vec<Ranked>, StoreError> {
    let mut reevals: HashMap<(u64, usize), Vec<f64>> = HashMap::new();
    for t in store.trials()? {
        if t.purpose == REEVAL {
            reevals
                .entry((t.candidate, t.steps))
                .or_default()
                .push(score_of(&t.outcome));
        }
    }
    let mut by_arch: HashMap<u128, Ranked> = HashMap::new();
    let outcomes = store.outcome_briefs()?;
    for c in store.candidate_briefs()? {
        if c.duplicate_of.is_some() {
            continue;
        }
        let Some(o) = outcomes.get(&c.id) else {
            continue;
        };
        let mut scores = vec![score_of(o)];
        scores.extend(reevals.get(&(c.id, c.steps)).into_iter().flatten());
        let r = Ranked {
            id: c.id,
            steps: c.steps,
            score: mean(&scores),
            runs: scores.len(),
            ok: trained_ok(o),
        };
        let keep = by_arch
            .get(&c.hashes.structural)
            .is_none_or(|old| r.steps > old.steps);
        if keep {
            by_arch.insert(c.hashes.structural, r);
        }
    }
    let mut out: Vec<Ranked> = by_arch.into_values().collect();
    out.sort_by(|a, b| {
        b.steps
            .cmp(&a.steps)
            .then(b.score.total_cmp(&a.score))
            .then(a.id.cmp(&b.id))
    });
    Ok(out)
}

/// The confirm stage's results: finalists by mean score, best first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfirmTable {
    pub steps: usize,
    pub seeds: usize,
    pub metric: String,
    pub finalists: Vec<Finalist>,
}

impl ConfirmTable {
    pub fn winner(&self) -> Option<&Finalist> {
        self.finalists.first()
    }

    /// The `confirmed` event.
    pub fn to_event(&self) -> Event {
        let w = self.winner();
        Event::new(EventKind::Confirmed(Confirmed {
            finalists: self.finalists.clone(),
            metric: self.metric.clone(),
            proxy: w.map(|w| w.proxy),
            score: w.map(|w| w.mean),
            sd: w.map(|w| w.sd),
            seeds: self.seeds,
            steps: self.steps,
            winner: w.map(|w| w.id),
        }))
    }
}

/// The finalists of a run and the seeds each must be trained with.
fn plan(store: &dyn Store, conf: Confirm) -> Result<Vec<Ranked>, StoreError> {
    Ok(ranked(store)?
        .into_iter()
        .filter(|r| r.ok)
        .take(conf.top)
        .collect())
}

/// The confirm table from the trials in the store, if every finalist has
/// all its seeds.
pub fn table(
    store: &dyn Store,
    settings: &RunSettings,
    conf: Confirm,
    metric: &str,
) -> Result<Option<ConfirmTable>, StoreError> {
    let finalists = plan(store, conf)?;
    if finalists.is_empty() {
        return Ok(None);
    }
    let mut got: BTreeMap<(u64, u64), f64> = BTreeMap::new();
    for t in store.trials()? {
        if t.purpose == CONFIRM && t.steps == settings.steps {
            got.insert((t.candidate, t.seed), score_of(&t.outcome));
        }
    }
    let mut rows = Vec::new();
    for f in &finalists {
        let mut scores = Vec::new();
        for j in 0..conf.seeds {
            match got.get(&(f.id, trial_seed(settings.seed, CONFIRM, j))) {
                Some(&s) => scores.push(s),
                None => return Ok(None),
            }
        }
        rows.push(Finalist {
            id: f.id,
            proxy: f.score,
            mean: mean(&scores),
            sd: sd(&scores),
            scores,
        });
    }
    rows.sort_by(|a, b| b.mean.total_cmp(&a.mean).then(a.id.cmp(&b.id)));
    Ok(Some(ConfirmTable {
        steps: settings.steps,
        seeds: conf.seeds,
        metric: metric.to_string(),
        finalists: rows,
    }))
}

/// One training of a trial: candidate, steps, and the seed with its index
/// in the purpose's seed stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrialJob {
    pub id: u64,
    pub steps: usize,
    pub index: usize,
    pub seed: u64,
}

/// Retrains trial jobs a chunk of `workers` at a time, storing each chunk
/// before the next starts, so a stopped stage loses at most the trainings
/// in flight. Returns false when `ctl.stop` ended it early.
#[allow(clippy::too_many_arguments)]
pub fn train_trials(
    store: &dyn Store,
    space: &Space,
    settings: &RunSettings,
    task: &dyn Task,
    pool: &rayon::ThreadPool,
    ctl: &RunControl,
    purpose: &str,
    jobs: &[TrialJob],
    emit: &mut dyn FnMut(Event) -> Result<(), SearchError>,
) -> Result<bool, SearchError> {
    for chunk in jobs.chunks(settings.workers.max(1)) {
        if ctl.stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let mut nets = Vec::new();
        for &TrialJob {
            id, steps, seed, ..
        } in chunk
        {
            let c = store.candidate(id)?.ok_or_else(|| {
                SearchError::failed(format!("candidate {id} is missing from the store"), None)
            })?;
            let net = space.network(c.derivation).map_err(|e| {
                SearchError::failed(format!("candidate {id} no longer lowers"), Some(e.into()))
            })?;
            nets.push((net, train_config(space, seed, steps, settings.device)));
        }
        let work: Vec<_> = nets.iter().map(|(n, c)| (&n.arch, c.clone())).collect();
        let outcomes: Vec<Outcome> =
            pool.install(|| evaluate_all(&work, task, settings.workers > 1));
        for (
            &TrialJob {
                id,
                steps,
                seed,
                index,
            },
            o,
        ) in chunk.iter().zip(outcomes)
        {
            let value = serde_json::to_value(&o).map_err(crate::store::StoreError::Encode)?;
            store.put_trial(&TrialRecord {
                candidate: id,
                purpose: purpose.to_string(),
                steps,
                seed,
                outcome: value.clone(),
            })?;
            emit(Event::new(EventKind::Trial(Trial {
                accuracy: o.accuracy,
                id,
                index,
                metric: o.metric.clone(),
                purpose: purpose.to_string(),
                reason: match &o.status {
                    Status::Ok => None,
                    Status::Failed { reason, .. } => Some(reason.clone()),
                },
                score: score_of(&value),
                seed,
                status: value["status"].as_str().unwrap_or_default().to_string(),
                steps,
                wall_secs: o.wall_secs,
            })))?;
        }
    }
    Ok(true)
}

/// Runs the confirm stage: trains every finalist seed not yet in the store,
/// then returns the table (None when `ctl.stop` interrupted it; a resume
/// carries on where it stopped).
#[allow(clippy::too_many_arguments)]
pub(super) fn confirm(
    store: &dyn Store,
    space: &Space,
    settings: &RunSettings,
    conf: Confirm,
    task: &dyn Task,
    pool: &rayon::ThreadPool,
    ctl: &RunControl,
    emit: &mut dyn FnMut(Event) -> Result<(), SearchError>,
) -> Result<Option<ConfirmTable>, SearchError> {
    let finalists = plan(store, conf)?;
    if finalists.is_empty() {
        return Ok(None);
    }
    let done: std::collections::HashSet<(u64, u64)> = store
        .trials()?
        .into_iter()
        .filter(|t| t.purpose == CONFIRM && t.steps == settings.steps)
        .map(|t| (t.candidate, t.seed))
        .collect();
    let jobs: Vec<TrialJob> = finalists
        .iter()
        .flat_map(|f| {
            (0..conf.seeds).map(move |index| TrialJob {
                id: f.id,
                steps: settings.steps,
                index,
                seed: trial_seed(settings.seed, CONFIRM, index),
            })
        })
        .filter(|j| !done.contains(&(j.id, j.seed)))
        .collect();
    emit(Event::new(EventKind::ConfirmStarted(ConfirmStarted {
        candidates: finalists.iter().map(|f| f.id).collect(),
        seeds: conf.seeds,
        steps: settings.steps,
        trainings: jobs.len(),
    })))?;
    if !train_trials(
        store, space, settings, task, pool, ctl, CONFIRM, &jobs, emit,
    )? {
        return Ok(None);
    }
    Ok(table(store, settings, conf, space.metric)?)
}

/// An architecture's place in a run's final order.
#[derive(Clone, Debug, PartialEq)]
pub struct Standing {
    pub ranked: Ranked,
    /// Its confirm results, if it was a finalist of a finished confirm stage.
    pub confirmed: Option<Finalist>,
}

impl Standing {
    /// The score it is ranked by: its confirmed mean, else its proxy.
    pub fn score(&self) -> f64 {
        self.confirmed
            .as_ref()
            .map_or(self.ranked.score, |c| c.mean)
    }

    /// `confirmed` or `proxy`.
    pub fn kind(&self) -> &'static str {
        if self.confirmed.is_some() {
            "confirmed"
        } else {
            "proxy"
        }
    }

    /// Its score for people: confirmed mean ± sd, or a single-seed proxy.
    pub fn label(&self) -> String {
        match &self.confirmed {
            Some(c) => format!(
                "confirmed {:.4} ± {:.4} over {} fresh seeds (proxy {:.4})",
                c.mean,
                c.sd,
                c.scores.len(),
                self.ranked.score
            ),
            None => format!("proxy {:.4} (single seed)", self.ranked.score),
        }
    }
}

/// Every successfully evaluated architecture of a run in its final order:
/// the confirmed finalists by mean over fresh seeds, then the rest by the
/// search's own (single-seed) score.
pub fn standings(store: &dyn Store, settings: &RunSettings) -> Result<Vec<Standing>, StoreError> {
    let table = match settings.confirm {
        Some(c) => table(store, settings, c, "")?,
        None => None,
    };
    let finalists = table.map_or(Vec::new(), |t| t.finalists);
    let mut rest = Vec::new();
    let mut first: Vec<Option<Standing>> = vec![None; finalists.len()];
    for r in ranked(store)?.into_iter().filter(|r| r.ok) {
        match finalists.iter().position(|f| f.id == r.id) {
            Some(i) => {
                first[i] = Some(Standing {
                    ranked: r,
                    confirmed: Some(finalists[i].clone()),
                })
            }
            None => rest.push(Standing {
                ranked: r,
                confirmed: None,
            }),
        }
    }
    Ok(first.into_iter().flatten().chain(rest).collect())
}
