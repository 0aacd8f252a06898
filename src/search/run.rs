//! The run loop. It ties three parts together: the proposer (what to try
//! next: a due promotion or the strategy's proposal), the deduper (whether
//! it needs training at all) and the recorder (the store first, then the
//! log). Each round gathers a batch, trains it in parallel, records it,
//! re-evaluates what would lead the population and tells the strategy,
//! until the budget, the time limit or a stop ends the search; the confirm
//! stage follows.

use super::confirm::{train_trials, trial_seed, TrialJob, REEVAL};
use super::dedupe::{Deduper, Stage, Verdict};
use super::halving::{Brackets, Halving};
use super::propose::{Job, Proposed, Proposer};
use super::recorder::Recorder;
use super::rundir::{check_hash_recipes, RunDir};
use super::settings::{score_of, train_config, trained_ok, RunControl, RunSettings, SearchError};
use super::shared::Board;
use super::strategy::Strategy;
use crate::eval::{evaluate_all, training_pool, Outcome, TrainConfig};
use crate::space::Space;
use crate::store::events::{NewBest, RunFinished, RunStarted, Surrogate};
use crate::store::{CandidateRecord, Event, EventKind, Store};
use crate::tasks::Task;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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

/// Where a run stands, rebuilt from the store on resume.
struct Progress {
    next_id: u64,
    evaluations: usize,
    best: Option<(u64, f64)>,
}

/// Rung of an evaluation with `steps` training steps.
fn rung_of(h: &Halving, steps: usize, full: usize) -> usize {
    (0..h.rungs.max(1))
        .find(|&r| h.steps_at(r, full) >= steps)
        .unwrap_or(0)
}

/// Where a resumed run stands, its halving brackets, and the (id, score)
/// of every trained candidate in id order.
type Restored = (Progress, Option<Brackets>, Vec<(u64, f64)>);

/// Rebuilds the strategy, the halving brackets and the run's position
/// from the store (and, for a shared run, the candidates `in_flight` on
/// its board and those `lapsed` there without an outcome).
fn restore(
    store: &dyn Store,
    strategy: &mut Strategy,
    settings: &RunSettings,
    in_flight: &[CandidateRecord],
    lapsed: &[u64],
) -> Result<Restored, SearchError> {
    let cands = store.candidate_briefs()?;
    let outcomes = store.outcome_briefs()?;
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
        // A candidate in flight is learned when it settles, even if its
        // result has come in since the queue was read: counted once.
        if in_flight.iter().any(|f| f.id == c.id) {
            continue;
        }
        let source = c.duplicate_of.unwrap_or(c.id);
        let Some(o) = outcomes.get(&source) else {
            // Ended failed without an outcome: a failed training, as the
            // round that saw it end counted it.
            if lapsed.contains(&c.id) {
                told.push((c.id, 0.0));
                evaluations += 1;
            }
            continue;
        };
        let s = score_of(o);
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
    let pos = Progress {
        next_id: cands.last().map_or(0, |c| c.id + 1),
        evaluations,
        best,
    };
    Ok((pos, rungs, told))
}

/// The model-based strategy's surrogate sees again what a resumed run had
/// trained, in id order, as the unbroken run saw it.
fn restore_guide<'a>(
    store: &dyn Store,
    space: &Space,
    mut proposer: Proposer<'a>,
    told: &[(u64, f64)],
) -> Result<Proposer<'a>, SearchError> {
    if proposer.guide.is_none() {
        return Ok(proposer);
    }
    for &(id, score) in told {
        let Some(c) = store.candidate(id)? else {
            continue;
        };
        let net = space.network(c.derivation).map_err(|e| {
            SearchError::failed(format!("candidate {id} no longer lowers"), Some(e.into()))
        })?;
        let features = proposer.features(&net);
        proposer.observe(id, features, score);
    }
    if let Some(g) = proposer.guide.as_mut() {
        g.skip_reports();
    }
    Ok(proposer)
}

/// Scores of each candidate's seed re-evaluations.
fn reeval_scores(store: &dyn Store) -> Result<HashMap<u64, Vec<f64>>, SearchError> {
    let mut out: HashMap<u64, Vec<f64>> = HashMap::new();
    for t in store.trials()? {
        if t.purpose == REEVAL {
            out.entry(t.candidate)
                .or_default()
                .push(score_of(&t.outcome));
        }
    }
    Ok(out)
}

/// Proposals in a row that gave nothing to train (unbuildable or
/// duplicates) after which the space counts as exhausted.
const DRY_LIMIT: usize = 300;

/// One round's candidates to train, and the duplicates of them found while
/// gathering it (recorded once their originals are).
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    deferred: Vec<(CandidateRecord, u64, Stage)>,
}

/// A run in progress: what stays fixed, the three parts, and its position.
/// With a board, workers elsewhere train its candidates.
struct Loop<'a> {
    store: &'a dyn Store,
    space: &'a Space,
    settings: &'a RunSettings,
    task: &'a dyn Task,
    pool: &'a rayon::ThreadPool,
    /// Training settings at the full step count.
    cfg: TrainConfig,
    proposer: Proposer<'a>,
    rec: Recorder<'a>,
    pos: Progress,
    /// Proposals in a row that gave nothing to train.
    dry: usize,
    dedupe: Deduper,
    board: Option<&'a mut Board>,
    /// Candidates on the board waiting for their results, and duplicates
    /// of them found meanwhile (recorded once their originals are).
    in_flight: Vec<Job>,
    later: Vec<(CandidateRecord, u64, Stage)>,
}

/// Runs (or continues) the search in `dir` until its budget, `time`, or
/// `ctl.stop` ends it. `progress` receives every event as it is logged.
pub fn run(
    dir: &RunDir,
    store: &dyn Store,
    space: &Space,
    settings: &RunSettings,
    time: Option<Duration>,
    ctl: &RunControl,
    progress: &mut dyn FnMut(&Event),
) -> Result<Ending, SearchError> {
    check_hash_recipes(store, &dir.store_path())?;
    search(store, space, settings, time, ctl, progress, None)
}

/// Runs (or continues) the search of a run in a database as its
/// coordinator, as [`run`] does, except that workers (anywhere) train the
/// candidates it puts on `board`. A coordinator that stops leaves what is
/// on the board for the next one (`resume`) to wait for.
pub fn run_shared(
    board: &mut Board,
    store: &dyn Store,
    space: &Space,
    settings: &RunSettings,
    time: Option<Duration>,
    ctl: &RunControl,
    progress: &mut dyn FnMut(&Event),
) -> Result<Ending, SearchError> {
    super::shared::check_shareable(settings)?;
    check_hash_recipes(store, std::path::Path::new(&board.run().name))?;
    search(store, space, settings, time, ctl, progress, Some(board))
}

fn search<'a>(
    store: &'a dyn Store,
    space: &'a Space,
    settings: &'a RunSettings,
    time: Option<Duration>,
    ctl: &RunControl,
    progress: &'a mut dyn FnMut(&Event),
    mut board: Option<&'a mut Board>,
) -> Result<Ending, SearchError> {
    let (in_flight, lapsed) = match board.as_deref_mut() {
        Some(b) => (b.waiting()?, b.lapsed()?),
        None => (Vec::new(), Vec::new()),
    };
    let mut rec = Recorder::open(store, progress);
    let baselines: Vec<String> = space.file.baselines.keys().cloned().collect();
    let mut strategy = Strategy::new(
        settings.strategy,
        settings.population,
        settings.tournament,
        baselines,
    );
    let (pos, rungs, told) = restore(store, &mut strategy, settings, &in_flight, &lapsed)?;
    let task = space
        .build_task(space.file.seed)
        .map_err(|e| SearchError::bad_because("the space's task", e))?;
    let pool = training_pool(settings.workers)
        .map_err(|e| SearchError::failed("cannot start the worker threads", Some(e.into())))?;
    let started = Instant::now();
    rec.recover(settings.budget)?;
    rec.emit(started_event(space, settings, &pos))?;
    let mut run = Loop {
        store,
        space,
        settings,
        task: task.as_ref(),
        pool: &pool,
        cfg: train_config(space, settings.seed, settings.steps, settings.device),
        proposer: restore_guide(
            store,
            space,
            Proposer::new(space, settings, strategy, rungs),
            &told,
        )?,
        rec,
        pos,
        dry: 0,
        dedupe: Deduper::default(),
        board,
        in_flight: Vec::new(),
        later: Vec::new(),
    };
    for record in in_flight {
        run.resume_job(record)?;
    }
    let ending = loop {
        if run.pos.evaluations >= settings.budget && run.in_flight.is_empty() {
            break Ending::BudgetSpent;
        }
        if ctl.stop.load(Ordering::SeqCst) {
            break Ending::Interrupted;
        }
        if time.is_some_and(|t| started.elapsed() >= t) {
            break Ending::TimeUp;
        }
        if run.dry > DRY_LIMIT && run.in_flight.is_empty() {
            break Ending::SpaceExhausted;
        }
        if ctl.pause.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if run.board.is_some() {
            run.shared_round()?;
            continue;
        }
        let want = settings
            .workers
            .max(1)
            .min(settings.budget - run.pos.evaluations);
        let batch = run.gather(want)?;
        if !batch.jobs.is_empty() || !batch.deferred.is_empty() {
            run.train(batch)?;
        }
    };
    run.rec.close()?;
    run.finish(ending, ctl)
}

fn started_event(space: &Space, settings: &RunSettings, pos: &Progress) -> Event {
    Event::new(EventKind::RunStarted(RunStarted {
        best_id: pos.best.map(|b| b.0),
        best_score: pos.best.map(|b| b.1),
        budget: settings.budget,
        evaluations: pos.evaluations,
        metric: space.metric.to_string(),
        name: settings.name.clone(),
        resumed: pos.next_id > 0,
        seed: settings.seed,
        space: space.name(),
        strategy: match &settings.halving {
            Some(_) => format!("halving over {}", settings.strategy.name()),
            None => settings.strategy.name().to_string(),
        },
        workers: settings.workers,
    }))
}

impl Loop<'_> {
    /// Up to `want` new candidates, each put on the board if there is
    /// one. Duplicates of stored candidates are recorded as they are found
    /// and cost no budget; those of candidates in flight (this batch's, or
    /// the board's) wait for their originals.
    fn gather(&mut self, want: usize) -> Result<Batch, SearchError> {
        if self.board.is_none() {
            self.dedupe = Deduper::default();
        }
        let mut batch = Batch::default();
        while batch.jobs.len() < want && self.dry <= DRY_LIMIT {
            let id = self.pos.next_id;
            let (net, record) = match self.proposer.next(self.store, id)? {
                Proposed::Unbuildable => {
                    self.dry += 1;
                    continue;
                }
                Proposed::Promotion(job) => {
                    self.pos.next_id += 1;
                    self.rec.sampled(&job.record)?;
                    self.put_on_board(&job)?;
                    batch.jobs.push(job);
                    continue;
                }
                Proposed::Fresh { net, record } => (net, record),
            };
            self.pos.next_id += 1;
            self.rec.sampled(&record)?;
            match self.dedupe.check(self.store, &record.hashes)? {
                Verdict::Stored { of, stage } => {
                    self.rec.duplicate(record, of, stage)?;
                    self.proposer.strategy.tell_duplicate();
                    self.dry += 1;
                }
                Verdict::InBatch { of, stage } => {
                    batch.deferred.push((record, of, stage));
                    self.dry += 1;
                }
                Verdict::New => {
                    self.dry = 0;
                    self.dedupe.admit(id, &record.hashes);
                    let job = self.proposer.place(net, record);
                    self.put_on_board(&job)?;
                    batch.jobs.push(job);
                }
            }
        }
        Ok(batch)
    }

    fn put_on_board(&mut self, job: &Job) -> Result<(), SearchError> {
        match self.board.as_deref_mut() {
            Some(b) => b.submit(&job.record),
            None => Ok(()),
        }
    }

    /// A candidate a coordinator before this one put on the board, in
    /// flight again.
    fn resume_job(&mut self, record: CandidateRecord) -> Result<(), SearchError> {
        let net = self.space.network(record.derivation.clone()).map_err(|e| {
            SearchError::failed(
                format!("candidate {} no longer lowers", record.id),
                Some(e.into()),
            )
        })?;
        self.dedupe.admit(record.id, &record.hashes);
        self.in_flight.push(Job {
            net,
            root: record.id,
            record,
            bracket: 0,
            rung: 0,
        });
        Ok(())
    }

    /// Trains the batch here, records each result, then learns from them.
    fn train(&mut self, batch: Batch) -> Result<(), SearchError> {
        let s = self.settings;
        let work: Vec<(&crate::arch::Arch, TrainConfig)> = batch
            .jobs
            .iter()
            .map(|j| {
                let mut c = self.cfg.clone();
                if j.record.steps != c.train.steps {
                    c = train_config(self.space, s.seed, j.record.steps, s.device);
                    c.train.routing = self.cfg.train.routing;
                }
                (&j.net.arch, c)
            })
            .collect();
        let outcomes: Vec<Outcome> = self
            .pool
            .install(|| evaluate_all(&work, self.task, s.workers > 1));
        drop(work);
        let mut done = Vec::new();
        for (job, outcome) in batch.jobs.into_iter().zip(outcomes) {
            self.pos.evaluations += 1;
            let score =
                self.rec
                    .evaluated(&job.record, &outcome, self.pos.evaluations, s.budget)?;
            done.push((job, score, outcome.is_ok()));
        }
        self.learn(done, batch.deferred)
    }

    /// One round of a run whose workers train elsewhere: tops the board
    /// up, then learns the results recorded since, or waits a moment for
    /// one.
    fn shared_round(&mut self) -> Result<(), SearchError> {
        let s = self.settings;
        let Some(board) = self.board.as_deref_mut() else {
            return Ok(());
        };
        let room = board.room()?;
        let left = s
            .budget
            .saturating_sub(self.pos.evaluations + self.in_flight.len());
        let want = room.min(left);
        if want > 0 {
            let batch = self.gather(want)?;
            self.in_flight.extend(batch.jobs);
            self.later.extend(batch.deferred);
        }
        let Some(board) = self.board.as_deref_mut() else {
            return Ok(());
        };
        let ids: Vec<u64> = self.in_flight.iter().map(|j| j.record.id).collect();
        let settled = board.settled(&ids)?;
        for e in board.news()? {
            self.rec.show(&e);
        }
        if settled.is_empty() {
            if want == 0 || self.dry > DRY_LIMIT {
                board.wait()?;
            }
            return Ok(());
        }
        let mut done = Vec::new();
        for (id, outcome) in &settled {
            let Some(i) = self.in_flight.iter().position(|j| j.record.id == *id) else {
                continue;
            };
            let job = self.in_flight.remove(i);
            self.dedupe.release(job.record.id, &job.record.hashes);
            self.pos.evaluations += 1;
            // A candidate that ran out of attempts has no outcome: it
            // scores as a failed one does.
            let ok = outcome.as_ref().is_some_and(trained_ok);
            let score = outcome.as_ref().map_or(0.0, score_of);
            done.push((job, score, ok));
        }
        let (ready, later) = std::mem::take(&mut self.later)
            .into_iter()
            .partition(|d| settled.iter().any(|(id, _)| *id == d.1));
        self.later = later;
        self.learn(done, ready)
    }

    /// Learns from trained candidates (each with its score, and whether it
    /// trained without failing): the new best, the seed re-evaluation of
    /// scores that would lead, the strategy and the surrogate told, then
    /// the duplicates of them recorded.
    fn learn(
        &mut self,
        done: Vec<(Job, f64, bool)>,
        deferred: Vec<(CandidateRecord, u64, Stage)>,
    ) -> Result<(), SearchError> {
        let s = self.settings;
        let mut told: Vec<(u64, f64, bool, Option<Vec<f64>>)> = Vec::new();
        for (job, score, ok) in done {
            // Against the population as this batch found it, so the choice
            // does not depend on the order results come back in.
            let reeval =
                ok && s.halving.is_none() && self.proposer.strategy.enters_top(score, s.reeval);
            let features = self.proposer.features(&job.net);
            told.push((job.record.id, score, reeval, features));
            self.proposer.record(&job, score);
            if ok && self.pos.best.is_none_or(|b| score > b.1) {
                self.pos.best = Some((job.record.id, score));
                self.rec.emit(Event::new(EventKind::NewBest(NewBest {
                    arch: job.record.text.clone(),
                    id: job.record.id,
                    score,
                })))?;
            }
        }
        let reevals = self.reevaluate(&told)?;
        for (id, score, _, features) in told {
            let mut seeds = vec![score];
            seeds.extend(reevals.get(&id).into_iter().flatten());
            let mean = crate::stats::mean(&seeds);
            self.proposer.strategy.tell(id, mean);
            self.proposer.observe(id, features, mean);
        }
        if let Some((trained, tau)) = self.proposer.surrogate_report() {
            self.rec
                .emit(Event::new(EventKind::Surrogate(Surrogate { tau, trained })))?;
        }
        for (record, of, stage) in deferred {
            self.rec.duplicate(record, of, stage)?;
            self.proposer.strategy.tell_duplicate();
        }
        Ok(())
    }

    /// A score that would lead the population is checked with a fresh seed
    /// before tournaments trust it; the population ranks the mean. Returns
    /// the re-evaluation scores by candidate (empty when none ran).
    fn reevaluate(
        &mut self,
        told: &[(u64, f64, bool, Option<Vec<f64>>)],
    ) -> Result<HashMap<u64, Vec<f64>>, SearchError> {
        let s = self.settings;
        let again: Vec<TrialJob> = told
            .iter()
            .filter(|t| t.2)
            .map(|t| TrialJob {
                id: t.0,
                steps: s.steps,
                index: 0,
                seed: trial_seed(s.seed, REEVAL, 0),
            })
            .collect();
        if again.is_empty() {
            return Ok(HashMap::new());
        }
        train_trials(
            self.store,
            self.space,
            s,
            self.task,
            self.pool,
            &RunControl::default(),
            REEVAL,
            &again,
            &mut |e| self.rec.emit(e),
        )?;
        reeval_scores(self.store)
    }

    /// The confirm stage (unless the search was interrupted) and the
    /// `run_finished` event.
    fn finish(mut self, mut ending: Ending, ctl: &RunControl) -> Result<Ending, SearchError> {
        let mut winner = None;
        if let (Some(conf), true) = (self.settings.confirm, ending != Ending::Interrupted) {
            let rec = &mut self.rec;
            match super::confirm::confirm(
                self.store,
                self.space,
                self.settings,
                conf,
                self.task,
                self.pool,
                ctl,
                &mut |e| rec.emit(e),
            )? {
                Some(t) => {
                    rec.emit(t.to_event())?;
                    winner = t.winner().cloned();
                }
                None if ctl.stop.load(Ordering::SeqCst) => ending = Ending::Interrupted,
                None => {}
            }
        }
        let pos = &self.pos;
        self.rec
            .emit(Event::new(EventKind::RunFinished(RunFinished {
                best_id: pos.best.map(|b| b.0),
                best_score: pos.best.map(|b| b.1),
                evaluations: pos.evaluations,
                reason: ending.name().to_string(),
                winner: winner.as_ref().map(|w| w.id),
                winner_score: winner.as_ref().map(|w| w.mean),
                winner_sd: winner.as_ref().map(|w| w.sd),
            })))?;
        Ok(ending)
    }
}
