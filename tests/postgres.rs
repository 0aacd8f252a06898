//! The PostgreSQL run store against a real server: the schema and its
//! migrations, the work queue (claims, leases, failures, idempotent
//! results), the coordinator lock, events and their announcements.
//!
//! The server is the one `ARCHGRAM_TEST_PG` names (a `postgres://` URL or
//! libpq `key=value` string for a user that may create databases);
//! `scripts/pg-throwaway.sh run cargo test --release --test postgres` starts
//! a throwaway one. Each test works in a database of its own, created for
//! it and dropped after, so tests run in parallel and leave nothing behind.

mod common;

use archgram::grammar::Derivation;
use archgram::hash::Hashes;
use archgram::store::events::{Evaluated, Failed, Sampled};
use archgram::store::postgres::{
    append_event, claim, complete, counters, counts, create_run, enqueue, events_after, fail,
    heartbeat, listen, migrate, migrate_with, open_run, open_run_for_worker, wait_for_event,
    Completion, CoordinatorLock, Failure, NewRun, PgError, QueueCounts, Run, Target, MAX_ATTEMPTS,
    SCHEMA_VERSION, VERSION,
};
use archgram::store::{CandidateRecord, Event, EventKind, Finished};
use postgres::Client;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A database made for one test, dropped when the test ends (passed or
/// not).
struct TestDb {
    server: Target,
    name: String,
    target: Target,
}

impl TestDb {
    /// A fresh database on the test server, or `None` (reported as
    /// skipped) when `ARCHGRAM_TEST_PG` is unset.
    fn new(check: &str) -> Option<TestDb> {
        let Ok(url) = std::env::var("ARCHGRAM_TEST_PG") else {
            common::skip(
                check,
                "ARCHGRAM_TEST_PG names no PostgreSQL server (start one with `scripts/pg-throwaway.sh`)",
            );
            return None;
        };
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let server = Target::parse(&url).expect("ARCHGRAM_TEST_PG");
        let name = format!(
            "archgram_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = server.connect().expect("connect to ARCHGRAM_TEST_PG");
        // Two statements: neither may run inside a transaction block.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin.batch_execute(&sql).unwrap();
        }
        let target = server.with_dbname(&name);
        Some(TestDb {
            server,
            name,
            target,
        })
    }

    fn connect(&self) -> Client {
        self.target.connect().unwrap()
    }

    /// A connection to the database with archgram's schema in it.
    fn migrated(&self) -> Client {
        let mut c = self.connect();
        migrate(&mut c).unwrap();
        c
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = self.server.connect() {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

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
    assert_eq!(events, [(1, evaluated(1, 0.5))]);
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
