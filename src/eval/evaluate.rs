//! One candidate from architecture to `Outcome`: compile, check memory,
//! train (a panic becomes a failed outcome), pack the result; and several
//! candidates at once.

use super::outcome::Outcome;
use super::program::Program;
use super::train::{memory_estimate, train, TrainConfig};
use crate::arch::Arch;
use crate::tasks::Task;
use std::time::Instant;

/// Trains and scores `arch` on `task`. Never panics: every failure is an
/// outcome with a reason.
pub fn evaluate(arch: &Arch, task: &dyn Task, cfg: &TrainConfig) -> Outcome {
    let vocab = task.vocab();
    let cost = arch.total_cost(vocab);
    let mut out = Outcome::new(cost, cfg);
    if arch.seq_len != task.seq_len() {
        return out.failed(format!(
            "the architecture was built for {} tokens, the task has {}",
            arch.seq_len,
            task.seq_len()
        ));
    }
    let prog = match Program::build(arch, vocab) {
        Ok(p) => p,
        Err(e) => return out.failed(format!("cannot compile: {e}")),
    };
    let need = memory_estimate(&prog, arch, cfg.train.batch_size.max(cfg.eval_batch_size));
    if need > cfg.max_memory_bytes {
        // The limit is the machine's setting: one with more may train it.
        return out.failed_here(format!(
            "needs about {} MiB to train, over the limit of {} MiB",
            need >> 20,
            cfg.max_memory_bytes >> 20
        ));
    }
    let started = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train(&prog, task, cfg)));
    out.wall_secs = started.elapsed().as_secs_f64();
    match result {
        Ok(Ok(t)) => out.finish(t, task.seq_len(), cfg.train.batch_size, cfg.train.score),
        Ok(Err(e)) if e.may_pass_on_retry() => out.failed_here(e.to_string()),
        Ok(Err(e)) => out.failed(e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            // A panic is a CUDA failure dfdx unwrapped, or a defect of
            // ours or of a device library; not a fact about the candidate.
            out.failed_here(super::panic_reason(cfg.device, &msg))
        }
    }
}

/// Trains several candidates. With `parallel`, they train at once on rayon's
/// pool, one core each; otherwise one after another.
///
/// Measured on the 2-core CI-class machine (`cargo bench --bench train_step
/// -- two_candidates`, two quickstart baselines × 30 steps): one after the
/// other 302 ms with 2 threads inside each matrix product and 223 ms with
/// `RAYON_NUM_THREADS=1`; both at once 177 ms. Small candidates do not scale
/// inside one product (and the fused CPU kernels run on one thread), so
/// parallel candidates are the default.
pub fn evaluate_all(
    jobs: &[(&Arch, TrainConfig)],
    task: &dyn Task,
    parallel: bool,
) -> Vec<Outcome> {
    use rayon::prelude::*;
    if parallel {
        jobs.par_iter().map(|(a, c)| evaluate(a, task, c)).collect()
    } else {
        jobs.iter().map(|(a, c)| evaluate(a, task, c)).collect()
    }
}
