//! Structural and functional hashing of architecture graphs, so a search
//! trains each distinct network once. Knows the IR (`arch`) only: nothing
//! of training, stores or search.

mod encode;
mod functional;
pub mod interp;
mod keys;
mod mat;
mod mixing;
mod structural;
mod watch;

pub use functional::{
    functional, functional_hash, functional_with, outputs, probes, Functional,
    FUNCTIONAL_RECIPE_VERSION, GRID_BITS, MAX_ORDERINGS, SCALES,
};
pub use mixing::{context_use, Context};
pub use structural::{structural_hash, Canon, HASH_RECIPE_VERSION};
pub use watch::SEEN_BITS;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Both hashes of one architecture. `functional` is `None` for degenerate
/// outputs, which are never merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hashes {
    #[serde(with = "hex128")]
    pub structural: u128,
    #[serde(with = "hex128opt")]
    pub functional: Option<u128>,
}

impl Hashes {
    pub fn of(arch: &crate::arch::Arch) -> Hashes {
        Hashes {
            structural: structural_hash(arch),
            functional: functional_hash(arch),
        }
    }
}

impl fmt::Display for Hashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "structural {:032x}  functional ", self.structural)?;
        match self.functional {
            Some(h) => write!(f, "{h:032x}"),
            None => f.write_str("degenerate (never merged)"),
        }
    }
}

mod hex128 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:032x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        u128::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

mod hex128opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&format!("{v:032x}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u128>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| u128::from_str_radix(&s, 16).map_err(serde::de::Error::custom))
            .transpose()
    }
}
