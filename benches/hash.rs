//! Hashing on each shipped space: first a search-like stream of proposals
//! (fresh samples and mutations of a recent population, as regularised
//! evolution makes them) with its structural and functional hit rates and
//! the hash cost per candidate against the training time of a few of
//! them (CPU time where Linux reports it, so a busy machine does not skew
//! the share); then criterion throughput of both hashes (one core).
//!
//! `cargo bench --bench hash` (defaults: 1,500 proposals and 3 trained
//! candidates per space); `HASH_STREAM=N` changes the proposals (0 skips
//! the stream), `HASH_TRAIN=K` the trained candidates.

use archgram::arch::Network;
use archgram::eval::{self, DeviceKind};
use archgram::hash::{functional_hash, structural_hash, Hashes};
use archgram::search::train_config;
use archgram::space::Space;
use criterion::{criterion_group, Criterion, Throughput};
use rand::Rng;
use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::time::Instant;

const SPACES: [&str; 3] = ["quickstart", "moe-heavy", "einspace"];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds this thread has run, from Linux's scheduler statistics (the
/// machine may be shared, so wall time is reported beside it only).
fn thread_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<f64>().ok()? * 1e-9)
}

/// CPU seconds of the whole process, every thread counted (training runs
/// on several), in clock ticks of 10 ms.
fn process_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): utime, stime
    // are the 12th and 13th.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Wall and CPU seconds of `f` (CPU as `clock` counts it, when it can).
fn timed<T>(clock: fn() -> Option<f64>, f: impl FnOnce() -> T) -> (T, f64, Option<f64>) {
    let (t, c) = (Instant::now(), clock());
    let out = f();
    let cpu = c.zip(clock()).map(|(a, b)| b - a);
    (out, t.elapsed().as_secs_f64(), cpu)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn load(space: &str) -> Space {
    Space::load(Path::new(&format!("spaces/{space}.ron"))).expect("space")
}

/// One proposal of the stream: a fresh sample while the population fills
/// and one time in ten after, otherwise a mutant of a random member.
fn propose(space: &Space, pop: &VecDeque<Network>, i: u64) -> Option<Network> {
    let mut rng = archgram::seed::rng(space.file.seed, "hash-bench", i);
    if pop.len() < space.file.search.population || rng.gen_bool(0.1) {
        space.sample(&mut rng).ok()
    } else {
        let parent = &pop[rng.gen_range(0..pop.len())];
        space.mutate(&parent.term, &mut rng).ok().map(|(n, _)| n)
    }
}

fn stream(space_name: &str, proposals: usize, trained: usize) {
    let space = load(space_name);
    let mut pop: VecDeque<Network> = VecDeque::new();
    let (mut seen_s, mut seen_f) = (HashSet::new(), HashSet::new());
    let (mut s_hits, mut f_hits, mut degenerate, mut n) = (0, 0, 0, 0);
    let (mut secs, mut cpu) = (Vec::new(), Vec::new());
    let mut fresh: Vec<Network> = Vec::new();
    for i in 0..proposals as u64 {
        let Some(net) = propose(&space, &pop, i) else {
            continue;
        };
        n += 1;
        let (h, wall, c) = timed(thread_cpu, || Hashes::of(&net.arch));
        secs.push(wall);
        cpu.extend(c);
        if h.functional.is_none() {
            degenerate += 1;
        }
        if seen_s.contains(&h.structural) {
            s_hits += 1;
        } else if h.functional.is_some_and(|f| seen_f.contains(&f)) {
            f_hits += 1;
        } else if fresh.len() < trained {
            fresh.push(net.clone());
        }
        seen_s.insert(h.structural);
        if let Some(f) = h.functional {
            seen_f.insert(f);
        }
        pop.push_back(net);
        if pop.len() > space.file.search.population {
            pop.pop_front();
        }
    }
    let hash_cpu = (cpu.len() == secs.len()).then(|| mean(&cpu));
    let hash_wall = mean(&secs);
    secs.sort_by(f64::total_cmp);
    let p99 = secs
        .get(secs.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or(0.0);
    let pct = |k: usize| 100.0 * k as f64 / n.max(1) as f64;
    println!(
        "{space_name}: {n} proposals, structural hits {s_hits} ({:.1}%), functional hits {f_hits} ({:.1}%), degenerate (never merged) {degenerate} ({:.1}%)",
        pct(s_hits),
        pct(f_hits),
        pct(degenerate),
    );
    println!(
        "{space_name}: hashing {} ms CPU per candidate (wall {:.2} ms, p99 {:.2} ms)",
        hash_cpu.map_or("?".into(), |c| format!("{:.2}", 1e3 * c)),
        1e3 * hash_wall,
        1e3 * p99,
    );
    if fresh.is_empty() {
        return;
    }
    let task = space.build_task(space.file.seed).expect("task");
    let cfg = train_config(
        &space,
        space.file.seed,
        space.file.train.steps,
        DeviceKind::Cpu,
    );
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    for net in &fresh {
        let (_, wall, c) = timed(process_cpu, || {
            eval::evaluate(&net.arch, task.as_ref(), &cfg)
        });
        walls.push(wall);
        cpus.extend(c);
    }
    let train_cpu = (cpus.len() == walls.len()).then(|| mean(&cpus));
    let share = match (hash_cpu, train_cpu) {
        (Some(h), Some(t)) => 100.0 * h / t,
        _ => 100.0 * hash_wall / mean(&walls),
    };
    println!(
        "{space_name}: training {} s CPU per candidate (wall {:.2} s; {} trained, {} steps); hashing costs {share:.3}% of it",
        train_cpu.map_or("?".into(), |c| format!("{c:.2}")),
        mean(&walls),
        walls.len(),
        space.file.train.steps,
    );
}

fn hashes(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash");
    for space in SPACES {
        let s = load(space);
        let nets: Vec<_> = (0..64)
            .map(|i| {
                s.sample(&mut archgram::seed::rng(5, "bench", i))
                    .expect("sample")
            })
            .collect();
        group.throughput(Throughput::Elements(nets.len() as u64));
        group.sample_size(10);
        group.bench_function(format!("structural/{space}"), |b| {
            b.iter(|| {
                nets.iter()
                    .map(|n| structural_hash(&n.arch))
                    .fold(0u128, |a, h| a ^ h)
            })
        });
        group.bench_function(format!("functional/{space}"), |b| {
            b.iter(|| {
                nets.iter()
                    .filter_map(|n| functional_hash(&n.arch))
                    .fold(0u128, |a, h| a ^ h)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hashes);

fn main() {
    let proposals = env("HASH_STREAM", 1500);
    if proposals > 0 {
        for space in SPACES {
            stream(space, proposals, env("HASH_TRAIN", 3));
        }
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
