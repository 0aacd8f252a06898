//! How the commands that read a whole run scale with its size: `status`,
//! `export --top 10` and `resume` (its restore: the run's budget is spent,
//! so it restores and ends) on synthetic runs of n candidates, with the
//! store's and the event log's bytes per candidate.
//!
//! It also times `watch`'s first screen (in a tmux pane; "–" without
//! tmux) and reads the dashboard's peak memory.
//!
//! `cargo bench --bench run_size`. Environment: `RS_SIZES` (candidate
//! counts, default `1000,10000`; a run takes about 55 kB of disk per
//! candidate, mostly routing traces, so 100,000 needs about 5.5 GB), `RS_REPEATS` (timings per command,
//! the fastest is reported; default 3), `RS_KEEP` (a folder to build the
//! runs in and leave them, to look at them afterwards), `RS_REFERENCE`
//! (another archgram binary, e.g. an older build: each command is timed
//! with it too, on the same run, one after the other).
//!
//! A synthetic run starts as a real one (a 4-candidate quickstart search
//! of 5 training steps, no confirm stage), then grows through the store's
//! own calls: each new candidate copies one of the 4 (architecture,
//! outcome), with a fresh id, a random structural hash and a random score,
//! and is written as a search writes it (its `sampled` event, then its
//! record, outcome, hash index, counters and `evaluated` event in one
//! call). The run's recorded budget is set to n. No training happens, so
//! the run is built in seconds per 10k candidates; what is measured is
//! reading it.

use archgram::search::journal::{outcome_event, sampled_event};
use archgram::store::{Finished, SledStore, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const BASE: u64 = 4;

fn archgram(args: &[&str]) -> f64 {
    timed(env!("CARGO_BIN_EXE_archgram"), args)
}

/// Wall seconds of one command of `bin`.
fn timed(bin: &str, args: &[&str]) -> f64 {
    let t = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("start archgram");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "archgram {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

/// `watch` on `run` in a 160×48 tmux pane: seconds until its first
/// screen shows every one of the run's `n` evaluations, and its peak
/// resident memory (MB) then. None where tmux is missing or the screen
/// never comes (60 s).
fn watch_first_screen(bin: &str, run: &str, n: u64) -> Option<(f64, f64)> {
    let session = format!("run-size-{}", std::process::id());
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().ok();
    let t = Instant::now();
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "48",
        &format!("exec {bin} watch {run}"),
    ])?;
    if !started.status.success() {
        return None;
    }
    let done = format!("{n}/{n}");
    let mut seen = None;
    while t.elapsed().as_secs() < 60 {
        let screen = tmux(&["capture-pane", "-p", "-t", &session])?;
        if String::from_utf8_lossy(&screen.stdout).contains(&done) {
            seen = Some(t.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let pid = tmux(&["list-panes", "-t", &session, "-F", "#{pane_pid}"])?;
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    tmux(&["kill-session", "-t", &session]);
    seen.map(|secs| (secs, peak_kb / 1024.0))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn bytes(p: &Path) -> u64 {
    if p.is_dir() {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| bytes(&e.unwrap().path()))
            .sum()
    } else {
        std::fs::metadata(p).map_or(0, |m| m.len())
    }
}

/// Grows the run at `dir` (a copy of the base run) to `n` candidates.
fn grow(dir: &Path, n: u64) {
    let store = SledStore::open_run(&dir.join("store"), &dir.join("events.jsonl")).unwrap();
    let templates: Vec<_> = (0..BASE)
        .map(|id| {
            let record = store.candidate(id).unwrap().expect("a base candidate");
            let outcome = store.outcome(id).unwrap().expect("a base outcome");
            (record, outcome)
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(n);
    for id in BASE..n {
        let (template, outcome) = &templates[(id % BASE) as usize];
        let mut record = template.clone();
        record.id = id;
        record.hashes.structural = rng.gen();
        record.hashes.functional = None;
        let mut value = outcome.clone();
        value["score"] = serde_json::json!(rng.gen::<f64>());
        let typed: archgram::eval::Outcome = serde_json::from_value(value.clone()).unwrap();
        store.append_event(&sampled_event(&record)).unwrap();
        let event = outcome_event(id, &typed, id as usize + 1, n as usize);
        store
            .record_evaluation(&Finished {
                record: &record,
                outcome: &value,
                event: &event,
            })
            .unwrap();
    }
    let mut meta = store.meta().unwrap().expect("run metadata");
    meta["settings"]["budget"] = serde_json::json!(n);
    store.put_meta(&meta).unwrap();
    store.flush().unwrap();
}

fn main() {
    let sizes: Vec<u64> = std::env::var("RS_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("RS_SIZES: candidate counts"))
        .collect();
    let repeats: usize = std::env::var("RS_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let temp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("RS_KEEP").map(PathBuf::from);
    let root = keep.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let runs = root.join("runs");
    let runs_arg = runs.to_str().unwrap();
    archgram(&[
        "search",
        "--space",
        "spaces/quickstart.ron",
        "--budget",
        &BASE.to_string(),
        "--steps",
        "5",
        "--seed",
        "1",
        "--workers",
        "1",
        "--no-confirm",
        "--no-tui",
        "--runs",
        runs_arg,
        "--name",
        "base",
    ]);
    let reference = std::env::var("RS_REFERENCE").ok();
    let bins: Vec<&str> = std::iter::once(env!("CARGO_BIN_EXE_archgram"))
        .chain(reference.as_deref())
        .collect();
    let cell = if reference.is_some() {
        " (this / reference)"
    } else {
        ""
    };
    println!(
        "| candidates | build (s) | store bytes / candidate | log bytes / candidate | status (s){cell} | export --top 10 (s){cell} | resume, restore only (s){cell} | watch, first screen (s){cell} | watch, peak memory (MB){cell} |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        let n = n.max(BASE);
        let dir: PathBuf = runs.join(format!("n{n}"));
        copy_dir(&runs.join("base"), &dir);
        let t = Instant::now();
        grow(&dir, n);
        let build = t.elapsed().as_secs_f64();
        let run = dir.to_str().unwrap();
        let out = root.join(format!("export{n}"));
        // The fastest of the repeats per binary, the binaries taking turns.
        let fastest = |args: &[&str]| {
            let mut best = vec![f64::INFINITY; bins.len()];
            for _ in 0..repeats {
                for (b, bin) in bins.iter().enumerate() {
                    best[b] = best[b].min(timed(bin, args));
                }
            }
            best.iter()
                .map(|s| format!("{s:.3}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let status = fastest(&["status", run]);
        let export = fastest(&[
            "export",
            run,
            "--top",
            "10",
            "--format",
            "json",
            "--out",
            out.to_str().unwrap(),
        ]);
        let resume = fastest(&["resume", run, "--no-tui"]);
        // After resume, whose run_started gives the budget the screen shows.
        let (mut first, mut peak) = (Vec::new(), Vec::new());
        for bin in &bins {
            let mut best: Option<(f64, f64)> = None;
            for _ in 0..repeats {
                if let Some((s, mb)) = watch_first_screen(bin, run, n) {
                    best = Some(best.map_or((s, mb), |b| (b.0.min(s), b.1.max(mb))));
                }
            }
            let (s, mb) = best.map_or(("–".into(), "–".into()), |(s, mb)| {
                (format!("{s:.3}"), format!("{mb:.0}"))
            });
            first.push(s);
            peak.push(mb);
        }
        let (first, peak) = (first.join(" / "), peak.join(" / "));
        println!(
            "| {n} | {build:.1} | {:.0} | {:.0} | {status} | {export} | {resume} | {first} | {peak} |",
            bytes(&dir.join("store")) as f64 / n as f64,
            bytes(&dir.join("events.jsonl")) as f64 / n as f64,
        );
        if keep.is_none() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
