//! The evaluator: compiles an `Arch` into a program over dfdx tensors with
//! runtime shapes, trains it as a proxy on a generated task, and reports an
//! `Outcome`. Knows nothing of grammars, hashing or search.

mod compile;
mod device;
mod evaluate;
mod forward;
#[cfg(test)]
mod gradcheck;
mod kernels;
mod moe;
mod optim;
mod outcome;
mod params;
pub mod program;
mod routed;
mod run;
mod train;

pub use device::{open_cuda, panic_reason, DeviceKind, EvalError};
pub use evaluate::{evaluate, evaluate_all};
pub use kernels::Backend;
pub use outcome::{Outcome, Status};
pub use program::Program;
pub use run::RouteRecord;
pub use train::{
    learning_rate, memory_estimate, on_cpu_threads, step_work, train, train_on, training_pool,
    ScoreRule, TrainConfig, TrainError, TrainSettings, Trained, Trainer, Weights,
    PARALLEL_STEP_WORK,
};
