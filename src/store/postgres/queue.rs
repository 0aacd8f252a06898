//! The work queue: candidates a coordinator enqueues and workers claim
//! under a lease, keep with heartbeats, and finish or fail.
//!
//! A candidate is `pending`, then `claimed` (an owner and a lease expiry),
//! then `done` (its outcome recorded) or back to `pending` after a failed
//! attempt; the [`MAX_ATTEMPTS`]th failed attempt ends it `failed`. A
//! worker that dies simply stops renewing its lease: once the lease has
//! expired, the next claim takes the candidate again, and that counts as
//! an attempt too.

use super::run::count;
use super::{append_event, hex128, to_i64, to_u64, PgError, Run};
use crate::store::events::Failed;
use crate::store::{CandidateRecord, Event, EventKind, Finished};
use ::postgres::{Client, GenericClient, Transaction};
use std::time::Duration;

/// Attempts a candidate gets (claims, whether they ended in a reported
/// failure or an expired lease) before it ends as failed.
pub const MAX_ATTEMPTS: i32 = 3;

/// A candidate a worker now holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    pub record: CandidateRecord,
    /// This attempt's number, from 1.
    pub attempts: i32,
}

/// What [`complete`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The outcome is recorded.
    Recorded,
    /// The candidate already had an outcome (another worker, whose lease
    /// had expired, finished it too); nothing was written.
    Duplicate,
}

/// What [`fail`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Back to pending, for another attempt.
    Retry { attempts: i32 },
    /// That was the last attempt: the candidate ended failed.
    Final { attempts: i32 },
    /// The candidate was no longer this worker's (its lease expired and
    /// another took it, or it finished): nothing was changed.
    NotHeld,
}

/// How many of a run's candidates are in each state. `expired` counts the
/// claimed ones whose lease has run out (claimable again), and is part of
/// `claimed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub pending: u64,
    pub claimed: u64,
    pub expired: u64,
    pub done: u64,
    pub failed: u64,
}

/// A lease's length as the seconds the SQL below adds to `now()`.
fn secs(lease: Duration) -> f64 {
    lease.as_secs_f64()
}

/// Adds a candidate to the queue, pending. Returns false, changing
/// nothing, when the run already has a candidate with its id (a
/// coordinator that resumes may enqueue again what it enqueued before it
/// stopped).
pub fn enqueue(client: &mut Client, run: &Run, c: &CandidateRecord) -> Result<bool, PgError> {
    write_candidate(client, run, c, false)
}

/// Writes a candidate's row: a new one pending, and with `replace` an
/// existing one's record and hashes too (its place in the queue kept).
/// Returns whether a row was written.
pub(super) fn write_candidate<C: GenericClient>(
    client: &mut C,
    run: &Run,
    c: &CandidateRecord,
    replace: bool,
) -> Result<bool, PgError> {
    let record = serde_json::to_value(c).map_err(|e| PgError::Corrupt {
        run: run.name.clone(),
        what: format!("candidate {} cannot be encoded: {e}", c.id),
    })?;
    let on_conflict = if replace {
        "DO UPDATE SET record = EXCLUDED.record, structural = EXCLUDED.structural,
             functional = EXCLUDED.functional, steps = EXCLUDED.steps"
    } else {
        "DO NOTHING"
    };
    let n = client.execute(
        &format!(
            "INSERT INTO archgram.candidates (run, id, record, structural, functional, steps)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (run, id) {on_conflict}"
        ),
        &[
            &run.id,
            &to_i64(c.id, &run.name, "candidate id")?,
            &record,
            &hex128(c.hashes.structural),
            &c.hashes.functional.map(hex128),
            &to_i64(c.steps as u64, &run.name, "step count")?,
        ],
    )?;
    Ok(n == 1)
}

/// Claims up to `n` candidates for `owner`, oldest first: pending ones,
/// and claimed ones whose lease has expired (their worker stopped). Each
/// claim counts an attempt and holds the candidate until `now + lease`.
/// Candidates whose lease expired on their last attempt end failed here.
/// Concurrent claimers never get the same candidate: each skips the rows
/// another is taking, and never waits on one (so claims cannot deadlock
/// with each other or with results being written).
pub fn claim(
    client: &mut Client,
    run: &Run,
    owner: &str,
    n: usize,
    lease: Duration,
) -> Result<Vec<Claimed>, PgError> {
    let mut tx = client.transaction()?;
    let gone = tx.query(
        "WITH expired AS (
             SELECT run, id FROM archgram.candidates
             WHERE run = $1 AND status = 'claimed' AND lease_expires < now() AND attempts >= $2
             FOR UPDATE SKIP LOCKED
         )
         UPDATE archgram.candidates c
         SET status = 'failed', lease_owner = NULL, lease_expires = NULL,
             failure = 'its worker stopped renewing the lease on each of its '
                       || c.attempts || ' attempts'
                       || COALESCE(' (a failure reported before: ' || c.failure || ')', '')
         FROM expired
         WHERE c.run = expired.run AND c.id = expired.id
         RETURNING c.id, c.failure",
        &[&run.id, &MAX_ATTEMPTS],
    )?;
    for row in &gone {
        let id = to_u64(row.get(0), &run.name, "candidate id")?;
        ended_failed(&mut tx, run, id, row.get(1))?;
    }
    let rows = tx.query(
        "WITH picked AS (
             SELECT run, id FROM archgram.candidates
             WHERE run = $1
               AND (status = 'pending'
                    OR (status = 'claimed' AND lease_expires < now() AND attempts < $5))
             ORDER BY id
             LIMIT $4
             FOR UPDATE SKIP LOCKED
         )
         UPDATE archgram.candidates c
         SET status = 'claimed', lease_owner = $2,
             lease_expires = now() + make_interval(secs => $3), attempts = c.attempts + 1
         FROM picked
         WHERE c.run = picked.run AND c.id = picked.id
         RETURNING c.id, c.record, c.attempts",
        &[
            &run.id,
            &owner,
            &secs(lease),
            &(n.min(i64::MAX as usize) as i64),
            &MAX_ATTEMPTS,
        ],
    )?;
    tx.commit()?;
    let mut out = rows
        .iter()
        .map(|r| {
            let id: i64 = r.get(0);
            let record = serde_json::from_value(r.get(1)).map_err(|e| PgError::Corrupt {
                run: run.name.clone(),
                what: format!("candidate {id}'s record: {e}"),
            })?;
            Ok(Claimed {
                record,
                attempts: r.get(2),
            })
        })
        .collect::<Result<Vec<_>, PgError>>()?;
    out.sort_by_key(|c| c.record.id);
    Ok(out)
}

/// Extends the leases `owner` holds on these candidates to `now + lease`.
/// Returns the ids still its own, in order; a candidate missing from it
/// was taken by another worker after the lease expired (or finished), and
/// this worker's result for it may arrive second.
pub fn heartbeat(
    client: &mut Client,
    run: &Run,
    owner: &str,
    ids: &[u64],
    lease: Duration,
) -> Result<Vec<u64>, PgError> {
    let ids = ids
        .iter()
        .map(|&id| to_i64(id, &run.name, "candidate id"))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = client.query(
        "UPDATE archgram.candidates
         SET lease_expires = now() + make_interval(secs => $4)
         WHERE run = $1 AND status = 'claimed' AND lease_owner = $2 AND id = ANY($3)
         RETURNING id",
        &[&run.id, &owner, &ids, &secs(lease)],
    )?;
    let mut out = rows
        .iter()
        .map(|r| to_u64(r.get(0), &run.name, "candidate id"))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_unstable();
    Ok(out)
}

/// Records a candidate's result as `worker` reports it: its outcome, its
/// hashes in the index, its counters and its event, in one transaction
/// (the candidate's record is the one enqueued). A result arriving for a
/// candidate that already has one (two workers finished it, the first
/// after its lease had expired) changes nothing and says so. A result for
/// a network already trained for the same steps under another candidate
/// is refused ([`PgError::TrainedTwice`]). A result is taken whoever holds
/// the lease now: finished work is never thrown away.
pub fn complete(
    client: &mut Client,
    run: &Run,
    worker: &str,
    finished: &Finished,
) -> Result<Completion, PgError> {
    let mut tx = client.transaction()?;
    let done = record_result(&mut tx, run, worker, finished, true)?;
    if done == Completion::Recorded {
        tx.commit()?;
    }
    Ok(done)
}

/// Writes a result inside `tx`, as [`complete`] describes, for the
/// candidate row that `finished.record`'s id names (its hashes and steps
/// are the row's). With `number`, its event is numbered as the run's
/// counters count it (see [`numbered`]). The caller commits when it says
/// `Recorded`.
pub(super) fn record_result(
    tx: &mut Transaction,
    run: &Run,
    worker: &str,
    finished: &Finished,
    number: bool,
) -> Result<Completion, PgError> {
    let id = finished.record.id;
    let key = to_i64(id, &run.name, "candidate id")?;
    let Some(row) = tx.query_opt(
        "SELECT structural, functional, steps, status FROM archgram.candidates
         WHERE run = $1 AND id = $2 FOR UPDATE",
        &[&run.id, &key],
    )?
    else {
        return Err(PgError::NoCandidate {
            run: run.name.clone(),
            id,
        });
    };
    let (structural, functional, steps): (String, Option<String>, i64) =
        (row.get(0), row.get(1), row.get(2));
    // A result that comes after the candidate ran out of attempts replaces
    // its failure: the count it was given then is taken back.
    let was_failed = row.get::<_, &str>(3) == "failed";
    let inserted = tx.execute(
        "INSERT INTO archgram.outcomes (run, candidate, structural, steps, outcome, worker)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT DO NOTHING",
        &[
            &run.id,
            &key,
            &structural,
            &steps,
            finished.outcome,
            &worker,
        ],
    )?;
    if inserted == 0 {
        // One of the two constraints held it back: this candidate's own
        // outcome (its row locked above, so it is committed), or the same
        // network's for the same steps (the insert waited for its
        // transaction to end, so this statement sees it).
        let of: i64 = tx
            .query_one(
                "SELECT candidate FROM archgram.outcomes
                 WHERE run = $1 AND (candidate = $2 OR (structural = $3 AND steps = $4))
                 ORDER BY candidate = $2 DESC LIMIT 1",
                &[&run.id, &key, &structural, &steps],
            )?
            .get(0);
        if of == key {
            return Ok(Completion::Duplicate);
        }
        return Err(PgError::TrainedTwice {
            run: run.name.clone(),
            id,
            of: to_u64(of, &run.name, "candidate id")?,
            structural,
            steps: to_u64(steps, &run.name, "step count")?,
        });
    }
    mark_done(tx, run, key)?;
    tx.execute(
        "INSERT INTO archgram.hash_index (run, kind, hash, candidate)
         SELECT $1, kind, hash, $4
         FROM (VALUES ('structural', $2::text), ('functional', $3::text)) AS h (kind, hash)
         WHERE hash IS NOT NULL
         ON CONFLICT (run, kind, hash) DO UPDATE SET candidate = EXCLUDED.candidate",
        &[&run.id, &structural, &functional, &key],
    )?;
    let failure = EventKind::Failed(Failed::default());
    count(
        tx,
        run,
        &finished.event.kind,
        was_failed.then_some(&failure),
    )?;
    if number {
        let event = numbered(tx, run, finished.event)?;
        append_event(tx, run, &event)?;
    } else {
        append_event(tx, run, finished.event)?;
    }
    Ok(Completion::Recorded)
}

/// A worker's `evaluated` or `failed` event numbered as the run's how
/// manyth training it is, of the run's budget: a worker cannot know, the
/// counters just updated in this transaction can (their row stays locked
/// until it commits, so two results never get one number).
fn numbered<C: GenericClient>(client: &mut C, run: &Run, event: &Event) -> Result<Event, PgError> {
    let n: i64 = client
        .query_one(
            "SELECT evaluated + failed FROM archgram.counters WHERE run = $1",
            &[&run.id],
        )?
        .get(0);
    let n = to_u64(n, &run.name, "counter")? as usize;
    let budget = run.settings["budget"].as_u64().unwrap_or(0) as usize;
    let mut e = event.clone();
    match &mut e.kind {
        EventKind::Evaluated(v) => (v.evaluations, v.budget) = (n, budget),
        EventKind::Failed(f) => (f.evaluations, f.budget) = (n, budget),
        _ => {}
    }
    Ok(e)
}

/// Takes a candidate out of the queue: its result is in.
pub(super) fn mark_done(tx: &mut Transaction, run: &Run, key: i64) -> Result<(), PgError> {
    tx.execute(
        "UPDATE archgram.candidates
         SET status = 'done', lease_owner = NULL, lease_expires = NULL
         WHERE run = $1 AND id = $2",
        &[&run.id, &key],
    )?;
    Ok(())
}

/// Reports that `owner`'s attempt at a candidate failed (training raised an
/// error, the device ran out of memory): back to pending with the reason
/// kept, or, on its last attempt, ended failed with a `failed` event.
pub fn fail(
    client: &mut Client,
    run: &Run,
    id: u64,
    owner: &str,
    reason: &str,
) -> Result<Failure, PgError> {
    let key = to_i64(id, &run.name, "candidate id")?;
    let mut tx = client.transaction()?;
    let row = tx.query_opt(
        "SELECT attempts FROM archgram.candidates
         WHERE run = $1 AND id = $2 AND status = 'claimed' AND lease_owner = $3
         FOR UPDATE",
        &[&run.id, &key, &owner],
    )?;
    let Some(row) = row else {
        return Ok(Failure::NotHeld);
    };
    let attempts: i32 = row.get(0);
    let last = attempts >= MAX_ATTEMPTS;
    tx.execute(
        "UPDATE archgram.candidates
         SET status = $3, lease_owner = NULL, lease_expires = NULL, failure = $4
         WHERE run = $1 AND id = $2",
        &[
            &run.id,
            &key,
            &if last { "failed" } else { "pending" },
            &reason,
        ],
    )?;
    if last {
        ended_failed(&mut tx, run, id, reason.to_string())?;
    }
    tx.commit()?;
    Ok(if last {
        Failure::Final { attempts }
    } else {
        Failure::Retry { attempts }
    })
}

/// Counts a candidate that ran out of attempts and logs its `failed` event.
fn ended_failed(tx: &mut Transaction, run: &Run, id: u64, reason: String) -> Result<(), PgError> {
    let event = Event::new(EventKind::Failed(Failed {
        id,
        reason,
        ..Failed::default()
    }));
    count(tx, run, &event.kind, None)?;
    let event = numbered(tx, run, &event)?;
    append_event(tx, run, &event)?;
    Ok(())
}

/// How many of the run's candidates are pending, claimed (and of those,
/// with an expired lease), done and failed.
pub fn counts(client: &mut Client, run: &Run) -> Result<QueueCounts, PgError> {
    let rows = client.query(
        "SELECT status, count(*), count(*) FILTER (WHERE lease_expires < now())
         FROM archgram.candidates WHERE run = $1 GROUP BY status",
        &[&run.id],
    )?;
    let mut out = QueueCounts::default();
    for r in rows {
        let status: String = r.get(0);
        let n = to_u64(r.get(1), &run.name, "count")?;
        match status.as_str() {
            "pending" => out.pending = n,
            "claimed" => {
                out.claimed = n;
                out.expired = to_u64(r.get(2), &run.name, "count")?;
            }
            "done" => out.done = n,
            _ => out.failed = n,
        }
    }
    Ok(out)
}

/// Of the candidates `ids`, those whose work is over, by id: done with
/// their outcome, or ended failed (no outcome: `None`).
pub fn settled(
    client: &mut Client,
    run: &Run,
    ids: &[u64],
) -> Result<Vec<(u64, Option<serde_json::Value>)>, PgError> {
    let keys = ids
        .iter()
        .map(|&id| to_i64(id, &run.name, "candidate id"))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = client.query(
        "SELECT c.id, o.outcome FROM archgram.candidates c
         LEFT JOIN archgram.outcomes o ON o.run = c.run AND o.candidate = c.id
         WHERE c.run = $1 AND c.id = ANY($2) AND c.status IN ('done', 'failed')
         ORDER BY c.id",
        &[&run.id, &keys],
    )?;
    rows.iter()
        .map(|r| Ok((to_u64(r.get(0), &run.name, "candidate id")?, r.get(1))))
        .collect()
}

/// The candidates that ended failed without an outcome (their leases ran
/// out on every attempt), by id: results a coordinator that takes over a
/// run counts as failed trainings, as the one that saw them end did.
pub fn lapsed(client: &mut Client, run: &Run) -> Result<Vec<u64>, PgError> {
    let rows = client.query(
        "SELECT c.id FROM archgram.candidates c
         WHERE c.run = $1 AND c.status = 'failed'
           AND NOT EXISTS (SELECT 1 FROM archgram.outcomes o
                           WHERE o.run = c.run AND o.candidate = c.id)
         ORDER BY c.id",
        &[&run.id],
    )?;
    rows.iter()
        .map(|r| to_u64(r.get(0), &run.name, "candidate id"))
        .collect()
}

/// The candidates still waiting for a result (pending or claimed), by id:
/// the work a coordinator that takes over a run finds in flight.
pub fn waiting(client: &mut Client, run: &Run) -> Result<Vec<CandidateRecord>, PgError> {
    let rows = client.query(
        "SELECT id, record FROM archgram.candidates
         WHERE run = $1 AND status IN ('pending', 'claimed') ORDER BY id",
        &[&run.id],
    )?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.get(0);
            serde_json::from_value(r.get(1)).map_err(|e| PgError::Corrupt {
                run: run.name.clone(),
                what: format!("candidate {id}'s record: {e}"),
            })
        })
        .collect()
}
