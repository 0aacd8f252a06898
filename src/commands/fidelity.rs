//! `archgram fidelity RUN`: how well a run's proxy ranks its candidates,
//! measured by retraining them (see `search::fidelity`).

use super::locate::{OpenRun, RunRef};
use super::search::{printer, stop_flag};
use super::CliError;
use crate::cli::FidelityFlags;
use crate::eval::training_pool;
use crate::search::fidelity::{self, Agreement, FidelityPlan, FidelityReport};
use crate::store::EventKind;
use std::io::Write;

pub fn fidelity(run: &RunRef, args: FidelityFlags, out: &mut dyn Write) -> Result<(), CliError> {
    // Held to the end: no coordinator may start in a database run while
    // its trials are written.
    let _lock = run.exclusive()?;
    let OpenRun {
        store,
        mut settings,
        space,
    } = run.open()?;
    let mut plan = FidelityPlan::for_run(&settings);
    plan.top = args.top.unwrap_or(plan.top);
    plan.spread = args.spread.unwrap_or(plan.spread);
    plan.long_steps = args.long_steps.unwrap_or(plan.long_steps);
    plan.seeds = args.seeds.unwrap_or(plan.seeds);
    if let Some(l) = args.ladder {
        plan.ladder = l;
    }
    if plan.top == 0 || plan.seeds == 0 || plan.long_steps == 0 || plan.ladder.contains(&0) {
        return Err(CliError::bad(
            "--top, --seeds, --long-steps and every --ladder step count must be at least 1",
        ));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    settings.workers = args.workers.unwrap_or(cores).max(1);
    let todo = fidelity::pending(store.as_ref(), &settings, &plan)?;
    let steps: usize = todo.iter().map(|j| j.steps).sum();
    if !args.json {
        writeln!(
            out,
            "fidelity of {}: {} trainings to run ({} steps in all, {:.1}× the run's {}-step training each), {} worker(s)",
            run.label(),
            todo.len(),
            steps,
            steps as f64 / settings.steps.max(1) as f64,
            settings.steps,
            settings.workers
        )?;
    }
    let task = space
        .build_task(space.file.seed)
        .map_err(|e| CliError::bad_because("the space's task", e))?;
    let pool = training_pool(settings.workers)
        .map_err(|e| CliError::runtime_because("cannot start the worker threads", e))?;
    let ctl = stop_flag();
    let mut sink: Vec<u8> = Vec::new();
    let quiet = args.json;
    let report = {
        let mut print = printer(if quiet { &mut sink } else { &mut *out });
        let mut emit = |e: crate::store::Event| {
            store.append_event(&e)?;
            if matches!(e.kind, EventKind::Trial(_)) {
                print(&e);
            }
            Ok(())
        };
        fidelity::measure(
            store.as_ref(),
            &space,
            &settings,
            &plan,
            task.as_ref(),
            &pool,
            &ctl,
            &mut emit,
        )?
    };
    let Some(report) = report else {
        writeln!(
            out,
            "stopped; the trainings that finished are kept: run the same command to continue"
        )?;
        return Err(CliError::Interrupted);
    };
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        )?;
    } else {
        write!(out, "{}", render(&report))?;
    }
    Ok(())
}

fn fmt_agreement(a: &Agreement) -> String {
    let f = |v: Option<f64>| v.map_or("  n/a".to_string(), |v| format!("{v:+.2}"));
    format!(
        "τ {}  ρ {}  (n={})",
        f(a.kendall_tau),
        f(a.spearman_rho),
        a.n
    )
}

fn mean_sd(v: &[f64]) -> String {
    if v.is_empty() {
        return "   —".into();
    }
    format!("{:.4} ± {:.4}", crate::stats::mean(v), crate::stats::sd(v))
}

/// The report as a terminal table and a few summary lines.
pub fn render(r: &FidelityReport) -> String {
    use std::fmt::Write;
    let p = &r.plan;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{} of {} candidates: the run's score ({} steps, one seed) against {} fresh seed(s) at {} and at {} steps",
        r.metric,
        r.rows.len(),
        r.steps,
        p.seeds,
        r.steps,
        p.long_steps
    );
    let _ = writeln!(
        s,
        "{:>5} {:>6}  {:>8}  {:>17}  {:>17}{}",
        "rank",
        "id",
        "run",
        format!("fresh@{}", r.steps),
        format!("long@{}", p.long_steps),
        p.ladder
            .iter()
            .map(|l| format!("  {:>7}", format!("@{l}")))
            .collect::<String>()
    );
    for row in &r.rows {
        let _ = writeln!(
            s,
            "{:>5} {:>6}  {:>8.4}  {:>17}  {:>17}{}{}",
            row.rank,
            format!("#{}", row.id),
            row.proxy,
            mean_sd(&row.short),
            mean_sd(&row.long),
            row.ladder
                .iter()
                .map(|l| format!("  {:>7.4}", l.1))
                .collect::<String>(),
            if row.proxy_steps != r.steps {
                format!("  (run score at {} steps)", row.proxy_steps)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(s, "\nrank agreement with the long budget:");
    let _ = writeln!(
        s,
        "  run's score (one seed)    all: {}   top {}: {}",
        fmt_agreement(&r.proxy_vs_long),
        p.top,
        fmt_agreement(&r.proxy_vs_long_top)
    );
    let _ = writeln!(
        s,
        "  fresh mean ({} seed(s))    all: {}   top {}: {}",
        p.seeds,
        fmt_agreement(&r.short_vs_long),
        p.top,
        fmt_agreement(&r.short_vs_long_top)
    );
    for l in &r.ladder {
        let _ = writeln!(
            s,
            "  {:>5} steps (one seed)   to {} steps: {}   to {} steps: {}",
            l.steps,
            r.steps,
            fmt_agreement(&l.to_run_steps),
            p.long_steps,
            fmt_agreement(&l.to_long)
        );
    }
    let _ = writeln!(
        s,
        "seed noise (sd across fresh seeds): {:.4} at {} steps, {:.4} at {} steps; the top {}'s run scores exceed their fresh means by {:+.4}",
        r.seed_sd_short, r.steps, r.seed_sd_long, p.long_steps, p.top, r.top_optimism
    );
    if let Some(t) = &r.top_long_separation {
        let _ = writeln!(
            s,
            "the top {} at {} steps: F {:.2} over {} seeds, reliability of their means {:.2}; a perfect proxy would reach tau {:.2} among them{}",
            t.candidates,
            p.long_steps,
            t.f,
            t.seeds,
            t.reliability,
            t.tau_ceiling,
            if t.reliability < 0.5 {
                " (they are tied within seed noise: tau among them mostly measures noise)"
            } else {
                ""
            }
        );
    }
    if let Some(o) = &r.other {
        let _ = writeln!(
            s,
            "the same trainings scored by {}, ranked against its long mean:\n  run's score (one seed)    all: {}   top {}: {}\n  fresh mean ({} seed(s))    top {}: {}; seed sd at {} steps {:.4}{}",
            o.metric,
            fmt_agreement(&o.proxy_vs_long),
            p.top,
            fmt_agreement(&o.proxy_vs_long_top),
            p.seeds,
            p.top,
            fmt_agreement(&o.short_vs_long_top),
            p.long_steps,
            o.seed_sd_long,
            o.top_long_separation.as_ref().map_or(String::new(), |t| format!(
                "; top {}: F {:.2}, tau ceiling {:.2}",
                t.candidates, t.f, t.tau_ceiling
            ))
        );
    }
    let _ = writeln!(
        s,
        "pick #{}; best at {} steps #{}: regret {:.4}",
        r.pick, p.long_steps, r.best_long, r.regret
    );
    if let Some(w) = &r.winner {
        let _ = writeln!(
            s,
            "confirmed winner #{}: {:.4} ± {:.4}; under fidelity's fresh seeds {} ({})",
            w.id,
            w.confirmed_mean,
            w.confirmed_sd,
            mean_sd(&w.fresh),
            if w.within_one_sd {
                "within one sd"
            } else {
                "NOT within one sd"
            }
        );
    }
    s
}
