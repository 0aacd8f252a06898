//! Routers: selection rules, training settings, routing traces, statistics
//! and the expert-parallel simulator. Knows the IR only; nothing of
//! training, hashing or search.

pub mod hardware;
pub mod placement;
mod select;
mod settings;
pub mod simulate;
pub mod stats;
pub mod synth;
pub mod trace;

pub use hardware::Hardware;
pub use placement::{place, Placement, PlacementKind};
pub use select::{route_tokens, route_with, top_tokens, DropPolicy, RouteOptions, Routing};
pub use settings::{BalanceScope, RouterSettings};
pub use simulate::{simulate, SimConfig, SimError, SimReport};
pub use synth::{from_loads, moe_layers, synthesize, MoeLayer, Skew};
pub use trace::LayerTrace;
