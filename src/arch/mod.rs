//! The architecture IR: typed ops with shapes in a petgraph DAG, lowered
//! from a grammar derivation, with parameter and FLOP accounting.
//!
//! This module gives grammar forms their meaning (through
//! [`ArchSemantics`]); it knows nothing about training, hashing or search.

pub mod cost;
pub mod graph;
pub mod ops;
pub mod shape;

pub use cost::Cost;
pub use graph::{Arch, ArchNode};
pub use ops::{Activation, Balance, DotMask, MoeSpec, NormKind, Op, RouterKind};
pub use shape::{Axis, Dim, Shape};
