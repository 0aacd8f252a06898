//! The architecture IR: typed ops with shapes in a petgraph DAG, lowered
//! from a grammar derivation, with parameter and FLOP accounting.
//!
//! This module gives grammar forms their meaning (through
//! [`ArchSemantics`]); it knows nothing about training, hashing or search.
//! What those need of an op is part of what the op is, and each kind says
//! it in its own file ([`ops::OpDef`]): its fields as fixed bytes for the
//! hash labels, and whether it owns weights. How they are used is theirs.

pub mod check;
pub mod context;
pub mod cost;
pub mod forms;
pub mod graph;
pub mod lower;
pub mod network;
pub mod ops;
pub mod semantics;
pub mod shape;

pub use check::{check, Broken, GraphError};
pub use context::{ArchContext, Limits};
pub use cost::Cost;
pub use graph::{Arch, ArchNode};
pub use lower::lower;
pub use network::Network;
pub use ops::{Activation, Balance, DotMask, MoeSpec, NormKind, Op, RouterKind};
pub use semantics::{ArchSemantics, State};
pub use shape::{Axis, Dim, Shape};
