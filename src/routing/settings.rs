//! How routers are trained: balancing losses, their scope, bias updates and
//! the drop policy. A space file sets them under `train.routing`.

use super::select::DropPolicy;
use serde::{Deserialize, Serialize};

/// The set of tokens the load-balancing loss counts f_i and P_i over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceScope {
    /// Per micro-batch of `micro_batch` sequences, losses averaged — what most
    /// frameworks do; with one sequence it is sequence-level balance.
    Micro,
    /// Over the whole training batch (global-batch balance; Qiu et al. 2025,
    /// "Demons in the Detail", find it lets experts specialise).
    #[default]
    Global,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterSettings {
    /// α of the Switch load-balancing loss α·E·Σ f_i·P_i (Fedus et al. 2022).
    pub aux_alpha: f64,
    pub balance_scope: BalanceScope,
    /// Sequences per micro-batch for `balance_scope: micro`.
    pub micro_batch: usize,
    /// c_z of the router z-loss c_z·mean_t(logsumexp(z_t))² (Zoph et al.
    /// 2022, ST-MoE).
    pub z_loss: f64,
    /// γ of the auxiliary-loss-free bias update b_i ← b_i + γ·sign(c̄ − c_i)
    /// (Wang et al. 2024; DeepSeek-V3 uses 1e-3).
    pub bias_rate: f64,
    pub drop: DropPolicy,
    /// Training steps at which a routing trace is kept on a fixed probe
    /// batch (besides the final evaluation), for consistency statistics.
    pub trace_checkpoints: usize,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            aux_alpha: 0.01,
            balance_scope: BalanceScope::Global,
            micro_batch: 1,
            z_loss: 1e-3,
            bias_rate: 1e-3,
            drop: DropPolicy::Position,
            trace_checkpoints: 4,
        }
    }
}
