//! Search quality: the default strategy against random search at equal
//! training compute, over seeds and task settings, judged by each run's
//! confirmed winner (its top candidates retrained with fresh seeds), plus
//! the proxy's fidelity on the default strategy's runs.
//!
//! `cargo bench --bench search_quality` runs the default study (the
//! quickstart space, 8 seeds, random against evolution); environment
//! variables scale it:
//!
//! - `SQ_SPACES`: comma-separated space files (default
//!   `spaces/quickstart.ron`);
//! - `SQ_SEEDS` (8), `SQ_SEED_FROM` (1: the first seed, to continue a
//!   study that was cut short: a run's result depends only on its seed,
//!   strategy and budget), `SQ_BUDGET` (each space's budget), `SQ_STEPS` (each
//!   space's steps), `SQ_STRATEGIES` (`random,evolution`; each is compared
//!   with every earlier one, and the summary's top-level figures are the
//!   last against the first);
//! - `SQ_FIDELITY`: on how many of the last strategy's runs per space to
//!   run `fidelity` (top 8, a spread of 4, 4× the steps, 2 seeds; default
//!   0: it costs about three searches each);
//! - `SQ_REEVAL`: evolution's `search.reeval` (default: each space's);
//! - `SQ_WORKERS` (2), `SQ_OUT` (a JSON file for the results).
//!
//! Compute is equal per seed: the judged strategy runs first, and the
//! baseline then gets as many trainings as it used (its candidates plus
//! its seed re-evaluations); both confirm stages cost the same.

use archgram::eval::DeviceKind;
use archgram::search::fidelity::{measure, FidelityPlan, FidelityReport};
use archgram::search::{
    confirm_table, ranked, run, score_of, RunControl, RunDir, RunSettings, StrategyKind,
};
use archgram::space::Space;
use archgram::stats::{mean, sd};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

fn env(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// What one search run gave.
struct RunResult {
    /// The confirmed winner's mean and sd over fresh seeds.
    confirmed: f64,
    confirmed_sd: f64,
    /// Trainings of the search itself (candidates and re-evaluations).
    trainings: usize,
    /// The best single-seed search score.
    proxy_best: f64,
    /// The best single-seed search score after each training of a
    /// candidate, in the order they were proposed.
    best_so_far: Vec<f64>,
    /// (duplicates, candidates proposed).
    duplicates: usize,
    proposed: usize,
    fidelity: Option<FidelityReport>,
}

fn one(
    space: &Space,
    strategy: StrategyKind,
    seed: u64,
    budget: usize,
    steps: usize,
    workers: usize,
    with_fidelity: bool,
) -> RunResult {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = &space.file.search;
    let settings = RunSettings {
        name: format!("{}-{seed}", strategy.name()),
        strategy,
        budget,
        seed,
        workers,
        population: d.population,
        tournament: d.tournament,
        steps,
        device: DeviceKind::Cpu,
        halving: None,
        confirm: Some(d.confirm),
        reeval: env("SQ_REEVAL").unwrap_or(d.reeval),
        model: d.model,
    };
    let (rd, store) = RunDir::create(dir.path(), space, &settings).expect("run dir");
    let ctl = RunControl::default();
    run(
        &rd,
        store.as_ref(),
        space,
        &settings,
        None,
        &ctl,
        &mut |_| {},
    )
    .expect("search");
    let table = confirm_table(store.as_ref(), &settings, d.confirm, space.metric)
        .expect("store")
        .expect("the confirm stage finished");
    let w = table.winner().expect("a winner");
    let ranking = ranked(store.as_ref()).expect("ranking");
    let cands = store.candidates().expect("candidates");
    let fidelity = with_fidelity.then(|| {
        let task = space.build_task(space.file.seed).expect("task");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .build()
            .expect("pool");
        measure(
            store.as_ref(),
            space,
            &settings,
            &FidelityPlan::for_run(&settings),
            task.as_ref(),
            &pool,
            &ctl,
            &mut |_| Ok(()),
        )
        .expect("fidelity")
        .expect("not interrupted")
    });
    let reevals = store
        .trials()
        .expect("trials")
        .iter()
        .filter(|t| t.purpose == archgram::search::REEVAL)
        .count();
    let mut best_so_far: Vec<f64> = Vec::new();
    for c in cands.iter().filter(|c| c.duplicate_of.is_none()) {
        let s = store
            .outcome(c.id)
            .expect("store")
            .as_ref()
            .map_or(0.0, score_of);
        best_so_far.push(best_so_far.last().map_or(s, |b: &f64| b.max(s)));
    }
    RunResult {
        best_so_far,
        trainings: cands.iter().filter(|c| c.duplicate_of.is_none()).count() + reevals,
        confirmed: w.mean,
        confirmed_sd: w.sd,
        proxy_best: ranking.first().map_or(0.0, |r| r.score),
        duplicates: cands.iter().filter(|c| c.duplicate_of.is_some()).count(),
        proposed: cands.len(),
        fidelity,
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:+.2}"))
}

/// How `judged`'s confirmed winners compare with `base`'s, seed by seed.
fn compare(base: &[RunResult], judged: &[RunResult]) -> serde_json::Value {
    let diffs: Vec<f64> = base
        .iter()
        .zip(judged)
        .map(|(a, b)| b.confirmed - a.confirmed)
        .collect();
    let pooled: Vec<f64> = base.iter().chain(judged).map(|r| r.confirmed).collect();
    // How soon `judged`'s best proxy reached `base`'s final one, as a share
    // of its trainings (1 when it never did: an upper bound on the share).
    let reach: Vec<f64> = base
        .iter()
        .zip(judged)
        .map(|(a, b)| {
            let n = b.best_so_far.len().max(1);
            b.best_so_far
                .iter()
                .position(|&s| s >= a.proxy_best)
                .map_or(1.0, |i| (i + 1) as f64 / n as f64)
        })
        .collect();
    json!({
        "seeds": diffs.len(),
        "wins": diffs.iter().filter(|&&d| d > 0.0).count(),
        "margin": mean(&diffs),
        "margin_sd": sd(&diffs),
        "winner_sd_across_seeds": sd(&pooled),
        "confirm_seed_sd": mean(&judged.iter().map(|r| r.confirmed_sd).collect::<Vec<_>>()),
        "reach_share": reach,
        "reached": reach.iter().filter(|&&r| r < 1.0).count(),
    })
}

fn main() {
    let started = Instant::now();
    let spaces = std::env::var("SQ_SPACES").unwrap_or_else(|_| "spaces/quickstart.ron".into());
    let seeds = env("SQ_SEEDS").unwrap_or(8) as u64;
    let first_seed = env("SQ_SEED_FROM").unwrap_or(1).max(1) as u64;
    let workers = env("SQ_WORKERS").unwrap_or(2);
    let fidelity_runs = env("SQ_FIDELITY").unwrap_or(0) as u64;
    let strategies: Vec<StrategyKind> = std::env::var("SQ_STRATEGIES")
        .unwrap_or_else(|_| "random,evolution".into())
        .split(',')
        .map(|s| StrategyKind::parse(s.trim()).expect("SQ_STRATEGIES: random, evolution or model"))
        .collect();
    let mut all = Vec::new();
    for path in spaces.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let space = Space::load(Path::new(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        let budget = env("SQ_BUDGET").unwrap_or(space.file.search.budget);
        let steps = env("SQ_STEPS").unwrap_or(space.file.train.steps);
        let c = space.file.search.confirm;
        println!(
            "\n== {} ({}): seeds {first_seed}–{seeds} × {budget} evaluations × {steps} steps, confirm top {} × {} seeds, {workers} workers, score {}",
            space.name(),
            path,
            c.top,
            c.seeds,
            space.metric
        );
        let mut per: Vec<Vec<RunResult>> = strategies.iter().map(|_| Vec::new()).collect();
        // Seed by seed, so that a study cut short still pairs its strategies;
        // within a seed the judged (last) strategy runs first and the others
        // match its compute.
        for seed in first_seed..=seeds {
            let mut judged_trainings = None;
            for (si, &strategy) in strategies.iter().enumerate().rev() {
                let last = si + 1 == strategies.len();
                let budget = judged_trainings.unwrap_or(budget);
                let r = one(
                    &space,
                    strategy,
                    seed,
                    budget,
                    steps,
                    workers,
                    last && seed < first_seed + fidelity_runs,
                );
                println!(
                    "  {:<9} seed {seed}: confirmed {:.4} ± {:.4}, best proxy {:.4}, {} trainings, {} duplicates of {} proposed  [{:.0} s]",
                    strategy.name(),
                    r.confirmed,
                    r.confirmed_sd,
                    r.proxy_best,
                    r.trainings,
                    r.duplicates,
                    r.proposed,
                    started.elapsed().as_secs_f64()
                );
                if let Some(f) = &r.fidelity {
                    println!(
                        "            fidelity: τ top {} {} (fresh-mean {}), all {}; seed sd {:.4}; regret {:.4}; winner within one sd: {}",
                        f.plan.top,
                        fmt_opt(f.proxy_vs_long_top.kendall_tau),
                        fmt_opt(f.short_vs_long_top.kendall_tau),
                        fmt_opt(f.proxy_vs_long.kendall_tau),
                        f.seed_sd_short,
                        f.regret,
                        f.winner.as_ref().map_or("n/a".into(), |w| w.within_one_sd.to_string())
                    );
                }
                if last {
                    judged_trainings = Some(r.trainings);
                }
                per[si].push(r);
            }
        }
        println!("\n  confirmed winner, mean ± sd over seeds:");
        for (strategy, runs) in strategies.iter().zip(&per) {
            let v: Vec<f64> = runs.iter().map(|r| r.confirmed).collect();
            let d: usize = runs.iter().map(|r| r.duplicates).sum();
            let n: usize = runs.iter().map(|r| r.proposed).sum();
            println!(
                "    {:<9} {:.4} ± {:.4}   (duplicates {:.1}% of proposals)",
                strategy.name(),
                mean(&v),
                sd(&v),
                100.0 * d as f64 / n.max(1) as f64
            );
        }
        let mut summary = json!({"space": path, "seeds": seeds, "budget": budget, "steps": steps});
        // Every strategy against every earlier one (the first is the
        // baseline); the summary's top-level figures are the last against
        // the first.
        let mut pairs = Vec::new();
        for j in 1..per.len() {
            for i in 0..j {
                let p = compare(&per[i], &per[j]);
                let f = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
                let shares: Vec<f64> = p["reach_share"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_f64())
                    .collect();
                println!(
                    "  {} beats {} in {} of {} seeds; mean margin {:+.4} (sd of the margins {:.4}); sd of confirmed winners across seeds and both {:.4}; mean confirm seed sd {:.4}",
                    strategies[j].name(),
                    strategies[i].name(),
                    p["wins"],
                    p["seeds"],
                    f("margin"),
                    f("margin_sd"),
                    f("winner_sd_across_seeds"),
                    f("confirm_seed_sd"),
                );
                println!(
                    "    its best proxy reached {}'s final best proxy in {} of {} seeds, after {:.0}% of its trainings on average (100% counted where it never did)",
                    strategies[i].name(),
                    p["reached"],
                    p["seeds"],
                    100.0 * mean(&shares),
                );
                pairs.push(json!({"judged": strategies[j].name(), "against": strategies[i].name(), "result": p}));
            }
        }
        if per.len() >= 2 {
            let p = compare(&per[0], &per[per.len() - 1]);
            for key in [
                "wins",
                "margin",
                "margin_sd",
                "winner_sd_across_seeds",
                "confirm_seed_sd",
            ] {
                summary[key] = p[key].clone();
            }
            summary["pairs"] = json!(pairs);
        }
        let fids: Vec<&FidelityReport> = per
            .last()
            .into_iter()
            .flatten()
            .filter_map(|r| r.fidelity.as_ref())
            .collect();
        if !fids.is_empty() {
            let taus: Vec<f64> = fids
                .iter()
                .filter_map(|f| f.proxy_vs_long_top.kendall_tau)
                .collect();
            let within = fids
                .iter()
                .filter(|f| f.winner.as_ref().is_some_and(|w| w.within_one_sd))
                .count();
            println!(
                "  fidelity over {} runs: Kendall τ (proxy vs {}× steps) among the top 8: {:.2} ± {:.2}; winner within one sd of 2 fresh seeds in {within} of {}",
                fids.len(),
                fids[0].plan.long_steps / fids[0].steps.max(1),
                mean(&taus),
                sd(&taus),
                fids.len()
            );
            summary["fidelity_tau_top8"] = json!(taus);
            summary["winner_within_sd"] = json!(within);
        }
        all.push(summary);
    }
    println!(
        "\nsearch_quality finished in {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
    if let Ok(p) = std::env::var("SQ_OUT") {
        std::fs::write(&p, serde_json::to_string_pretty(&all).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{p}: {e}"));
    }
}
