//! Training-step throughput (tokens/s; GFLOP/s = 3 × forward FLOPs per token
//! × tokens/s) of the reference models and the quickstart baselines,
//! on the CPU. Run one-threaded for the per-core rate:
//! `RAYON_NUM_THREADS=1 cargo bench --bench train_step`.

use archgram::arch::{ArchContext, Network};
use archgram::eval::{on_cpu_threads, step_work, Program, TrainConfig, Trainer};
use archgram::grammar::Derivation;
use archgram::space::Space;
use archgram::tasks::Batch;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use dfdx::prelude::Cpu;
use std::path::Path;

/// The reference: 2-layer pre-LN transformer, batch 32, seq 32,
/// width 64, MLP 256, vocab 16, 4 heads × 16. The same model in PyTorch
/// 2.15 eager, one thread, is `benches/pytorch_reference.py` (with the MoE
/// variant below); the README's Performance section has both sides.
const TRANSFORMER: &str = "repeat(n=2, seq(block(attention(heads=4)), block(mlp(ratio=4))), seq(block(attention(heads=4)), block(mlp(ratio=4))))";
/// The same with each MLP a top-2-of-4 mixture of MLP experts.
const MOE: &str = "repeat(n=2, seq(block(attention(heads=4)), block(moe(experts=4, top_k=2, capacity=2.0, mlp(ratio=4)))), seq(block(attention(heads=4)), block(moe(experts=4, top_k=2, capacity=2.0, mlp(ratio=4)))))";
const MLP: &str = "repeat(n=2, block(mlp(ratio=4)), block(mlp(ratio=4)))";

fn bench_model(c: &mut Criterion, name: &str, net: &Network, seq: usize, vocab: usize) {
    bench_model_in(c, "train_step", name, net, (32, seq), vocab)
}

/// One training step of `net` on `batch` sequences of `seq` tokens, in
/// criterion group `group`.
fn bench_model_in(
    c: &mut Criterion,
    group: &str,
    name: &str,
    net: &Network,
    (batch, seq): (usize, usize),
    vocab: usize,
) {
    let prog = Program::build(&net.arch, vocab).expect("compiles");
    let cfg = TrainConfig::default();
    let dev = Cpu::seed_from_u64(0);
    let mut trainer = Trainer::new(&dev, &prog, &cfg);
    // Random tokens and next-token targets: the step's cost does not depend
    // on the data.
    let n = batch * seq;
    let batch = Batch {
        inputs: (0..n).map(|i| ((i * 7 + i / 5) % vocab) as u32).collect(),
        targets: (0..n).map(|i| ((i * 3 + 1) % vocab) as i32).collect(),
        batch,
        seq,
        domains: None,
    };
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements((batch.batch * batch.seq) as u64));
    group.sample_size(20);
    // On the threads archgram's own training would use for this size.
    let work = step_work(&prog, batch.batch, batch.seq);
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            on_cpu_threads(work, || {
                let t = std::time::Instant::now();
                for _ in 0..iters {
                    trainer.step(&batch).expect("finite");
                }
                t.elapsed()
            })
        })
    });
    group.finish();
    eprintln!(
        "{name}: {:.0} forward FLOPs/token, {} params",
        net.cost.flops, net.cost.params
    );
}

fn reference(c: &mut Criterion) {
    let ctx = ArchContext {
        seq_len: 32,
        width: 64,
        vocab: 16,
        causal: true,
        allow_noncausal_routing: true,
    };
    for (name, text) in [
        ("transformer-2L-w64", TRANSFORMER),
        ("moe-top2of4-2L-w64", MOE),
        ("mlp-2L-w64", MLP),
    ] {
        let net = Network::build(Derivation::parse(text).expect("term"), &ctx).expect("lowers");
        bench_model(c, name, &net, 32, 16);
    }
    let space = Space::load(Path::new("spaces/quickstart.ron")).expect("quickstart");
    let ctx = *space.ctx();
    for (name, text) in &space.file.baselines {
        let net = space.parse_arch(text).expect("baseline");
        bench_model(
            c,
            &format!("quickstart/{name}"),
            &net,
            ctx.seq_len,
            ctx.vocab,
        );
    }
}

/// Two quickstart candidates, 30 steps each: one after the other (each may
/// use every core inside its matrix products) against both at once on rayon.
fn parallel(c: &mut Criterion) {
    let space = Space::load(Path::new("spaces/quickstart.ron")).expect("quickstart");
    let task = space.build_task(1).expect("task");
    let nets: Vec<Network> = space
        .file
        .baselines
        .values()
        .map(|t| space.parse_arch(t).expect("baseline"))
        .collect();
    let mut cfg = TrainConfig::default();
    cfg.train.steps = 30;
    let train = |n: &Network| archgram::eval::evaluate(&n.arch, task.as_ref(), &cfg);
    let mut group = c.benchmark_group("two_candidates");
    group.sample_size(10);
    group.bench_function("sequential", |b| {
        b.iter(|| {
            for n in &nets {
                train(n);
            }
        })
    });
    group.bench_function("rayon_parallel", |b| {
        b.iter(|| rayon::join(|| train(&nets[0]), || train(&nets[1])))
    });
    group.finish();
}

/// Forward and training step of one routed layer (`text`, width 64,
/// vocabulary 16) on a fixed batch, under `group/forward/LABEL` and
/// `group/step/LABEL`.
fn bench_routed(
    group: &mut BenchmarkGroup<'_, WallTime>,
    text: &str,
    label: &str,
    batch: usize,
    seq: usize,
) {
    let ctx = ArchContext {
        seq_len: seq,
        width: 64,
        vocab: 16,
        causal: true,
        allow_noncausal_routing: true,
    };
    let net = Network::build(Derivation::parse(text).expect("term"), &ctx).expect("lowers");
    let prog = Program::build(&net.arch, 16).expect("compiles");
    let cfg = TrainConfig::default();
    let dev = Cpu::seed_from_u64(0);
    let mut trainer = Trainer::new(&dev, &prog, &cfg);
    let n = batch * seq;
    let batch = Batch {
        inputs: (0..n).map(|i| ((i * 7 + i / 5) % 16) as u32).collect(),
        targets: (0..n).map(|i| ((i * 3 + 1) % 16) as i32).collect(),
        batch,
        seq,
        domains: None,
    };
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(format!("forward/{label}"), |b| {
        b.iter(|| trainer.forward(&batch))
    });
    group.bench_function(format!("step/{label}"), |b| {
        b.iter(|| trainer.step(&batch).expect("finite"))
    });
}

/// One MoE layer of 8 MLP experts (width 64, ratio 4, capacity high enough
/// that nothing drops) at top-k 8, 4, 2, 1: experts run on gathered tokens,
/// so forward and step cost should fall with k/E.
fn moe_topk(c: &mut Criterion) {
    let mut group = c.benchmark_group("moe_topk");
    group.sample_size(20);
    for k in [8, 4, 2, 1] {
        let text =
            format!("block(moe(experts=8, top_k={k}, capacity=8.0, balance=none, mlp(ratio=4)))");
        bench_routed(&mut group, &text, &format!("top{k}of8"), 32, 32);
    }
    group.finish();
}

/// One mixture-of-depths layer whose body is a transformer layer (4-head
/// attention and a ratio-4 MLP, width 64) at capacity 1, 1/2, 1/4, 1/8 of
/// 64 tokens: the routed tokens are gathered, so cost should fall with the
/// capacity (attention scores faster than linearly).
fn mod_capacity(c: &mut Criterion) {
    let mut group = c.benchmark_group("mod_capacity");
    group.sample_size(20);
    for cap in ["1.0", "0.5", "0.25", "0.125"] {
        let text = format!(
            "mod(capacity={cap}, seq(block(norm=pre, residual=false, attention(heads=4)), block(norm=pre, residual=false, mlp(ratio=4))))"
        );
        bench_routed(&mut group, &text, &format!("c{cap}"), 16, 64);
    }
    group.finish();
}

/// One mixture-of-heads layer (8 heads of 8, width 64) at 8, 4, 2 and 1
/// active heads of 64 tokens, beside plain 8-head attention: a head a token
/// does not pick is not computed for it, so the attention core's cost should
/// fall with the active share (the projections stay dense).
fn moh_active(c: &mut Criterion) {
    let mut group = c.benchmark_group("moh_active");
    group.sample_size(20);
    bench_routed(
        &mut group,
        "block(norm=pre, attention(heads=8, head_dim=8))",
        "dense",
        16,
        64,
    );
    for k in [8, 4, 2, 1] {
        let text = format!("block(norm=pre, moh(heads=8, active={k}, shared=0, head_dim=8))");
        bench_routed(&mut group, &text, &format!("active{k}of8"), 16, 64);
    }
    group.finish();
}

/// The speed issue's three sizes of the 2-layer pre-LN transformer (heads
/// of 16), as `benches/pytorch_reference.py --sizes` builds them: `sizes/
/// tiny` (batch 16 × 12 tokens, width 32, MLP 128), `medium` (32 × 32, 64,
/// 256; the `train_step` reference) and `large` (32 × 64, 128, 512). Run at
/// `RAYON_NUM_THREADS=1` and `2` to see how one candidate uses both cores.
fn sizes(c: &mut Criterion) {
    for (label, batch, seq, width) in [
        ("tiny", 16, 12, 32),
        ("medium", 32, 32, 64),
        ("large", 32, 64, 128),
    ] {
        let ctx = ArchContext {
            seq_len: seq,
            width,
            vocab: 16,
            causal: true,
            allow_noncausal_routing: true,
        };
        let layer = format!(
            "seq(block(attention(heads={})), block(mlp(ratio=4)))",
            width / 16
        );
        let text = format!("repeat(n=2, {layer}, {layer})");
        let net = Network::build(Derivation::parse(&text).expect("term"), &ctx).expect("lowers");
        bench_model_in(c, "sizes", label, &net, (batch, seq), 16);
    }
}

criterion_group!(
    benches,
    reference,
    sizes,
    parallel,
    moe_topk,
    mod_capacity,
    moh_active
);
criterion_main!(benches);
