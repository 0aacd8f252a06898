//! The PostgreSQL run store against a real server: the schema and its
//! migrations, the work queue (claims, leases, failures, idempotent
//! results), the coordinator lock, events and their announcements, and
//! the `Store` over all of it (the same reads as sled's for the same
//! calls, exact floats, all-or-nothing results, events followed as they
//! commit).
//!
//! The server is the one `ARCHGRAM_TEST_PG` names (a `postgres://` URL or
//! libpq `key=value` string for a user that may create databases);
//! `scripts/pg-throwaway.sh run cargo test --release --test postgres` starts
//! a throwaway one. Each test works in a database of its own, created for
//! it and dropped after, so tests run in parallel and leave nothing behind.

mod common;

use common::pg::TestDb;

use archgram::grammar::Derivation;
use archgram::hash::Hashes;
use archgram::store::events::{Duplicate, Evaluated, Failed, NewBest, RunStarted, Sampled};
use archgram::store::postgres::{
    append_event, claim, complete, counters, counts, create_run, enqueue, events_after, fail,
    heartbeat, listen, migrate, migrate_with, open_run, open_run_for_worker, wait_for_event,
    Completion, CoordinatorLock, Failure, NewRun, PgError, QueueCounts, Run, MAX_ATTEMPTS,
    SCHEMA_VERSION, VERSION,
};
use archgram::store::{
    CandidateBrief, CandidateRecord, Counters, Event, EventKind, EventSource, Finished, Location,
    Mark, RecordedIds, Store, StoreError, TrialRecord,
};
use postgres::Client;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A fresh database with archgram's schema and a run `r1` holding `n`
/// pending candidates ([`fill`]); `None` when skipped.
fn queue(check: &str, n: u64) -> Option<(TestDb, Client, Run)> {
    let db = TestDb::new(check)?;
    let mut c = db.migrated();
    let run = new_run(&mut c, "r1");
    fill(&mut c, &run, n);
    Some((db, c, run))
}

fn new_run(client: &mut Client, name: &str) -> Run {
    create_run(
        client,
        &NewRun {
            name,
            space_path: "spaces/quickstart.ron",
            space_text: "(grammar: \"g.ron\")",
            grammar_path: "g.ron",
            grammar_text: "(rules: {})",
            settings: &json!({"seed": 1, "budget": 10}),
            hash_recipes: &json!({"structural": 1, "functional": 1}),
        },
    )
    .unwrap()
}

fn record(id: u64, structural: u128, steps: usize) -> CandidateRecord {
    CandidateRecord {
        id,
        derivation: Derivation::leaf("mlp"),
        text: format!("arch {id}"),
        hashes: Hashes {
            structural,
            functional: Some(structural ^ 0xff),
        },
        parent: None,
        origin: "sample".into(),
        duplicate_of: None,
        params: 1.5,
        active_params: 1.5,
        flops: 3.0,
        steps,
    }
}

/// Enqueues candidates 0..n, each a network of its own, 100 steps.
fn fill(client: &mut Client, run: &Run, n: u64) {
    for id in 0..n {
        assert!(enqueue(client, run, &record(id, 1000 + u128::from(id), 100)).unwrap());
    }
}

const LEASE: Duration = Duration::from_secs(600);

fn outcome(score: f64) -> serde_json::Value {
    json!({"score": score, "wall_secs": 2.5, "status": "ok"})
}

fn event(kind: EventKind) -> Event {
    Event {
        t: 1.7e9,
        kind,
        recovered: false,
    }
}

fn evaluated(id: u64, score: f64) -> Event {
    event(EventKind::Evaluated(Evaluated {
        id,
        score,
        ..Evaluated::default()
    }))
}

fn sampled(id: u64) -> Event {
    event(EventKind::Sampled(Sampled {
        id,
        ..Sampled::default()
    }))
}

/// Records a result for `id` as `worker` reports it.
fn finish(client: &mut Client, run: &Run, id: u64, worker: &str) -> Result<Completion, PgError> {
    let (o, e) = (outcome(0.5), evaluated(id, 0.5));
    // The queue's row is the record that counts; this one names the id.
    let r = record(id, 0, 0);
    complete(
        client,
        run,
        worker,
        &Finished {
            record: &r,
            outcome: &o,
            event: &e,
        },
    )
}

fn ids(claimed: &[archgram::store::postgres::Claimed]) -> Vec<u64> {
    claimed.iter().map(|c| c.record.id).collect()
}

fn scalar<T: for<'a> postgres::types::FromSql<'a>>(c: &mut Client, sql: &str) -> T {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// The kinds of a run's events, in order.
fn event_kinds(c: &mut Client, run: &Run) -> Vec<String> {
    events_after(c, run, 0)
        .unwrap()
        .iter()
        .map(|(_, e)| e.name().to_string())
        .collect()
}

/// Claims for `owner` until the expired lease of some candidate comes
/// back (the server's clock has to pass the expiry first).
fn claim_after_expiry(
    c: &mut Client,
    run: &Run,
    owner: &str,
) -> Vec<archgram::store::postgres::Claimed> {
    for _ in 0..500 {
        let got = claim(c, run, owner, 1, LEASE).unwrap();
        if !got.is_empty() {
            return got;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("an expired lease was never claimed again");
}

#[test]
fn migrating_an_empty_database_creates_the_schema_and_again_changes_nothing() {
    let Some(db) = TestDb::new("migrate from empty") else {
        return;
    };
    let mut c = db.migrated();
    let version: i32 = scalar(&mut c, "SELECT version FROM archgram.schema_version");
    assert_eq!(version, SCHEMA_VERSION);
    let run = new_run(&mut c, "r1");
    fill(&mut c, &run, 2);
    migrate(&mut c).unwrap();
    let rows: i64 = scalar(&mut c, "SELECT count(*) FROM archgram.schema_version");
    assert_eq!(rows, 1);
    assert_eq!(open_run(&mut c, "r1").unwrap(), run);
    assert_eq!(counts(&mut c, &run).unwrap().pending, 2);
}

#[test]
fn an_older_schema_is_upgraded_and_a_newer_one_refused() {
    let Some(db) = TestDb::new("schema upgrade") else {
        return;
    };
    let mut c = db.connect();
    let v1 = "CREATE TABLE archgram.t1 (x int)";
    let v2 = "CREATE TABLE archgram.t2 (x int)";
    migrate_with(&mut c, &[v1]).unwrap();
    // Version 2 runs only its own step: running v1 again would fail, t1
    // being there.
    migrate_with(&mut c, &[v1, v2]).unwrap();
    let version: i32 = scalar(&mut c, "SELECT version FROM archgram.schema_version");
    assert_eq!(version, 2);
    let t2: i64 = scalar(&mut c, "SELECT count(*) FROM archgram.t2");
    assert_eq!(t2, 0);
    let e = migrate_with(&mut c, &[v1]).unwrap_err();
    assert!(
        matches!(e, PgError::SchemaTooNew { found: 2, known: 1 }),
        "{e:?}"
    );

    // The real schema, one version ahead of this build.
    let Some(db) = TestDb::new("schema upgrade") else {
        return;
    };
    let mut c = db.migrated();
    c.execute(
        "UPDATE archgram.schema_version SET version = $1",
        &[&(SCHEMA_VERSION + 1)],
    )
    .unwrap();
    let e = migrate(&mut c).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, PgError::SchemaTooNew { .. }), "{e:?}");
    assert!(
        text.contains(&format!("version {}", SCHEMA_VERSION + 1))
            && text.contains(&format!("version {SCHEMA_VERSION}")),
        "{text}"
    );
}

#[test]
fn a_run_keeps_what_a_worker_needs_and_its_name_is_taken_once() {
    let Some(db) = TestDb::new("runs") else {
        return;
    };
    let mut c = db.migrated();
    let run = new_run(&mut c, "r1");
    assert_eq!(run.archgram_version, VERSION);
    assert_eq!(run.grammar_text, "(rules: {})");
    assert_eq!(run.settings["budget"], 10);
    assert!(run.created > 1.6e9);
    let mut other = db.connect();
    assert_eq!(open_run_for_worker(&mut other, "r1").unwrap(), run);
    let e = create_run(
        &mut c,
        &NewRun {
            name: "r1",
            space_path: "",
            space_text: "",
            grammar_path: "",
            grammar_text: "",
            settings: &json!({}),
            hash_recipes: &json!({}),
        },
    )
    .unwrap_err();
    assert!(matches!(e, PgError::RunExists { .. }), "{e:?}");
    assert!(matches!(
        open_run(&mut c, "nope").unwrap_err(),
        PgError::NoRun { .. }
    ));
}

#[test]
fn a_worker_of_another_version_is_refused_with_both_versions() {
    let Some(db) = TestDb::new("worker version check") else {
        return;
    };
    let mut c = db.migrated();
    new_run(&mut c, "r1");
    c.execute(
        "UPDATE archgram.runs SET archgram_version = '0.0.0-older' WHERE name = 'r1'",
        &[],
    )
    .unwrap();
    let e = open_run_for_worker(&mut c, "r1").unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, PgError::OtherVersion { .. }), "{e:?}");
    assert!(
        text.contains("0.0.0-older") && text.contains(VERSION),
        "{text}"
    );
    // Status, watch and the coordinator read it still.
    assert!(open_run(&mut c, "r1").is_ok());
}

#[test]
fn candidates_are_enqueued_claimed_oldest_first_and_completed() {
    let Some((_db, mut c, run)) = queue("queue", 3) else {
        return;
    };
    // Enqueuing an id again (a resumed coordinator) changes nothing.
    assert!(!enqueue(&mut c, &run, &record(0, 5, 100)).unwrap());
    let got = claim(&mut c, &run, "w1", 2, LEASE).unwrap();
    assert_eq!(ids(&got), [0, 1]);
    assert_eq!(got[0].record, record(0, 1000, 100));
    assert!(got.iter().all(|g| g.attempts == 1));
    assert_eq!(
        counts(&mut c, &run).unwrap(),
        QueueCounts {
            pending: 1,
            claimed: 2,
            ..QueueCounts::default()
        }
    );
    assert_eq!(
        heartbeat(&mut c, &run, "w1", &[1, 0, 2], LEASE).unwrap(),
        [0, 1]
    );
    assert_eq!(finish(&mut c, &run, 1, "w1").unwrap(), Completion::Recorded);
    let counted = counts(&mut c, &run).unwrap();
    assert_eq!((counted.pending, counted.claimed, counted.done), (1, 1, 1));
    let stored: serde_json::Value = scalar(
        &mut c,
        "SELECT outcome FROM archgram.outcomes WHERE candidate = 1",
    );
    assert_eq!(stored, outcome(0.5));
    let events = events_after(&mut c, &run, 0).unwrap();
    // A worker's result is numbered by the run's counters, of its budget.
    let mut numbered = evaluated(1, 0.5);
    if let EventKind::Evaluated(v) = &mut numbered.kind {
        (v.evaluations, v.budget) = (1, 10);
    }
    assert_eq!(events, [(1, numbered)]);
    let k = counters(&mut c, &run).unwrap();
    assert_eq!((k.misses, k.evaluated, k.failed), (1, 1, 0));
    // A training that failed (diverged) is a result too, counted failed.
    let (o, e) = (
        outcome(0.0),
        event(EventKind::Failed(Failed {
            id: 0,
            reason: "diverged".into(),
            ..Failed::default()
        })),
    );
    let done = complete(
        &mut c,
        &run,
        "w1",
        &Finished {
            record: &record(0, 0, 0),
            outcome: &o,
            event: &e,
        },
    );
    assert_eq!(done.unwrap(), Completion::Recorded);
    let k = counters(&mut c, &run).unwrap();
    assert_eq!((k.misses, k.evaluated, k.failed), (2, 1, 1));
    assert_eq!(event_kinds(&mut c, &run), ["evaluated", "failed"]);
    assert!(matches!(
        finish(&mut c, &run, 99, "w1").unwrap_err(),
        PgError::NoCandidate { id: 99, .. }
    ));
}

#[test]
fn concurrent_claimers_never_get_the_same_candidate() {
    let n = 300;
    let Some((db, mut c, run)) = queue("concurrent claims", n) else {
        return;
    };
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (mut c, run) = (db.connect(), run.clone());
            std::thread::spawn(move || {
                let owner = format!("w{w}");
                let mut mine = Vec::new();
                loop {
                    let got = claim(&mut c, &run, &owner, 1 + w % 3, LEASE).unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(ids(&got));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.join().unwrap());
    }
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "a candidate was claimed twice");
    assert_eq!(distinct, (0..n).collect());
    assert_eq!(counts(&mut c, &run).unwrap().claimed, n);
}

#[test]
fn an_expired_lease_is_claimed_again_and_both_results_leave_one_outcome() {
    let Some((_db, mut c, run)) = queue("expired lease", 1) else {
        return;
    };
    let first = claim(&mut c, &run, "dead", 1, Duration::from_millis(1)).unwrap();
    assert_eq!(first[0].attempts, 1);
    let second = claim_after_expiry(&mut c, &run, "alive");
    assert_eq!((second[0].record.id, second[0].attempts), (0, 2));
    // The first worker is no longer the holder; the second is.
    assert!(heartbeat(&mut c, &run, "dead", &[0], LEASE)
        .unwrap()
        .is_empty());
    assert_eq!(heartbeat(&mut c, &run, "alive", &[0], LEASE).unwrap(), [0]);
    // Both finish (the first was only slow): one outcome, one event.
    assert_eq!(
        finish(&mut c, &run, 0, "dead").unwrap(),
        Completion::Recorded
    );
    assert_eq!(
        finish(&mut c, &run, 0, "alive").unwrap(),
        Completion::Duplicate
    );
    let outcomes: i64 = scalar(&mut c, "SELECT count(*) FROM archgram.outcomes");
    assert_eq!(outcomes, 1);
    let worker: String = scalar(&mut c, "SELECT worker FROM archgram.outcomes");
    assert_eq!(worker, "dead");
    assert_eq!(event_kinds(&mut c, &run), ["evaluated"]);
    assert_eq!(counters(&mut c, &run).unwrap().evaluated, 1);
    // A late failure report of a finished candidate changes nothing.
    assert_eq!(
        fail(&mut c, &run, 0, "alive", "oom").unwrap(),
        Failure::NotHeld
    );
    assert_eq!(counts(&mut c, &run).unwrap().done, 1);
}

#[test]
fn a_heartbeat_keeps_an_expired_lease_from_being_claimed() {
    let Some((_db, mut c, run)) = queue("heartbeat", 1) else {
        return;
    };
    claim(&mut c, &run, "slow", 1, LEASE).unwrap();
    c.execute(
        "UPDATE archgram.candidates SET lease_expires = now() - interval '1 second'",
        &[],
    )
    .unwrap();
    assert_eq!(counts(&mut c, &run).unwrap().expired, 1);
    assert_eq!(heartbeat(&mut c, &run, "slow", &[0], LEASE).unwrap(), [0]);
    assert_eq!(counts(&mut c, &run).unwrap().expired, 0);
    assert!(claim(&mut c, &run, "other", 1, LEASE).unwrap().is_empty());
}

#[test]
fn a_lease_that_expires_on_the_last_attempt_ends_the_candidate_failed() {
    let Some((_db, mut c, run)) = queue("expired last attempt", 1) else {
        return;
    };
    claim(&mut c, &run, "w", 1, Duration::from_millis(1)).unwrap();
    for attempt in 2..=MAX_ATTEMPTS {
        let got = claim_after_expiry(&mut c, &run, "w");
        assert_eq!(got[0].attempts, attempt);
        c.execute(
            "UPDATE archgram.candidates SET lease_expires = now() - interval '1 second'",
            &[],
        )
        .unwrap();
    }
    assert!(claim(&mut c, &run, "w", 1, LEASE).unwrap().is_empty());
    let counted = counts(&mut c, &run).unwrap();
    assert_eq!(
        (counted.failed, counted.claimed, counted.pending),
        (1, 0, 0)
    );
    let events = events_after(&mut c, &run, 0).unwrap();
    assert_eq!(events.len(), 1);
    let EventKind::Failed(f) = &events[0].1.kind else {
        panic!("{events:?}")
    };
    assert!(f.reason.contains("lease"), "{}", f.reason);
    assert_eq!(counters(&mut c, &run).unwrap().failed, 1);
}

#[test]
fn three_failed_attempts_end_the_candidate_failed_with_the_reason() {
    let Some((_db, mut c, run)) = queue("failed attempts", 1) else {
        return;
    };
    for attempt in 1..=MAX_ATTEMPTS {
        let got = claim(&mut c, &run, "w1", 1, LEASE).unwrap();
        assert_eq!(got[0].attempts, attempt);
        // Only the holder's report counts.
        assert_eq!(fail(&mut c, &run, 0, "w2", "x").unwrap(), Failure::NotHeld);
        let reason = format!("out of memory ({attempt})");
        let f = fail(&mut c, &run, 0, "w1", &reason).unwrap();
        if attempt < MAX_ATTEMPTS {
            assert_eq!(f, Failure::Retry { attempts: attempt });
            assert_eq!(counts(&mut c, &run).unwrap().pending, 1);
        } else {
            assert_eq!(f, Failure::Final { attempts: attempt });
        }
    }
    assert!(claim(&mut c, &run, "w1", 1, LEASE).unwrap().is_empty());
    let (status, failure): (String, String) = {
        let r = c
            .query_one("SELECT status, failure FROM archgram.candidates", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (status.as_str(), failure.as_str()),
        ("failed", "out of memory (3)")
    );
    let events = events_after(&mut c, &run, 0).unwrap();
    assert_eq!(events.len(), 1);
    let EventKind::Failed(f) = &events[0].1.kind else {
        panic!("{events:?}")
    };
    assert_eq!((f.id, f.reason.as_str()), (0, "out of memory (3)"));
    let k = counters(&mut c, &run).unwrap();
    assert_eq!((k.misses, k.failed), (1, 1));
    // A result that arrives after all (a worker thought lost) is kept, and
    // the failure it replaces is no longer counted.
    assert_eq!(finish(&mut c, &run, 0, "w1").unwrap(), Completion::Recorded);
    let k = counters(&mut c, &run).unwrap();
    assert_eq!((k.misses, k.evaluated, k.failed), (1, 1, 0));
}

#[test]
fn one_network_is_not_trained_twice_for_the_same_steps() {
    let Some((_db, mut c, run)) = queue("trained once", 0) else {
        return;
    };
    enqueue(&mut c, &run, &record(0, 7, 100)).unwrap();
    enqueue(&mut c, &run, &record(1, 7, 100)).unwrap();
    // The same network trained longer (successive halving) is another result.
    enqueue(&mut c, &run, &record(2, 7, 400)).unwrap();
    claim(&mut c, &run, "w", 3, LEASE).unwrap();
    assert_eq!(finish(&mut c, &run, 0, "w").unwrap(), Completion::Recorded);
    let e = finish(&mut c, &run, 1, "w").unwrap_err();
    assert!(
        matches!(
            e,
            PgError::TrainedTwice {
                id: 1,
                of: 0,
                steps: 100,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(finish(&mut c, &run, 2, "w").unwrap(), Completion::Recorded);
    let outcomes: i64 = scalar(&mut c, "SELECT count(*) FROM archgram.outcomes");
    assert_eq!(outcomes, 2);
    assert_eq!(event_kinds(&mut c, &run), ["evaluated", "evaluated"]);
    assert_eq!(counters(&mut c, &run).unwrap().evaluated, 2);
}

#[test]
fn a_second_coordinator_is_refused_until_the_first_session_ends() {
    let Some(db) = TestDb::new("coordinator lock") else {
        return;
    };
    let mut first = CoordinatorLock::acquire(db.connect(), "r1").unwrap();
    let Err(e) = CoordinatorLock::acquire(db.connect(), "r1") else {
        panic!("a second coordinator took the lock");
    };
    let text = e.to_string();
    assert!(matches!(e, PgError::CoordinatorHeld { .. }), "{e:?}");
    assert!(text.contains("archgram") && text.contains("r1"), "{text}");
    // Another run's coordinator is not in the way.
    let _other = CoordinatorLock::acquire(db.connect(), "r2").unwrap();
    first.check().unwrap();
    drop(first);
    // The server lets go once it sees the session end.
    for _ in 0..500 {
        match CoordinatorLock::acquire(db.connect(), "r1") {
            Ok(mut lock) => return lock.check().unwrap(),
            Err(PgError::CoordinatorHeld { .. }) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!("the lock outlived its session");
}

#[test]
fn a_coordinator_whose_session_is_cut_learns_it_lost_the_lock() {
    let Some(db) = TestDb::new("coordinator lock lost") else {
        return;
    };
    let mut lock = CoordinatorLock::acquire(db.connect(), "r1").unwrap();
    let mut admin = db.connect();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE locktype = 'advisory' AND pid <> pg_backend_pid()
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .unwrap();
    let e = lock.check().unwrap_err();
    assert!(matches!(e, PgError::CoordinatorLost { .. }), "{e:?}");
}

#[test]
fn an_event_wakes_a_listening_connection() {
    let Some(db) = TestDb::new("event notification") else {
        return;
    };
    let mut c = db.migrated();
    let run = new_run(&mut c, "r1");
    let other = new_run(&mut c, "r2");
    let mut watcher = db.connect();
    listen(&mut watcher).unwrap();
    append_event(&mut c, &other, &sampled(0)).unwrap();
    // Another run's event is passed over.
    assert!(!wait_for_event(&mut watcher, &run, Duration::from_millis(200)).unwrap());
    let second = Event {
        t: 2.0,
        ..sampled(0)
    };
    let seq = append_event(&mut c, &run, &second).unwrap();
    assert!(wait_for_event(&mut watcher, &run, Duration::from_secs(30)).unwrap());
    let events = events_after(&mut watcher, &run, 0).unwrap();
    assert_eq!(events, [(seq, second)]);
    // The `t` column is the event's own time.
    let t: f64 = scalar(
        &mut c,
        "SELECT e.t FROM archgram.events e JOIN archgram.runs r ON r.id = e.run
         WHERE r.name = 'r1'",
    );
    assert_eq!(t, 2.0);
}

#[test]
fn events_commit_in_sequence_order() {
    let Some(db) = TestDb::new("event order") else {
        return;
    };
    let mut c = db.migrated();
    let run = new_run(&mut c, "r1");
    // A takes sequence number 1 and has not committed yet.
    let mut tx = c.transaction().unwrap();
    assert_eq!(append_event(&mut tx, &run, &sampled(1)).unwrap(), 1);
    let mut b = db.connect();
    let b_pid: i32 = scalar(&mut b, "SELECT pg_backend_pid()");
    let writer = {
        let run = run.clone();
        std::thread::spawn(move || append_event(&mut b, &run, &sampled(2)).unwrap())
    };
    // B must wait for A: were it to commit first, a reader would see event
    // 2 without event 1 and, resuming after 2, never see 1.
    let mut probe = db.connect();
    loop {
        assert!(
            !writer.is_finished(),
            "a later event committed before an earlier one"
        );
        let waiting: bool = probe
            .query_one(
                "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1",
                &[&b_pid],
            )
            .unwrap()
            .get(0);
        if waiting {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tx.commit().unwrap();
    assert_eq!(writer.join().unwrap(), 2);
    let ids: Vec<_> = events_after(&mut probe, &run, 0)
        .unwrap()
        .iter()
        .map(|(seq, e)| (*seq, e.id()))
        .collect();
    assert_eq!(ids, [(1, Some(1)), (2, Some(2))]);
}

/// The database's cost per candidate: one claim and one completion, each a
/// round trip to the server and a transaction. Prints the time; run with
/// `scripts/pg-throwaway.sh run cargo test --release --test postgres --
/// --ignored --nocapture`.
#[test]
#[ignore]
fn claim_and_complete_round_trip_time() {
    let n = 1000;
    let Some((_db, mut c, run)) = queue("round-trip timing", n) else {
        return;
    };
    let mut times = Vec::new();
    for _ in 0..n {
        let start = std::time::Instant::now();
        let got = claim(&mut c, &run, "w", 1, LEASE).unwrap();
        finish(&mut c, &run, got[0].record.id, "w").unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "claim+complete over {n} candidates: mean {mean:.3} ms, median {:.3} ms, p90 {:.3} ms, max {:.3} ms",
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        times[times.len() - 1]
    );
}

// The run's `Store` in the database.

/// The run `name` of `db` as a store location (the run must exist).
fn location(db: &TestDb, name: &str) -> Location {
    Location::Postgres {
        target: Box::new(db.target.clone()),
        run: name.to_string(),
    }
}

/// A fresh database holding the run `r1`, opened as a `Store`; `None`
/// when skipped.
fn pg_store(check: &str) -> Option<(TestDb, Box<dyn Store>)> {
    let db = TestDb::new(check)?;
    new_run(&mut db.migrated(), "r1");
    let store = location(&db, "r1").open().unwrap();
    Some((db, store))
}

/// A sled run store in a temporary folder.
fn sled_store() -> (tempfile::TempDir, Box<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let at = Location::Sled {
        store: dir.path().join("store"),
        events: dir.path().join("events.jsonl"),
    };
    let store = at.open().unwrap();
    (dir, store)
}

fn duplicate(id: u64, of: u64, stage: &str) -> Event {
    event(EventKind::Duplicate(Duplicate {
        id,
        of,
        stage: stage.into(),
        seconds_saved: 2.5,
    }))
}

fn failed(id: u64, reason: &str) -> Event {
    event(EventKind::Failed(Failed {
        id,
        reason: reason.into(),
        ..Failed::default()
    }))
}

fn trial(candidate: u64, purpose: &str, steps: usize, seed: u64, score: f64) -> TrialRecord {
    TrialRecord {
        candidate,
        purpose: purpose.into(),
        steps,
        seed,
        outcome: json!({"status": "ok", "score": score}),
    }
}

/// A run's worth of store calls: every kind of write the search makes.
fn script(store: &dyn Store) {
    store
        .put_meta(&json!({"seed": 7, "space": "quickstart", "lr": 3e-4}))
        .unwrap();
    store
        .put_value(
            "strategy",
            &json!({"population": [0, 4], "temperature": -0.0}),
        )
        .unwrap();
    store.put_value("next_id", &json!(4)).unwrap();
    store.put_value("next_id", &json!(6)).unwrap();
    store
        .append_event(&event(EventKind::RunStarted(RunStarted {
            name: "r1".into(),
            budget: 4,
            ..RunStarted::default()
        })))
        .unwrap();
    let finish = |r: &CandidateRecord, outcome: serde_json::Value, e: Event| {
        store.append_event(&sampled(r.id)).unwrap();
        store
            .record_evaluation(&Finished {
                record: r,
                outcome: &outcome,
                event: &e,
            })
            .unwrap();
    };
    let r0 = record(0, 10, 100);
    finish(
        &r0,
        json!({"status": "ok", "score": 0.09875483039931301, "wall_secs": 2.5,
               "loss": -0.0, "flops": 1e16}),
        evaluated(0, 0.09875483039931301),
    );
    finish(
        &record(1, 11, 100),
        json!({"status": "failed", "reason": "diverged", "wall_secs": 0.5}),
        failed(1, "diverged"),
    );
    // The same network as 0, and one that computes the same function.
    let same = CandidateRecord {
        duplicate_of: Some(0),
        ..record(2, 10, 100)
    };
    store
        .record_duplicate(&same, &duplicate(2, 0, "structural"))
        .unwrap();
    let alike = CandidateRecord {
        duplicate_of: Some(0),
        hashes: Hashes {
            structural: 12,
            functional: r0.hashes.functional,
        },
        ..record(3, 12, 100)
    };
    store
        .record_duplicate(&alike, &duplicate(3, 0, "functional"))
        .unwrap();
    // 0's network trained again for longer (a halving promotion), and a
    // degenerate network without a functional hash.
    let promoted = CandidateRecord {
        parent: Some(0),
        origin: "promotion to rung 1".into(),
        ..record(4, 10, 400)
    };
    finish(
        &promoted,
        json!({"status": "ok", "score": 0.5, "wall_secs": 10.0}),
        evaluated(4, 0.5),
    );
    let degenerate = CandidateRecord {
        hashes: Hashes {
            structural: 13,
            functional: None,
        },
        ..record(5, 13, 100)
    };
    finish(
        &degenerate,
        json!({"status": "ok", "score": 1.0 / 3.0, "wall_secs": 1.0}),
        evaluated(5, 1.0 / 3.0),
    );
    store
        .append_event(&event(EventKind::NewBest(NewBest {
            arch: "arch 4".into(),
            id: 4,
            score: 0.5,
        })))
        .unwrap();
    for t in [
        trial(4, "reeval", 400, 3, 0.25),
        trial(0, "confirm", 250, u64::MAX, 0.125),
        trial(0, "confirm", 250, 1, 0.1),
        trial(0, "confirm", 250, 1, 0.2),
    ] {
        store.put_trial(&t).unwrap();
    }
    store.flush().unwrap();
}

/// Everything a store answers about what [`script`] wrote.
#[derive(Debug, PartialEq)]
struct Reads {
    meta: Option<serde_json::Value>,
    values: Vec<Option<serde_json::Value>>,
    candidates: Vec<CandidateRecord>,
    candidate_briefs: Vec<CandidateBrief>,
    one_by_one: Vec<Option<CandidateRecord>>,
    has_candidate: Vec<bool>,
    outcomes: Vec<Option<serde_json::Value>>,
    briefs: Vec<Option<serde_json::Value>>,
    all_briefs: BTreeMap<u64, serde_json::Value>,
    has_outcome: Vec<bool>,
    ids: RecordedIds,
    structural: Vec<Option<u64>>,
    functional: Vec<Option<u64>>,
    counters: Counters,
    trials: Vec<TrialRecord>,
    events: Vec<Event>,
    marks: Vec<Mark>,
}

fn reads(store: &dyn Store) -> Reads {
    let ids = 0..7;
    let hashes = [10, 11, 12, 13, 99];
    Reads {
        meta: store.meta().unwrap(),
        values: ["strategy", "next_id", "absent"]
            .map(|k| store.value(k).unwrap())
            .to_vec(),
        candidates: store.candidates().unwrap(),
        candidate_briefs: store.candidate_briefs().unwrap(),
        one_by_one: ids.clone().map(|i| store.candidate(i).unwrap()).collect(),
        has_candidate: ids
            .clone()
            .map(|i| store.has_candidate(i).unwrap())
            .collect(),
        outcomes: ids.clone().map(|i| store.outcome(i).unwrap()).collect(),
        briefs: ids
            .clone()
            .map(|i| store.outcome_brief(i).unwrap())
            .collect(),
        all_briefs: store.outcome_briefs().unwrap().into_iter().collect(),
        has_outcome: ids.map(|i| store.has_outcome(i).unwrap()).collect(),
        ids: store.recorded_ids().unwrap(),
        structural: hashes.map(|h| store.by_structural(h).unwrap()).to_vec(),
        functional: hashes
            .map(|h| store.by_functional(h ^ 0xff).unwrap())
            .to_vec(),
        counters: store.counters().unwrap(),
        trials: store.trials().unwrap(),
        events: store.events().unwrap(),
        marks: store.event_marks().unwrap(),
    }
}

#[test]
fn the_same_store_calls_read_back_the_same_from_sled_and_postgres() {
    let Some((db, pg)) = pg_store("store conformance") else {
        return;
    };
    let (_dir, sled) = sled_store();
    script(sled.as_ref());
    script(pg.as_ref());
    let (want, got) = (reads(sled.as_ref()), reads(pg.as_ref()));
    assert_eq!(got, want);
    // What both read back is what was written, not merely the same.
    assert_eq!(got.meta.unwrap()["lr"], 3e-4);
    assert_eq!(got.values[1], Some(json!(6)));
    assert_eq!(got.values[2], None);
    let ids: Vec<u64> = got.candidates.iter().map(|c| c.id).collect();
    assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
    assert_eq!(got.one_by_one[3].as_ref().unwrap().duplicate_of, Some(0));
    assert_eq!(got.one_by_one[6], None);
    // The briefs are the records less their derivations and texts.
    let briefs: Vec<CandidateBrief> = got.candidates.iter().map(CandidateBrief::from).collect();
    assert_eq!(got.candidate_briefs, briefs);
    assert_eq!(
        got.has_candidate,
        [true, true, true, true, true, true, false]
    );
    let missing: Vec<bool> = got.outcomes.iter().map(Option::is_none).collect();
    assert_eq!(missing, [false, false, true, true, false, false, true]);
    // The briefs are there for the same candidates, with what ranking
    // reads and without the rest.
    let has: Vec<bool> = got.briefs.iter().map(Option::is_some).collect();
    assert_eq!(has, missing.iter().map(|m| !m).collect::<Vec<_>>());
    assert_eq!(got.has_outcome, has);
    // Read in one scan, the same briefs as one by one.
    let one_by_one: BTreeMap<u64, serde_json::Value> = (0..)
        .zip(&got.briefs)
        .filter_map(|(id, b)| Some((id, b.clone()?)))
        .collect();
    assert_eq!(got.all_briefs, one_by_one);
    let listed =
        |set: &std::collections::HashSet<u64>| (0..7).map(|i| set.contains(&i)).collect::<Vec<_>>();
    assert_eq!(listed(&got.ids.candidates), got.has_candidate);
    assert_eq!(listed(&got.ids.outcomes), got.has_outcome);
    let marks: Vec<Mark> = got.events.iter().map(Mark::of).collect();
    assert_eq!(got.marks, marks);
    assert!(marks.contains(&Mark::Finished(1)));
    assert_eq!(got.briefs[1].as_ref().unwrap()["reason"], "diverged");
    assert!(got.briefs[0].as_ref().unwrap().get("loss").is_none());
    assert_eq!(got.outcomes[1].as_ref().unwrap()["reason"], "diverged");
    let loss = got.outcomes[0].as_ref().unwrap()["loss"].as_f64().unwrap();
    assert_eq!(loss.to_bits(), (-0.0f64).to_bits());
    // The index points at the latest training of a network; duplicates
    // are not in it; a network without a functional hash only by structure.
    assert_eq!(got.structural, [Some(4), Some(1), None, Some(5), None]);
    assert_eq!(got.functional, [Some(4), Some(1), None, None, None]);
    assert_eq!(
        got.counters,
        Counters {
            structural_hits: 1,
            functional_hits: 1,
            misses: 4,
            seconds_saved: 5.0,
            evaluated: 3,
            failed: 1,
        }
    );
    let keys: Vec<(u64, u64, f64)> = got
        .trials
        .iter()
        .map(|t| (t.candidate, t.seed, t.outcome["score"].as_f64().unwrap()))
        .collect();
    assert_eq!(keys, [(0, 1, 0.2), (0, u64::MAX, 0.125), (4, 3, 0.25)]);
    let names: Vec<&str> = got.events.iter().map(Event::name).collect();
    assert_eq!(
        names,
        [
            "run_started",
            "sampled",
            "evaluated",
            "sampled",
            "failed",
            "duplicate",
            "duplicate",
            "sampled",
            "evaluated",
            "sampled",
            "evaluated",
            "new_best"
        ]
    );
    // A reader that does not open the store sees the same events.
    assert_eq!(location(&db, "r1").events().rest().unwrap(), got.events);
}

/// Floats that test a store's round trip: awkward ones by hand, and
/// finite ones from random bits.
fn awkward_floats() -> Vec<f64> {
    let mut out = vec![
        0.09875483039931301,
        0.1,
        1.0 / 3.0,
        0.30000000000000004,
        -0.0,
        1e16,
        -1e300,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        (1u64 << 53) as f64 + 2.0,
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < 300 {
        // xorshift64: reproducible bits without a generator crate.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = f64::from_bits(x);
        if f.is_finite() {
            out.push(f);
        }
    }
    out
}

/// Writes the floats into every kind of record and checks each comes
/// back bit for bit.
fn floats_round_trip(store: &dyn Store) {
    let floats = awkward_floats();
    for (i, &x) in floats.iter().enumerate() {
        let r = CandidateRecord {
            params: x,
            flops: x,
            ..record(i as u64, 5000 + i as u128, 100)
        };
        let outcome = json!({"status": "ok", "score": x});
        store
            .record_evaluation(&Finished {
                record: &r,
                outcome: &outcome,
                event: &evaluated(r.id, x),
            })
            .unwrap();
    }
    store.put_value("floats", &json!(floats)).unwrap();
    store.put_trial(&trial(0, "confirm", 100, 1, -0.0)).unwrap();
    let same = |back: f64, x: f64, what: &str| {
        assert_eq!(
            back.to_bits(),
            x.to_bits(),
            "{what}: {x:e} came back as {back:e}"
        )
    };
    for (i, &x) in floats.iter().enumerate() {
        let id = i as u64;
        let o = store.outcome(id).unwrap().unwrap();
        same(o["score"].as_f64().unwrap(), x, "outcome");
        let brief = store.outcome_brief(id).unwrap().unwrap();
        same(brief["score"].as_f64().unwrap(), x, "outcome brief");
        assert_eq!(o, json!({"status": "ok", "score": x}), "outcome {x:e}");
        same(store.candidate(id).unwrap().unwrap().params, x, "record");
    }
    assert_eq!(store.value("floats").unwrap(), Some(json!(floats)));
    let t = &store.trials().unwrap()[0];
    same(t.outcome["score"].as_f64().unwrap(), -0.0, "trial");
    for (e, &x) in store.events().unwrap().iter().zip(&floats) {
        let EventKind::Evaluated(e) = &e.kind else {
            panic!("{e:?}")
        };
        same(e.score, x, "event");
    }
}

#[test]
fn scores_read_back_are_the_exact_f64s_stored() {
    let Some((_db, pg)) = pg_store("exact floats") else {
        return;
    };
    floats_round_trip(pg.as_ref());
    // The same check holds sled to it.
    floats_round_trip(sled_store().1.as_ref());
}

/// The store's error, with its cause.
fn db_error(e: StoreError) -> PgError {
    match e {
        StoreError::Db(e) => e,
        e => panic!("not a database error: {e:?}"),
    }
}

#[test]
fn a_result_is_written_whole_or_not_at_all() {
    let Some((_db, store)) = pg_store("results are atomic") else {
        return;
    };
    let outcome = json!({"status": "ok", "score": 0.5, "wall_secs": 1.0});
    let first = record(1, 10, 100);
    store
        .record_evaluation(&Finished {
            record: &first,
            outcome: &outcome,
            event: &evaluated(1, 0.5),
        })
        .unwrap();
    let before = reads(store.as_ref());
    // The same candidate again, with another record and outcome.
    let again = CandidateRecord {
        text: "another text".into(),
        ..first.clone()
    };
    let e = store
        .record_evaluation(&Finished {
            record: &again,
            outcome: &json!({"status": "ok", "score": 0.9}),
            event: &evaluated(1, 0.9),
        })
        .unwrap_err();
    let e = db_error(e);
    assert!(matches!(e, PgError::AlreadyRecorded { id: 1, .. }), "{e:?}");
    assert!(e.to_string().contains("already recorded"), "{e}");
    assert_eq!(reads(store.as_ref()), before);
    // Another candidate with the same network and steps.
    let twin = record(2, 10, 100);
    let e = store
        .record_evaluation(&Finished {
            record: &twin,
            outcome: &outcome,
            event: &evaluated(2, 0.5),
        })
        .unwrap_err();
    assert!(
        matches!(db_error(e), PgError::TrainedTwice { id: 2, of: 1, .. }),
        "a second training of one network was taken"
    );
    assert_eq!(reads(store.as_ref()), before, "candidate 2 half written");
    // A duplicate of a candidate that has its result is refused too.
    let e = store
        .record_duplicate(
            &CandidateRecord {
                duplicate_of: Some(0),
                ..first.clone()
            },
            &duplicate(1, 0, "structural"),
        )
        .unwrap_err();
    assert!(matches!(
        db_error(e),
        PgError::AlreadyRecorded { id: 1, .. }
    ));
    assert_eq!(reads(store.as_ref()), before);
    // The store goes on working after the refusals.
    store
        .record_duplicate(
            &CandidateRecord {
                duplicate_of: Some(1),
                ..twin
            },
            &duplicate(2, 1, "structural"),
        )
        .unwrap();
    assert_eq!(store.candidate(2).unwrap().unwrap().duplicate_of, Some(1));
    assert_eq!(store.counters().unwrap().structural_hits, 1);
    assert_eq!(store.events().unwrap().len(), 2);
    // A trial is of a candidate the store has.
    let e = store
        .put_trial(&trial(7, "confirm", 100, 1, 0.5))
        .unwrap_err();
    assert!(
        matches!(db_error(e), PgError::NoCandidate { id: 7, .. }),
        "a trial of no candidate"
    );
    assert_eq!(store.trials().unwrap(), []);
}

/// Reads `source` until it has returned `n` events in all (errors, a lost
/// connection say, are read past), waiting for the writer; gives up after
/// `tries` reads.
fn follow(source: &mut dyn EventSource, n: usize) -> (Vec<Event>, usize) {
    let (mut got, mut errors) = (Vec::new(), 0);
    for _ in 0..3000 {
        match source.next_batch() {
            Ok(batch) => got.extend(batch),
            Err(_) => errors += 1,
        }
        if got.len() >= n {
            return (got, errors);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("only {} of {n} events came: {got:?}", got.len());
}

#[test]
fn a_feed_returns_each_event_once_in_order_as_they_commit() {
    let Some(db) = TestDb::new("event feed") else {
        return;
    };
    let at = location(&db, "r1");
    let mut feed = at.events();
    let e = feed.next_batch().unwrap_err();
    assert!(e.to_string().contains("no run named `r1`"), "{e}");
    new_run(&mut db.migrated(), "r1");
    new_run(&mut db.connect(), "other");
    let store = at.open().unwrap();
    store.append_event(&sampled(0)).unwrap();
    assert_eq!(feed.next_batch().unwrap(), [sampled(0)]);
    assert_eq!(feed.next_batch().unwrap(), []);
    // Another run's events are not this run's.
    let other = location(&db, "other").open().unwrap();
    other.append_event(&sampled(99)).unwrap();
    // Events from results, and from a writer on another thread while the
    // feed reads.
    store
        .record_evaluation(&Finished {
            record: &record(1, 10, 100),
            outcome: &json!({"status": "ok", "score": 0.5}),
            event: &evaluated(1, 0.5),
        })
        .unwrap();
    let n = 200;
    let writer = std::thread::spawn(move || {
        for id in 2..n {
            store.append_event(&sampled(id)).unwrap();
        }
        store
    });
    let (got, errors) = follow(feed.as_mut(), n as usize - 1);
    let store = writer.join().unwrap();
    assert_eq!(errors, 0);
    let ids: Vec<Option<u64>> = got.iter().map(Event::id).collect();
    assert_eq!(ids, (1..n).map(Some).collect::<Vec<_>>());
    assert_eq!(feed.next_batch().unwrap(), []);
    // Its connection cut: the next reads fail or reconnect, and then
    // return what was written meanwhile, each event once.
    db.connect()
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    drop(store);
    let store = at.open().unwrap();
    for id in n..n + 3 {
        store.append_event(&sampled(id)).unwrap();
    }
    let (got, _) = follow(feed.as_mut(), 3);
    let ids: Vec<Option<u64>> = got.iter().map(Event::id).collect();
    assert_eq!(ids, [Some(n), Some(n + 1), Some(n + 2)]);
    assert_eq!(feed.next_batch().unwrap(), []);
}

#[test]
fn a_location_names_a_run_in_a_database_and_opens_only_an_existing_one() {
    let Some(db) = TestDb::new("postgres location") else {
        return;
    };
    let url = std::env::var("ARCHGRAM_TEST_PG").unwrap();
    let at = Location::postgres(&url, "r1").unwrap();
    assert!(matches!(&at, Location::Postgres { run, .. } if run == "r1"));
    let at = location(&db, "nope");
    let e = db_error(at.open().err().expect("no such run"));
    assert!(matches!(e, PgError::NoRun { .. }), "{e:?}");
    // Opening brought the schema up to date first (there was none).
    let mut c = db.connect();
    let version: i32 = scalar(&mut c, "SELECT version FROM archgram.schema_version");
    assert_eq!(version, SCHEMA_VERSION);
}

/// `status`, `export` and `watch`'s event source on a run in the database,
/// through the CLI's `--db`: read as they read the same run in a folder.
mod read_commands {
    use super::*;
    use archgram::cli::DbFlag;
    use archgram::commands::locate::{locate, DB_ENV};
    use std::path::Path;
    use std::process::{Command, Output};

    fn archgram(args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_archgram"));
        c.args(args).env_remove(DB_ENV);
        c
    }

    fn run(c: &mut Command) -> Output {
        c.output().expect("run archgram")
    }

    fn ok(o: &Output) -> String {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout.clone()).unwrap()
    }

    /// Exit 2 with `fragment` in the message, and no password in it.
    fn bad(o: &Output, fragment: &str) -> String {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(fragment), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    }

    /// The address of `db` for the command line: the test server's, with
    /// the test's database (a URL's path replaced; a later libpq `dbname`
    /// overrides an earlier one).
    fn url(db: &TestDb) -> String {
        let server = std::env::var("ARCHGRAM_TEST_PG").unwrap();
        let Some(scheme) = server.find("://") else {
            return format!("{server} dbname={}", db.name);
        };
        let (base, query) = server.split_once('?').unwrap_or((&server, ""));
        let authority_end = base[scheme + 3..]
            .find('/')
            .map_or(base.len(), |i| scheme + 3 + i);
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("{}/{}{query}", &base[..authority_end], db.name)
    }

    /// Copies a run folder's store into the database run `name` through
    /// the `Store` calls a search makes: each result with its event, in
    /// the order the events were logged, then the trials.
    fn copy_run(folder: &Path, db: &TestDb, name: &str) {
        let at = Location::Sled {
            store: folder.join("store"),
            events: folder.join("events.jsonl"),
        };
        let sled = at.open().unwrap();
        let meta = sled.meta().unwrap().unwrap();
        let text = |f: &str| std::fs::read_to_string(folder.join(f)).unwrap();
        create_run(
            &mut db.migrated(),
            &NewRun {
                name,
                space_path: "space.ron",
                space_text: &text("space.ron"),
                grammar_path: "grammar.ron",
                grammar_text: &text("grammar.ron"),
                settings: &meta["settings"],
                hash_recipes: &meta["hash_recipes"],
            },
        )
        .unwrap();
        let pg = location(db, name).open().unwrap();
        pg.put_meta(&meta).unwrap();
        for e in sled.events().unwrap() {
            let id = e.id().unwrap_or(u64::MAX);
            match &e.kind {
                EventKind::Evaluated(_) | EventKind::Failed(_) => {
                    let record = sled.candidate(id).unwrap().unwrap();
                    let outcome = sled.outcome(id).unwrap().unwrap();
                    pg.record_evaluation(&Finished {
                        record: &record,
                        outcome: &outcome,
                        event: &e,
                    })
                    .unwrap();
                }
                EventKind::Duplicate(_) => {
                    let record = sled.candidate(id).unwrap().unwrap();
                    pg.record_duplicate(&record, &e).unwrap();
                }
                _ => pg.append_event(&e).unwrap(),
            }
        }
        for t in sled.trials().unwrap() {
            pg.put_trial(&t).unwrap();
        }
    }

    /// The files `export` wrote into `dir`, by name, and their text.
    fn files(dir: &Path) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn status_and_export_read_a_database_run_as_they_read_its_folder() {
        let Some(db) = TestDb::new("status and export --db") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().to_str().unwrap();
        // A short search with its confirm stage, so the run has trials.
        ok(&run(&mut archgram(&[
            "search",
            "--space",
            "spaces/quickstart.ron",
            "--budget",
            "5",
            "--seed",
            "3",
            "--workers",
            "1",
            "--steps",
            "10",
            "--no-tui",
            "--runs",
            runs,
            "--name",
            "q",
        ])));
        let folder = dir.path().join("q");
        let f = folder.to_str().unwrap();
        let sled_json = ok(&run(&mut archgram(&["status", f, "--json"])));
        let sled_text = ok(&run(&mut archgram(&["status", f])));
        let sled_out = dir.path().join("sled-export");
        let o = sled_out.to_str().unwrap();
        ok(&run(&mut archgram(&[
            "export", f, "--top", "3", "--format", "json", "--out", o,
        ])));
        copy_run(&folder, &db, "q1");

        let url = url(&db);
        let pg_json = ok(&run(&mut archgram(&[
            "status", "q1", "--db", &url, "--json",
        ])));
        let (want, got): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(&sled_json).unwrap(),
            serde_json::from_str(&pg_json).unwrap(),
        );
        assert_eq!(got, want);
        assert_eq!(got["evaluations"], 5, "{got}");
        assert!(got["best"]["arch"].is_string(), "{got}");
        assert!(!got["confirmed"].as_array().unwrap().is_empty(), "{got}");
        // ARCHGRAM_DB stands in for --db.
        let text = ok(&run(archgram(&["status", "q1"]).env(DB_ENV, &url)));
        assert_eq!(text, sled_text);
        assert!(text.contains("winner #"), "{text}");

        // export: the same files, and by default under export/RUN in the
        // current folder (a database run has no folder).
        let cwd = tempfile::tempdir().unwrap();
        let printed = ok(&run(archgram(&[
            "export", "q1", "--db", &url, "--top", "3", "--format", "json",
        ])
        .current_dir(cwd.path())));
        assert!(printed.lines().count() == 3, "{printed}");
        assert!(
            printed.lines().all(|l| l.starts_with("export/q1/")),
            "{printed}"
        );
        let (want, got) = (files(&sled_out), files(&cwd.path().join("export/q1")));
        assert_eq!(got.len(), 3);
        assert_eq!(got, want);

        // fidelity: refused while a coordinator holds the run, as a run
        // folder's store is while its search holds it; then it writes its
        // trials and event into the database run.
        let fidelity = [
            "fidelity",
            "q1",
            "--db",
            &url,
            "--top",
            "2",
            "--spread",
            "0",
            "--seeds",
            "1",
            "--long-steps",
            "12",
            "--workers",
            "1",
        ];
        let lock = CoordinatorLock::acquire(db.connect(), "q1").unwrap();
        let o = run(&mut archgram(&fidelity));
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("already has a coordinator"), "{err}");
        drop(lock);
        ok(&run(&mut archgram(&fidelity)));
        let mut c = db.connect();
        let stored: i64 = scalar(
            &mut c,
            "SELECT count(*) FROM archgram.trials WHERE purpose = 'fidelity'",
        );
        let logged: i64 = scalar(
            &mut c,
            "SELECT count(*) FROM archgram.events
             WHERE body->>'event' = 'trial' AND body->>'purpose' = 'fidelity'",
        );
        assert!(stored >= 4, "2 candidates at 2 budgets at least: {stored}");
        assert_eq!(logged, stored);
        let pg_json = ok(&run(&mut archgram(&[
            "status", "q1", "--db", &url, "--json",
        ])));
        let got: serde_json::Value = serde_json::from_str(&pg_json).unwrap();
        assert_eq!(got["fidelity"]["long_steps"], 12, "{got}");
    }

    #[test]
    fn a_missing_run_or_a_newer_schema_exits_2_and_changes_nothing() {
        let Some(db) = TestDb::new("--db errors") else {
            return;
        };
        let url = url(&db);
        // No schema at all: no runs; reading it creates nothing.
        for cmd in ["status", "export", "watch", "fidelity"] {
            let o = run(&mut archgram(&[cmd, "nope", "--db", &url]));
            bad(&o, "no run named `nope` in the database");
        }
        let absent: bool = scalar(
            &mut db.connect(),
            "SELECT to_regclass('archgram.schema_version') IS NULL",
        );
        assert!(absent, "a read created the schema");
        let mut c = db.migrated();
        new_run(&mut c, "r1");
        bad(
            &run(&mut archgram(&["status", "r2", "--db", &url])),
            "no run named `r2`",
        );
        c.execute(
            "UPDATE archgram.schema_version SET version = version + 1",
            &[],
        )
        .unwrap();
        let o = run(&mut archgram(&["status", "r1", "--db", &url]));
        bad(&o, "newer than this archgram knows");
    }

    /// `watch`'s source on a database run returns an event once it is
    /// committed (the dashboard draws what each call returns).
    #[test]
    fn watch_follows_a_database_run_as_events_commit() {
        let Some(db) = TestDb::new("watch --db") else {
            return;
        };
        new_run(&mut db.migrated(), "r1");
        let flag = DbFlag { db: Some(url(&db)) };
        let at = locate(Path::new("r1"), &flag).unwrap();
        let mut feed = at.follow().unwrap();
        assert_eq!(feed.next_batch().unwrap(), []);
        let store = location(&db, "r1").open().unwrap();
        store.append_event(&sampled(1)).unwrap();
        let (got, errors) = follow(feed.as_mut(), 1);
        assert_eq!((got, errors), (vec![sampled(1)], 0));
        let missing = locate(Path::new("r2"), &flag).unwrap();
        let e = missing.follow().err().expect("no run r2");
        assert_eq!(e.exit_code(), 2);
        assert!(e.report().contains("no run named `r2`"), "{}", e.report());
    }

    /// How a reader of a database run's events learns of one: the time
    /// from the writer's `append_event` call to the reader's getting the
    /// event, and the queries the reader made, for `watch`'s source
    /// (LISTEN/NOTIFY) and for polling the events table, each read
    /// back-to-back and at the dashboard's frame (100 ms). Prints the
    /// numbers; run with `scripts/pg-throwaway.sh run cargo test --release
    /// --test postgres -- --ignored --nocapture event_delivery`.
    #[test]
    #[ignore]
    fn event_delivery_latency() {
        let Some(db) = TestDb::new("event delivery timing") else {
            return;
        };
        let run = new_run(&mut db.migrated(), "r1");
        let n = 100u64;
        let gap = Duration::from_millis(23);
        let modes = [
            (
                "LISTEN/NOTIFY (EventFeed), back-to-back",
                true,
                Duration::ZERO,
            ),
            (
                "LISTEN/NOTIFY (EventFeed), every 100 ms",
                true,
                Duration::from_millis(100),
            ),
            ("polling SELECT, back-to-back", false, Duration::ZERO),
            (
                "polling SELECT, every 100 ms",
                false,
                Duration::from_millis(100),
            ),
        ];
        for (round, (what, listen, every)) in modes.into_iter().enumerate() {
            let base = round as u64 * n;
            let mut feed = location(&db, "r1").events();
            feed.next_batch().unwrap();
            let mut poller = db.connect();
            let mut last = events_after(&mut poller, &run, 0)
                .unwrap()
                .last()
                .map_or(0, |e| e.0);
            let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let writer = {
                let (store, sent) = (location(&db, "r1").open().unwrap(), sent.clone());
                std::thread::spawn(move || {
                    let mut commit = Vec::new();
                    for id in base..base + n {
                        std::thread::sleep(gap);
                        let at = std::time::Instant::now();
                        sent.lock().unwrap().push(at);
                        store.append_event(&sampled(id)).unwrap();
                        commit.push(at.elapsed().as_secs_f64() * 1e3);
                    }
                    commit
                })
            };
            let (mut latency, mut queries, start) = (Vec::new(), 0u64, std::time::Instant::now());
            while (latency.len() as u64) < n {
                let got: Vec<Event> = if listen {
                    let batch = feed.next_batch().unwrap();
                    // A batch read after an announcement is one query.
                    queries += u64::from(!batch.is_empty());
                    batch
                } else {
                    queries += 1;
                    let batch = events_after(&mut poller, &run, last).unwrap();
                    last = batch.last().map_or(last, |e| e.0);
                    batch.into_iter().map(|e| e.1).collect()
                };
                let now = std::time::Instant::now();
                for e in got {
                    let at = sent.lock().unwrap()[(e.id().unwrap() - base) as usize];
                    latency.push((now - at).as_secs_f64() * 1e3);
                }
                std::thread::sleep(every);
            }
            let secs = start.elapsed().as_secs_f64();
            let mut commit = writer.join().unwrap();
            let q = |v: &mut Vec<f64>, p: f64| {
                v.sort_by(f64::total_cmp);
                v[((v.len() - 1) as f64 * p) as usize]
            };
            println!(
                "{what}: append->delivery median {:.2} ms, p90 {:.2} ms, max {:.2} ms; \
                 {:.1} queries/s; the append itself median {:.2} ms",
                q(&mut latency, 0.5),
                q(&mut latency, 0.9),
                q(&mut latency, 1.0),
                queries as f64 / secs,
                q(&mut commit, 0.5),
            );
        }
    }
}
