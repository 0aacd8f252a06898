//! Searches end to end: determinism, kill -9 and resume, SIGINT, status
//! and export.

mod common;

use archgram::store::{read_events, EventKind, SledStore, Store};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_archgram"))
}

fn search_args<'a>(runs: &'a str, name: &'a str, budget: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "search",
        "--space",
        "spaces/quickstart.ron",
        "--budget",
        budget,
        "--seed",
        "3",
        "--workers",
        "1",
        "--steps",
        steps,
        "--no-tui",
        "--runs",
        runs,
        "--name",
        name,
    ]
}

/// (id, text, structural hash, functional hash, score, duplicate of).
type Row = (u64, String, u128, Option<u128>, Option<f64>, Option<u64>);

/// Every candidate of a run.
fn snapshot(run: &Path) -> Vec<Row> {
    let s = SledStore::open(&run.join("store")).unwrap();
    s.candidates()
        .unwrap()
        .into_iter()
        .map(|c| {
            let score = s
                .outcome(c.id)
                .unwrap()
                .map(|o| archgram::search::score_of(&o));
            (
                c.id,
                c.text,
                c.hashes.structural,
                c.hashes.functional,
                score,
                c.duplicate_of,
            )
        })
        .collect()
}

#[test]
fn same_seed_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().to_str().unwrap();
    for name in ["a", "b"] {
        let o = bin()
            .args(search_args(runs, name, "6", "15"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (a, b) = (
        snapshot(&dir.path().join("a")),
        snapshot(&dir.path().join("b")),
    );
    assert!(a.iter().filter(|c| c.4.is_some()).count() >= 6);
    assert_eq!(a, b);
}

fn evaluated_ids(run: &Path) -> Vec<u64> {
    read_events(&run.join("events.jsonl"))
        .unwrap_or_default()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Evaluated(_) | EventKind::Failed(_)))
        .map(|e| e.id().unwrap())
        .collect()
}

/// A search in the background, its output discarded.
fn spawn_quiet(args: Vec<&str>) -> std::process::Child {
    bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for_evaluations(run: &Path, n: usize, child: &mut std::process::Child) {
    let start = Instant::now();
    while evaluated_ids(run).len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "search made no progress"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("search exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_then_resume_loses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().to_str().unwrap();
    let run = dir.path().join("k");
    let mut child = spawn_quiet(search_args(runs, "k", "8", "60"));
    wait_for_evaluations(&run, 3, &mut child);
    // Mid-evaluation: the fourth candidate is training now.
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = snapshot(&run);
    let finished_before: Vec<_> = before.iter().filter(|c| c.4.is_some()).cloned().collect();
    assert!(finished_before.len() >= 3);

    let o = bin()
        .args(["resume", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after = snapshot(&run);
    // Every finished evaluation is still there, unchanged.
    for c in &finished_before {
        assert!(after.contains(c), "lost or changed: {c:?}");
    }
    // None trained twice: each id has at most one evaluated/failed event.
    let ids = evaluated_ids(&run);
    let mut uniq = ids.clone();
    uniq.sort_unstable();
    uniq.dedup();
    assert_eq!(ids.len(), uniq.len(), "{ids:?}");
    // The budget is honoured exactly.
    let trained = after
        .iter()
        .filter(|c| c.5.is_none() && c.4.is_some())
        .count();
    assert_eq!(trained, 8);
}

#[test]
fn sigint_stops_gracefully_with_130_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().to_str().unwrap();
    let run = dir.path().join("i");
    let mut child = bin()
        .args(search_args(runs, "i", "30", "40"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_evaluations(&run, 1, &mut child);
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let events = read_events(&run.join("events.jsonl")).unwrap();
    let last = events.last().unwrap();
    let EventKind::RunFinished(finished) = &last.kind else {
        panic!("{last:?}")
    };
    assert_eq!(finished.reason, "interrupted");
    // Status reads the log of a stopped run.
    let o = bin()
        .args(["status", run.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["evaluations"].as_u64().unwrap() >= 1);
    assert_eq!(v["finished"], "interrupted");
}

#[test]
fn export_writes_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().to_str().unwrap();
    let o = bin()
        .args(search_args(runs, "e", "4", "10"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = dir.path().join("e");
    for (fmt, ext) in [("json", "json"), ("ron", "ron"), ("dot", "dot")] {
        let out = dir.path().join(fmt);
        let o = bin()
            .args([
                "export",
                run.to_str().unwrap(),
                "--top",
                "3",
                "--format",
                fmt,
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let files: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 3, "{fmt}");
        assert!(files.iter().all(|f| f.extension().unwrap() == ext));
    }
    let json = std::fs::read_dir(dir.path().join("json"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert!(v["arch"].as_str().unwrap().contains('('));
    assert_eq!(v["outcome"]["status"], "ok");
    let o = bin()
        .args([
            "export",
            run.to_str().unwrap(),
            "--pareto",
            "--format",
            "md",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let md = std::fs::read_to_string(run.join("export/report.md")).unwrap();
    assert!(md.contains("Pareto front") && md.contains("Best so far"));
    // PyTorch: a module, its retrained weights and a probe per candidate.
    let out = dir.path().join("pt");
    let export_pt = |extra: &[&str]| {
        let mut args = vec![
            "export",
            run.to_str().unwrap(),
            "--top",
            "3",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        bin().args(args).output().unwrap()
    };
    let o = export_pt(&["--format", "pytorch", "--weights"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Training is deterministic, so retraining reproduces the recorded score.
    assert_eq!(text.matches("as recorded").count(), 3, "{text}");
    let mut py: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().unwrap() == "py")
        .collect();
    py.sort();
    assert_eq!(py.len(), 3);
    for f in &py {
        assert!(f.with_extension("safetensors").exists());
        assert!(f.with_extension("probe.safetensors").exists());
    }
    if common::torch_available() {
        for f in &py {
            let o = Command::new("python3")
                .arg(f)
                .arg("--check")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "{}: {text}{}",
                f.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(text.contains("within"), "{text}");
        }
    } else {
        common::skip(
            "running the exported run's modules",
            "python3 cannot import torch",
        );
    }
    // --weights is for the PyTorch format only.
    let o = export_pt(&["--format", "json", "--weights"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--format pytorch"));
    // A run name that exists is refused; resume is the way to continue.
    let o = bin()
        .args(search_args(runs, "e", "4", "10"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resume"));
}

#[test]
fn successive_halving_promotes_the_best_with_eta_times_the_steps() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().to_str().unwrap();
    let mut args = search_args(runs, "sh", "8", "90");
    args.extend(["--strategy", "halving"]);
    let out = bin().args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = SledStore::open(&dir.path().join("sh/store")).unwrap();
    let cands = s.candidates().unwrap();
    let trained: Vec<_> = cands.iter().filter(|c| c.duplicate_of.is_none()).collect();
    assert_eq!(trained.len(), 8, "the budget counts every training");
    // quickstart halving: eta 3, 3 rungs over 90 steps → 10, 30, 90.
    let promotions: Vec<_> = trained
        .iter()
        .filter(|c| c.origin.starts_with("promotion"))
        .collect();
    assert!(!promotions.is_empty());
    for p in &promotions {
        let root = p.parent.unwrap();
        let first = cands.iter().find(|c| c.id == root).unwrap();
        assert_eq!(
            first.text, p.text,
            "a promotion retrains the same architecture"
        );
        assert!([30, 90].contains(&p.steps), "{}", p.steps);
        assert_eq!(first.steps, 10);
    }
    // The first promotion is the best of the first three rung-0 results.
    let rung0: Vec<_> = trained.iter().filter(|c| c.steps == 10).take(3).collect();
    let score = |id: u64| archgram::search::score_of(&s.outcome(id).unwrap().unwrap());
    let best = rung0
        .iter()
        .max_by(|a, b| score(a.id).total_cmp(&score(b.id)))
        .unwrap();
    assert_eq!(promotions[0].parent, Some(best.id));
}

/// A finished run `name` of `budget` candidates in `dir`.
fn finished_run(dir: &Path, name: &str, budget: &str) -> std::path::PathBuf {
    let o = bin()
        .args(search_args(dir.to_str().unwrap(), name, budget, "5"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir.join(name)
}

fn resume(run: &Path) -> std::process::Output {
    bin()
        .args(["resume", run.to_str().unwrap(), "--no-tui"])
        .output()
        .unwrap()
}

fn status_json(run: &Path) -> serde_json::Value {
    let o = bin()
        .args(["status", run.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Removes every line of the event log for which `drop` holds.
fn edit_log(run: &Path, drop: impl Fn(&serde_json::Value) -> bool) {
    let p = run.join("events.jsonl");
    let text = std::fs::read_to_string(&p).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !drop(&serde_json::from_str(l).unwrap()))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&p, kept).unwrap();
}

/// The process died after the store took an evaluation and before the log
/// did: resume writes the missing events, so status and the store agree
/// (status once said 29 of a store's 30 for good).
#[test]
fn resume_writes_the_events_a_killed_process_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let run = finished_run(dir.path(), "lost", "4");
    let store_ids = {
        let rows = snapshot(&run);
        rows.iter()
            .filter(|r| r.4.is_some() && r.5.is_none())
            .map(|r| r.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(store_ids.len(), 4);
    let last = *store_ids.last().unwrap();
    // What a kill between the store's write and the log's leaves.
    edit_log(&run, |e| {
        let ev = e["event"].as_str().unwrap();
        (e["id"] == last && ev != "sampled") || ev == "run_finished"
    });
    assert_eq!(status_json(&run)["evaluations"], 3);
    let o = resume(&run);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(status_json(&run)["evaluations"], 4);
    assert_eq!(evaluated_ids(&run), store_ids, "each once, in order");
    let events = read_events(&run.join("events.jsonl")).unwrap();
    let recovered: Vec<_> = events.iter().filter(|e| e.recovered).collect();
    assert_eq!(recovered.len(), 1);
    let EventKind::Evaluated(ev) = &recovered[0].kind else {
        panic!("{:?}", recovered[0])
    };
    assert_eq!((ev.id, ev.evaluations), (last, 4));
    // A second resume finds nothing missing.
    assert!(resume(&run).status.success());
    assert_eq!(evaluated_ids(&run), store_ids);
}

/// A torn last line is ended before the next append, so the resumed run's
/// events are not glued onto it and lost; a line that is not UTF-8 is
/// skipped by every reader.
#[test]
fn a_torn_or_garbled_log_line_loses_no_later_event() {
    let dir = tempfile::tempdir().unwrap();
    let run = finished_run(dir.path(), "torn", "2");
    let log = run.join("events.jsonl");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, b"{\"t\": 1.0, \"event\": \"sampl").unwrap();
    drop(f);
    let o = resume(&run);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let starts = |run: &Path| {
        read_events(&run.join("events.jsonl"))
            .unwrap()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::RunStarted(_)))
            .count()
    };
    assert_eq!(starts(&run), 2, "the resumed run's first event survived");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(b"{\"t\": 2.0, \"event\": \"\xff\xfe\"}\n\xc3\x28\n");
    std::fs::write(&log, bytes).unwrap();
    assert_eq!(status_json(&run)["evaluations"], 2);
    assert!(resume(&run).status.success());
    assert_eq!(starts(&run), 3);
}

/// A store that lost finished work (truncated, replaced by garbage, or
/// gone) is refused with a clear message by resume and export alike; a run
/// never silently starts over.
#[test]
fn a_damaged_store_is_refused_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let base = finished_run(dir.path(), "base", "4");
    let db = |run: &Path| run.join("store").join("db");
    let len = std::fs::metadata(db(&base)).unwrap().len();
    let copy = |name: &str| {
        let to = dir.path().join(name);
        std::fs::create_dir_all(to.join("store")).unwrap();
        for f in ["space.ron", "grammar.ron", "events.jsonl"] {
            std::fs::copy(base.join(f), to.join(f)).unwrap();
        }
        for e in std::fs::read_dir(base.join("store")).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), to.join("store").join(e.file_name())).unwrap();
            }
        }
        to
    };
    let truncated = copy("truncated");
    std::fs::OpenOptions::new()
        .write(true)
        .open(db(&truncated))
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let garbage = copy("garbage");
    let noise: Vec<u8> = (0..len).map(|i| (i * 2654435761 % 251) as u8).collect();
    std::fs::write(db(&garbage), noise).unwrap();
    let emptied = copy("emptied");
    std::fs::write(db(&emptied), b"").unwrap();
    let gone = copy("gone");
    std::fs::remove_dir_all(gone.join("store")).unwrap();
    for run in [&truncated, &garbage, &emptied, &gone] {
        let before = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
        let o = resume(run);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", run.display());
        assert!(err.contains("damaged"), "{}: {err}", run.display());
        assert!(!err.contains("Os {"), "{err}");
        let o = bin()
            .args(["export", run.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", run.display());
        assert!(String::from_utf8_lossy(&o.stderr).contains("damaged"));
        // Nothing was trained again or logged.
        let after = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
        assert_eq!(before, after, "{}", run.display());
    }
}

/// A run whose candidates were hashed with older hash recipes is refused
/// on resume: none of its hashes would match a new candidate's, so it would
/// silently train again what it has already trained. Exit code 2, nothing
/// trained or logged, and the run stays readable.
#[test]
fn a_run_hashed_with_older_recipes_is_refused_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let run = finished_run(dir.path(), "old", "2");
    {
        let store = SledStore::open(&run.join("store")).unwrap();
        let mut meta = store.meta().unwrap().unwrap();
        // What an archgram from before the recipes were recorded wrote.
        let recorded = meta.as_object_mut().unwrap().remove("hash_recipes");
        assert!(recorded.is_some(), "a new run records its hash recipes");
        store.put_meta(&meta).unwrap();
    }
    let log = run.join("events.jsonl");
    let before = std::fs::read_to_string(&log).unwrap();
    let o = resume(&run);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("hash version mismatch"), "{err}");
    assert_eq!(before, std::fs::read_to_string(&log).unwrap());
    assert_eq!(status_json(&run)["evaluations"], 2);
}

/// `simulate --trace` on a store that cannot be opened for a reason other
/// than a running search says what went wrong, not "run it after the
/// search ends".
#[test]
fn simulate_names_the_real_reason_a_store_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let run = finished_run(dir.path(), "sim", "2");
    std::fs::remove_dir_all(run.join("store")).unwrap();
    std::fs::write(run.join("store"), "not a store").unwrap();
    let o = bin()
        .args(["simulate", "--trace", &format!("{}/0", run.display())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot open the run store"), "{err}");
    assert!(!err.contains("after the search ends"), "{err}");
    assert!(!err.contains("Os {"), "{err}");
}

/// The disk fills up mid-search: a clear error, exit 1, no hang, and the
/// run, copied somewhere roomy, resumes with every finished evaluation kept
/// and none repeated. On a 1.6 MB tmpfs this search once hung for good in
/// sled's closing flush, deaf to SIGINT and SIGTERM; on 1.2 MB it printed
/// `Os { code: 28, .. }`. Needs root (mount).
#[test]
fn a_full_disk_is_a_clear_error_and_the_run_resumes() {
    for size in ["1200k", "1600k"] {
        full_disk_at(size);
    }
}

fn full_disk_at(size: &str) {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&small)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        common::skip_here(
            "a_full_disk_is_a_clear_error_and_the_run_resumes",
            "cannot mount a small tmpfs here (needs root)",
        );
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&small);
    let mut child = bin()
        .args(search_args(small.to_str().unwrap(), "full", "60", "2"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(240) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{size}: the search hung on a full disk");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{size}: {err}");
    assert!(err.contains("No space left on device"), "{size}: {err}");
    assert!(!err.contains("Os {"), "{size}: {err}");
    assert!(err.contains("archgram resume"), "{size}: {err}");
    // Somewhere with room, the run resumes and finishes its budget.
    let roomy = dir.path().join("roomy");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(small.join("full"))
        .arg(&roomy)
        .status()
        .unwrap();
    assert!(copied.success());
    let before: Vec<_> = snapshot(&roomy)
        .into_iter()
        .filter(|c| c.4.is_some())
        .collect();
    let o = resume(&roomy);
    assert!(
        o.status.success(),
        "{size}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let after = snapshot(&roomy);
    for c in &before {
        assert!(after.contains(c), "{size}: lost or changed: {c:?}");
    }
    let ids = evaluated_ids(&roomy);
    let mut uniq = ids.clone();
    uniq.sort_unstable();
    uniq.dedup();
    assert_eq!(ids.len(), uniq.len(), "{size}: {ids:?}");
    assert_eq!(status_json(&roomy)["evaluations"], 60, "{size}");
}

/// While a search holds its run, `export` and `simulate --trace` are
/// refused with a message that says why and what works meanwhile (the
/// README says so); `status` reads the log.
#[test]
fn export_and_simulate_refuse_a_run_whose_search_is_going() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().to_str().unwrap();
    let run = dir.path().join("busy");
    let mut child = spawn_quiet(search_args(runs, "busy", "40", "40"));
    wait_for_evaluations(&run, 1, &mut child);
    let export = bin()
        .args(["export", run.to_str().unwrap()])
        .output()
        .unwrap();
    let simulate = bin()
        .args(["simulate", "--trace", &format!("{}/0", run.display())])
        .output()
        .unwrap();
    for o in [&export, &simulate] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("another archgram process is using this run"),
            "{err}"
        );
    }
    assert!(String::from_utf8_lossy(&simulate.stderr).contains("after the search ends"));
    assert!(status_json(&run)["evaluations"].as_u64().unwrap() >= 1);
    child.kill().unwrap();
    child.wait().unwrap();
    let readme = std::fs::read_to_string("README.md").unwrap();
    assert!(readme.contains("refuse a run whose search is still going"));
}

/// Every trial of a run's store: (candidate, purpose, steps, seed, score).
fn trials(run: &Path) -> Vec<(u64, String, usize, u64, f64)> {
    let s = SledStore::open(&run.join("store")).unwrap();
    s.trials()
        .unwrap()
        .into_iter()
        .map(|t| {
            let score = archgram::search::score_of(&t.outcome);
            (t.candidate, t.purpose, t.steps, t.seed, score)
        })
        .collect()
}

fn count_events(run: &Path, name: &str) -> usize {
    read_events(&run.join("events.jsonl"))
        .unwrap()
        .iter()
        .filter(|e| e.name() == name)
        .count()
}

/// A search ends by retraining its top 5 with 3 fresh seeds; killed in the
/// middle of that stage, a resumed run trains only the trials it lacks and
/// confirms the same winner as a run never interrupted.
#[test]
fn the_confirm_stage_resumes_without_training_a_trial_twice() {
    let dir = tempfile::tempdir().unwrap();
    let whole = finished_run(dir.path(), "whole", "6");
    let all = trials(&whole);
    assert_eq!(all.len(), 15, "top 5 × 3 seeds: {all:?}");
    assert!(all.iter().all(|t| t.1 == "confirm" && t.2 == 5));
    let finalists: std::collections::BTreeSet<u64> = all.iter().map(|t| t.0).collect();
    assert_eq!(finalists.len(), 5);
    let status = status_json(&whole);
    let winner = status["winner"]["id"].as_u64().expect("a confirmed winner");
    assert!(finalists.contains(&winner));

    // What a kill after 8 of the 15 trainings leaves: the store has 8, the
    // log names those 8 and no confirmation.
    let cut = finished_run(dir.path(), "cut", "6");
    assert_eq!(trials(&cut), all, "training is deterministic");
    let lost: Vec<_> = all[8..].to_vec();
    {
        // sled lets go of a dropped store's lock on a background thread
        // (SledStore::open waits for it; a raw open must too).
        let start = Instant::now();
        let db = loop {
            match sled::open(cut.join("store")) {
                Ok(db) => break db,
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        };
        let tree = db.open_tree("trials").unwrap();
        let keys: Vec<_> = tree.iter().keys().map(|k| k.unwrap()).collect();
        assert_eq!(keys.len(), 15);
        for k in &keys {
            let t: archgram::store::TrialRecord =
                serde_json::from_slice(&tree.get(k).unwrap().unwrap()).unwrap();
            if lost
                .iter()
                .any(|l| l.0 == t.candidate && l.3 == t.seed && l.2 == t.steps)
            {
                tree.remove(k).unwrap();
            }
        }
        db.flush().unwrap();
    }
    let kept_log: std::collections::BTreeSet<(u64, u64)> =
        all[..8].iter().map(|t| (t.0, t.3)).collect();
    edit_log(&cut, |e| match e["event"].as_str().unwrap() {
        "confirmed" | "run_finished" => true,
        "trial" => !kept_log.contains(&(e["id"].as_u64().unwrap(), e["seed"].as_u64().unwrap())),
        _ => false,
    });
    assert_eq!(trials(&cut).len(), 8);
    assert_eq!(count_events(&cut, "trial"), 8);
    let o = resume(&cut);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(count_events(&cut, "trial"), 15, "only the 7 missing ran");
    assert_eq!(count_events(&cut, "evaluated"), 6, "no candidate retrained");
    assert_eq!(trials(&cut), all);
    assert_eq!(status_json(&cut)["winner"], status["winner"]);
    // Nothing is left to do: a second resume trains nothing.
    assert!(resume(&cut).status.success());
    assert_eq!(count_events(&cut, "trial"), 15);
}

/// `fidelity` keeps its trainings in the run: a second call trains
/// nothing and reports the same numbers; `status` shows the measurement.
#[test]
fn fidelity_reports_rank_agreement_and_a_repeat_costs_no_training() {
    let dir = tempfile::tempdir().unwrap();
    let run = finished_run(dir.path(), "fid", "6");
    let fid = || {
        let o = bin()
            .args([
                "fidelity",
                run.to_str().unwrap(),
                "--top",
                "3",
                "--spread",
                "2",
                "--long-steps",
                "10",
                "--seeds",
                "2",
                "--ladder",
                "2",
                "--workers",
                "1",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let before = trials(&run).len();
    let first = fid();
    let after_first = trials(&run).len();
    // The top 3, 2 spread through the rest, and the confirmed pick when it
    // is not among them; each at 5 and 10 steps × 2 seeds, plus one ladder
    // run. The confirm stage's trials are not reused (other seeds).
    let rows = first["rows"].as_array().unwrap().len();
    assert!(rows == 5 || rows == 6, "{first:#}");
    assert_eq!(after_first - before, rows * (2 * 2 + 1), "{first:#}");
    let trial_events = count_events(&run, "trial");
    let second = fid();
    assert_eq!(trials(&run).len(), after_first, "a repeat trains nothing");
    assert_eq!(count_events(&run, "trial"), trial_events);
    assert_eq!(first, second);
    for k in ["proxy_vs_long", "proxy_vs_long_top"] {
        assert!(first[k]["n"].as_u64().unwrap() >= 3, "{k}: {first:#}");
    }
    let st = status_json(&run);
    assert_eq!(st["fidelity"]["candidates"], rows, "{st:#}");
    assert_eq!(st["fidelity"]["long_steps"], 10);
    // The same trainings under likelihood, worked out here from the stored
    // held-out losses: exp(−loss) of each row's search outcome against the
    // mean over its long trainings.
    let other = &first["other"];
    assert_eq!(other["metric"], "likelihood", "{first:#}");
    let s = SledStore::open(&run.join("store")).unwrap();
    let lik = |o: &serde_json::Value| (-o["test_loss"].as_f64().unwrap()).exp();
    let all = s.trials().unwrap();
    let (mut proxy, mut long) = (Vec::new(), Vec::new());
    for row in first["rows"].as_array().unwrap() {
        let id = row["id"].as_u64().unwrap();
        proxy.push(lik(&s.outcome(id).unwrap().unwrap()));
        let l: Vec<f64> = all
            .iter()
            .filter(|t| t.candidate == id && t.purpose == "fidelity" && t.steps == 10)
            .map(|t| lik(&t.outcome))
            .collect();
        assert_eq!(l.len(), 2);
        long.push(archgram::stats::mean(&l));
    }
    let tau = archgram::stats::kendall_tau(&proxy, &long);
    assert_eq!(other["proxy_vs_long"]["n"], rows, "{first:#}");
    assert_eq!(
        other["proxy_vs_long"]["kendall_tau"].as_f64(),
        tau,
        "{first:#}"
    );
}

/// The quickstart space with `edit` applied, written where a test can use
/// it (its grammar path made absolute).
fn edited_space(dir: &Path, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let grammar = std::fs::canonicalize("grammars/blocks.ron").unwrap();
    let text = std::fs::read_to_string("spaces/quickstart.ron")
        .unwrap()
        .replace("../grammars/blocks.ron", grammar.to_str().unwrap());
    let p = dir.join("space.ron");
    std::fs::write(&p, edit(text)).unwrap();
    p
}

/// Arguments of a one-worker search of `space` without the confirm stage,
/// named `name` in `runs`, with `extra` flags.
fn quiet_search(space: &Path, runs: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "search",
        "--space",
        space.to_str().unwrap(),
        "--workers",
        "1",
        "--no-tui",
        "--no-confirm",
        "--runs",
        runs.to_str().unwrap(),
        "--name",
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// With `reeval`, evolution trains a candidate that would rank among the
/// population's best once more with a fresh seed (a `reeval` trial, logged
/// and stored, the same in a rerun), and never one that would not.
#[test]
fn evolution_reevaluates_only_what_enters_the_populations_top() {
    let dir = tempfile::tempdir().unwrap();
    let space = edited_space(dir.path(), |t| {
        t.replace(
            "population: 12, tournament: 4,",
            "population: 4, tournament: 2, reeval: 1,",
        )
    });
    let runs = dir.path().join("runs");
    let go = |name: &str| {
        let args = quiet_search(
            &space,
            &runs,
            name,
            &["--budget", "10", "--steps", "5", "--seed", "3"],
        );
        let o = bin().args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        runs.join(name)
    };
    let a = go("a");
    let re = trials(&a);
    assert!(!re.is_empty() && re.iter().all(|t| t.1 == "reeval" && t.2 == 5));
    assert_eq!(count_events(&a, "trial"), re.len());
    // With a top of one, a candidate is re-evaluated only when its score
    // beats every member's (mean) score so far: never all of them.
    let evaluated = count_events(&a, "evaluated");
    assert!(re.len() < evaluated, "{re:?}");
    let mut best = f64::NEG_INFINITY;
    let mut again = std::collections::BTreeSet::new();
    for t in &re {
        again.insert(t.0);
    }
    for e in read_events(&a.join("events.jsonl")).unwrap() {
        let EventKind::Evaluated(ev) = e.kind else {
            continue;
        };
        let (id, score) = (ev.id, ev.score);
        if !again.contains(&id) {
            assert!(score <= best, "#{id} scored {score} > {best} unchecked");
        } else {
            let t = re.iter().find(|t| t.0 == id).unwrap();
            best = best.max((score + t.4) / 2.0);
        }
    }
    assert_eq!(trials(&go("b")), re, "the same in a rerun");
}

/// Hyperband brackets: new architectures start at every bracket's lowest
/// rung in Hyperband's proportions, promotions stay in their bracket, and
/// a run resumed from its store carries on exactly as an unbroken one.
#[test]
fn hyperband_brackets_start_candidates_at_each_rung_and_resume_alike() {
    let dir = tempfile::tempdir().unwrap();
    let space = edited_space(dir.path(), |t| {
        t.replace(
            "halving: (source: \"evolution\", eta: 3, rungs: 3)",
            "halving: (source: \"random\", eta: 3, rungs: 3, brackets: 3)",
        )
    });
    let runs = dir.path().join("runs");
    let args = |name: &str| {
        let flags = [
            "--strategy",
            "halving",
            "--budget",
            "16",
            "--steps",
            "27",
            "--seed",
            "5",
        ];
        quiet_search(&space, &runs, name, &flags)
    };
    let go = |name: &str| searched(args(name), &runs.join(name));
    let whole = snapshot(&go("whole"));
    let s = SledStore::open(&runs.join("whole/store")).unwrap();
    let cands = s.candidates().unwrap();
    let trained: Vec<_> = cands.iter().filter(|c| c.duplicate_of.is_none()).collect();
    assert_eq!(trained.len(), 16);
    let new_at = |steps: usize| {
        trained
            .iter()
            .filter(|c| !c.origin.starts_with("promotion") && c.steps == steps)
            .count()
    };
    // Rungs of 3, 9 and 27 steps; the brackets take 6 : 3 : 2 of each 11.
    let (a, b, c) = (new_at(3), new_at(9), new_at(27));
    assert!(a > b && b >= c && c >= 1, "{a} {b} {c}");
    for p in trained.iter().filter(|c| c.origin.starts_with("promotion")) {
        let root = cands.iter().find(|c| Some(c.id) == p.parent).unwrap();
        assert!(p.steps > root.steps && [9, 27].contains(&p.steps));
    }
    drop(s);
    // The same run killed after 6 evaluations and resumed: the brackets are
    // rebuilt from the store, so it ends as the unbroken run did.
    assert_eq!(snapshot(&killed_and_resumed(&runs, args("part"), 6)), whole);
}

/// Runs the search `args` to its end and returns its folder `run`.
fn searched(args: Vec<String>, run: &Path) -> std::path::PathBuf {
    let o = bin().args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run.to_path_buf()
}

/// Starts the search `args` (named `part` in `runs`), kills it with
/// SIGKILL after `n` evaluations, resumes it to the end, and returns its
/// folder.
fn killed_and_resumed(runs: &Path, args: Vec<String>, n: usize) -> std::path::PathBuf {
    let part = runs.join("part");
    let mut child = spawn_quiet(args.iter().map(String::as_str).collect());
    wait_for_evaluations(&part, n, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let o = bin()
        .args(["resume", part.to_str().unwrap(), "--no-tui"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    part
}

/// The model-based strategy: after a warm-up of fresh samples, each new
/// candidate is the surrogate's pick from a pool of samples and mutations
/// of the best. For a seed it proposes the same candidates in a rerun and
/// after a kill -9 and resume (the surrogate is refitted from the store).
#[test]
fn the_model_strategy_is_deterministic_and_resumes_alike() {
    let dir = tempfile::tempdir().unwrap();
    let space = edited_space(dir.path(), |t| t.replace("population: 12", "population: 4"));
    let runs = dir.path().join("runs");
    let args = |name: &str| {
        let flags = [
            "--strategy",
            "model",
            "--budget",
            "10",
            "--steps",
            "20",
            "--seed",
            "4",
        ];
        quiet_search(&space, &runs, name, &flags)
    };
    let go = |name: &str| searched(args(name), &runs.join(name));
    let whole = snapshot(&go("whole"));
    assert_eq!(snapshot(&go("again")), whole);
    let s = SledStore::open(&runs.join("whole/store")).unwrap();
    let guided = s
        .candidates()
        .unwrap()
        .iter()
        .filter(|c| c.duplicate_of.is_none() && c.origin.starts_with("model: "))
        .count();
    // Two baselines and samples fill the warm-up of 4; the rest are picks.
    assert!(guided >= 5, "{guided} guided candidates of 10");
    drop(s);
    // The surrogate's validation is logged after every 5 trained, on the
    // same counts in a resumed run, with the same τ.
    let validations = |run: &Path| -> Vec<(usize, Option<String>)> {
        read_events(&run.join("events.jsonl"))
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Surrogate(v) => Some((v.trained, v.tau.map(|t| format!("{t:.6}")))),
                _ => None,
            })
            .collect()
    };
    let logged = validations(&runs.join("whole"));
    assert_eq!(
        logged.iter().map(|v| v.0).collect::<Vec<_>>(),
        [5, 10],
        "{logged:?}"
    );
    assert!(logged.iter().all(|v| v.1.is_some()), "{logged:?}");
    assert_eq!(snapshot(&killed_and_resumed(&runs, args("part"), 6)), whole);
    assert_eq!(validations(&runs.join("part")), logged);
}
