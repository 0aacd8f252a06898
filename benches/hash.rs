//! Hash throughput on quickstart samples: structural and functional hashes
//! per second (one core).

use archgram::hash::{functional_hash, structural_hash};
use archgram::space::Space;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::Path;

fn hashes(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash");
    for space in ["quickstart", "einspace"] {
        let s = Space::load(Path::new(&format!("spaces/{space}.ron"))).expect("space");
        let nets: Vec<_> = (0..64)
            .map(|i| {
                s.sample(&mut archgram::seed::rng(5, "bench", i))
                    .expect("sample")
            })
            .collect();
        group.throughput(Throughput::Elements(nets.len() as u64));
        group.bench_function(format!("structural/{space}"), |b| {
            b.iter(|| {
                nets.iter()
                    .map(|n| structural_hash(&n.arch))
                    .fold(0u128, |a, h| a ^ h)
            })
        });
        group.sample_size(10);
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
criterion_main!(benches);
