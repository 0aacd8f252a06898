//! An affine map per feature: a learned gain and bias.

use super::composite::{Composite, Prim, Recipe};
use super::{Fields, OpDef};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `y = x ⊙ α + β`, `α` and `β` learned vectors over the features, from 1
/// and 0: ResMLP's `Aff` (Touvron et al. 2021, "ResMLP: Feedforward
/// networks for image classification with data-efficient training", §2),
/// which takes the place of a normalisation there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affine;

impl Composite for Affine {
    fn recipe(&self) -> Recipe {
        Recipe(vec![
            Prim::Input(0),
            Prim::Param {
                name: "a",
                init: 1.0,
            },
            Prim::Mul(0, 1),
            Prim::Param {
                name: "b",
                init: 0.0,
            },
            Prim::Add(2, 3),
        ])
    }
}

impl OpDef for Affine {
    fn kind(&self) -> &'static str {
        "affine"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(21);
    }

    crate::recipe_rules!();
}

impl fmt::Display for Affine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}
