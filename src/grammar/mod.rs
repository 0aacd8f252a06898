//! Grammars: the file format, validation, PCFG sampling and matching of
//! hand-written terms.
//!
//! This module owns syntax and probabilities only. What a form *means*
//! (shapes, costs) comes in through the [`Semantics`] trait, implemented by
//! `arch`; nothing here knows about ops, training or search.

mod derivation;
mod format;
mod matching;
mod mutate;
mod sampler;
mod validate;
mod value;

pub use derivation::{Derivation, MAX_HEIGHT};
// Grammar errors are located diagnostics; re-exported for the grammar's users.
pub use crate::diag::{Pos, SourceError};
pub use format::{Alternative, Choices, Grammar, Source};
pub use matching::{annotate, NotDerivable};
pub use mutate::Mutation;
pub use sampler::{
    canonicalise, replay, FormProblem, Node, Reject, SampleError, Sampler, SamplerConfig,
    Semantics, Tables,
};
pub use validate::{min_heights, Warning};
pub use value::Value;

use std::path::Path;

impl Grammar {
    /// Loads and validates a grammar file. Returns warnings (such as
    /// unreachable nonterminals) beside the grammar.
    pub fn load<S: Semantics>(
        path: &Path,
        sem: &S,
    ) -> Result<(Grammar, Vec<Warning>), SourceError> {
        let src = Source::read(path)?;
        Self::from_source(&src, sem)
    }

    pub fn from_source<S: Semantics>(
        src: &Source,
        sem: &S,
    ) -> Result<(Grammar, Vec<Warning>), SourceError> {
        let mut g = format::parse(src)?;
        g.min_heights = validate::min_heights(&g);
        let warnings = validate::validate(&g, src, sem)?;
        Ok((g, warnings))
    }

    /// Number of alternatives over all nonterminals.
    pub fn alternative_count(&self) -> usize {
        self.rules.values().map(Vec::len).sum()
    }
}
