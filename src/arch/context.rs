//! What every form needs to know about the network it is part of.

use serde::{Deserialize, Serialize};

/// The task-facing shape of a network and its global rules.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchContext {
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Model width: the embedding size, and what `linear(width=model)` means.
    pub width: usize,
    /// Vocabulary of the task (embedding rows and head outputs).
    pub vocab: usize,
    /// Decoder-style task: position t may only use positions ≤ t.
    pub causal: bool,
    /// Whether routers that choose tokens by looking at the whole sequence
    /// (expert choice, mixture-of-depths top-k) are allowed in a causal
    /// network. They are flagged either way.
    pub allow_noncausal_routing: bool,
}

/// Hard limits every sampled network must meet. `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub max_params: Option<f64>,
    pub max_active_params: Option<f64>,
    /// Forward FLOPs per token.
    pub max_flops: Option<f64>,
    /// Graph nodes (routed bodies counted once).
    pub max_nodes: Option<f64>,
}
