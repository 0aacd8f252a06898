//! Routers: selection rules, training settings, routing traces, statistics
//! and the expert-parallel simulator. Knows the IR only; nothing of
//! training, hashing or search.

mod select;
mod settings;
pub mod stats;
pub mod trace;

pub use select::{route_tokens, route_with, top_tokens, DropPolicy, RouteOptions, Routing};
pub use settings::{BalanceScope, RouterSettings};
pub use trace::{final_trace, LayerTrace};
