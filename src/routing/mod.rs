//! Routers: selection rules (and, with the routing issue, balancing,
//! traces, statistics and the expert-parallel simulator). Knows the IR
//! only; nothing of training, hashing or search.

mod select;

pub use select::{route_tokens, top_tokens, Routing};
