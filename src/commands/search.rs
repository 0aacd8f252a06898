//! `search`, `resume`, `status`.

use super::CliError;
use crate::eval::DeviceKind;
use crate::search::pareto::{front, Point};
use crate::search::{run, Ending, RunControl, RunDir, RunSettings, StrategyKind};
use crate::space::Space;
use crate::store::{read_events, Event, SledStore};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Stops the run at SIGINT/SIGTERM (after the evaluations in flight).
pub(super) fn stop_flag() -> Arc<RunControl> {
    let ctl = Arc::new(RunControl::default());
    let c = ctl.clone();
    // A second handler cannot be installed in one process (tests run
    // several searches); the first one keeps working for its flag only.
    let _ = ctrlc::set_handler(move || c.stop.store(true, Ordering::SeqCst));
    ctl
}

fn short(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(n).collect::<String>())
    }
}

/// Plain progress lines, one per event worth a line.
pub(super) fn printer(out: &mut dyn Write) -> impl FnMut(&Event) + '_ {
    let mut best: Option<(u64, f64)> = None;
    let mut arch: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    move |e: &Event| {
        let id = e.get("id").and_then(|v| v.as_u64()).unwrap_or(0);
        let line = match e.event.as_str() {
            "run_started" => {
                // A resumed run's best so far, so that later lines compare
                // against it rather than against this session's alone.
                best = e
                    .get("best_id")
                    .and_then(|v| v.as_u64())
                    .zip(e.get("best_score").and_then(|v| v.as_f64()));
                format!(
                    "search {} on {}: {} strategy, budget {}, {} worker(s), seed {}{}",
                    e.get("name").and_then(|v| v.as_str()).unwrap_or(""),
                    e.get("space").and_then(|v| v.as_str()).unwrap_or(""),
                    e.get("strategy").and_then(|v| v.as_str()).unwrap_or(""),
                    e.get("budget").unwrap_or(&json!(0)),
                    e.get("workers").unwrap_or(&json!(1)),
                    e.get("seed").unwrap_or(&json!(0)),
                    if e.get("resumed") == Some(&json!(true)) {
                        " (resumed)"
                    } else {
                        ""
                    }
                )
            }
            "sampled" => {
                let origin = e.get("origin").and_then(|v| v.as_str()).unwrap_or("");
                let text = e.get("arch").and_then(|v| v.as_str()).unwrap_or("");
                let shown = if origin.starts_with("promotion") {
                    format!("[{origin}] {text}")
                } else {
                    text.to_string()
                };
                arch.insert(id, shown);
                return;
            }
            "evaluated" => {
                let s = e.get("score").and_then(|v| v.as_f64()).unwrap_or(0.0);
                if best.is_none_or(|b| s > b.1) {
                    best = Some((id, s));
                }
                format!(
                    "[{}/{}] #{id} {} {:.4}  best {:.4} (#{})  {} params  {:.1}s  {}",
                    e.get("evaluations").unwrap_or(&json!(0)),
                    e.get("budget").unwrap_or(&json!(0)),
                    e.get("metric").and_then(|v| v.as_str()).unwrap_or("score"),
                    s,
                    best.map_or(0.0, |b| b.1),
                    best.map_or(0, |b| b.0),
                    crate::fmt::fmt_count(e.get("params").and_then(|v| v.as_f64()).unwrap_or(0.0)),
                    e.get("wall_secs").and_then(|v| v.as_f64()).unwrap_or(0.0),
                    short(arch.get(&id).map_or("", |s| s), 90)
                )
            }
            "failed" => format!(
                "[{}/{}] #{id} failed: {}",
                e.get("evaluations").unwrap_or(&json!(0)),
                e.get("budget").unwrap_or(&json!(0)),
                e.get("reason").and_then(|v| v.as_str()).unwrap_or("")
            ),
            "duplicate" => format!(
                "        #{id} duplicate of #{} ({}), training skipped",
                e.get("of").unwrap_or(&json!(0)),
                e.get("stage").and_then(|v| v.as_str()).unwrap_or("")
            ),
            "confirm_started" => format!(
                "confirm: retraining the top {} with {} fresh seeds each at {} steps ({} trainings to go)",
                e.get("candidates").and_then(|v| v.as_array()).map_or(0, |a| a.len()),
                e.get("seeds").unwrap_or(&json!(0)),
                e.get("steps").unwrap_or(&json!(0)),
                e.get("trainings").unwrap_or(&json!(0)),
            ),
            "trial" => format!(
                "        #{id} {} {} steps, seed {}: {} {:.4}{}",
                e.get("purpose").and_then(|v| v.as_str()).unwrap_or(""),
                e.get("steps").unwrap_or(&json!(0)),
                e.get("index").and_then(|v| v.as_u64()).map_or(0, |i| i + 1),
                e.get("metric").and_then(|v| v.as_str()).unwrap_or("score"),
                e.get("score").and_then(|v| v.as_f64()).unwrap_or(0.0),
                e.get("reason")
                    .and_then(|v| v.as_str())
                    .map_or(String::new(), |r| format!(" (failed: {r})"))
            ),
            "confirmed" => {
                let mut s = String::from("confirmed (mean ± sd over fresh seeds; proxy = the search's single-seed score):");
                for f in e.get("finalists").and_then(|v| v.as_array()).into_iter().flatten() {
                    s.push_str(&format!(
                        "\n  #{:<5} {:.4} ± {:.4}   proxy {:.4}",
                        f["id"],
                        f["mean"].as_f64().unwrap_or(0.0),
                        f["sd"].as_f64().unwrap_or(0.0),
                        f["proxy"].as_f64().unwrap_or(0.0)
                    ));
                }
                s
            }
            "run_finished" => {
                let mut s = format!(
                    "done ({}): {} evaluations, best proxy #{} {:.4}",
                    e.get("reason").and_then(|v| v.as_str()).unwrap_or(""),
                    e.get("evaluations").unwrap_or(&json!(0)),
                    e.get("best_id").unwrap_or(&json!(null)),
                    e.get("best_score").and_then(|v| v.as_f64()).unwrap_or(0.0)
                );
                if let Some(w) = e.get("winner").and_then(|v| v.as_u64()) {
                    s.push_str(&format!(
                        "; winner #{w} confirmed {:.4} ± {:.4}",
                        e.get("winner_score").and_then(|v| v.as_f64()).unwrap_or(0.0),
                        e.get("winner_sd").and_then(|v| v.as_f64()).unwrap_or(0.0)
                    ));
                }
                s
            }
            _ => return,
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

fn finish(ending: Ending, dir: &RunDir, out: &mut dyn Write) -> Result<(), CliError> {
    writeln!(out, "run folder: {}", dir.path.display())?;
    match ending {
        Ending::Interrupted => {
            writeln!(
                out,
                "stopped; continue with `archgram resume {}`",
                dir.path.display()
            )?;
            Err(CliError::Interrupted)
        }
        _ => Ok(()),
    }
}

pub fn search(
    space_path: &Path,
    args: crate::cli::SearchFlags,
    no_tui: bool,
    runs: &Path,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let crate::cli::SearchFlags {
        strategy,
        budget,
        time,
        seed,
        name,
        workers,
        steps,
        no_confirm,
    } = args;
    let space = Space::load(space_path)?;
    let d = &space.file.search;
    let strategy = strategy.unwrap_or_else(|| d.strategy.clone());
    let halving = (strategy == "halving").then(|| d.halving.clone());
    let source = halving
        .as_ref()
        .map_or(strategy.clone(), |h| h.source.clone());
    let strategy = StrategyKind::parse(&source).ok_or_else(|| {
        space.error_at(
            "strategy",
            format!("unknown strategy `{source}`; use random, evolution, model or halving (whose `halving.source` is random, evolution or model)"),
        )
    })?;
    let seed = seed.unwrap_or(space.file.seed);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    check_workers(&space, workers, cores)?;
    let settings = RunSettings {
        name: name.unwrap_or_else(|| format!("{}-{seed}", space.name())),
        strategy,
        budget: budget.unwrap_or(d.budget),
        seed,
        workers: workers
            .unwrap_or(if d.workers > 0 { d.workers } else { cores })
            .max(1),
        population: d.population,
        tournament: d.tournament,
        steps: steps.unwrap_or(space.file.train.steps),
        device: DeviceKind::Cpu,
        halving,
        confirm: (!no_confirm && d.confirm.top > 0 && d.confirm.seeds > 0).then_some(d.confirm),
        reeval: d.reeval,
        model: d.model,
    };
    let (dir, store) = RunDir::create(runs, &space, &settings)?;
    drive(&dir, &store, &space, &settings, time, no_tui, out)
}

/// Each worker trains one candidate on one core, so more workers than cores
/// only add threads (100,000 of them once never finished).
fn check_workers(space: &Space, flag: Option<usize>, cores: usize) -> Result<(), CliError> {
    let rule = format!("from 1 to {cores}, the cores this machine has (each worker trains one candidate on one core)");
    match flag {
        Some(w) if w > cores => Err(CliError::bad(format!("--workers {w}: use {rule}"))),
        None if space.file.search.workers > cores => Err(space
            .error_at(
                "workers",
                format!(
                    "workers: {}: use 0 (one per core) or {rule}",
                    space.file.search.workers
                ),
            )
            .into()),
        _ => Ok(()),
    }
}

/// Runs the search with the dashboard when stdout is a terminal, else with
/// plain progress lines.
fn drive(
    dir: &RunDir,
    store: &SledStore,
    space: &Space,
    settings: &RunSettings,
    time: Option<Duration>,
    no_tui: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let ctl = stop_flag();
    let ending = if !no_tui && std::io::stdout().is_terminal() {
        let (tx, rx) = std::sync::mpsc::channel::<Event>();
        let export = export_hook(dir, space);
        std::thread::scope(|sc| {
            let worker = sc.spawn(|| {
                let tx = tx;
                run(dir, store, space, settings, time, &ctl, &mut |e| {
                    let _ = tx.send(e.clone());
                })
            });
            let shown = crate::tui::run_dashboard(
                crate::tui::EventSource::Channel(rx),
                crate::tui::Hooks {
                    pause: Some(&ctl.pause),
                    stop: Some(&ctl.stop),
                    export: &export,
                },
                true,
            );
            if shown.is_err() {
                // The terminal failed under us: stop the search cleanly.
                ctl.stop.store(true, Ordering::SeqCst);
            }
            let ending = worker
                .join()
                .map_err(|_| CliError::runtime("the search thread panicked"))?;
            shown.map_err(|e| CliError::runtime_because("dashboard", e))?;
            ending.map_err(|e| resumable(e.into(), dir))
        })?
    } else {
        let mut print = printer(out);
        let ending = run(dir, store, space, settings, time, &ctl, &mut print);
        drop(print);
        ending.map_err(|e| resumable(e.into(), dir))?
    };
    finish(ending, dir, out)
}

/// A run that failed (a full disk, say) keeps every finished evaluation:
/// say how to go on once the cause is fixed.
fn resumable(e: CliError, dir: &RunDir) -> CliError {
    if e.exit_code() != 1 {
        return e;
    }
    CliError::Resumable {
        error: Box::new(e),
        run: dir.path.clone(),
    }
}

/// `e` in the dashboard: the selected candidate's text form, Graphviz graph
/// and summary into RUN/export/ (from events, so it works while the search
/// holds the store).
fn export_hook<'a>(
    dir: &'a RunDir,
    space: &'a Space,
) -> impl Fn(&crate::tui::Dashboard, u64) -> Result<String, Box<dyn std::error::Error>> + 'a {
    move |d, id| {
        let c = d.cands.get(&id).ok_or("unknown candidate")?;
        let out = dir.path.join("export");
        std::fs::create_dir_all(&out)?;
        let stem = out.join(format!("id{id}"));
        let net = space.parse_arch(&c.arch)?;
        let score = crate::tui::score_of_cand(c);
        std::fs::write(stem.with_extension("txt"), format!("{}\n", c.arch))?;
        std::fs::write(
            stem.with_extension("dot"),
            crate::export::dot::dot(&net, &format!("#{id} score {score:.4}")),
        )?;
        let doc = json!({"id": id, "arch": c.arch, "score": score, "origin": c.origin,
                         "params": c.params, "active_params": c.active_params, "flops": c.flops,
                         "graph": net.arch});
        std::fs::write(
            stem.with_extension("json"),
            serde_json::to_string_pretty(&doc).unwrap_or_default(),
        )?;
        Ok(format!(
            "exported #{id} to {}.{{txt,dot,json}}",
            stem.display()
        ))
    }
}

/// `archgram watch RUN`: the dashboard on a run's event log.
pub fn watch(path: &Path) -> Result<(), CliError> {
    let dir = RunDir::open(path)?;
    let space = Space::load(&dir.space_path())?;
    if !std::io::stdout().is_terminal() {
        return Err(CliError::bad(
            "watch needs a terminal; use `archgram status` for plain text",
        ));
    }
    let export = export_hook(&dir, &space);
    crate::tui::run_dashboard(
        crate::tui::EventSource::File(dir.events_path()),
        crate::tui::Hooks {
            pause: None,
            stop: None,
            export: &export,
        },
        false,
    )
    .map_err(|e| CliError::runtime_because("dashboard", e))
}

pub fn resume(
    path: &Path,
    time: Option<Duration>,
    no_tui: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let dir = RunDir::open(path)?;
    let store = dir.store()?;
    let settings = dir.settings(&store)?;
    let space = Space::load(&dir.space_path())?;
    drive(&dir, &store, &space, &settings, time, no_tui, out)
}

/// What `status` knows, from the event log alone.
#[derive(Debug, Default, serde::Serialize)]
pub struct Status {
    pub name: String,
    pub strategy: String,
    pub budget: u64,
    pub evaluations: u64,
    pub failed: u64,
    pub finished: Option<String>,
    /// The best single-seed search score (a proxy: one training run each).
    pub best: Option<serde_json::Value>,
    /// The confirm stage's winner (mean ± sd over fresh seeds) and finalists.
    pub winner: Option<serde_json::Value>,
    pub confirmed: Vec<serde_json::Value>,
    /// The last `archgram fidelity` measurement's summary.
    pub fidelity: Option<serde_json::Value>,
    /// Pareto front of the single-seed search scores.
    pub pareto: Vec<Point>,
    pub structural_hits: u64,
    pub functional_hits: u64,
    pub seconds_saved: f64,
    pub elapsed_secs: f64,
}

pub fn status_of(events: &[Event]) -> Status {
    let mut s = Status::default();
    let mut archs = std::collections::HashMap::new();
    let mut points = Vec::new();
    let (mut first, mut last) = (None, 0.0f64);
    for e in events {
        first.get_or_insert(e.t);
        last = last.max(e.t);
        let id = e.get("id").and_then(|v| v.as_u64()).unwrap_or(0);
        match e.event.as_str() {
            "run_started" => {
                s.name = e.get("name").and_then(|v| v.as_str()).unwrap_or("").into();
                s.strategy = e
                    .get("strategy")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .into();
                s.budget = e.get("budget").and_then(|v| v.as_u64()).unwrap_or(0);
                s.finished = None;
            }
            "sampled" => {
                archs.insert(id, e.get("arch").cloned().unwrap_or_default());
            }
            "evaluated" | "failed" => {
                s.evaluations = s
                    .evaluations
                    .max(e.get("evaluations").and_then(|v| v.as_u64()).unwrap_or(0));
                if e.event == "failed" {
                    s.failed += 1;
                    continue;
                }
                let score = e.get("score").and_then(|v| v.as_f64()).unwrap_or(0.0);
                points.push(Point {
                    id,
                    score,
                    active_params: e
                        .get("active_params")
                        .and_then(|v| v.as_f64())
                        .unwrap_or(0.0),
                    flops: e.get("flops").and_then(|v| v.as_f64()).unwrap_or(0.0),
                });
                let better = s
                    .best
                    .as_ref()
                    .is_none_or(|b| score > b["score"].as_f64().unwrap_or(0.0));
                if better {
                    s.best = Some(json!({"id": id, "score": score, "arch": archs.get(&id)}));
                }
            }
            "duplicate" => {
                if e.get("stage").and_then(|v| v.as_str()) == Some("structural") {
                    s.structural_hits += 1;
                } else {
                    s.functional_hits += 1;
                }
                s.seconds_saved += e
                    .get("seconds_saved")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0);
            }
            "run_finished" => {
                s.finished = e.get("reason").and_then(|v| v.as_str()).map(String::from)
            }
            "confirmed" => {
                s.confirmed = e
                    .get("finalists")
                    .and_then(|v| v.as_array())
                    .cloned()
                    .unwrap_or_default();
                s.winner = e.get("winner").and_then(|v| v.as_u64()).map(|w| {
                    json!({"id": w, "score": e.get("score"), "sd": e.get("sd"),
                           "proxy": e.get("proxy"), "seeds": e.get("seeds"),
                           "steps": e.get("steps"), "arch": archs.get(&w)})
                });
            }
            "fidelity" => {
                let field = |k: &str| e.get(k).cloned().unwrap_or_default();
                s.fidelity = Some(json!({
                    "candidates": e.get("rows").and_then(|v| v.as_array()).map_or(0, |r| r.len()),
                    "steps": field("steps"), "long_steps": field("plan")["long_steps"],
                    "seeds": field("plan")["seeds"], "top": field("plan")["top"],
                    "proxy_vs_long": field("proxy_vs_long"),
                    "proxy_vs_long_top": field("proxy_vs_long_top"),
                    "seed_sd_short": field("seed_sd_short"), "regret": field("regret"),
                    "pick": field("pick"), "best_long": field("best_long"),
                    "ladder": field("ladder"), "winner": field("winner"),
                }));
            }
            _ => {}
        }
    }
    s.pareto = front(&points);
    s.elapsed_secs = first.map_or(0.0, |f| last - f);
    s
}

pub fn status(path: &Path, as_json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let dir = RunDir::open(path)?;
    let events = read_events(&dir.events_path()).map_err(|e| {
        CliError::bad_because(
            format!("{}: cannot read events", dir.events_path().display()),
            e,
        )
    })?;
    let s = status_of(&events);
    if as_json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&s).unwrap_or_default()
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{}: {} strategy, {}/{} evaluated ({} failed), {}",
        s.name,
        s.strategy,
        s.evaluations,
        s.budget,
        s.failed,
        s.finished
            .as_deref()
            .map_or("running or stopped".into(), |r| format!("finished ({r})"))
    )?;
    if let Some(w) = &s.winner {
        writeln!(
            out,
            "winner #{} confirmed {:.4} ± {:.4} ({} fresh seeds × {} steps; its single-seed proxy {:.4}): {}",
            w["id"],
            w["score"].as_f64().unwrap_or(0.0),
            w["sd"].as_f64().unwrap_or(0.0),
            w["seeds"],
            w["steps"],
            w["proxy"].as_f64().unwrap_or(0.0),
            w["arch"].as_str().unwrap_or("")
        )?;
        writeln!(out, "confirmed finalists (mean ± sd; proxy):")?;
        for f in &s.confirmed {
            writeln!(
                out,
                "  #{:<5} {:.4} ± {:.4}   proxy {:.4}",
                f["id"].as_u64().unwrap_or(0),
                f["mean"].as_f64().unwrap_or(0.0),
                f["sd"].as_f64().unwrap_or(0.0),
                f["proxy"].as_f64().unwrap_or(0.0)
            )?;
        }
    }
    if let Some(b) = &s.best {
        writeln!(
            out,
            "best proxy #{} score {:.4} (single seed{}): {}",
            b["id"],
            b["score"].as_f64().unwrap_or(0.0),
            if s.winner.is_some() {
                ""
            } else {
                "; not confirmed"
            },
            b["arch"].as_str().unwrap_or("")
        )?;
    }
    if let Some(f) = &s.fidelity {
        let tau = |v: &serde_json::Value| {
            v["kendall_tau"]
                .as_f64()
                .map_or("n/a".to_string(), |t| format!("{t:+.2}"))
        };
        writeln!(
            out,
            "fidelity ({} candidates, {} against {} steps, {} seeds): Kendall τ {} overall, {} among the top {}; seed sd {:.4}; regret of the pick {:.4}",
            f["candidates"],
            f["steps"],
            f["long_steps"],
            f["seeds"],
            tau(&f["proxy_vs_long"]),
            tau(&f["proxy_vs_long_top"]),
            f["top"],
            f["seed_sd_short"].as_f64().unwrap_or(0.0),
            f["regret"].as_f64().unwrap_or(0.0)
        )?;
    }
    writeln!(
        out,
        "cache: {} structural + {} functional hits, {:.1}s of training saved",
        s.structural_hits, s.functional_hits, s.seconds_saved
    )?;
    writeln!(
        out,
        "pareto front (single-seed score, active params, flops/token):"
    )?;
    for p in &s.pareto {
        writeln!(
            out,
            "  #{:<5} {:.4}  {:>8}  {:>8}",
            p.id,
            p.score,
            crate::fmt::fmt_count(p.active_params),
            crate::fmt::fmt_count(p.flops)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a resume, progress lines compare against the run's best so
    /// far, which the `run_started` event carries.
    #[test]
    fn progress_lines_start_from_the_restored_best() {
        let mut out = Vec::new();
        {
            let mut print = printer(&mut out);
            print(&Event::new(
                "run_started",
                json!({"name": "r", "resumed": true, "best_id": 7, "best_score": 0.9}),
            ));
            print(&Event::new(
                "evaluated",
                json!({"id": 8, "score": 0.5, "evaluations": 9, "budget": 10}),
            ));
            print(&Event::new(
                "evaluated",
                json!({"id": 9, "score": 0.95, "evaluations": 10, "budget": 10}),
            ));
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("best 0.9000 (#7)"), "{text}");
        assert!(lines[2].contains("best 0.9500 (#9)"), "{text}");
    }
}
