//! LayerScale: a learned gain per feature, initialised small.

use super::composite::{Composite, Prim, Recipe};
use super::{Fields, OpDef};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `y = x ⊙ g`, `g` a learned vector over the features filled with `init`
/// (Touvron et al. 2021, "Going deeper with image transformers" (CaiT),
/// §3: 0.1 up to depth 18, 1e-5 at 24, 1e-6 beyond). Placed at the end of
/// a residual branch, it starts a deep stack close to the identity.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerScale {
    pub init: f64,
}

impl Composite for LayerScale {
    fn recipe(&self) -> Recipe {
        Recipe(vec![
            Prim::Input(0),
            Prim::Param {
                name: "g",
                init: self.init,
            },
            Prim::Mul(0, 1),
        ])
    }
}

impl OpDef for LayerScale {
    fn kind(&self) -> &'static str {
        "layer_scale"
    }

    fn encode(&self, e: &mut Fields) {
        e.tag(20).real(self.init);
    }

    crate::recipe_rules!();
}

impl fmt::Display for LayerScale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer_scale(init={})", self.init)
    }
}
