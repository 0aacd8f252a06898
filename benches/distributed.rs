//! A search shared through PostgreSQL: evaluations per minute with one and
//! with two worker processes on the quickstart space, and the database's
//! cost per candidate (a worker's claim and result write) against a
//! candidate's training time.
//!
//! `cargo bench --bench distributed` needs a server: it uses the one
//! `ARCHGRAM_TEST_PG` names (`scripts/pg-throwaway.sh run cargo bench
//! --bench distributed`) and says so and stops without one. Environment:
//! `DIST_BUDGET` (candidates per search, default 16), `DIST_STEPS`
//! (training steps, default the space's), `DIST_WORKERS` (worker process
//! counts, default `1,2`). Each search trains the same candidates (random
//! strategy, one seed), one at a time per worker, with no confirm stage;
//! its time runs from the first worker's start to the coordinator's end.

use archgram::store::postgres::{
    claim, complete, create_run, enqueue, migrate, open_run, NewRun, Target,
};
use archgram::store::{Event, Finished};
use postgres::Client;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// A fresh database on the server, and its address.
fn database(server: &Target, name: &str) -> String {
    let mut admin = server.connect().expect("connect to ARCHGRAM_TEST_PG");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    server.with_dbname(name).redacted()
}

fn archgram(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_archgram"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn wait_ok(mut c: Child) {
    assert!(c.wait().unwrap().success());
}

/// Seconds a search of `budget` candidates takes with `workers` worker
/// processes, and the mean training time of its candidates.
fn search(url: &str, workers: usize, budget: &str, steps: &str) -> (f64, f64) {
    let coord = archgram(&[
        "search",
        "--space",
        "spaces/quickstart.ron",
        "--db",
        url,
        "--name",
        "bench",
        "--budget",
        budget,
        "--steps",
        steps,
        "--strategy",
        "random",
        "--no-confirm",
    ]);
    let mut c = Target::parse(url).unwrap().connect().unwrap();
    migrate(&mut c).unwrap();
    while open_run(&mut c, "bench").is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let ws: Vec<Child> = (0..workers)
        .map(|_| archgram(&["worker", "--db", url, "--run", "bench"]))
        .collect();
    wait_ok(coord);
    let secs = start.elapsed().as_secs_f64();
    ws.into_iter().for_each(wait_ok);
    let train: f64 = c
        .query_one(
            "SELECT avg((outcome->>'wall_secs')::float8) FROM archgram.outcomes",
            &[],
        )
        .unwrap()
        .get(0);
    (secs, train)
}

/// Mean seconds of a worker's database work for one candidate (its claim
/// and its result's write), over the candidates of the run at `from`,
/// replayed into a fresh run at `url`.
fn db_cost(from: &str, url: &str) -> f64 {
    let mut src = Target::parse(from).unwrap().connect().unwrap();
    let run = open_run(&mut src, "bench").unwrap();
    let id = run_id(&mut src);
    let rows = src
        .query(
            "SELECT c.record, o.outcome FROM archgram.candidates c
             JOIN archgram.outcomes o ON o.run = c.run AND o.candidate = c.id
             WHERE c.run = $1 ORDER BY c.id",
            &[&id],
        )
        .unwrap();
    let mut c: Client = Target::parse(url).unwrap().connect().unwrap();
    migrate(&mut c).unwrap();
    let copy = create_run(
        &mut c,
        &NewRun {
            name: "replay",
            space_path: &run.space_path,
            space_text: &run.space_text,
            grammar_path: &run.grammar_path,
            grammar_text: &run.grammar_text,
            settings: &run.settings,
            hash_recipes: &run.hash_recipes,
        },
    )
    .unwrap();
    let jobs: Vec<(archgram::store::CandidateRecord, serde_json::Value)> = rows
        .iter()
        .map(|r| (serde_json::from_value(r.get(0)).unwrap(), r.get(1)))
        .collect();
    for (record, _) in &jobs {
        enqueue(&mut c, &copy, record).unwrap();
    }
    let lease = Duration::from_secs(60);
    let start = Instant::now();
    for (record, outcome) in &jobs {
        let got = claim(&mut c, &copy, "bench", 1, lease).unwrap();
        assert_eq!(got[0].record.id, record.id);
        let event = Event::new(archgram::store::EventKind::Evaluated(Default::default()));
        complete(
            &mut c,
            &copy,
            "bench",
            &Finished {
                record,
                outcome,
                event: &event,
            },
        )
        .unwrap();
    }
    start.elapsed().as_secs_f64() / jobs.len() as f64
}

fn run_id(c: &mut Client) -> i64 {
    c.query_one("SELECT id FROM archgram.runs WHERE name = 'bench'", &[])
        .unwrap()
        .get(0)
}

fn main() {
    let Ok(server) = std::env::var("ARCHGRAM_TEST_PG") else {
        println!("distributed: skipped, ARCHGRAM_TEST_PG names no PostgreSQL server (run it under scripts/pg-throwaway.sh)");
        return;
    };
    let server = Target::parse(&server).unwrap();
    let budget = env_or("DIST_BUDGET", "16");
    let steps = env_or("DIST_STEPS", "250");
    let counts: Vec<usize> = env_or("DIST_WORKERS", "1,2")
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("DIST_WORKERS: counts, comma-separated")
        })
        .collect();
    let n: f64 = budget.parse().unwrap();
    let mut first: Option<f64> = None;
    for &k in &counts {
        let url = database(&server, &format!("archgram_bench_{k}"));
        let (secs, train) = search(&url, k, &budget, &steps);
        let per_min = n / secs * 60.0;
        let speedup = first.map_or(1.0, |f| per_min / f);
        first.get_or_insert(per_min);
        println!(
            "{k} worker(s): {budget} candidates × {steps} steps in {secs:.1} s = {per_min:.1} evaluations/min ({speedup:.2}× one worker); mean training {train:.2} s"
        );
        if k == counts[0] {
            let replay = database(&server, "archgram_bench_replay");
            let cost = db_cost(&url, &replay);
            println!(
                "database per candidate (claim + result write): {:.2} ms = {:.2}% of a {train:.2} s training",
                cost * 1e3,
                cost / train * 100.0
            );
        }
    }
}
