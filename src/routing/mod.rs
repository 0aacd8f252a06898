//! Routers: selection rules, routing traces, statistics and the
//! expert-parallel simulator. Knows the IR only; nothing of training,
//! hashing or search.

pub mod hardware;
pub mod placement;
mod select;
pub mod simulate;
pub mod synth;
pub mod trace;

pub use hardware::Hardware;
pub use placement::{place, Placement, PlacementKind};
pub use select::{route_tokens, top_tokens, Routing};
pub use simulate::{simulate, SimConfig, SimError, SimReport};
pub use synth::{from_loads, moe_layers, synthesize, MoeLayer, Skew};
pub use trace::{final_trace, LayerTrace};
