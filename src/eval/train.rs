//! Training one candidate: AdamW with warm-up and cosine decay, global-norm
//! clipping, cross-entropy over the task's scored positions; then scoring on
//! the task's held-out split.

use super::forward::forward;
use super::kernels::Backend;
use super::optim::{adamw, Hyper};
use super::params::Params;
use super::program::Program;
use super::run::{RouteRecord, Run, T3};
use super::DeviceKind;
use crate::arch::ops::{Attention, Moh};
use crate::arch::Arch;
use crate::routing::stats::{Checkpoint, RoutingReport};
use crate::routing::{LayerTrace, RouterSettings};
use crate::tasks::{Batch, Task, IGNORE};
use dfdx::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How a candidate's proxy is trained: a space file's `train` section.
/// The defaults here are the only ones; `TrainConfig` embeds these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    /// Decoupled weight decay (Loshchilov & Hutter 2019) on weight matrices.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub clip_norm: f64,
    /// Router balancing, drop policy and trace checkpoints.
    pub routing: RouterSettings,
    /// What candidates are scored and ranked by: `accuracy` (the task's
    /// metric) or `likelihood` (exp of minus the held-out cross-entropy).
    pub score: ScoreRule,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            steps: 300,
            batch_size: 32,
            lr: 3e-3,
            warmup_steps: 30,
            weight_decay: 0.01,
            clip_norm: 1.0,
            routing: RouterSettings::default(),
            score: ScoreRule::default(),
        }
    }
}

/// One training: the space's settings plus what differs per trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    #[serde(flatten)]
    pub train: TrainSettings,
    pub seed: u64,
    pub device: DeviceKind,
    /// A candidate whose estimated training memory exceeds this fails
    /// before it starts.
    pub max_memory_bytes: u64,
    pub eval_batch_size: usize,
    /// Points kept of the training-loss curve.
    pub curve_points: usize,
}

/// Why a training ended without a score. Whether another attempt can
/// help is told by the variant, not by the message: training is
/// deterministic for a seed, so a candidate that diverged diverges again
/// on any machine, while a device that refused may not refuse next time.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The candidate's loss or gradient left the finite numbers.
    #[error("{quantity} became {value} at step {step}")]
    Diverged {
        quantity: &'static str,
        value: f64,
        step: usize,
    },
    /// The device could not be opened or could not give memory.
    #[error("{what}: {detail}")]
    Device { what: &'static str, detail: String },
    /// The device is not in this build.
    #[error(transparent)]
    Unavailable(#[from] super::EvalError),
    /// The task's held-out split scores nothing.
    #[error("the task's test split has no scored positions")]
    NothingScored,
}

impl TrainError {
    /// Whether training the same candidate again, here or on another
    /// machine, may end otherwise.
    pub fn may_pass_on_retry(&self) -> bool {
        matches!(self, TrainError::Device { .. } | TrainError::Unavailable(_))
    }
}

/// What a candidate is scored by on the held-out split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreRule {
    /// The task's metric (exact-match accuracy of greedy predictions).
    #[default]
    Accuracy,
    /// exp(−mean cross-entropy) of the scored targets: the geometric mean
    /// of the probabilities the model gives the right answers. Unlike
    /// accuracy it keeps moving while a model is part-way through learning
    /// a task, so short trainings rank candidates by it more faithfully.
    Likelihood,
}

impl ScoreRule {
    /// The score of a training run under this rule.
    pub fn of(self, t: &Trained) -> f64 {
        match self {
            ScoreRule::Accuracy => t.score,
            ScoreRule::Likelihood => ScoreRule::likelihood(t.test_loss),
        }
    }

    /// The likelihood score of a mean held-out cross-entropy (nats).
    pub fn likelihood(test_loss: f64) -> f64 {
        (-test_loss).exp()
    }

    pub fn name(self) -> &'static str {
        match self {
            ScoreRule::Accuracy => "accuracy",
            ScoreRule::Likelihood => "likelihood",
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            train: TrainSettings::default(),
            seed: 0,
            device: DeviceKind::Cpu,
            max_memory_bytes: 4 << 30,
            eval_batch_size: 64,
            curve_points: 50,
        }
    }
}

/// Linear warm-up then cosine decay to 10% of the peak.
pub fn learning_rate(cfg: &TrainConfig, step: usize) -> f64 {
    let warm = cfg.train.warmup_steps.min(cfg.train.steps);
    if step < warm {
        return cfg.train.lr * (step + 1) as f64 / warm as f64;
    }
    let span = (cfg.train.steps - warm).max(1) as f64;
    let t = ((step - warm) as f64 / span).min(1.0);
    cfg.train.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// Bytes a training step is expected to need: parameters with gradients and
/// two Adam moments, plus every activation kept for backward (×2 for its
/// gradient) and attention score matrices.
pub fn memory_estimate(prog: &Program, arch: &Arch, batch: usize) -> u64 {
    let params = prog.param_count() as u64 * 4 * 4;
    let mut act = 0u64;
    crate::arch::network::visit_ops(arch, &mut |op| {
        if let crate::arch::Op::Attention(Attention { heads, .. })
        | crate::arch::Op::Moh(Moh { heads, .. }) = op
        {
            act += (*heads * arch.seq_len * arch.seq_len * 3) as u64;
        }
    });
    fn elements(a: &Arch) -> u64 {
        a.graph
            .node_weights()
            .map(|n| n.shape.elements() as u64 * 4 + n.op.body().map_or(0, elements) * 4)
            .sum()
    }
    act += elements(arch);
    act += (prog.seq * prog.vocab * 3) as u64;
    params + act * batch as u64 * 4 * 2
}

/// Per-position weights of the cross-entropy: 1/N at each scored target.
fn target_weights(batch: &Batch, vocab: usize) -> (Vec<f32>, usize) {
    let n = batch
        .targets
        .iter()
        .filter(|&&t| t != IGNORE && (t as usize) < vocab)
        .count();
    let w = 1.0 / n.max(1) as f32;
    let mut out = vec![0.0f32; batch.targets.len() * vocab];
    for (i, &t) in batch.targets.iter().enumerate() {
        if t != IGNORE && (t as usize) < vocab {
            out[i * vocab + t as usize] = w;
        }
    }
    (out, n)
}

pub(crate) fn cross_entropy<D: Backend, T: Tape<f32, D>>(
    logits: T3<D, T>,
    batch: &Batch,
    vocab: usize,
) -> Tensor<(), f32, D, T> {
    D::weighted_nll(logits, target_weights(batch, vocab).0)
}

/// What training produced, before it is packed into an `Outcome`.
pub struct Trained {
    pub curve: Vec<(usize, f64)>,
    pub final_loss: f64,
    pub score: f64,
    /// Mean cross-entropy (nats) of the held-out split's scored targets.
    pub test_loss: f64,
    pub scored: usize,
    pub steps: usize,
    pub train_secs: f64,
    pub routes: Vec<RouteRecord>,
    pub routing: Option<RoutingReport>,
    /// The weights as trained.
    pub weights: Weights,
}

/// A candidate's weights on the host: every parameter in the program's
/// declaration order, and the selection bias of each routed layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub params: Vec<Vec<f32>>,
    pub bias: Vec<Vec<f32>>,
}

impl Weights {
    /// The seeded initial weights training starts from.
    pub fn init(prog: &Program, seed: u64) -> Weights {
        let mut rng = crate::seed::rng(seed, "init", 0);
        Weights {
            params: super::params::init_host(&prog.params, &mut rng),
            bias: vec![Vec::new(); prog.routed_layers],
        }
    }

    /// Logits (batch × seq × vocab, row-major) of a forward pass on the CPU.
    pub fn logits(&self, prog: &Program, routing: &RouterSettings, batch: &Batch) -> Vec<f32> {
        let dev = Cpu::default();
        let params = Params::from_host(&dev, self.params.clone());
        let mut run: Run<'_, Cpu, NoneTape> = Run::new(&dev, &params, batch.batch);
        run.routing = *routing;
        run.bias = self.bias.clone();
        forward(&mut run, prog, &batch.inputs).as_vec()
    }
}

/// Parameters and AdamW state of one candidate being trained.
pub struct Trainer<'a, D: Backend> {
    dev: &'a D,
    prog: &'a Program,
    cfg: &'a TrainConfig,
    pub params: Params<D>,
    host: Vec<Vec<f32>>,
    m1: Vec<Vec<f32>>,
    m2: Vec<Vec<f32>>,
    step: usize,
    /// Auxiliary-loss-free selection bias per routed layer (used by MoE
    /// layers with `balance=bias`).
    pub bias: Vec<Vec<f32>>,
}

/// Parameters × tokens of a training step from which CPU training uses
/// the threads of the pool it runs in. dfdx splits every matrix product
/// over those threads, which below this costs more than it saves: a tiny
/// model's step took 1.4 ms on two threads against 0.8 ms on one (`sizes/`
/// in the `train_step` bench, whose tiny model is about 5·10⁶ and medium
/// 10⁸).
pub const PARALLEL_STEP_WORK: usize = 30_000_000;

/// A training step's work as [`PARALLEL_STEP_WORK`] counts it.
pub fn step_work(prog: &Program, batch: usize, seq: usize) -> usize {
    prog.params.iter().map(|p| p.len).sum::<usize>() * batch * seq
}

/// Runs `f`, CPU training whose steps each do `work` (see [`step_work`]):
/// on a pool of one thread when the work is small, else on the threads of
/// the pool it is called in (the global pool outside any).
pub fn on_cpu_threads<R: Send>(work: usize, f: impl FnOnce() -> R + Send) -> R {
    if work >= PARALLEL_STEP_WORK || rayon::current_num_threads() <= 1 {
        return f();
    }
    match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(pool) => pool.install(f),
        // No thread to be had: here, as before.
        Err(_) => f(),
    }
}

/// The pool that trains up to `workers` candidates at once: at least one
/// thread per core, so that when fewer candidates than cores are in flight
/// (`--workers 1`, the last of a batch, the confirm stage's tail) a large
/// one splits its steps over the idle cores ([`on_cpu_threads`] keeps
/// small ones on one thread). How many train at once is the caller's
/// `workers`, not the pool's size.
pub fn training_pool(workers: usize) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers.max(rayon::current_num_threads()).max(1))
        .build()
}

impl<'a, D: Backend> Trainer<'a, D> {
    /// Seeded initial weights (from `cfg.seed`).
    pub fn new(dev: &'a D, prog: &'a Program, cfg: &'a TrainConfig) -> Self {
        if D::KEEP_FREED_BUFFERS {
            let _ = dev.try_enable_cache();
        }
        let host = Weights::init(prog, cfg.seed).params;
        let params = Params::from_host(dev, host.clone());
        let m1: Vec<Vec<f32>> = host.iter().map(|p| vec![0.0; p.len()]).collect();
        let m2 = m1.clone();
        Trainer {
            dev,
            prog,
            cfg,
            params,
            host,
            m1,
            m2,
            step: 0,
            bias: vec![Vec::new(); prog.routed_layers],
        }
    }

    /// One optimisation step on `batch`; returns the loss before the update.
    pub fn step(&mut self, batch: &Batch) -> Result<f64, TrainError> {
        let (dev, prog, cfg, step) = (self.dev, self.prog, self.cfg, self.step);
        let mut run: Run<'_, D, OwnedTape<f32, D>> = Run::new(dev, &self.params, batch.batch);
        run.routing = cfg.train.routing;
        run.bias = self.bias.clone();
        let logits = forward(&mut run, prog, &batch.inputs);
        let routes = std::mem::take(&mut run.routes);
        let mut loss = cross_entropy(logits, batch, prog.vocab);
        for a in std::mem::take(&mut run.aux) {
            loss = loss + a;
        }
        let value = loss.as_vec()[0] as f64;
        if !value.is_finite() {
            return Err(TrainError::Diverged {
                quantity: "loss",
                value,
                step,
            });
        }
        let mut grads = loss.backward();
        let mut g_host: Vec<Vec<f32>> = Vec::with_capacity(self.host.len());
        let mut norm2 = 0.0f64;
        for t in &self.params.tensors {
            grads.try_alloc_for(t).map_err(|e| TrainError::Device {
                what: "gradient allocation",
                detail: format!("{e:?}"),
            })?;
            let mut g = vec![0.0f32; t.shape().0];
            grads.get(t).copy_into(&mut g);
            norm2 += g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
            g_host.push(g);
        }
        drop(grads);
        if !norm2.is_finite() {
            return Err(TrainError::Diverged {
                quantity: "gradient norm",
                value: norm2.sqrt(),
                step,
            });
        }
        let norm = norm2.sqrt();
        let clip = if cfg.train.clip_norm > 0.0 && norm > cfg.train.clip_norm {
            cfg.train.clip_norm / norm
        } else {
            1.0
        };
        let lr = learning_rate(cfg, step);
        for (i, info) in prog.params.iter().enumerate() {
            let decay = if info.decay {
                cfg.train.weight_decay
            } else {
                0.0
            };
            let h = Hyper::at(step, lr, clip, decay);
            adamw(
                &mut self.host[i],
                &mut self.m1[i],
                &mut self.m2[i],
                &g_host[i],
                h,
            );
            self.params.tensors[i].copy_from(&self.host[i]);
        }
        self.update_bias(&routes);
        self.step += 1;
        Ok(value)
    }

    /// b_i ← b_i + γ·sign(c̄ − c_i) from this step's loads (Wang et al. 2024,
    /// auxiliary-loss-free balancing; DeepSeek-V3).
    fn update_bias(&mut self, routes: &[RouteRecord]) {
        let gamma = self.cfg.train.routing.bias_rate as f32;
        for (b, r) in self.bias.iter_mut().zip(routes) {
            if r.kind != "moe" || gamma == 0.0 {
                continue;
            }
            if b.len() != r.load.len() {
                *b = vec![0.0; r.load.len()];
            }
            let mean = r.load.iter().sum::<u32>() as f32 / r.load.len().max(1) as f32;
            for (bi, &c) in b.iter_mut().zip(&r.load) {
                let c = c as f32;
                *bi += gamma
                    * if c < mean {
                        1.0
                    } else if c > mean {
                        -1.0
                    } else {
                        0.0
                    };
            }
        }
    }

    /// Logits (batch × seq × vocab, row-major) of a forward pass without
    /// gradients, routers as trained.
    pub fn forward(&self, batch: &Batch) -> Vec<f32> {
        let mut run: Run<'_, D, NoneTape> = Run::new(self.dev, &self.params, batch.batch);
        run.routing = self.cfg.train.routing;
        run.bias = self.bias.clone();
        forward(&mut run, self.prog, &batch.inputs).as_vec()
    }

    /// Routing traces of a forward pass on `batch` (no gradients).
    pub fn trace(&self, batch: &Batch) -> Vec<LayerTrace> {
        let mut run: Run<'_, D, NoneTape> = Run::new(self.dev, &self.params, batch.batch);
        run.routing = self.cfg.train.routing;
        run.bias = self.bias.clone();
        run.trace = true;
        let _ = forward(&mut run, self.prog, &batch.inputs);
        run.traces
    }
}

/// Empties a device's tensor cache when dropped. dfdx 0.13 keeps freed
/// buffers for reuse (on devices whose `Backend::KEEP_FREED_BUFFERS` turns
/// it on) and never frees them when the device itself is dropped, so a
/// search that trains candidate after candidate on fresh devices would grow
/// by each candidate's working set (about 120 MB each on quickstart).
struct FreeCacheOnDrop<'a, D: Backend>(&'a D);

impl<D: Backend> Drop for FreeCacheOnDrop<'_, D> {
    fn drop(&mut self) {
        self.0.empty_cache();
    }
}

/// Trains `prog` on `task` on device `dev`. Errors are reasons for a failed outcome.
pub fn train_on<D: Backend>(
    dev: &D,
    prog: &Program,
    task: &dyn Task,
    cfg: &TrainConfig,
) -> Result<Trained, TrainError> {
    // Declared before the trainer so it drops after it: every buffer is back
    // in the device's cache by then, and the cache is freed.
    let _cache = FreeCacheOnDrop(dev);
    let mut data_rng = crate::seed::rng(cfg.seed, "data", 0);
    let mut trainer = Trainer::new(dev, prog, cfg);
    let every = (cfg.train.steps / cfg.curve_points.max(1)).max(1);
    let mut curve = Vec::new();
    let mut last = f64::NAN;
    // A fixed probe batch whose routing is traced at a few checkpoints,
    // for routing-consistency statistics.
    let probe = (prog.routed_layers > 0 && cfg.train.routing.trace_checkpoints > 0)
        .then(|| task.test_batches(PROBE_SEQUENCES).into_iter().next())
        .flatten();
    let marks = cfg.train.routing.trace_checkpoints.max(1);
    let mut checkpoints = Vec::new();
    let start = Instant::now();
    let mut traced = Duration::ZERO;
    for step in 0..cfg.train.steps {
        let batch = task.train_batch(step, cfg.train.batch_size, &mut data_rng);
        let value = trainer.step(&batch)?;
        last = value;
        if step % every == 0 || step + 1 == cfg.train.steps {
            curve.push((step, value));
        }
        if let Some(p) = &probe {
            if (step + 1) * marks % cfg.train.steps.max(1) < marks {
                let t0 = Instant::now();
                checkpoints.push(Checkpoint {
                    step: step + 1,
                    layers: trainer.trace(p),
                });
                traced += t0.elapsed();
            }
        }
    }
    let train_secs = (start.elapsed() - traced).as_secs_f64();
    let Scored {
        score,
        test_loss,
        scored,
        routes,
        trace: final_trace,
        labels,
    } = score_on(
        dev,
        prog,
        &trainer.params,
        task,
        cfg.eval_batch_size,
        &cfg.train.routing,
        &trainer.bias,
    )?;
    let routing = (prog.routed_layers > 0)
        .then(|| RoutingReport::build(final_trace, checkpoints, labels.as_deref()));
    Ok(Trained {
        curve,
        final_loss: last,
        score,
        test_loss,
        scored,
        steps: cfg.train.steps,
        train_secs,
        routes,
        routing,
        weights: Weights {
            params: trainer.host,
            bias: trainer.bias,
        },
    })
}

/// Sequences in the probe batch traced at training checkpoints.
const PROBE_SEQUENCES: usize = 4;
/// Sequences of the first held-out batch kept in the final trace.
const TRACE_SEQUENCES: usize = 16;

/// What scoring on the held-out split returns.
pub struct Scored {
    /// The task's metric.
    pub score: f64,
    /// Mean cross-entropy (nats) of the scored targets.
    pub test_loss: f64,
    /// Positions scored.
    pub scored: usize,
    /// Routing records summed per routed layer.
    pub routes: Vec<RouteRecord>,
    /// The final trace (first sequences of the first held-out batch).
    pub trace: Vec<LayerTrace>,
    /// The traced tokens' domain labels, if the task has domains.
    pub labels: Option<Vec<usize>>,
}

/// Cross-entropy of one row of logits against `target`, in nats.
fn row_nll(row: &[f32], target: usize) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln() - row[target] as f64
}

/// Greedy predictions on the held-out split, scored by the task, with the
/// routers as trained (settings and selection bias).
pub fn score_on<D: Backend>(
    dev: &D,
    prog: &Program,
    params: &Params<D>,
    task: &dyn Task,
    batch_size: usize,
    routing: &RouterSettings,
    bias: &[Vec<f32>],
) -> Result<Scored, TrainError> {
    let mut credit = 0.0;
    let mut count = 0;
    let (mut nll, mut nll_count) = (0.0f64, 0usize);
    let mut routes: Vec<RouteRecord> = Vec::new();
    let mut traces = Vec::new();
    let mut labels = None;
    for (i, batch) in task.test_batches(batch_size).into_iter().enumerate() {
        let mut run: Run<'_, D, NoneTape> = Run::new(dev, params, batch.batch);
        run.routing = *routing;
        run.bias = bias.to_vec();
        run.trace = i == 0 && prog.routed_layers > 0;
        let logits = forward(&mut run, prog, &batch.inputs).as_vec();
        if run.trace {
            let keep = TRACE_SEQUENCES.min(batch.batch) * batch.seq;
            traces = std::mem::take(&mut run.traces);
            traces.iter_mut().for_each(|t| t.truncate(keep));
            labels = batch.domains.as_ref().map(|d| {
                d.iter()
                    .take(TRACE_SEQUENCES)
                    .flat_map(|&x| std::iter::repeat_n(x as usize, batch.seq))
                    .collect()
            });
        }
        let v = prog.vocab;
        let preds: Vec<u32> = logits
            .chunks(v)
            .map(|row| {
                let mut best = 0;
                for (i, x) in row.iter().enumerate() {
                    if *x > row[best] {
                        best = i;
                    }
                }
                best as u32
            })
            .collect();
        for (row, &t) in logits.chunks(v).zip(&batch.targets) {
            if t != crate::tasks::IGNORE && (t as usize) < v {
                nll += row_nll(row, t as usize);
                nll_count += 1;
            }
        }
        let (c, n) = task.score(&preds, &batch);
        credit += c;
        count += n;
        if routes.is_empty() {
            routes = run.routes;
        } else {
            for (acc, r) in routes.iter_mut().zip(run.routes) {
                acc.tokens += r.tokens;
                acc.dropped += r.dropped;
                for (a, b) in acc.load.iter_mut().zip(r.load) {
                    *a += b;
                }
            }
        }
    }
    if count == 0 {
        return Err(TrainError::NothingScored);
    }
    Ok(Scored {
        score: credit / count as f64,
        test_loss: nll / nll_count.max(1) as f64,
        scored: count,
        routes,
        trace: traces,
        labels,
    })
}

/// Trains `prog` on `task` on the device `cfg` names, seeded with
/// `cfg.seed`: the one place that opens a device. Errors are reasons for a
/// failed outcome.
pub fn train(prog: &Program, task: &dyn Task, cfg: &TrainConfig) -> Result<Trained, TrainError> {
    match cfg.device {
        DeviceKind::Cpu => {
            let work = step_work(prog, cfg.train.batch_size, prog.seq);
            on_cpu_threads(work, || {
                train_on(&Cpu::seed_from_u64(cfg.seed), prog, task, cfg)
            })
        }
        DeviceKind::Cuda(n) => cuda_train(n, prog, task, cfg),
    }
}

#[cfg(feature = "cuda")]
fn cuda_train(
    ordinal: usize,
    prog: &Program,
    task: &dyn Task,
    cfg: &TrainConfig,
) -> Result<Trained, TrainError> {
    let dev = super::open_cuda(ordinal, cfg.seed)?;
    train_on(&dev, prog, task, cfg)
}

#[cfg(not(feature = "cuda"))]
fn cuda_train(_: usize, _: &Program, _: &dyn Task, _: &TrainConfig) -> Result<Trained, TrainError> {
    Err(super::EvalError::CudaNotBuilt.into())
}

#[cfg(test)]
mod thread_tests {
    use super::*;

    /// Small training gets one thread, in a pool or not; large training
    /// keeps the threads of the pool it runs in.
    #[test]
    fn small_training_runs_on_one_thread_and_large_on_its_pools() {
        let threads = rayon::current_num_threads;
        assert_eq!(on_cpu_threads(1, threads), 1);
        assert_eq!(on_cpu_threads(usize::MAX, threads), threads());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        assert_eq!(pool.install(|| on_cpu_threads(1, threads)), 1);
        assert_eq!(pool.install(|| on_cpu_threads(usize::MAX, threads)), 2);
    }

    /// A search of one worker still gets every core for a large candidate.
    #[test]
    fn a_training_pool_has_a_thread_per_core_whatever_the_workers() {
        let cores = rayon::current_num_threads();
        assert_eq!(training_pool(1).unwrap().current_num_threads(), cores);
        assert_eq!(
            training_pool(cores + 3).unwrap().current_num_threads(),
            cores + 3
        );
    }
}
