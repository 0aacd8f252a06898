//! A run shared through a database: the coordinator's side of its work
//! queue (`Board`), and the worker's (`work`). The coordinator's run loop
//! (`run::run_shared`) proposes and dedupes as a run on one machine does,
//! but puts each candidate to train on the board instead of training it,
//! and learns the results that workers anywhere record there.

use super::settings::{score_of, train_config, RunSettings, SearchError};
use crate::eval::{evaluate, DeviceKind, Outcome, Status};
use crate::space::Space;
use crate::store::postgres::{self as pg, Claimed, CoordinatorLock, Failure, PgError, Run};
use crate::store::{CandidateRecord, Event, EventKind, Finished};
use ::postgres::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Candidates kept waiting beyond those that workers hold: a worker that
/// finishes one finds the next at once, without waiting for the
/// coordinator, while the strategy's proposals stay close to what it has
/// learned. The queue thus stays a little longer than the number of live
/// workers, however many come and go.
pub const SLACK: u64 = 2;

/// How long the coordinator and idle workers wait for news (an event of
/// the run) before they look again.
const NEWS_WAIT: Duration = Duration::from_millis(500);

/// The coordinator's view of the queue, on its own connection, with the
/// lock that makes it the run's only coordinator.
pub struct Board {
    client: Client,
    run: Run,
    lock: CoordinatorLock,
    /// The sequence number of the last event passed on.
    seen: i64,
}

impl Board {
    /// The board of `run` for the holder of its lock. `client` must be a
    /// connection of its own: it listens for the run's events.
    pub fn new(mut client: Client, run: Run, lock: CoordinatorLock) -> Result<Board, PgError> {
        pg::listen(&mut client)?;
        let seen = pg::events_after(&mut client, &run, 0)?
            .last()
            .map_or(0, |e| e.0);
        Ok(Board {
            client,
            run,
            lock,
            seen,
        })
    }

    pub fn run(&self) -> &Run {
        &self.run
    }

    /// Puts a candidate on the queue for a worker to train.
    pub(super) fn submit(&mut self, c: &CandidateRecord) -> Result<(), SearchError> {
        pg::enqueue(&mut self.client, &self.run, c).map_err(db)?;
        Ok(())
    }

    /// How many more candidates the queue wants now ([`SLACK`] waiting).
    pub(super) fn room(&mut self) -> Result<usize, SearchError> {
        self.lock.check().map_err(db)?;
        let n = pg::counts(&mut self.client, &self.run).map_err(db)?;
        Ok(SLACK.saturating_sub(n.pending + n.expired) as usize)
    }

    /// Of the candidates `ids`, those finished (with their outcome) or
    /// ended failed (without one).
    pub(super) fn settled(
        &mut self,
        ids: &[u64],
    ) -> Result<Vec<(u64, Option<serde_json::Value>)>, SearchError> {
        pg::settled(&mut self.client, &self.run, ids).map_err(db)
    }

    /// The candidates a coordinator before this one left on the queue.
    pub(super) fn waiting(&mut self) -> Result<Vec<CandidateRecord>, SearchError> {
        pg::waiting(&mut self.client, &self.run).map_err(db)
    }

    /// The candidates that ended failed without an outcome (every lease
    /// on them ran out): failed trainings of the budget.
    pub(super) fn lapsed(&mut self) -> Result<Vec<u64>, SearchError> {
        pg::lapsed(&mut self.client, &self.run).map_err(db)
    }

    /// The results workers recorded since the last call (their `evaluated`
    /// and `failed` events), to show as the coordinator's own are shown.
    pub(super) fn news(&mut self) -> Result<Vec<Event>, SearchError> {
        let events = pg::events_after(&mut self.client, &self.run, self.seen).map_err(db)?;
        if let Some(last) = events.last() {
            self.seen = last.0;
        }
        Ok(events
            .into_iter()
            .map(|e| e.1)
            .filter(|e| matches!(e.kind, EventKind::Evaluated(_) | EventKind::Failed(_)))
            .collect())
    }

    /// Waits a moment for the run's next event.
    pub(super) fn wait(&mut self) -> Result<(), SearchError> {
        pg::wait_for_event(&mut self.client, &self.run, NEWS_WAIT).map_err(db)?;
        Ok(())
    }
}

/// Refuses settings a shared run cannot follow yet: successive halving
/// (its brackets are not rebuilt for candidates still on the board when a
/// coordinator takes over).
pub fn check_shareable(settings: &RunSettings) -> Result<(), SearchError> {
    if settings.halving.is_some() {
        return Err(SearchError::bad(
            "successive halving does not run on a database yet: use --strategy random, evolution or model",
        ));
    }
    Ok(())
}

fn db(e: PgError) -> SearchError {
    SearchError::Store(e.into())
}

/// A worker's settings beyond the run's.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Who the worker is, as leases and outcomes name it.
    pub name: String,
    pub device: DeviceKind,
    /// How long a claim holds a candidate without a heartbeat; the
    /// heartbeat renews it every third of that.
    pub lease: Duration,
}

/// What a worker did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerReport {
    pub recorded: usize,
    /// Results another worker had recorded first (an expired lease).
    pub duplicates: usize,
    /// Failed attempts given back for another try, and those that ended
    /// their candidate.
    pub retried: usize,
    pub failed: usize,
}

/// A run's space as the database keeps it (no file is read).
pub fn run_space(run: &Run) -> Result<Space, SearchError> {
    Space::from_texts(
        std::path::Path::new(&run.space_path),
        &run.space_text,
        &run.grammar_text,
    )
    .map_err(|e| SearchError::bad_because(format!("run `{}`'s space", run.name), e))
}

/// The run's settings as its coordinator recorded them.
pub fn run_settings(run: &Run) -> Result<RunSettings, SearchError> {
    serde_json::from_value(run.settings.clone())
        .map_err(|e| SearchError::bad_because(format!("run `{}`'s recorded settings", run.name), e))
}

/// Claims and trains the run's candidates, one at a time, until the run
/// has ended or `stop` is set. `connect` opens a connection (one for the
/// queue, one for the heartbeat). A training that fails is given back for
/// another attempt; on its last attempt its failed outcome is recorded as
/// the result, as a run on one machine records it.
pub fn work(
    connect: &dyn Fn() -> Result<Client, PgError>,
    run: &Run,
    ws: &WorkerSettings,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&str),
) -> Result<WorkerReport, SearchError> {
    let space = run_space(run)?;
    let settings = run_settings(run)?;
    let task = space
        .build_task(space.file.seed)
        .map_err(|e| SearchError::bad_because("the run's task", e))?;
    let mut client = connect().map_err(db)?;
    pg::listen(&mut client).map_err(db)?;
    let beat = Heartbeat::start(connect().map_err(db)?, run, ws);
    let report = claim_and_train(
        &mut client,
        run,
        ws,
        &space,
        &settings,
        task.as_ref(),
        &beat,
        stop,
        progress,
    );
    beat.stop();
    report
}

/// `work`'s loop.
#[allow(clippy::too_many_arguments)]
fn claim_and_train(
    client: &mut Client,
    run: &Run,
    ws: &WorkerSettings,
    space: &Space,
    settings: &RunSettings,
    task: &dyn crate::tasks::Task,
    beat: &Heartbeat,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&str),
) -> Result<WorkerReport, SearchError> {
    let mut report = WorkerReport::default();
    while !stop.load(Ordering::SeqCst) {
        let claimed = pg::claim(client, run, &ws.name, 1, ws.lease).map_err(db)?;
        let Some(Claimed { record, attempts }) = claimed.into_iter().next() else {
            if pg::ended(client, run).map_err(db)?
                && pg::counts(client, run).map_err(db)?.pending == 0
            {
                break;
            }
            pg::wait_for_event(client, run, NEWS_WAIT).map_err(db)?;
            continue;
        };
        beat.hold(Some(record.id));
        let outcome = train_one(space, settings, task, &record, ws.device);
        beat.hold(None);
        if let Some(reason) = given_back(&outcome, attempts) {
            progress(&format!(
                "#{} failed on attempt {attempts} of {}: {reason}",
                record.id,
                pg::MAX_ATTEMPTS
            ));
            match pg::fail(client, run, record.id, &ws.name, &reason).map_err(db)? {
                Failure::Final { .. } => report.failed += 1,
                Failure::Retry { .. } => report.retried += 1,
                Failure::NotHeld => {}
            }
            continue;
        }
        let value = serde_json::to_value(&outcome)
            .map_err(|e| SearchError::failed("cannot encode an outcome", Some(e.into())))?;
        let event = super::journal::outcome_event(record.id, &outcome, 0, settings.budget);
        let done = pg::complete(
            client,
            run,
            &ws.name,
            &Finished {
                record: &record,
                outcome: &value,
                event: &event,
            },
        )
        .map_err(db)?;
        match done {
            pg::Completion::Recorded => {
                report.recorded += 1;
                progress(&format!(
                    "#{} {} {:.4} in {:.1}s",
                    record.id,
                    space.metric,
                    score_of(&value),
                    outcome.wall_secs
                ));
            }
            pg::Completion::Duplicate => report.duplicates += 1,
        }
    }
    Ok(report)
}

/// Why a failed attempt is given back for another, or None when the
/// outcome is the candidate's result: a success, a failure of the
/// candidate's own (it diverged: a retry anywhere would repeat it), or the
/// last attempt.
fn given_back(outcome: &Outcome, attempts: i32) -> Option<String> {
    match &outcome.status {
        Status::Failed {
            reason,
            retry_may_help: true,
        } if attempts < pg::MAX_ATTEMPTS => Some(reason.clone()),
        _ => None,
    }
}

/// Trains one claimed candidate; a record that no longer lowers in this
/// worker's build is a failure of this machine's (another worker's build
/// may lower it).
fn train_one(
    space: &Space,
    settings: &RunSettings,
    task: &dyn crate::tasks::Task,
    record: &CandidateRecord,
    device: DeviceKind,
) -> Outcome {
    let cfg = train_config(space, settings.seed, record.steps, device);
    match space.network(record.derivation.clone()) {
        Ok(net) => evaluate(&net.arch, task, &cfg),
        Err(e) => Outcome::new(crate::arch::Cost::default(), &cfg)
            .failed_here(format!("the candidate does not lower in this space: {e}")),
    }
}

/// Renews the lease of the candidate a worker trains, on a thread and a
/// connection of its own (the worker's is busy training), every third of
/// the lease.
struct Heartbeat {
    held: Arc<Mutex<Option<u64>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Heartbeat {
    fn start(mut client: Client, run: &Run, ws: &WorkerSettings) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let held: Arc<Mutex<Option<u64>>> = Arc::default();
        let (flag, id, run, owner, lease) = (
            stop.clone(),
            held.clone(),
            run.clone(),
            ws.name.clone(),
            ws.lease,
        );
        let thread = std::thread::spawn(move || {
            let every = lease / 3;
            let tick = Duration::from_millis(20).min(every);
            let mut waited = Duration::ZERO;
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(tick);
                waited += tick;
                let id = *id.lock().unwrap_or_else(|p| p.into_inner());
                if let (Some(id), true) = (id, waited >= every) {
                    waited = Duration::ZERO;
                    // A lost beat only risks a second training, whose
                    // result `complete` turns away; training goes on.
                    let _ = pg::heartbeat(&mut client, &run, &owner, &[id], lease);
                }
            }
        });
        Heartbeat { held, stop, thread }
    }

    /// The candidate now trained (None: none).
    fn hold(&self, id: Option<u64>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::TrainConfig;

    /// A diverged candidate diverges again on any worker (training is
    /// deterministic for its seed): its failure is its result at once. A
    /// failure of the machine's is tried again, up to the limit.
    #[test]
    fn only_a_failure_of_the_machines_is_given_back() {
        let fresh = || Outcome::new(crate::arch::Cost::default(), &TrainConfig::default());
        let diverged = fresh().failed("loss became NaN at step 3".into());
        let device = fresh().failed_here("gradient allocation: out of memory".into());
        assert_eq!(given_back(&diverged, 1), None);
        assert_eq!(given_back(&fresh(), 1), None);
        assert_eq!(
            given_back(&device, 1).as_deref(),
            Some("gradient allocation: out of memory")
        );
        assert_eq!(given_back(&device, pg::MAX_ATTEMPTS), None);
    }
}
