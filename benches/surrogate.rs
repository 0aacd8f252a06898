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
//! (2000) fresh candidates.

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

/// (features, score) of every candidate a finished run trained.
fn from_run(dir: &Path) -> (Space, Vec<(Vec<f64>, f64)>) {
    let space = Space::load(&dir.join("space.ron")).expect("run's space.ron");
    let vocab = space.build_task(space.file.seed).expect("task").vocab();
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
                    out.push((features(&net.arch, vocab), ev.score));
                }
            }
            _ => {}
        }
    }
    (space, out)
}

/// Samples `n` structurally distinct candidates and trains each once.
fn sampled(space: &Space, n: usize) -> Vec<(Vec<f64>, f64)> {
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
    nets.par_iter()
        .enumerate()
        .map(|(k, net)| {
            let cfg = train_config(
                space,
                1000 + k as u64,
                steps,
                archgram::eval::DeviceKind::Cpu,
            );
            let o = archgram::eval::evaluate(&net.arch, task.as_ref(), &cfg);
            (features(&net.arch, task.vocab()), o.score)
        })
        .collect()
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
        let mut row = format!("{:<8}", kind.name());
        for &n in &sizes {
            let taus: Vec<f64> = (0..5u64)
                .filter_map(|o| {
                    let mut d = data.clone();
                    d.shuffle(&mut archgram::seed::rng(o, "order", 0));
                    d.truncate(n);
                    let (xs, ys): (Vec<_>, Vec<_>) = d.into_iter().unzip();
                    cross_validated_tau(kind, &xs, &ys, 5, o).expect("fit")
                })
                .collect();
            row += &format!("{:>16}", format!("{:+.2} ± {:.2}", mean(&taus), sd(&taus)));
        }
        println!("{row}");
    }

    let pool = env_usize("SURROGATE_POOL", 2000);
    let vocab = space.build_task(space.file.seed).expect("task").vocab();
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
