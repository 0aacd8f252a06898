//! archgram: neural architecture search over probabilistic grammars, with
//! routing simulation. See DESIGN.md for the map of modules.

pub mod arch;
pub mod grammar;
pub mod tasks;
