//! Routers: selection rules, routing traces, statistics and the
//! expert-parallel simulator. Knows the IR only; nothing of training,
//! hashing or search.

mod select;
pub mod trace;

pub use select::{route_tokens, top_tokens, Routing};
pub use trace::{final_trace, LayerTrace};
