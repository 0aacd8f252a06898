//! The run loop: propose → build → hash → cache → evaluate (in parallel) →
//! record durably → tell the strategy, until the budget is spent.

use super::confirm::{train_trials, trial_seed, TrialJob, REEVAL};
use super::halving::{Brackets, Halving};
use super::journal;
use super::rundir::RunDir;
use super::strategy::{Proposal, Strategy, StrategyKind};
use crate::arch::Network;
use crate::eval::{evaluate_all, DeviceKind, Outcome, TrainConfig};
use crate::hash::Hashes;
use crate::seed;
use crate::space::Space;
use crate::store::{
    read_events, CandidateRecord, Cause, Counters, Event, EventLog, SledStore, Store, StoreError,
};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Flags another thread (signal handler, dashboard) sets to steer a run.
#[derive(Debug, Default)]
pub struct RunControl {
    /// Stop after the evaluations in flight; the run stays resumable.
    pub stop: AtomicBool,
    /// Propose nothing new until cleared (evaluations in flight finish).
    pub pause: AtomicBool,
}

/// Settings of one run (space defaults overridden by flags).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    pub confirm: Option<super::confirm::Confirm>,
    /// Evolution's seed re-evaluation of candidates entering the
    /// population's best `reeval` (0: none; see `SearchSettings::reeval`).
    #[serde(default)]
    pub reeval: usize,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Ending {
    BudgetSpent,
    TimeUp,
    Interrupted,
    /// Hundreds of proposals in a row were duplicates or invalid.
    SpaceExhausted,
}

impl Ending {
    pub fn name(&self) -> &'static str {
        match self {
            Ending::BudgetSpent => "budget spent",
            Ending::TimeUp => "time limit",
            Ending::Interrupted => "interrupted",
            Ending::SpaceExhausted => "space exhausted",
        }
    }
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

/// Score of a stored outcome (0 for a failed one).
pub fn score_of(outcome: &serde_json::Value) -> f64 {
    if outcome["status"] == "ok" {
        outcome["score"].as_f64().unwrap_or(0.0)
    } else {
        0.0
    }
}

/// Rebuilds the strategy and the run's position from the store.
struct Progress {
    next_id: u64,
    evaluations: usize,
    best: Option<(u64, f64)>,
    rungs: Option<Brackets>,
}

/// Rung of an evaluation with `steps` training steps.
fn rung_of(h: &Halving, steps: usize, full: usize) -> usize {
    (0..h.rungs.max(1))
        .find(|&r| h.steps_at(r, full) >= steps)
        .unwrap_or(0)
}

fn restore(
    store: &SledStore,
    strategy: &mut Strategy,
    settings: &RunSettings,
) -> Result<Progress, SearchError> {
    let cands = store.candidates()?;
    let reevals = reeval_scores(store)?;
    let mut told = Vec::new();
    let mut evaluations = 0;
    let mut best: Option<(u64, f64)> = None;
    let mut baselines = 0;
    let mut rungs = settings.halving.as_ref().map(Brackets::new);
    // Each architecture's bracket: where its first training started.
    let mut bracket_of: HashMap<u64, usize> = HashMap::new();
    for c in &cands {
        if c.origin.starts_with("baseline") {
            baselines += 1;
        }
        let source = c.duplicate_of.unwrap_or(c.id);
        let Some(o) = store.outcome(source)? else {
            continue;
        };
        let s = score_of(&o);
        if c.duplicate_of.is_none() {
            let mut seeds = vec![s];
            seeds.extend(reevals.get(&c.id).into_iter().flatten());
            told.push((c.id, crate::stats::mean(&seeds)));
            evaluations += 1;
            if best.is_none_or(|b| s > b.1) {
                best = Some((c.id, s));
            }
            if let (Some(r), Some(h)) = (rungs.as_mut(), &settings.halving) {
                let rung = rung_of(h, c.steps, settings.steps);
                let root = if c.origin.starts_with("promotion") {
                    c.parent.unwrap_or(c.id)
                } else {
                    r.dealt_to(rung);
                    bracket_of.insert(c.id, rung);
                    c.id
                };
                let b = bracket_of.get(&root).copied().unwrap_or(0);
                r.record(b, rung, c.id, s, root);
            }
        }
    }
    strategy.rebuild(&told, baselines);
    Ok(Progress {
        next_id: cands.last().map_or(0, |c| c.id + 1),
        evaluations,
        best,
        rungs,
    })
}

/// Scores of each candidate's seed re-evaluations.
fn reeval_scores(store: &SledStore) -> Result<HashMap<u64, Vec<f64>>, SearchError> {
    let mut out: HashMap<u64, Vec<f64>> = HashMap::new();
    for t in store.trials()? {
        if t.purpose == super::confirm::REEVAL {
            out.entry(t.candidate)
                .or_default()
                .push(score_of(&t.outcome));
        }
    }
    Ok(out)
}

/// A candidate ready to train.
struct Job {
    id: u64,
    net: Network,
    record: CandidateRecord,
    /// Successive-halving bracket and rung, and the architecture's first
    /// candidate.
    bracket: usize,
    rung: usize,
    root: u64,
}

/// Runs (or continues) the search in `dir` until its budget, `time`, or
/// `ctl.stop` ends it. `progress` receives every event as it is logged.
pub fn run(
    dir: &RunDir,
    store: &SledStore,
    space: &Space,
    settings: &RunSettings,
    time: Option<Duration>,
    ctl: &RunControl,
    progress: &mut dyn FnMut(&Event),
) -> Result<Ending, SearchError> {
    let mut log =
        EventLog::open(&dir.events_path()).map_err(|e| SearchError::io("event log", e))?;
    let baselines: Vec<String> = space.file.baselines.keys().cloned().collect();
    let mut strategy = Strategy::new(
        settings.strategy,
        settings.population,
        settings.tournament,
        baselines,
    );
    let mut pos = restore(store, &mut strategy, settings)?;
    let mut counters = store.counters()?;
    let task = space
        .build_task(space.file.seed)
        .map_err(|e| SearchError::bad_because("the space's task", e))?;
    let cfg = train_config(space, settings.seed, settings.steps, settings.device);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(settings.workers.max(1))
        .build()
        .map_err(|e| SearchError::failed("cannot start the worker threads", Some(e.into())))?;
    let started = Instant::now();
    let mut emit = |log: &mut EventLog, e: Event| -> Result<(), SearchError> {
        log.append(&e)
            .map_err(|e| SearchError::io("event log", e))?;
        progress(&e);
        Ok(())
    };
    // Results the store kept but a killed process never logged.
    let logged = read_events(&dir.events_path())
        .map_err(|e| SearchError::io(format!("cannot read {}", dir.events_path().display()), e))?;
    for e in journal::missing_events(store, &logged, settings.budget)? {
        emit(&mut log, e)?;
    }
    emit(
        &mut log,
        Event::new(
            "run_started",
            json!({
                "name": settings.name, "space": space.name(), "seed": settings.seed,
                "budget": settings.budget,
                "strategy": match &settings.halving {
                    Some(_) => format!("halving over {}", settings.strategy.name()),
                    None => settings.strategy.name().to_string(),
                },
                "workers": settings.workers, "resumed": pos.next_id > 0,
                "evaluations": pos.evaluations, "metric": space.metric,
                "best_id": pos.best.map(|b| b.0), "best_score": pos.best.map(|b| b.1),
            }),
        ),
    )?;
    let mut dry = 0usize;
    let ending = loop {
        if pos.evaluations >= settings.budget {
            break Ending::BudgetSpent;
        }
        if ctl.stop.load(Ordering::SeqCst) {
            break Ending::Interrupted;
        }
        if time.is_some_and(|t| started.elapsed() >= t) {
            break Ending::TimeUp;
        }
        if dry > 300 {
            break Ending::SpaceExhausted;
        }
        if ctl.pause.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        // Gather up to `workers` new candidates; duplicates are recorded as
        // they are found and cost no budget.
        let want = settings
            .workers
            .max(1)
            .min(settings.budget - pos.evaluations);
        let mut jobs: Vec<Job> = Vec::new();
        let mut in_batch: HashMap<u128, u64> = HashMap::new();
        let mut deferred: Vec<(CandidateRecord, u64, &'static str)> = Vec::new();
        while jobs.len() < want && dry <= 300 {
            let id = pos.next_id;
            if let (Some(rungs), Some(h)) = (pos.rungs.as_mut(), &settings.halving) {
                if let Some((bracket, from, root, rung)) = rungs.promote(h.eta) {
                    let src = store.candidate(from)?.ok_or_else(|| {
                        SearchError::failed(
                            format!("candidate {from} is missing from the store"),
                            None,
                        )
                    })?;
                    let net = space.network(src.derivation.clone()).map_err(|e| {
                        SearchError::failed(
                            format!("candidate {from} no longer lowers"),
                            Some(e.into()),
                        )
                    })?;
                    pos.next_id += 1;
                    let steps = h.steps_at(rung, settings.steps);
                    let record = CandidateRecord {
                        id,
                        origin: format!("promotion to rung {rung} ({steps} steps)"),
                        parent: Some(root),
                        duplicate_of: None,
                        steps,
                        ..src
                    };
                    emit(
                        &mut log,
                        Event::new(
                            "sampled",
                            json!({"id": id, "origin": record.origin, "parent": root, "arch": record.text,
                                   "params": record.params, "active_params": record.active_params,
                                   "flops": record.flops, "steps": steps}),
                        ),
                    )?;
                    jobs.push(Job {
                        id,
                        net,
                        record,
                        bracket,
                        rung,
                        root,
                    });
                    continue;
                }
            }
            let mut rng = seed::rng(settings.seed, "propose", id);
            let proposal = strategy.propose(&mut rng);
            let built = match &proposal {
                Proposal::Sample => space
                    .sample(&mut rng)
                    .map(|n| (n, "sample".to_string(), None))
                    .ok(),
                Proposal::Baseline(name) => space
                    .parse_arch(&space.file.baselines[name])
                    .ok()
                    .map(|n| (n, format!("baseline: {name}"), None)),
                Proposal::Mutate(parent) => store
                    .candidate(*parent)?
                    .and_then(|p| space.mutate(&p.derivation, &mut rng).ok())
                    .map(|(n, m)| (n, format!("mutation: {}", m.detail), Some(*parent))),
            };
            let Some((net, origin, parent)) = built else {
                strategy.withdraw();
                dry += 1;
                continue;
            };
            pos.next_id += 1;
            let hashes = Hashes::of(&net.arch);
            let record = CandidateRecord {
                id,
                derivation: net.term.clone(),
                text: net.text(),
                hashes,
                parent,
                origin,
                duplicate_of: None,
                params: net.cost.params,
                active_params: net.cost.active_params,
                flops: net.cost.flops,
                steps: settings
                    .halving
                    .as_ref()
                    .map_or(settings.steps, |h| h.steps_at(0, settings.steps)),
            };
            emit(
                &mut log,
                Event::new(
                    "sampled",
                    json!({"id": id, "origin": record.origin, "parent": parent, "arch": record.text,
                           "params": record.params, "active_params": record.active_params, "flops": record.flops}),
                ),
            )?;
            let hit = match store.by_structural(hashes.structural)? {
                Some(o) => Some((o, "structural")),
                None => hashes
                    .functional
                    .map(|f| store.by_functional(f))
                    .transpose()?
                    .flatten()
                    .map(|o| (o, "functional")),
            };
            let batch_hit = in_batch
                .get(&hashes.structural)
                .map(|&o| (o, "structural"))
                .or_else(|| {
                    hashes
                        .functional
                        .and_then(|f| in_batch.get(&f))
                        .map(|&o| (o, "functional"))
                });
            if let Some((orig, stage)) = hit {
                let o = store.outcome(orig)?.unwrap_or_default();
                record_duplicate(
                    store,
                    &mut log,
                    &mut counters,
                    record,
                    orig,
                    stage,
                    &o,
                    &mut emit,
                )?;
                strategy.tell_duplicate();
                dry += 1;
                continue;
            }
            if let Some((orig, stage)) = batch_hit {
                deferred.push((record, orig, stage));
                dry += 1;
                continue;
            }
            dry = 0;
            in_batch.insert(hashes.structural, id);
            if let Some(f) = hashes.functional {
                in_batch.insert(f, id);
            }
            // A new architecture starts at its bracket's lowest rung.
            let mut record = record;
            let bracket = match (pos.rungs.as_mut(), &settings.halving) {
                (Some(b), Some(h)) => {
                    let b = b.deal();
                    record.steps = h.steps_at(b, settings.steps);
                    b
                }
                _ => 0,
            };
            jobs.push(Job {
                id,
                net,
                record,
                bracket,
                rung: bracket,
                root: id,
            });
        }
        if jobs.is_empty() && deferred.is_empty() {
            continue;
        }
        let work: Vec<(&crate::arch::Arch, TrainConfig)> = jobs
            .iter()
            .map(|j| {
                let mut c = cfg.clone();
                if j.record.steps != c.train.steps {
                    c = train_config(space, settings.seed, j.record.steps, settings.device);
                    c.train.routing = cfg.train.routing;
                }
                (&j.net.arch, c)
            })
            .collect();
        let outcomes: Vec<Outcome> =
            pool.install(|| evaluate_all(&work, task.as_ref(), settings.workers > 1));
        let mut told: Vec<(u64, f64, bool)> = Vec::new();
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            let value = serde_json::to_value(&outcome).map_err(StoreError::Encode)?;
            store.put_candidate(&job.record)?;
            store.put_outcome(job.id, &job.record.hashes, &value)?;
            counters.misses += 1;
            pos.evaluations += 1;
            let score = score_of(&value);
            if outcome.is_ok() {
                counters.evaluated += 1;
            } else {
                counters.failed += 1;
            }
            emit(
                &mut log,
                journal::outcome_event(job.id, &outcome, pos.evaluations, settings.budget),
            )?;
            store.put_counters(&counters)?;
            store.flush()?;
            // Against the population as this batch found it, so the choice
            // does not depend on the order results come back in.
            let reeval = outcome.is_ok()
                && settings.halving.is_none()
                && strategy.enters_top(score, settings.reeval);
            told.push((job.id, score, reeval));
            if let Some(r) = pos.rungs.as_mut() {
                r.record(job.bracket, job.rung, job.id, score, job.root);
            }
            if outcome.is_ok() && pos.best.is_none_or(|b| score > b.1) {
                pos.best = Some((job.id, score));
                emit(
                    &mut log,
                    Event::new(
                        "new_best",
                        json!({"id": job.id, "score": score, "arch": job.record.text}),
                    ),
                )?;
            }
        }
        // A score that would lead the population is checked with a fresh
        // seed before tournaments trust it; the population ranks the mean.
        let again: Vec<TrialJob> = told
            .iter()
            .filter(|t| t.2)
            .map(|t| TrialJob {
                id: t.0,
                steps: settings.steps,
                index: 0,
                seed: trial_seed(settings.seed, REEVAL, 0),
            })
            .collect();
        if !again.is_empty() {
            let mut emit_one = |e: Event| emit(&mut log, e);
            train_trials(
                store,
                space,
                settings,
                task.as_ref(),
                &pool,
                &RunControl::default(),
                REEVAL,
                &again,
                &mut emit_one,
            )?;
        }
        let reevals = if again.is_empty() {
            HashMap::new()
        } else {
            reeval_scores(store)?
        };
        for (id, score, _) in told {
            let mut seeds = vec![score];
            seeds.extend(reevals.get(&id).into_iter().flatten());
            strategy.tell(id, crate::stats::mean(&seeds));
        }
        for (record, orig, stage) in deferred {
            let o = store.outcome(orig)?.unwrap_or_default();
            record_duplicate(
                store,
                &mut log,
                &mut counters,
                record,
                orig,
                stage,
                &o,
                &mut emit,
            )?;
            strategy.tell_duplicate();
        }
    };
    store.put_counters(&counters)?;
    store.flush()?;
    let mut ending = ending;
    let mut winner = None;
    if let (Some(conf), true) = (settings.confirm, ending != Ending::Interrupted) {
        let mut emit_one = |e: Event| emit(&mut log, e);
        match super::confirm::confirm(
            store,
            space,
            settings,
            conf,
            task.as_ref(),
            &pool,
            ctl,
            &mut emit_one,
        )? {
            Some(t) => {
                emit_one(t.to_event())?;
                winner = t.winner().cloned();
            }
            None if ctl.stop.load(Ordering::SeqCst) => ending = Ending::Interrupted,
            None => {}
        }
    }
    emit(
        &mut log,
        Event::new(
            "run_finished",
            json!({"evaluations": pos.evaluations, "best_id": pos.best.map(|b| b.0),
                   "best_score": pos.best.map(|b| b.1), "reason": ending.name(),
                   "winner": winner.as_ref().map(|w| w.id),
                   "winner_score": winner.as_ref().map(|w| w.mean),
                   "winner_sd": winner.as_ref().map(|w| w.sd)}),
        ),
    )?;
    Ok(ending)
}

#[allow(clippy::too_many_arguments)]
fn record_duplicate(
    store: &SledStore,
    log: &mut EventLog,
    counters: &mut Counters,
    mut record: CandidateRecord,
    orig: u64,
    stage: &str,
    outcome: &serde_json::Value,
    emit: &mut dyn FnMut(&mut EventLog, Event) -> Result<(), SearchError>,
) -> Result<(), SearchError> {
    record.duplicate_of = Some(orig);
    let saved = outcome["wall_secs"].as_f64().unwrap_or(0.0);
    if stage == "structural" {
        counters.structural_hits += 1;
    } else {
        counters.functional_hits += 1;
    }
    counters.seconds_saved += saved;
    store.put_candidate(&record)?;
    store.put_counters(counters)?;
    store.flush()?;
    emit(log, journal::duplicate_event(record.id, orig, stage, saved))
}
