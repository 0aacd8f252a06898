//! Sampler throughput (valid networks per second, one core) on the macro
//! grammar (blocks.ron, via the quickstart and MoE spaces) and on einspace's
//! fundamental-op grammar. Each iteration draws, checks and lowers one
//! network from a fresh seed (`sample/`), or one valid mutant of a fixed
//! sampled parent (`mutate/`): the two halves of the model strategy's
//! pool.

use archgram::seed;
use archgram::space::Space;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::Path;

fn sampler(c: &mut Criterion) {
    let mut group = c.benchmark_group("sample");
    group.throughput(Throughput::Elements(1));
    for (label, file) in [
        ("blocks.ron/quickstart", "spaces/quickstart.ron"),
        ("blocks.ron/moe-heavy", "spaces/moe-heavy.ron"),
        ("einspace.ron/einspace", "spaces/einspace.ron"),
    ] {
        let space = Space::load(Path::new(file)).expect("shipped space loads");
        let mut i = 0u64;
        group.bench_function(label, |b| {
            b.iter(|| {
                i += 1;
                space.sample(&mut seed::rng(1, "bench", i)).expect("sample")
            })
        });
    }
    group.finish();
}

fn mutation(c: &mut Criterion) {
    let mut group = c.benchmark_group("mutate");
    group.throughput(Throughput::Elements(1));
    for (label, file) in [
        ("blocks.ron/quickstart", "spaces/quickstart.ron"),
        ("einspace.ron/einspace", "spaces/einspace.ron"),
    ] {
        let space = Space::load(Path::new(file)).expect("shipped space loads");
        let parent = space
            .sample(&mut seed::rng(1, "bench", 0))
            .expect("sample")
            .term;
        let mut i = 0u64;
        group.bench_function(label, |b| {
            b.iter(|| {
                i += 1;
                space
                    .mutate(&parent, &mut seed::rng(1, "bench-mutate", i))
                    .expect("mutant")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sampler, mutation);
criterion_main!(benches);
