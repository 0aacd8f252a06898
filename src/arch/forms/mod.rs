//! The grammar forms: their catalogue (parameters, defaults, children and
//! the load-time check of an alternative, in `catalogue`) and what each
//! builds (ops, shapes, scope and causality rules, in `rules`), shared by
//! the sampler's semantics and the lowering. Knows ops and shapes (a routed
//! form's body arrives as a built graph); nothing of costs, training or
//! search.
//!
//! Causality rules (decoder tasks), which keep "position t sees only ≤ t"
//! true by construction:
//! - a token axis never changes size;
//! - a (token × token) tensor's row i depends only on tokens ≤ i: row-wise
//!   ops keep that, transposing it is refused, and contracting over its
//!   columns masks them (`DotMask::Left`); a dot product that creates one
//!   masks it (`DotMask::Output`);
//! - a (feature × token) tensor's column t depends only on tokens ≤ t: a
//!   linear map over its token axis is lower-triangular, and norms, softmax
//!   or contractions over that axis are refused.

mod catalogue;
mod rules;

pub use catalogue::{
    check_alternative, get_int, name, spec, Children, FormSpec, Kind, ParamSpec, FORMS, LARGEST,
};
pub use rules::*;
