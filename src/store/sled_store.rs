//! `Store` on sled, in `runs/<name>/store/`.

use super::{CandidateRecord, Counters, Store, StoreError, TrialRecord};
use crate::hash::Hashes;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct SledStore {
    db: sled::Db,
    candidates: sled::Tree,
    outcomes: sled::Tree,
    structural: sled::Tree,
    functional: sled::Tree,
    values: sled::Tree,
    trials: sled::Tree,
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

/// How long `open` waits for a lock this process may still be releasing.
const LOCK_GRACE: Duration = Duration::from_secs(3);

/// sled 0.34 reports a held lock as `ErrorKind::Other` with this message
/// (config.rs), not as `WouldBlock`.
fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock"))
}

fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Io(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SledStore {
    /// Opens (creating) the store in `dir`. A store another process holds
    /// is an error, not a wait.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        // sled drops its file lock on a background thread some time after
        // the last handle goes, so a store this process has just closed can
        // look held for a moment: retry briefly before blaming another process.
        let deadline = Instant::now() + LOCK_GRACE;
        let db = loop {
            match sled::Config::new().path(dir).open() {
                Err(e) if is_lock_held(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                r => break r,
            }
        };
        let db = db.map_err(|e| StoreError::Open {
            path: dir.display().to_string(),
            reason: if is_lock_held(&e) {
                "another archgram process is using this run (watch it with `archgram status` or `archgram watch`)".into()
            } else {
                e.to_string()
            },
        })?;
        let tree = |name: &str| db.open_tree(name).map_err(io);
        Ok(SledStore {
            candidates: tree("candidates")?,
            outcomes: tree("outcomes")?,
            structural: tree("by_structural")?,
            functional: tree("by_functional")?,
            values: tree("values")?,
            trials: tree("trials")?,
            db,
        })
    }
}

impl Store for SledStore {
    fn put_meta(&self, meta: &serde_json::Value) -> Result<(), StoreError> {
        self.put_value("meta", meta)?;
        self.flush()
    }

    fn meta(&self) -> Result<Option<serde_json::Value>, StoreError> {
        self.value("meta")
    }

    fn put_candidate(&self, c: &CandidateRecord) -> Result<(), StoreError> {
        self.candidates.insert(id_key(c.id), json(c)?).map_err(io)?;
        Ok(())
    }

    fn candidate(&self, id: u64) -> Result<Option<CandidateRecord>, StoreError> {
        self.candidates
            .get(id_key(id))
            .map_err(io)?
            .map(|b| parse(&b))
            .transpose()
    }

    fn candidates(&self) -> Result<Vec<CandidateRecord>, StoreError> {
        self.candidates
            .iter()
            .values()
            .map(|v| parse(&v.map_err(io)?))
            .collect()
    }

    fn put_outcome(
        &self,
        id: u64,
        hashes: &Hashes,
        outcome: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.outcomes
            .insert(id_key(id), json(outcome)?)
            .map_err(io)?;
        self.structural
            .insert(hashes.structural.to_be_bytes(), &id_key(id))
            .map_err(io)?;
        if let Some(f) = hashes.functional {
            self.functional
                .insert(f.to_be_bytes(), &id_key(id))
                .map_err(io)?;
        }
        self.flush()
    }

    fn outcome(&self, id: u64) -> Result<Option<serde_json::Value>, StoreError> {
        self.outcomes
            .get(id_key(id))
            .map_err(io)?
            .map(|b| parse(&b))
            .transpose()
    }

    fn by_structural(&self, h: u128) -> Result<Option<u64>, StoreError> {
        Ok(self
            .structural
            .get(h.to_be_bytes())
            .map_err(io)?
            .and_then(|b| b.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    fn by_functional(&self, h: u128) -> Result<Option<u64>, StoreError> {
        Ok(self
            .functional
            .get(h.to_be_bytes())
            .map_err(io)?
            .and_then(|b| b.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    fn put_trial(&self, t: &TrialRecord) -> Result<(), StoreError> {
        self.trials
            .insert(t.key().as_bytes(), json(t)?)
            .map_err(io)?;
        self.flush()
    }

    fn trials(&self) -> Result<Vec<TrialRecord>, StoreError> {
        self.trials
            .iter()
            .values()
            .map(|v| parse(&v.map_err(io)?))
            .collect()
    }

    fn counters(&self) -> Result<Counters, StoreError> {
        Ok(self
            .value("counters")?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
            .unwrap_or_default())
    }

    fn put_counters(&self, c: &Counters) -> Result<(), StoreError> {
        self.put_value(
            "counters",
            &serde_json::to_value(c).map_err(|e| StoreError::Io(e.to_string()))?,
        )
    }

    fn put_value(&self, key: &str, v: &serde_json::Value) -> Result<(), StoreError> {
        self.values.insert(key.as_bytes(), json(v)?).map_err(io)?;
        Ok(())
    }

    fn value(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.values
            .get(key.as_bytes())
            .map_err(io)?
            .map(|b| parse(&b))
            .transpose()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::Derivation;

    fn record(id: u64) -> CandidateRecord {
        CandidateRecord {
            id,
            derivation: Derivation::parse("seq(linear(width=8), act(fn=relu))").unwrap(),
            text: "seq(linear(width=8), act(fn=relu))".into(),
            hashes: Hashes {
                structural: 0xabc + id as u128,
                functional: Some(0xdef + id as u128),
            },
            parent: id.checked_sub(1),
            origin: "sample".into(),
            duplicate_of: None,
            params: 10.0,
            active_params: 10.0,
            steps: 100,
            flops: 20.0,
        }
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.put_meta(&serde_json::json!({"seed": 7})).unwrap();
            for id in 0..3 {
                s.put_candidate(&record(id)).unwrap();
            }
            let r = record(1);
            s.put_outcome(1, &r.hashes, &serde_json::json!({"score": 0.5}))
                .unwrap();
            s.put_counters(&Counters {
                structural_hits: 2,
                misses: 3,
                seconds_saved: 1.5,
                ..Counters::default()
            })
            .unwrap();
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.meta().unwrap().unwrap()["seed"], 7);
        assert_eq!(
            s.candidates().unwrap(),
            vec![record(0), record(1), record(2)]
        );
        assert_eq!(s.outcome(1).unwrap().unwrap()["score"], 0.5);
        assert_eq!(s.outcome(2).unwrap(), None);
        assert_eq!(s.by_structural(0xabc + 1).unwrap(), Some(1));
        assert_eq!(s.by_functional(0xdef + 1).unwrap(), Some(1));
        assert_eq!(s.by_structural(0xabc + 2).unwrap(), None);
        let c = s.counters().unwrap();
        assert_eq!((c.structural_hits, c.misses, c.seconds_saved), (2, 3, 1.5));
    }

    #[test]
    fn trials_are_kept_by_candidate_and_replaced_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let trial = |candidate, seed, score| TrialRecord {
            candidate,
            purpose: "confirm".into(),
            steps: 250,
            seed,
            outcome: serde_json::json!({"score": score}),
        };
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.put_trial(&trial(300, 1, 0.5)).unwrap();
            s.put_trial(&trial(2, 9, 0.1)).unwrap();
            s.put_trial(&trial(2, 9, 0.2)).unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            s.trials().unwrap(),
            vec![trial(2, 9, 0.2), trial(300, 1, 0.5)]
        );
    }

    #[test]
    fn a_held_store_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let held = SledStore::open(dir.path()).unwrap();
        // The lock is per open file, so a second handle in this process is
        // refused just as another process would be.
        let e = SledStore::open(dir.path())
            .err()
            .expect("the store is held");
        assert!(e.to_string().contains("another archgram process"), "{e}");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let e = SledStore::open(&file).err().expect("a file is not a store");
        assert!(e.to_string().contains("cannot open the run store"), "{e}");
        assert!(!e.to_string().contains("another archgram process"), "{e}");
        drop(held);
    }

    #[test]
    fn a_lock_freed_within_the_grace_is_waited_for() {
        // Another handle holds the store and lets go of it a moment later,
        // as sled does on its background thread after a drop: the open waits
        // for it instead of blaming another process.
        let dir = tempfile::tempdir().unwrap();
        let held = SledStore::open(dir.path()).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let reopened = SledStore::open(dir.path());
        release.join().unwrap();
        reopened.unwrap();
    }
}
