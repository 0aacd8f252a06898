//! A search shared through PostgreSQL, as processes: `search --db` (the
//! coordinator), `archgram worker`s and `resume --db`, killed with SIGKILL
//! where the test says so. Runs against the server `ARCHGRAM_TEST_PG`
//! names (`scripts/pg-throwaway.sh run cargo test --release --test
//! distributed`); reported as skipped without one.

mod common;

use archgram::store::postgres::Target;
use common::pg::TestDb;
use postgres::Client;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A database of its own on the test server, and its address for the
/// processes (the test server trusts its users: no password is left out).
struct Db {
    db: TestDb,
    url: String,
}

impl Db {
    fn new(check: &str) -> Option<Db> {
        let db = TestDb::new(check)?;
        let url = db.target.redacted();
        Some(Db { db, url })
    }

    fn client(&self) -> Client {
        self.db.migrated()
    }

    /// One number a query gives (0 while the run does not exist yet).
    fn count(&self, c: &mut Client, sql: &str) -> i64 {
        c.query_opt(sql, &[])
            .ok()
            .flatten()
            .map_or(0, |r| r.get::<_, i64>(0))
    }
}

fn archgram(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_archgram"));
    c.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn coordinator(db: &Db, name: &str, budget: &str, steps: &str) -> Child {
    archgram(&[
        "search",
        "--space",
        "spaces/quickstart.ron",
        "--db",
        &db.url,
        "--name",
        name,
        "--budget",
        budget,
        "--steps",
        steps,
        "--strategy",
        "random",
        "--no-confirm",
    ])
    .spawn()
    .unwrap()
}

fn worker(db: &Db, name: &str, lease: &str) -> Child {
    archgram(&["worker", "--db", &db.url, "--run", name, "--lease", lease])
        .spawn()
        .unwrap()
}

/// Waits for `cond`; a hang fails the test instead of stalling it.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finished(child: Child) -> Output {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// How many results a worker's last line says it recorded.
fn recorded(out: &Output) -> usize {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("worker done: "))
        .unwrap_or_else(|| panic!("no summary in {text}"));
    line["worker done: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// What a finished run holds: every trained candidate has one outcome,
/// none is left waiting, the counters say `budget` trainings, and the
/// status that the run's events give (best, Pareto front) is the one its
/// outcomes give.
fn check_finished_run(db: &Db, name: &str, budget: i64) {
    let mut c = db.client();
    let run: i64 = c
        .query_one("SELECT id FROM archgram.runs WHERE name = $1", &[&name])
        .unwrap()
        .get(0);
    let q = |c: &mut Client, sql: &str| -> i64 { c.query_one(sql, &[&run]).unwrap().get(0) };
    assert_eq!(
        q(
            &mut c,
            "SELECT count(*) FROM archgram.candidates WHERE run = $1 AND status IN ('pending', 'claimed')"
        ),
        0,
        "nothing left waiting"
    );
    assert_eq!(
        q(
            &mut c,
            "SELECT count(*) FROM archgram.outcomes WHERE run = $1"
        ),
        budget,
        "one outcome per trained candidate, the budget's worth"
    );
    assert_eq!(
        q(
            &mut c,
            "SELECT evaluated + failed FROM archgram.counters WHERE run = $1"
        ),
        budget
    );
    let store =
        archgram::store::postgres::PgStore::open(&Target::parse(&db.url).unwrap(), name).unwrap();
    use archgram::store::Store;
    let status = archgram::commands::status_of(&store.events().unwrap());
    assert_eq!(status.evaluations, budget as u64);
    // The best and the front from the outcomes themselves.
    let mut points = Vec::new();
    for cand in store.candidates().unwrap() {
        if cand.duplicate_of.is_some() {
            continue;
        }
        let o = store
            .outcome(cand.id)
            .unwrap()
            .expect("every candidate trained");
        if o["status"] == "ok" {
            points.push(archgram::search::pareto::Point {
                id: cand.id,
                score: o["score"].as_f64().unwrap(),
                active_params: cand.active_params,
                flops: cand.flops,
            });
        }
    }
    let best = points
        .iter()
        .max_by(|a, b| a.score.total_cmp(&b.score))
        .unwrap();
    assert_eq!(status.best.as_ref().unwrap()["id"], best.id);
    let ids = |v: &[archgram::search::pareto::Point]| {
        let mut ids: Vec<u64> = v.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(
        ids(&status.pareto),
        ids(&archgram::search::pareto::front(&points))
    );
}

#[test]
fn a_coordinator_and_two_workers_train_each_candidate_once() {
    let Some(db) = Db::new("a distributed search (coordinator and two workers)") else {
        return;
    };
    let coord = coordinator(&db, "three", "8", "20");
    let mut c = db.client();
    wait_until("the run", || {
        db.count(&mut c, "SELECT count(*) FROM archgram.runs") == 1
    });
    let workers = [worker(&db, "three", "60"), worker(&db, "three", "60")];
    let out = finished(coord);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("done (budget spent): 8 evaluations"),
        "{text}"
    );
    let trained: usize = workers.map(|w| recorded(&finished(w))).iter().sum();
    assert_eq!(trained, 8, "the workers trained the budget between them");
    check_finished_run(&db, "three", 8);
    // A worker of another archgram version trains nothing.
    c.execute(
        "UPDATE archgram.runs SET archgram_version = '0.0.0-other'",
        &[],
    )
    .unwrap();
    let other = archgram(&["worker", "--db", &db.url, "--run", "three"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(2), "{err}");
    assert!(
        err.contains("started by archgram 0.0.0-other") && err.contains("trains nothing"),
        "{err}"
    );
}

#[test]
fn a_shared_run_refuses_halving_before_it_creates_anything() {
    let Some(db) = Db::new("search --db refusing successive halving") else {
        return;
    };
    let out = archgram(&[
        "search",
        "--space",
        "spaces/quickstart.ron",
        "--db",
        &db.url,
        "--strategy",
        "halving",
    ])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("successive halving"), "{err}");
    let mut c = db.client();
    assert_eq!(db.count(&mut c, "SELECT count(*) FROM archgram.runs"), 0);
}

#[test]
fn a_second_coordinator_is_refused_and_resume_takes_over_a_killed_one() {
    let Some(db) = Db::new("a distributed search whose coordinator is killed") else {
        return;
    };
    let mut first = coordinator(&db, "taken", "6", "20");
    let mut c = db.client();
    wait_until("the first candidates on the queue", || {
        db.count(&mut c, "SELECT count(*) FROM archgram.candidates") >= 1
    });
    let second = archgram(&["resume", "taken", "--db", &db.url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    // Exit 1, as for a run folder another process holds.
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("already has a coordinator"), "{err}");
    let w = worker(&db, "taken", "60");
    wait_until("two results", || {
        db.count(&mut c, "SELECT count(*) FROM archgram.outcomes") >= 2
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let resumed = finished(
        archgram(&["resume", "taken", "--db", &db.url])
            .spawn()
            .unwrap(),
    );
    let text = String::from_utf8_lossy(&resumed.stdout);
    assert!(text.contains("(resumed)"), "{text}");
    assert!(
        text.contains("done (budget spent): 6 evaluations"),
        "{text}"
    );
    let wout = finished(w);
    // On a mismatch, what the database holds says who trained what.
    let outcomes: Vec<(i64, String)> = c
        .query(
            "SELECT candidate, worker FROM archgram.outcomes ORDER BY candidate",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let events: Vec<String> = c
        .query("SELECT body::text FROM archgram.events ORDER BY seq", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        recorded(&wout),
        6,
        "{}\n{outcomes:?}\n{}",
        String::from_utf8_lossy(&wout.stdout),
        events.join("\n")
    );
    check_finished_run(&db, "taken", 6);
}

#[test]
fn a_killed_workers_candidate_is_trained_by_another_once_its_lease_expires() {
    let Some(db) = Db::new("a distributed search whose worker is killed") else {
        return;
    };
    // Long enough trainings that the kill lands in the middle of one.
    let coord = coordinator(&db, "lease", "2", "300");
    let mut c = db.client();
    wait_until("the run", || {
        db.count(&mut c, "SELECT count(*) FROM archgram.runs") == 1
    });
    let mut doomed = worker(&db, "lease", "1");
    wait_until("a claim", || {
        db.count(
            &mut c,
            "SELECT count(*) FROM archgram.candidates WHERE status = 'claimed'",
        ) == 1
    });
    let held: i64 = c
        .query_one(
            "SELECT id FROM archgram.candidates WHERE status = 'claimed'",
            &[],
        )
        .unwrap()
        .get(0);
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let survivor = worker(&db, "lease", "1");
    finished(coord);
    assert_eq!(recorded(&finished(survivor)), 2);
    let row = c
        .query_one(
            "SELECT c.attempts, o.worker FROM archgram.candidates c
             JOIN archgram.outcomes o ON o.run = c.run AND o.candidate = c.id
             WHERE c.id = $1",
            &[&held],
        )
        .unwrap();
    assert_eq!(
        row.get::<_, i32>(0),
        2,
        "claimed again after the lease ran out"
    );
    check_finished_run(&db, "lease", 2);
}

#[test]
fn a_candidate_whose_leases_all_ran_out_counts_against_the_budget_of_a_resumed_run() {
    let Some(db) = Db::new("a resumed run with a candidate that ran out of attempts") else {
        return;
    };
    let mut first = coordinator(&db, "lapsed", "3", "20");
    let mut c = db.client();
    wait_until("two candidates on the queue", || {
        db.count(&mut c, "SELECT count(*) FROM archgram.candidates") >= 2
    });
    first.kill().unwrap();
    first.wait().unwrap();
    // As if workers had died holding the oldest candidate on each of its
    // attempts: the next claim ends it failed, with no outcome.
    c.execute(
        "UPDATE archgram.candidates
         SET status = 'claimed', attempts = 3, lease_owner = 'gone',
             lease_expires = now() - interval '1 second'
         WHERE id = (SELECT min(id) FROM archgram.candidates)",
        &[],
    )
    .unwrap();
    let w = worker(&db, "lapsed", "60");
    wait_until("the lapsed candidate ended failed", || {
        db.count(
            &mut c,
            "SELECT count(*) FROM archgram.candidates WHERE status = 'failed'",
        ) == 1
    });
    let resumed = finished(
        archgram(&["resume", "lapsed", "--db", &db.url])
            .spawn()
            .unwrap(),
    );
    let text = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        text.contains("done (budget spent): 3 evaluations"),
        "{text}"
    );
    assert_eq!(recorded(&finished(w)), 2, "two trained, one failed: 3");
    assert_eq!(
        db.count(&mut c, "SELECT evaluated + failed FROM archgram.counters"),
        3,
        "no training beyond the budget"
    );
}

fn tmux(args: &[&str]) -> bool {
    Command::new("tmux")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn screen(session: &str) -> String {
    Command::new("tmux")
        .args(["capture-pane", "-p", "-t", session])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A coordinator in a terminal shows the dashboard a search on one machine
/// shows, fed by its workers' results.
#[test]
fn a_coordinator_in_a_terminal_shows_the_dashboard() {
    if !common::tmux_available() {
        common::skip(
            "a_coordinator_in_a_terminal_shows_the_dashboard",
            "tmux is not installed",
        );
        return;
    }
    let Some(db) = Db::new("a coordinator's dashboard") else {
        return;
    };
    let session = format!("archgram-dist-{}", std::process::id());
    let cmd = format!(
        "{} search --space spaces/quickstart.ron --db '{}' --name shown --budget 3 --steps 20 --strategy random --no-confirm",
        env!("CARGO_BIN_EXE_archgram"),
        db.url
    );
    assert!(common::tmux_session(&session, &cmd));
    let mut c = db.client();
    wait_until("the run", || {
        db.count(&mut c, "SELECT count(*) FROM archgram.runs") == 1
    });
    let w = worker(&db, "shown", "60");
    let mut last = String::new();
    wait_until("the dashboard to show the finished search", || {
        last = screen(&session);
        last.contains("search ended")
    });
    assert!(last.contains("top candidates"), "{last}");
    assert!(last.contains("3/3"), "{last}");
    assert!(tmux(&["send-keys", "-t", &session, "q"]));
    wait_until("the coordinator to quit", || {
        !tmux(&["has-session", "-t", &session])
    });
    assert_eq!(recorded(&finished(w)), 3);
    check_finished_run(&db, "shown", 3);
}
