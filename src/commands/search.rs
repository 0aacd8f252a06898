//! `search`, `resume`, `status`.

use super::locate::RunRef;
use super::CliError;
use crate::eval::DeviceKind;
use crate::search::pareto::{front, Point};
use crate::search::FidelityReport;
use crate::search::{run, Ending, RunControl, RunDir, RunSettings, StrategyKind};
use crate::space::Space;
use crate::store::{Counters, Event, EventKind, Store};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
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

/// `metric` as a line names it: `score` where an event lacks it.
fn metric_name(metric: &str) -> &str {
    if metric.is_empty() {
        "score"
    } else {
        metric
    }
}

/// An optional id as the event log writes it (`null` for none).
fn id_or_null(id: Option<u64>) -> String {
    id.map_or("null".into(), |i| i.to_string())
}

/// Plain progress lines, one per event worth a line.
pub(super) fn printer(out: &mut dyn Write) -> impl FnMut(&Event) + '_ {
    let mut best: Option<(u64, f64)> = None;
    let mut arch: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    move |e: &Event| {
        let line = match &e.kind {
            EventKind::RunStarted(r) => {
                // A resumed run's best so far, so that later lines compare
                // against it rather than against this session's alone.
                best = r.best_id.zip(r.best_score);
                format!(
                    "search {} on {}: {} strategy, budget {}, {} worker(s), seed {}{}",
                    r.name,
                    r.space,
                    r.strategy,
                    r.budget,
                    r.workers,
                    r.seed,
                    if r.resumed { " (resumed)" } else { "" }
                )
            }
            EventKind::Sampled(c) => {
                let shown = if c.origin.starts_with("promotion") {
                    format!("[{}] {}", c.origin, c.arch)
                } else {
                    c.arch.clone()
                };
                arch.insert(c.id, shown);
                return;
            }
            EventKind::Evaluated(ev) => {
                let (id, s) = (ev.id, ev.score);
                if best.is_none_or(|b| s > b.1) {
                    best = Some((id, s));
                }
                format!(
                    "[{}/{}] #{id} {} {:.4}  best {:.4} (#{})  {} params  {:.1}s  {}",
                    ev.evaluations,
                    ev.budget,
                    metric_name(&ev.metric),
                    s,
                    best.map_or(0.0, |b| b.1),
                    best.map_or(0, |b| b.0),
                    crate::fmt::fmt_count(ev.params),
                    ev.wall_secs,
                    short(arch.get(&id).map_or("", |s| s), 90)
                )
            }
            EventKind::Failed(f) => format!(
                "[{}/{}] #{} failed: {}",
                f.evaluations, f.budget, f.id, f.reason
            ),
            EventKind::Duplicate(d) => format!(
                "        #{} duplicate of #{} ({}), training skipped",
                d.id, d.of, d.stage
            ),
            EventKind::ConfirmStarted(c) => format!(
                "confirm: retraining the top {} with {} fresh seeds each at {} steps ({} trainings to go)",
                c.candidates.len(),
                c.seeds,
                c.steps,
                c.trainings,
            ),
            EventKind::Trial(t) => format!(
                "        #{} {} {} steps, seed {}: {} {:.4}{}",
                t.id,
                t.purpose,
                t.steps,
                t.index + 1,
                metric_name(&t.metric),
                t.score,
                t.reason
                    .as_ref()
                    .map_or(String::new(), |r| format!(" (failed: {r})"))
            ),
            EventKind::Confirmed(c) => {
                let mut s = String::from("confirmed (mean ± sd over fresh seeds; proxy = the search's single-seed score):");
                for f in &c.finalists {
                    s.push_str(&format!(
                        "\n  #{:<5} {:.4} ± {:.4}   proxy {:.4}",
                        f.id, f.mean, f.sd, f.proxy
                    ));
                }
                s
            }
            EventKind::RunFinished(r) => {
                let mut s = format!(
                    "done ({}): {} evaluations, best proxy #{} {:.4}",
                    r.reason,
                    r.evaluations,
                    id_or_null(r.best_id),
                    r.best_score.unwrap_or(0.0)
                );
                if let Some(w) = r.winner {
                    s.push_str(&format!(
                        "; winner #{w} confirmed {:.4} ± {:.4}",
                        r.winner_score.unwrap_or(0.0),
                        r.winner_sd.unwrap_or(0.0)
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
    let time = args.time;
    let (space, settings) = plan(space_path, args)?;
    let (dir, store) = RunDir::create(runs, &space, &settings)?;
    drive(&dir, store.as_ref(), &space, &settings, time, no_tui, out)
}

/// The space and the run's settings: the space's defaults, overridden by
/// the flags.
pub(super) fn plan(
    space_path: &Path,
    args: crate::cli::SearchFlags,
) -> Result<(Space, RunSettings), CliError> {
    let crate::cli::SearchFlags {
        strategy,
        budget,
        time: _,
        seed,
        name,
        workers,
        device,
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
    // Opened last, once everything else checks: a GPU context costs time.
    let device = match device {
        Some(flag) => super::open_device(&flag)?,
        None => DeviceKind::Cpu,
    };
    let settings = RunSettings {
        name: name.unwrap_or_else(|| format!("{}-{seed}", space.name())),
        strategy,
        budget: budget.unwrap_or(d.budget),
        seed,
        workers: run_workers(workers, d.workers, cores, device),
        population: d.population,
        tournament: d.tournament,
        steps: steps.unwrap_or(space.file.train.steps),
        device,
        halving,
        confirm: (!no_confirm && d.confirm.top > 0 && d.confirm.seeds > 0).then_some(d.confirm),
        reeval: d.reeval,
        model: d.model,
    };
    Ok((space, settings))
}

/// Workers: `--workers` if given, else the space's (0: one per core) on
/// the CPU and one on a GPU. Measured on an H200 with quickstart (README, GPU
/// section): one process trained 25 candidates a minute with one worker and
/// 18 with 4 or 8, since dfdx's devices share the GPU's one default stream
/// and the workers only contend for it; several processes under MPS are
/// what fill a GPU.
fn run_workers(
    flag: Option<usize>,
    space_workers: usize,
    cores: usize,
    device: DeviceKind,
) -> usize {
    let default = match device {
        DeviceKind::Cuda(_) => 1,
        DeviceKind::Cpu if space_workers > 0 => space_workers,
        DeviceKind::Cpu => cores,
    };
    flag.unwrap_or(default).max(1)
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
    store: &dyn Store,
    space: &Space,
    settings: &RunSettings,
    time: Option<Duration>,
    no_tui: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let ctl = stop_flag();
    let ending = shown(
        no_tui,
        &ctl,
        dir.path.join("export"),
        space,
        out,
        |progress| run(dir, store, space, settings, time, &ctl, progress),
    )?;
    let ending = ending.map_err(|e| resumable(e.into(), dir))?;
    finish(ending, dir, out)
}

/// Runs a search `job`, shown as it goes: on the live dashboard, fed with
/// its events, when stdout is a terminal and not `no_tui` (the dashboard's
/// keys pause and stop it through `ctl`, and `e` exports a candidate into
/// `export`), else as lines on `out`. The outer error is the dashboard's
/// or the thread's; the inner one is the search's.
pub(super) fn shown<T: Send>(
    no_tui: bool,
    ctl: &RunControl,
    export: PathBuf,
    space: &Space,
    out: &mut dyn Write,
    job: impl FnOnce(&mut dyn FnMut(&Event)) -> Result<T, crate::search::SearchError> + Send,
) -> Result<Result<T, crate::search::SearchError>, CliError> {
    if no_tui || !std::io::stdout().is_terminal() {
        let mut print = printer(out);
        return Ok(job(&mut print));
    }
    let (tx, rx) = std::sync::mpsc::channel::<Event>();
    let export = export_hook(export, space);
    std::thread::scope(|sc| {
        let worker = sc.spawn(move || {
            let tx = tx;
            job(&mut |e| {
                let _ = tx.send(e.clone());
            })
        });
        let drawn = crate::tui::run_dashboard(
            crate::tui::Feed::Channel(rx),
            crate::tui::Hooks {
                pause: Some(&ctl.pause),
                stop: Some(&ctl.stop),
                export: &export,
            },
            true,
        );
        if drawn.is_err() {
            // The terminal failed under us: stop the search cleanly.
            ctl.stop.store(true, Ordering::SeqCst);
        }
        let ending = worker
            .join()
            .map_err(|_| CliError::runtime("the search thread panicked"))?;
        drawn.map_err(|e| CliError::runtime_because("dashboard", e))?;
        Ok(ending)
    })
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
fn export_hook(
    out: PathBuf,
    space: &Space,
) -> impl Fn(&crate::tui::Dashboard, u64) -> Result<String, Box<dyn std::error::Error>> + '_ {
    move |d, id| {
        let c = d.cands.get(&id).ok_or("unknown candidate")?;
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

/// `archgram watch RUN`: the dashboard on a run's events, followed as
/// they are written (a database run's as they commit, announced by
/// LISTEN/NOTIFY).
pub fn watch(run: &RunRef) -> Result<(), CliError> {
    let space = run.space()?;
    let feed = run.follow()?;
    if !std::io::stdout().is_terminal() {
        return Err(CliError::bad(
            "watch needs a terminal; use `archgram status` for plain text",
        ));
    }
    let export = export_hook(run.export_dir()?, &space);
    crate::tui::run_dashboard(
        crate::tui::Feed::Log(feed),
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
    let settings = dir.settings(store.as_ref())?;
    let space = Space::load(&dir.space_path())?;
    // The run trains where it started.
    super::opened(
        settings.device,
        &format!("the run's device, {}", settings.device.name()),
    )?;
    drive(&dir, store.as_ref(), &space, &settings, time, no_tui, out)
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
    /// The model strategy's last surrogate validation.
    pub surrogate: Option<crate::store::events::Surrogate>,
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
    let mut cache = Counters::default();
    for e in events {
        first.get_or_insert(e.t);
        last = last.max(e.t);
        cache.count(&e.kind);
        match &e.kind {
            EventKind::RunStarted(r) => {
                s.name = r.name.clone();
                s.strategy = r.strategy.clone();
                s.budget = r.budget as u64;
                s.finished = None;
            }
            EventKind::Sampled(c) => {
                archs.insert(c.id, c.arch.clone());
            }
            EventKind::Failed(f) => {
                s.evaluations = s.evaluations.max(f.evaluations as u64);
                s.failed += 1;
            }
            EventKind::Evaluated(ev) => {
                s.evaluations = s.evaluations.max(ev.evaluations as u64);
                points.push(Point {
                    id: ev.id,
                    score: ev.score,
                    active_params: ev.active_params,
                    flops: ev.flops,
                });
                let better = s
                    .best
                    .as_ref()
                    .is_none_or(|b| ev.score > b["score"].as_f64().unwrap_or(0.0));
                if better {
                    s.best =
                        Some(json!({"id": ev.id, "score": ev.score, "arch": archs.get(&ev.id)}));
                }
            }
            EventKind::RunFinished(r) => s.finished = Some(r.reason.clone()),
            EventKind::Surrogate(v) => s.surrogate = Some(v.clone()),
            EventKind::Confirmed(c) => {
                s.confirmed = c
                    .finalists
                    .iter()
                    .map(|f| serde_json::to_value(f).unwrap_or_default())
                    .collect();
                s.winner = c.winner.map(|w| {
                    json!({"id": w, "score": c.score, "sd": c.sd, "proxy": c.proxy,
                           "seeds": c.seeds, "steps": c.steps, "arch": archs.get(&w)})
                });
            }
            EventKind::Fidelity(fields) => {
                if let Some(r) = FidelityReport::from_event(fields) {
                    s.fidelity = Some(json!({
                        "candidates": r.rows.len(), "steps": r.steps,
                        "long_steps": r.plan.long_steps, "seeds": r.plan.seeds,
                        "top": r.plan.top, "proxy_vs_long": r.proxy_vs_long,
                        "proxy_vs_long_top": r.proxy_vs_long_top,
                        "seed_sd_short": r.seed_sd_short, "regret": r.regret,
                        "pick": r.pick, "best_long": r.best_long,
                        "ladder": r.ladder, "winner": r.winner,
                    }));
                }
            }
            _ => {}
        }
    }
    s.structural_hits = cache.structural_hits;
    s.functional_hits = cache.functional_hits;
    s.seconds_saved = cache.seconds_saved;
    s.pareto = front(&points);
    s.elapsed_secs = first.map_or(0.0, |f| last - f);
    s
}

pub fn status(run: &RunRef, as_json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let s = status_of(&run.events()?);
    if as_json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&s).unwrap_or_default()
        )?;
        return Ok(());
    }
    Ok(print_status(&s, out)?)
}

/// `status`'s text.
fn print_status(s: &Status, out: &mut dyn Write) -> std::io::Result<()> {
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
    if let Some(v) = &s.surrogate {
        writeln!(
            out,
            "surrogate: 5-fold Kendall τ {} on the {} candidates trained so far",
            crate::fmt::fmt_tau(v.tau),
            v.trained
        )?;
    }
    if let Some(f) = &s.fidelity {
        let tau = |v: &serde_json::Value| crate::fmt::fmt_tau(v["kendall_tau"].as_f64());
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
    use crate::store::events::{Confirmed, Evaluated, RunStarted, Surrogate};
    use crate::store::Finalist;

    #[test]
    fn a_gpu_search_trains_one_candidate_at_a_time_unless_told() {
        assert_eq!(run_workers(None, 0, 16, DeviceKind::Cuda(0)), 1);
        assert_eq!(run_workers(None, 4, 16, DeviceKind::Cuda(1)), 1);
        assert_eq!(run_workers(Some(4), 0, 16, DeviceKind::Cuda(0)), 4);
        assert_eq!(run_workers(None, 0, 16, DeviceKind::Cpu), 16);
        assert_eq!(run_workers(None, 4, 16, DeviceKind::Cpu), 4);
        assert_eq!(run_workers(Some(2), 4, 16, DeviceKind::Cpu), 2);
    }

    /// After a resume, progress lines compare against the run's best so
    /// far, which the `run_started` event carries.
    #[test]
    fn progress_lines_start_from_the_restored_best() {
        let mut out = Vec::new();
        {
            let mut print = printer(&mut out);
            print(&Event::new(EventKind::RunStarted(RunStarted {
                name: "r".into(),
                resumed: true,
                best_id: Some(7),
                best_score: Some(0.9),
                ..RunStarted::default()
            })));
            let evaluated = |id, score, evaluations| {
                Event::new(EventKind::Evaluated(Evaluated {
                    id,
                    score,
                    evaluations,
                    budget: 10,
                    ..Evaluated::default()
                }))
            };
            print(&evaluated(8, 0.5, 9));
            print(&evaluated(9, 0.95, 10));
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("best 0.9000 (#7)"), "{text}");
        assert!(lines[2].contains("best 0.9500 (#9)"), "{text}");
    }

    /// The confirm stage's finalists line up as `status` prints them: the
    /// id padded to five columns (the untyped printer wrote it unpadded).
    #[test]
    fn confirmed_finalists_line_up_with_status() {
        let mut out = Vec::new();
        let finalist = |id, mean| Finalist {
            id,
            mean,
            proxy: 0.5,
            scores: vec![mean],
            sd: 0.0,
        };
        printer(&mut out)(&Event::new(EventKind::Confirmed(Confirmed {
            finalists: vec![finalist(7, 0.75), finalist(123, 0.25)],
            ..Confirmed::default()
        })));
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "  #7     0.7500 ± 0.0000   proxy 0.5000",
                "  #123   0.2500 ± 0.0000   proxy 0.5000"
            ],
            "{text}"
        );
    }

    /// `status --json` keeps its shape: the fields it reads from each event.
    #[test]
    fn status_folds_typed_events() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        std::fs::copy("tests/fixtures/events-confirmed.jsonl", &p).unwrap();
        let s = status_of(&crate::store::read_events(&p).unwrap());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["winner"]["id"], 2, "{v}");
        assert!(v["winner"]["arch"].as_str().unwrap().starts_with("repeat("));
        assert_eq!(v["confirmed"][0]["id"], 2);
        assert_eq!(v["fidelity"]["long_steps"], 400);
        assert_eq!(v["fidelity"]["proxy_vs_long_top"]["kendall_tau"], 0.5);
        assert_eq!(v["fidelity"]["winner"], serde_json::Value::Null);
        assert_eq!(
            (s.evaluations, s.finished.as_deref()),
            (10, Some("budget spent"))
        );
        assert_eq!(s.best.unwrap()["id"], 1);
        assert_eq!(v["surrogate"], serde_json::Value::Null);
    }

    #[test]
    fn status_shows_the_last_surrogate_validation() {
        let line = |trained, tau| Event::new(EventKind::Surrogate(Surrogate { tau, trained }));
        let s = status_of(&[line(5, None), line(10, Some(0.25))]);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            (
                v["surrogate"]["trained"].clone(),
                v["surrogate"]["tau"].clone()
            ),
            (json!(10), json!(0.25))
        );
        let mut out = Vec::new();
        print_status(&s, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("surrogate: 5-fold Kendall τ +0.25 on the 10 candidates trained so far"),
            "{text}"
        );
    }
}
