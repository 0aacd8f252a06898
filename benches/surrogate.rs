//! How well the surrogate ranks candidates it has not seen, per model
//! class, and what ranking many candidates costs.
//!
//! `cargo bench --bench surrogate` samples `SURROGATE_N` (60) distinct
//! candidates of `SURROGATE_SPACE` (`spaces/quickstart.ron`), trains each
//! once at the space's settings (about 4 minutes on 2 cores for the
//! quickstart), and reports each model class's 5-fold cross-validated
//! Kendall τ on the first 20, 40 and all candidates (mean ± sd over 5
//! orderings). With `SURROGATE_RUNS=dir,dir` it reads finished runs'
//! events instead of training (their candidates and single-seed scores).
//! Last, it times sampling, featurising and ranking `SURROGATE_POOL`
//! (2000) fresh candidates. `SURROGATE_ZERO_COST=4,16` also measures
//! zero-cost signals (the held-out loss after 4 and 16 training steps):
//! their own τ, the forest's τ with each added as a feature, and their
//! cost.

use archgram::arch::Network;
use archgram::search::train_config;
use archgram::space::Space;
use archgram::stats::{mean, sd};
use archgram::store::{read_events, EventKind};
use archgram::surrogate::features::features;
use archgram::surrogate::{cross_validated_tau, ModelKind, Surrogate};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every candidate a finished run trained, with its score.
fn from_run(dir: &Path) -> (Space, Vec<(Network, f64)>) {
    let space = Space::load(&dir.join("space.ron")).expect("run's space.ron");
    let events = read_events(&dir.join("events.jsonl")).expect("events.jsonl");
    let mut arch: HashMap<u64, String> = HashMap::new();
    let mut out = Vec::new();
    for e in &events {
        match &e.kind {
            EventKind::Sampled(s) => {
                arch.insert(s.id, s.arch.clone());
            }
            EventKind::Evaluated(ev) => {
                if let Some(text) = arch.get(&ev.id) {
                    let net = space.parse_arch(text).expect("arch of a sampled event");
                    out.push((net, ev.score));
                }
            }
            _ => {}
        }
    }
    (space, out)
}

/// Samples `n` structurally distinct candidates and trains each once.
fn sampled(space: &Space, n: usize) -> Vec<(Network, f64)> {
    let task = space.build_task(space.file.seed).expect("task");
    let mut seen = HashSet::new();
    let mut nets = Vec::new();
    let mut i = 0;
    while nets.len() < n {
        let mut rng = archgram::seed::rng(11, "surrogate-bench", i);
        i += 1;
        if let Ok(net) = space.sample(&mut rng) {
            if seen.insert(archgram::hash::Hashes::of(&net.arch).structural) {
                nets.push(net);
            }
        }
    }
    let steps = space.file.train.steps;
    nets.into_par_iter()
        .enumerate()
        .map(|(k, net)| {
            let cfg = train_config(
                space,
                1000 + k as u64,
                steps,
                archgram::eval::DeviceKind::Cpu,
            );
            let o = archgram::eval::evaluate(&net.arch, task.as_ref(), &cfg);
            (net, o.score)
        })
        .collect()
}

/// One table row: a model class's cross-validated τ at each size.
fn tau_row(label: &str, kind: ModelKind, data: &[(Vec<f64>, f64)], sizes: &[usize]) -> String {
    let mut row = format!("{label:<8}");
    for &n in sizes {
        let taus: Vec<f64> = (0..5u64)
            .filter_map(|o| {
                let mut d = data.to_vec();
                d.shuffle(&mut archgram::seed::rng(o, "order", 0));
                d.truncate(n);
                let (xs, ys): (Vec<_>, Vec<_>) = d.into_iter().unzip();
                cross_validated_tau(kind, &xs, &ys, 5, o).expect("fit")
            })
            .collect();
        row += &format!("{:>16}", format!("{:+.2} ± {:.2}", mean(&taus), sd(&taus)));
    }
    row
}

/// Zero-cost signals (Abdelfattah et al. 2021 survey them; Mellor et al.
/// 2021 for NASWOT): here the held-out loss after a handful of training
/// steps, one per step count in `list`. Reports each signal's τ against
/// the run's scores alone, the forest's τ with the signal as one more
/// feature, and what the signal costs per candidate against a full
/// training.
fn zero_cost(
    space: &Space,
    nets: &[Network],
    data: &[(Vec<f64>, f64)],
    sizes: &[usize],
    list: &str,
) {
    let task = space.build_task(space.file.seed).expect("task");
    let ys: Vec<f64> = data.iter().map(|d| d.1).collect();
    println!(
        "
zero-cost signals: held-out loss after k training steps (one seed, one thread each)"
    );
    for k in list
        .split(',')
        .filter_map(|k| k.trim().parse::<usize>().ok())
    {
        let t = Instant::now();
        let signal: Vec<f64> = nets
            .par_iter()
            .map(|net| {
                let cfg = train_config(space, 77, k, archgram::eval::DeviceKind::Cpu);
                let o = archgram::eval::evaluate(&net.arch, task.as_ref(), &cfg);
                // Lower loss is better; a failed training gets the worst.
                -o.test_loss.unwrap_or(f64::INFINITY).min(1e6)
            })
            .collect();
        let per =
            t.elapsed().as_secs_f64() * rayon::current_num_threads() as f64 / nets.len() as f64;
        let alone = archgram::stats::kendall_tau(&signal, &ys).unwrap_or(f64::NAN);
        let with: Vec<(Vec<f64>, f64)> = data
            .iter()
            .zip(&signal)
            .map(|((x, y), s)| {
                let mut x = x.clone();
                x.push(*s);
                (x, *y)
            })
            .collect();
        println!(
            "k={k}: {:.3} CPU-s a candidate; tau of the signal alone vs score {:+.2}",
            per, alone
        );
        println!(
            "{}",
            tau_row(&format!("+k={k}"), ModelKind::Forest, &with, sizes)
        );
    }
}

fn main() {
    let (space, data) = match std::env::var("SURROGATE_RUNS") {
        Ok(runs) => {
            let mut all = Vec::new();
            let mut space = None;
            for r in runs.split(',').filter(|r| !r.is_empty()) {
                let (s, d) = from_run(Path::new(r));
                println!("{r}: {} trained candidates", d.len());
                all.extend(d);
                space.get_or_insert(s);
            }
            (space.expect("SURROGATE_RUNS names no run"), all)
        }
        Err(_) => {
            let path = std::env::var("SURROGATE_SPACE").unwrap_or("spaces/quickstart.ron".into());
            let space = Space::load(Path::new(&path)).expect("space");
            let n = env_usize("SURROGATE_N", 60);
            let t = Instant::now();
            let d = sampled(&space, n);
            println!(
                "{path}: trained {n} sampled candidates in {:.0} s",
                t.elapsed().as_secs_f64()
            );
            (space, d)
        }
    };
    let vocab = space.build_task(space.file.seed).expect("task").vocab();
    let nets: Vec<Network> = data.iter().map(|(n, _)| n.clone()).collect();
    let data: Vec<(Vec<f64>, f64)> = data
        .into_iter()
        .map(|(n, y)| (features(&n.arch, vocab), y))
        .collect();
    let sizes: Vec<usize> = [20, 40, data.len()]
        .into_iter()
        .filter(|&s| s <= data.len())
        .collect();
    println!("\n5-fold cross-validated Kendall tau (mean ± sd over 5 orderings)");
    println!(
        "{:<8} {}",
        "model",
        sizes
            .iter()
            .map(|s| format!("{:>16}", format!("n={s}")))
            .collect::<String>()
    );
    for kind in ModelKind::ALL {
        println!("{}", tau_row(kind.name(), kind, &data, &sizes));
    }
    if let Ok(list) = std::env::var("SURROGATE_ZERO_COST") {
        zero_cost(&space, &nets, &data, &sizes, &list);
    }

    let pool = env_usize("SURROGATE_POOL", 2000);
    let (xs, ys): (Vec<_>, Vec<_>) = data.into_iter().unzip();
    let model = Surrogate::fit(ModelKind::Forest, &xs, &ys, 1).expect("fit");
    let t = Instant::now();
    let mut rng = archgram::seed::rng(5, "pool", 0);
    let nets: Vec<_> = (0..pool)
        .filter_map(|_| space.sample(&mut rng).ok())
        .collect();
    let sample_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let fx: Vec<Vec<f64>> = nets.iter().map(|n| features(&n.arch, vocab)).collect();
    let feat_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let p = model.predict(&fx).expect("predict");
    let pred_s = t.elapsed().as_secs_f64();
    println!(
        "\nranking a pool of {} candidates (one thread): sampling {:.2} s, features {:.3} s, forest prediction {:.3} s; best predicted {:.3}",
        nets.len(),
        sample_s,
        feat_s,
        pred_s,
        p.iter().map(|p| p.mean).fold(f64::MIN, f64::max)
    );
}
