//! The evaluator end to end: determinism, failures as outcomes, and that
//! training tells architectures apart on the recall tasks.

use archgram::arch::{ArchContext, Network};
use archgram::eval::{
    evaluate, step_work, Outcome, Program, Status, TrainConfig, TrainSettings, PARALLEL_STEP_WORK,
};
use archgram::grammar::Derivation;
use archgram::tasks::{build, Task, TaskSpec};

fn net(text: &str, task: &dyn Task, width: usize) -> Network {
    let ctx = ArchContext {
        seq_len: task.seq_len(),
        width,
        vocab: task.vocab(),
        causal: task.causal(),
        allow_noncausal_routing: true,
    };
    Network::build(Derivation::parse(text).unwrap(), &ctx).unwrap()
}

const ATTN2: &str = "repeat(n=2, seq(block(attention(heads=2)), block(mlp(ratio=2))), seq(block(attention(heads=2)), block(mlp(ratio=2))))";
const MLP2: &str = "repeat(n=2, block(mlp(ratio=4)), block(mlp(ratio=4)))";

fn cfg(steps: usize) -> TrainConfig {
    TrainConfig {
        train: TrainSettings {
            steps,
            batch_size: 32,
            lr: 3e-3,
            warmup_steps: 25,
            ..TrainSettings::default()
        },
        seed: 11,
        ..TrainConfig::default()
    }
}

fn score(o: &Outcome) -> f64 {
    assert_eq!(o.status, Status::Ok, "{:?}", o.status);
    o.score
}

#[test]
fn attention_beats_mlp_on_in_context_recall() {
    let task = build(
        &TaskSpec::new("in_context_recall")
            .with("vocab", 16.0)
            .with("seq_len", 32.0),
        1,
    )
    .unwrap();
    let a = evaluate(
        &net(ATTN2, task.as_ref(), 32).arch,
        task.as_ref(),
        &cfg(250),
    );
    let m = evaluate(&net(MLP2, task.as_ref(), 32).arch, task.as_ref(), &cfg(250));
    // Similar sizes, so the gap is the mechanism, not capacity.
    assert!(
        (a.params / m.params - 1.0).abs() < 0.35,
        "{} vs {}",
        a.params,
        m.params
    );
    eprintln!("attention {:.3} vs mlp {:.3}", a.score, m.score);
    assert!(
        score(&a) > score(&m) + 0.15,
        "attention {} vs mlp {}",
        a.score,
        m.score
    );
}

#[test]
fn attention_beats_mlp_on_associative_recall() {
    let spec = TaskSpec::new("mqar")
        .with("vocab", 64.0)
        .with("seq_len", 32.0)
        .with("pairs", 4.0);
    let task = build(&spec, 1).unwrap();
    let a = evaluate(
        &net(ATTN2, task.as_ref(), 32).arch,
        task.as_ref(),
        &cfg(300),
    );
    let m = evaluate(&net(MLP2, task.as_ref(), 32).arch, task.as_ref(), &cfg(300));
    eprintln!("attention {:.3} vs mlp {:.3}", a.score, m.score);
    assert!(
        score(&a) > score(&m) + 0.15,
        "attention {} vs mlp {}",
        a.score,
        m.score
    );
}

#[test]
fn same_seed_same_outcome() {
    let task = build(&TaskSpec::new("moe_mixture").with("seq_len", 24.0), 2).unwrap();
    let text =
        "repeat(n=1, seq(block(attention(heads=2)), block(moe(experts=4, top_k=2, mlp(ratio=1)))))";
    let n = net(text, task.as_ref(), 16);
    let strip = |mut o: Outcome| {
        o.wall_secs = 0.0;
        o.tokens_per_sec = 0.0;
        o.gflops = 0.0;
        o
    };
    let a = strip(evaluate(&n.arch, task.as_ref(), &cfg(40)));
    let b = strip(evaluate(&n.arch, task.as_ref(), &cfg(40)));
    assert_eq!(a.status, Status::Ok);
    assert_eq!(a, b);
    assert_eq!(a.routes.len(), 1);
    let other = strip(evaluate(
        &n.arch,
        task.as_ref(),
        &TrainConfig {
            seed: 12,
            ..cfg(40)
        },
    ));
    assert_ne!(a.loss_curve, other.loss_curve);
}

/// A candidate large enough to split its steps over threads trains to the
/// same outcome on one thread and on two: the splits divide work, never a
/// sum, so a search's result does not depend on the machine's cores.
#[test]
fn a_large_candidate_trains_alike_on_one_thread_and_two() {
    let task = build(
        &TaskSpec::new("in_context_recall")
            .with("vocab", 16.0)
            .with("seq_len", 32.0),
        1,
    )
    .unwrap();
    let n = net(ATTN2, task.as_ref(), 64);
    let prog = Program::build(&n.arch, task.vocab()).unwrap();
    assert!(step_work(&prog, 32, 32) >= PARALLEL_STEP_WORK);
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut o = pool.install(|| evaluate(&n.arch, task.as_ref(), &cfg(6)));
        o.wall_secs = 0.0;
        o.tokens_per_sec = 0.0;
        o.gflops = 0.0;
        o
    };
    let one = on(1);
    assert_eq!(one.status, Status::Ok);
    assert_eq!(one, on(2));
}

#[test]
fn a_diverging_candidate_fails_with_a_reason() {
    let task = build(&TaskSpec::new("in_context_recall").with("seq_len", 16.0), 1).unwrap();
    let n = net(
        "seq(linear(width=64), linear(width=64), linear(width=model))",
        task.as_ref(),
        16,
    );
    let o = evaluate(
        &n.arch,
        task.as_ref(),
        &TrainConfig {
            train: TrainSettings {
                lr: 1e9,
                clip_norm: 0.0,
                warmup_steps: 0,
                ..cfg(50).train
            },
            ..cfg(50)
        },
    );
    match &o.status {
        // The candidate's own failure: a retry elsewhere would repeat it.
        Status::Failed {
            reason,
            retry_may_help,
        } => {
            assert!(reason.contains("step"), "{reason}");
            assert!(!retry_may_help, "{reason}");
        }
        Status::Ok => panic!("lr 1e9 should diverge, got loss {}", o.final_loss),
    }
    // The process goes on: the next candidate trains normally.
    let ok = evaluate(&n.arch, task.as_ref(), &cfg(5));
    assert_eq!(ok.status, Status::Ok);
}

/// A small MLP block on recall trained under `cfg`.
fn evaluate_mlp_block(cfg: TrainConfig) -> archgram::eval::Outcome {
    let task = build(&TaskSpec::new("in_context_recall").with("seq_len", 16.0), 1).unwrap();
    let n = net("block(mlp(ratio=4))", task.as_ref(), 16);
    evaluate(&n.arch, task.as_ref(), &cfg)
}

#[test]
fn over_the_memory_limit_fails_before_training() {
    let o = evaluate_mlp_block(TrainConfig {
        max_memory_bytes: 1000,
        ..cfg(5)
    });
    // The limit is the machine's: a worker with more memory may train it.
    assert!(
        matches!(o.status, Status::Failed { ref reason, retry_may_help: true } if reason.contains("MiB")),
        "{:?}",
        o.status
    );
    assert_eq!(o.steps, 0);
}

/// A device this build lacks fails the candidate as the machine's fault:
/// a worker built with CUDA may train it.
#[cfg(not(feature = "cuda"))]
#[test]
fn a_device_this_build_lacks_is_the_machines_failure() {
    let o = evaluate_mlp_block(TrainConfig {
        device: archgram::eval::DeviceKind::Cuda(0),
        ..cfg(5)
    });
    assert!(
        matches!(o.status, Status::Failed { ref reason, retry_may_help: true } if reason.contains("without CUDA")),
        "{:?}",
        o.status
    );
}
