//! Shapes of the per-sequence tensors flowing through an architecture.
//!
//! Every tensor is two-dimensional per sequence (the batch axis is implicit),
//! and each axis is labelled as a token axis or a feature axis. The labels are
//! what make transposes, token mixing and causal masking checkable before
//! anything runs.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Axis {
    /// Indexes sequence positions; its size is always the sequence length.
    Tok,
    /// Indexes features.
    Feat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dim {
    pub axis: Axis,
    pub size: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape {
    pub rows: Dim,
    pub cols: Dim,
}

impl Shape {
    /// The layout of token embeddings: (tokens, features).
    pub fn seq(tokens: usize, width: usize) -> Shape {
        Shape {
            rows: Dim {
                axis: Axis::Tok,
                size: tokens,
            },
            cols: Dim {
                axis: Axis::Feat,
                size: width,
            },
        }
    }

    /// The same layout over a sequence of `tokens` positions.
    pub fn with_tokens(self, tokens: usize) -> Shape {
        let at = |d: Dim| match d.axis {
            Axis::Tok => Dim { size: tokens, ..d },
            Axis::Feat => d,
        };
        Shape {
            rows: at(self.rows),
            cols: at(self.cols),
        }
    }

    pub fn transposed(self) -> Shape {
        Shape {
            rows: self.cols,
            cols: self.rows,
        }
    }

    /// (tokens, features): what blocks, heads and residual streams use.
    pub fn is_seq(&self) -> bool {
        self.rows.axis == Axis::Tok && self.cols.axis == Axis::Feat
    }

    /// (features, tokens): a transposed sequence. Its last axis is the
    /// token axis, and its feature axis is the rows.
    pub fn is_transposed_seq(&self) -> bool {
        self.rows.axis == Axis::Feat && self.cols.axis == Axis::Tok
    }

    /// (tokens, tokens): a token-to-token mixing matrix such as attention scores.
    pub fn is_tok_tok(&self) -> bool {
        self.rows.axis == Axis::Tok && self.cols.axis == Axis::Tok
    }

    pub fn elements(&self) -> usize {
        self.rows.size * self.cols.size
    }

    /// The feature axis size, if there is one (the last one if both are).
    pub fn feat(&self) -> Option<usize> {
        if self.cols.axis == Axis::Feat {
            Some(self.cols.size)
        } else if self.rows.axis == Axis::Feat {
            Some(self.rows.size)
        } else {
            None
        }
    }

    /// The same shape with the feature axis resized (see [`Shape::feat`]).
    pub fn with_feat(self, size: usize) -> Shape {
        let mut s = self;
        if s.cols.axis == Axis::Feat {
            s.cols.size = size;
        } else if s.rows.axis == Axis::Feat {
            s.rows.size = size;
        }
        s
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = match self.axis {
            Axis::Tok => 't',
            Axis::Feat => 'f',
        };
        write!(f, "{}{a}", self.size)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{}", self.rows, self.cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shape_knows_which_way_round_its_axes_are() {
        let seq = Shape::seq(4, 8);
        let flipped = seq.transposed();
        assert!(seq.is_seq() && !seq.is_transposed_seq());
        assert!(flipped.is_transposed_seq() && !flipped.is_seq());
        assert_eq!(flipped.feat(), Some(8));
        let scores = Shape {
            rows: seq.rows,
            cols: seq.rows,
        };
        assert!(scores.is_tok_tok() && !scores.is_transposed_seq());
    }
}
