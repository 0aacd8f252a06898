//! Search quality: regularised evolution against random search at the same
//! evaluation budget, over several seeds, on the quickstart space. Prints
//! the best score found after each evaluation (mean and spread across
//! seeds) and the duplicate rate the cache caught.
//!
//! `cargo bench --bench search_quality` (defaults: 4 seeds × 40
//! evaluations × 100 steps); override with `SQ_SEEDS`, `SQ_BUDGET`,
//! `SQ_STEPS`.

use archgram::eval::DeviceKind;
use archgram::search::{run, score_of, RunControl, RunDir, RunSettings, StrategyKind};
use archgram::space::Space;
use archgram::store::Store;
use std::path::Path;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Best score after each evaluation, and (duplicates, candidates).
fn one(
    space: &Space,
    strategy: StrategyKind,
    seed: u64,
    budget: usize,
    steps: usize,
) -> (Vec<f64>, usize, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = RunSettings {
        name: format!("{}-{seed}", strategy.name()),
        strategy,
        budget,
        seed,
        workers: 2,
        population: space.file.search.population,
        tournament: space.file.search.tournament,
        steps,
        device: DeviceKind::Cpu,
        halving: None,
    };
    let (rd, store) = RunDir::create(dir.path(), space, &settings).expect("run dir");
    run(
        &rd,
        &store,
        space,
        &settings,
        None,
        &RunControl::default(),
        &mut |_| {},
    )
    .expect("search");
    let cands = store.candidates().expect("candidates");
    let mut best = Vec::new();
    let mut b = 0.0f64;
    for c in cands.iter().filter(|c| c.duplicate_of.is_none()) {
        if let Some(o) = store.outcome(c.id).expect("outcome") {
            b = b.max(score_of(&o));
            best.push(b);
        }
    }
    let dups = cands.iter().filter(|c| c.duplicate_of.is_some()).count();
    (best, dups, cands.len())
}

fn main() {
    // `cargo bench` passes flags such as --bench; nothing to parse.
    let seeds = env("SQ_SEEDS", 4) as u64;
    let budget = env("SQ_BUDGET", 40);
    let steps = env("SQ_STEPS", 100);
    let space = Space::load(Path::new("spaces/quickstart.ron")).expect("quickstart");
    println!("quickstart, {seeds} seeds × {budget} evaluations × {steps} steps, 2 workers");
    let mut curves = Vec::new();
    for strategy in [StrategyKind::Random, StrategyKind::Evolution] {
        let mut runs = Vec::new();
        let (mut dups, mut total) = (0, 0);
        for seed in 1..=seeds {
            let (best, d, n) = one(&space, strategy, seed, budget, steps);
            println!(
                "  {:<9} seed {seed}: best {:.4}, {d} duplicates of {n} candidates",
                strategy.name(),
                best.last().copied().unwrap_or(0.0)
            );
            dups += d;
            total += n;
            runs.push(best);
        }
        println!(
            "  {:<9} duplicate rate {:.1}% ({dups} of {total} proposals)",
            strategy.name(),
            100.0 * dups as f64 / total.max(1) as f64
        );
        curves.push((strategy.name(), runs));
    }
    println!("\nbest score after N evaluations: mean ± std over seeds");
    print!("{:>5}", "N");
    for (name, _) in &curves {
        print!("  {name:>17}");
    }
    println!();
    let marks: Vec<usize> = [1, 5, 10, 15, 20, 30, 40, 60, 80, 100]
        .into_iter()
        .filter(|&n| n <= budget)
        .collect();
    for n in marks {
        print!("{n:>5}");
        for (_, runs) in &curves {
            let v: Vec<f64> = runs
                .iter()
                .map(|r| r.get(n - 1).or(r.last()).copied().unwrap_or(0.0))
                .collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
            print!("  {mean:>9.4} ± {sd:.4}");
        }
        println!();
    }
}
