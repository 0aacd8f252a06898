//! archgram: neural architecture search over probabilistic grammars, with
//! routing simulation. See ARCHITECTURE.md for the map of modules.

pub mod arch;
pub mod cli;
pub mod commands;
pub mod diag;
pub mod eval;
pub mod export;
pub mod fmt;
pub mod grammar;
pub mod hash;
pub mod routing;
pub mod search;
pub mod seed;
pub mod space;
pub mod stats;
pub mod store;
pub mod surrogate;
pub mod tasks;
pub mod tui;
