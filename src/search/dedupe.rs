//! Whether a new candidate needs training: its hashes against the
//! evaluated candidates in the store, then against the candidates of the
//! batch being gathered (not evaluated yet, so not in the store).

use crate::hash::Hashes;
use crate::store::{Store, StoreError};
use std::collections::HashMap;

/// Which hash found the match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    Structural,
    Functional,
}

impl Stage {
    /// The name events and counters use.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Structural => "structural",
            Stage::Functional => "functional",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing seen computes the same: train it.
    New,
    /// Candidate `of`, evaluated and stored, is the same network.
    Stored { of: u64, stage: Stage },
    /// Candidate `of` of this batch is the same network; its outcome is
    /// known once the batch is trained.
    InBatch { of: u64, stage: Stage },
}

/// The hashes of one batch's new candidates.
#[derive(Debug, Default)]
pub(super) struct Deduper {
    in_batch: HashMap<u128, u64>,
}

impl Deduper {
    /// The store first (structural, then functional), then the batch. A
    /// degenerate candidate (no functional hash) only matches structurally.
    pub fn check(&self, store: &dyn Store, h: &Hashes) -> Result<Verdict, StoreError> {
        if let Some(of) = store.by_structural(h.structural)? {
            return Ok(Verdict::Stored {
                of,
                stage: Stage::Structural,
            });
        }
        if let Some(of) = h
            .functional
            .map(|f| store.by_functional(f))
            .transpose()?
            .flatten()
        {
            return Ok(Verdict::Stored {
                of,
                stage: Stage::Functional,
            });
        }
        let batch = |key: u128, stage| {
            self.in_batch
                .get(&key)
                .map(|&of| Verdict::InBatch { of, stage })
        };
        Ok(batch(h.structural, Stage::Structural)
            .or_else(|| h.functional.and_then(|f| batch(f, Stage::Functional)))
            .unwrap_or(Verdict::New))
    }

    /// Candidate `id` left the batch (its result is in the store, or it
    /// ended without one).
    pub fn release(&mut self, id: u64, h: &Hashes) {
        for key in std::iter::once(h.structural).chain(h.functional) {
            if self.in_batch.get(&key) == Some(&id) {
                self.in_batch.remove(&key);
            }
        }
    }

    /// Candidate `id`, found new, joins the batch.
    pub fn admit(&mut self, id: u64, h: &Hashes) {
        self.in_batch.insert(h.structural, id);
        if let Some(f) = h.functional {
            self.in_batch.insert(f, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn hashes(structural: u128, functional: Option<u128>) -> Hashes {
        Hashes {
            structural,
            functional,
        }
    }

    #[test]
    fn the_store_is_asked_first_then_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .put_outcome(
                1,
                &hashes(10, Some(20)),
                &serde_json::json!({"status": "ok"}),
            )
            .unwrap();
        let mut d = Deduper::default();
        let stored = |of, stage| Verdict::Stored { of, stage };
        let in_batch = |of, stage| Verdict::InBatch { of, stage };
        let check = |d: &Deduper, s, f| d.check(&store, &hashes(s, f)).unwrap();
        assert_eq!(check(&d, 10, None), stored(1, Stage::Structural));
        assert_eq!(check(&d, 11, Some(20)), stored(1, Stage::Functional));
        assert_eq!(check(&d, 12, Some(30)), Verdict::New);
        d.admit(5, &hashes(12, Some(30)));
        assert_eq!(check(&d, 12, None), in_batch(5, Stage::Structural));
        assert_eq!(check(&d, 13, Some(30)), in_batch(5, Stage::Functional));
        // A batch member that is also in the store: the stored one wins.
        d.admit(6, &hashes(10, Some(40)));
        assert_eq!(check(&d, 10, None), stored(1, Stage::Structural));
        assert_eq!(
            Deduper::default()
                .check(&store, &hashes(12, Some(30)))
                .unwrap(),
            Verdict::New
        );
    }
}
