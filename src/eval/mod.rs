//! The evaluator: compiles an `Arch` into a program over dfdx tensors with
//! runtime shapes, trains it as a proxy on a generated task, and reports an
//! `Outcome`. Knows nothing of grammars, hashing or search.

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
mod train;

pub use evaluate::{evaluate, evaluate_all};
pub use forward::RouteRecord;
pub use kernels::Backend;
pub use outcome::{Outcome, Status};
pub use program::Program;
pub use train::{
    learning_rate, memory_estimate, on_cpu_threads, step_work, train, train_on, training_pool,
    ScoreRule, TrainConfig, TrainError, TrainSettings, Trained, Trainer, Weights,
    PARALLEL_STEP_WORK,
};

use serde::{Deserialize, Serialize};

/// Where candidates train.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    #[default]
    Cpu,
    /// dfdx's CUDA device (GPU 0); needs the `cuda` cargo feature.
    Cuda,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }

    /// Whether this build can use the device.
    pub fn check(self) -> Result<(), EvalError> {
        match self {
            DeviceKind::Cuda if !cfg!(feature = "cuda") => Err(EvalError::CudaNotBuilt),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("this archgram was built without CUDA; rebuild with `cargo build --release --features cuda` on a machine with the CUDA toolkit")]
    CudaNotBuilt,
}
