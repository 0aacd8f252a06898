//! `Store` on sled, in `runs/<name>/store/`, with the run's events in
//! `runs/<name>/events.jsonl`.

use super::{
    events, read_events, CandidateBrief, CandidateRecord, Counters, Event, EventLog, Finished,
    Mark, OutcomeBrief, RecordedIds, Store, StoreError, TrialRecord,
};
use crate::hash::Hashes;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct SledStore {
    db: sled::Db,
    trees: Trees,
    /// A write or flush failed: nothing more is written, and the handles
    /// are let go of without sled's closing flush.
    failed: AtomicBool,
    /// The run's event log, when opened as a run's store.
    events: Option<PathBuf>,
    /// Opened at the first append, so that a command that only reads
    /// (`export`) leaves the log as it found it.
    log: Mutex<Option<EventLog>>,
}

struct Trees {
    candidates: sled::Tree,
    outcomes: sled::Tree,
    /// Each outcome's `OutcomeBrief`, written with it: what ranking reads,
    /// without reading the outcome.
    briefs: sled::Tree,
    /// Each candidate's `CandidateBrief`, written with its record; read
    /// for the whole run only when [`KEEPS_CANDIDATE_BRIEFS`] says every
    /// record has one (a store begun before them falls back to the
    /// records).
    candidate_briefs: sled::Tree,
    structural: sled::Tree,
    functional: sled::Tree,
    values: sled::Tree,
    trials: sled::Tree,
}

/// A sled error kept as the cause of a `StoreError`. sled's own messages
/// print I/O errors with Rust's debug formatting (`Os { code: 28, kind:
/// StorageFull, .. }`); this one says it in words.
#[derive(Debug)]
pub struct SledError(pub sled::Error);

impl std::fmt::Display for SledError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe(&self.0))
    }
}

impl std::error::Error for SledError {}

fn describe(e: &sled::Error) -> String {
    match e {
        sled::Error::Io(e) => io_words(e),
        sled::Error::Corruption { .. } => "sled found damaged data in the store's files".into(),
        other => other.to_string(),
    }
}

/// An I/O error in words. sled hands a stored error out as a clone whose
/// message is the original's debug text; its OS error code is read back
/// out of it.
fn io_words(e: &std::io::Error) -> String {
    let text = e.to_string();
    let code = text
        .strip_prefix("Os { code: ")
        .and_then(|r| r.split(',').next())
        .and_then(|c| c.parse().ok());
    match code {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None if text.contains(" { ") || text.starts_with("Kind(") => e.kind().to_string(),
        None => text,
    }
}

fn io(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { .. } => StoreError::Corrupt(Box::new(SledError(e))),
        e => StoreError::Io(SledError(e)),
    }
}

/// How long a flush may take before the disk is taken to be failing. sled
/// 0.34 can wait forever for a write that failed (measured on a full
/// tmpfs: the process sat at 0% CPU in the flush of a tree's drop, deaf to
/// SIGINT and SIGTERM), so flushes run on a helper thread and are waited
/// for this long.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `open` waits for a lock this process may still be releasing.
const LOCK_GRACE: Duration = Duration::from_secs(3);

/// Whether another handle holds the store's lock. sled 0.34 takes an
/// exclusive lock on `DIR/db` (with fs2) but reports a refusal only as
/// `ErrorKind::Other` with a message, so the same lock is tried here first,
/// where a refusal has a kind of its own (`WouldBlock`). A folder without
/// that file (a new store, or not a folder at all) is not held.
fn is_lock_held(dir: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("db"))
    else {
        return false;
    };
    // The lock, if taken, goes with `file` at the end of this call.
    matches!(fs2::FileExt::try_lock_exclusive(&file),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// The candidate id a record's key holds (see [`id_key`]).
fn key_id(key: &[u8]) -> Result<u64, StoreError> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(format!("a record's key of {} bytes", key.len()).into()))
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(StoreError::Encode)
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(Box::new(e)))
}

/// The key the counters are kept under in the `values` tree.
const COUNTERS: &[u8] = b"counters";
/// Set in `values` when a store is begun: every candidate it records gets
/// a brief.
const KEEPS_CANDIDATE_BRIEFS: &[u8] = b"keeps_candidate_briefs";

/// The trees an evaluation writes beside its record and the counters,
/// inside their transaction.
struct ResultTrees<'a> {
    outcomes: &'a TransactionalTree,
    briefs: &'a TransactionalTree,
    structural: &'a TransactionalTree,
    functional: &'a TransactionalTree,
}

impl SledStore {
    /// Opens (creating) the store in `dir`. A store another process holds
    /// is an error, not a wait.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        // sled drops its file lock on a background thread some time after
        // the last handle goes, so a store this process has just closed can
        // look held for a moment: retry briefly before blaming another process.
        let deadline = Instant::now() + LOCK_GRACE;
        let path = dir.display().to_string();
        while is_lock_held(dir) {
            if Instant::now() >= deadline {
                return Err(StoreError::Held { path });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|e| StoreError::Open {
                path: path.clone(),
                source: SledError(e),
            })?;
        let tree = |name: &str| db.open_tree(name).map_err(io);
        let trees = Trees {
            candidates: tree("candidates")?,
            outcomes: tree("outcomes")?,
            briefs: tree("outcome_briefs")?,
            candidate_briefs: tree("candidate_briefs")?,
            structural: tree("by_structural")?,
            functional: tree("by_functional")?,
            values: tree("values")?,
            trials: tree("trials")?,
        };
        // A store with no candidate yet keeps every candidate's brief from
        // its first; one begun by an older archgram does not.
        if trees.candidates.first().map_err(io)?.is_none()
            && !trees
                .values
                .contains_key(KEEPS_CANDIDATE_BRIEFS)
                .map_err(io)?
        {
            trees
                .values
                .insert(KEEPS_CANDIDATE_BRIEFS, &b"true"[..])
                .map_err(io)?;
        }
        Ok(SledStore {
            db,
            trees,
            failed: AtomicBool::new(false),
            events: None,
            log: Mutex::new(None),
        })
    }

    /// Opens (creating) a run's store in `dir` with its event log at
    /// `events`. A store opened with [`SledStore::open`] has no log: it
    /// reads no events and refuses to append one.
    /// Whether every candidate and every outcome has its brief: the store
    /// was begun by an archgram that writes them (marked then) and no
    /// older one has added a record since. Ids only grow, so a record added
    /// without a brief shows as a later last record.
    fn briefs_complete(&self) -> Result<bool, StoreError> {
        let t = &self.trees;
        let last = |tree: &sled::Tree| tree.last().map_err(io).map(|kv| kv.map(|kv| kv.0));
        Ok(t.values.contains_key(KEEPS_CANDIDATE_BRIEFS).map_err(io)?
            && last(&t.candidates)? == last(&t.candidate_briefs)?)
    }

    /// The event log read by `read` (nothing when the store has no log or
    /// the log is not written yet).
    fn read_log<T>(
        &self,
        read: fn(&Path) -> std::io::Result<Vec<T>>,
    ) -> Result<Vec<T>, StoreError> {
        let Some(path) = &self.events else {
            return Ok(Vec::new());
        };
        match read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            r => r.map_err(|e| {
                let what = format!("cannot read {}: {e}", path.display());
                StoreError::Events(std::io::Error::new(e.kind(), what))
            }),
        }
    }

    /// Whether every outcome has its brief. Outcome briefs were kept
    /// before candidate briefs, so a store that keeps these keeps those;
    /// and an outcome an older archgram added without a brief is the last
    /// outcome, as ids only grow.
    fn outcome_briefs_complete(&self) -> Result<bool, StoreError> {
        let t = &self.trees;
        let last = |tree: &sled::Tree| tree.last().map_err(io).map(|kv| kv.map(|kv| kv.0));
        Ok(self.briefs_complete()? && last(&t.outcomes)? == last(&t.briefs)?)
    }

    pub fn open_run(dir: &Path, events: &Path) -> Result<SledStore, StoreError> {
        let mut s = SledStore::open(dir)?;
        s.events = Some(events.to_path_buf());
        Ok(s)
    }

    /// Writes a candidate record (not durable until a flush).
    pub fn put_candidate(&self, c: &CandidateRecord) -> Result<(), StoreError> {
        let t = &self.trees;
        self.insert(&t.candidates, &id_key(c.id), &json(c)?)?;
        self.insert(
            &t.candidate_briefs,
            &id_key(c.id),
            &json(&CandidateBrief::from(c))?,
        )
    }

    /// Records an outcome and indexes its hashes, durably (without the
    /// candidate, counters or event [`Store::record_evaluation`] writes
    /// with them: for building stores in tests and tools).
    pub fn put_outcome(
        &self,
        id: u64,
        hashes: &Hashes,
        outcome: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let t = &self.trees;
        self.insert(&t.outcomes, &id_key(id), &json(outcome)?)?;
        self.insert(&t.briefs, &id_key(id), &json(&OutcomeBrief::of(outcome))?)?;
        self.insert(&t.structural, &hashes.structural.to_be_bytes(), &id_key(id))?;
        if let Some(f) = hashes.functional {
            self.insert(&t.functional, &f.to_be_bytes(), &id_key(id))?;
        }
        self.flush()
    }

    /// Replaces the counters (not durable until a flush).
    pub fn put_counters(&self, c: &Counters) -> Result<(), StoreError> {
        self.insert(&self.trees.values, COUNTERS, &json(c)?)
    }

    /// Writes `record` and counts `event` into the counters in one sled
    /// transaction, with `more` writing the result's other trees; then
    /// flushes, then appends the event.
    fn record_result(
        &self,
        record: &CandidateRecord,
        event: &Event,
        more: impl Fn(&ResultTrees) -> Result<(), ConflictableTransactionError<StoreError>>,
    ) -> Result<(), StoreError> {
        self.writable()?;
        let key = id_key(record.id);
        let bytes = json(record)?;
        let brief = json(&CandidateBrief::from(record))?;
        let t = &self.trees;
        let done = (
            &t.candidates,
            &t.candidate_briefs,
            &t.values,
            &t.outcomes,
            &t.briefs,
            &t.structural,
            &t.functional,
        )
            .transaction(
                |(
                    candidates,
                    candidate_briefs,
                    values,
                    outcomes,
                    briefs,
                    structural,
                    functional,
                )| {
                    candidates.insert(&key[..], bytes.as_slice())?;
                    candidate_briefs.insert(&key[..], brief.as_slice())?;
                    let mut counters: Counters = match values.get(COUNTERS)? {
                        Some(b) => parse(&b).map_err(ConflictableTransactionError::Abort)?,
                        None => Counters::default(),
                    };
                    counters.count(&event.kind);
                    let c = json(&counters).map_err(ConflictableTransactionError::Abort)?;
                    values.insert(COUNTERS, c)?;
                    more(&ResultTrees {
                        outcomes,
                        briefs,
                        structural,
                        functional,
                    })
                },
            );
        match done {
            Ok(()) => {}
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return self.wrote(Err(e)),
        }
        self.flush()?;
        self.append_event(event)
    }

    /// A write's result; a failure stops all further writes.
    fn wrote<T>(&self, r: sled::Result<T>) -> Result<T, StoreError> {
        r.map_err(|e| {
            self.failed.store(true, Ordering::SeqCst);
            io(e)
        })
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(StoreError::WritesStopped);
        }
        Ok(())
    }

    fn insert(&self, tree: &sled::Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.writable()?;
        self.wrote(tree.insert(key, value)).map(drop)
    }
}

impl Drop for SledStore {
    /// A last flush that can time out. When it goes through, the handles
    /// drop as usual (sled's closing flush then has nothing to write); when
    /// it fails, sled's closing flush would wait forever, so one more
    /// reference to each handle is leaked and that flush never starts: the
    /// process is about to report the error and exit, and the disk keeps
    /// what was flushed before.
    fn drop(&mut self) {
        if self.flush().is_err() {
            let t = &self.trees;
            for tree in [
                &t.candidates,
                &t.outcomes,
                &t.briefs,
                &t.candidate_briefs,
                &t.structural,
                &t.functional,
                &t.values,
                &t.trials,
            ] {
                std::mem::forget(tree.clone());
            }
            std::mem::forget(self.db.clone());
        }
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

    fn candidate(&self, id: u64) -> Result<Option<CandidateRecord>, StoreError> {
        self.trees
            .candidates
            .get(id_key(id))
            .map_err(io)?
            .map(|b| parse(&b))
            .transpose()
    }

    fn candidates(&self) -> Result<Vec<CandidateRecord>, StoreError> {
        self.trees
            .candidates
            .iter()
            .values()
            .map(|v| parse(&v.map_err(io)?))
            .collect()
    }

    fn candidate_briefs(&self) -> Result<Vec<CandidateBrief>, StoreError> {
        let t = &self.trees;
        let tree = if self.briefs_complete()? {
            &t.candidate_briefs
        } else {
            &t.candidates
        };
        tree.iter()
            .values()
            .map(|v| parse(&v.map_err(io)?))
            .collect()
    }

    fn has_candidate(&self, id: u64) -> Result<bool, StoreError> {
        let key = id_key(id);
        // A brief is written with its record, and its tree's pages are the
        // small ones to read (the records' hold derivations).
        Ok(self.trees.candidate_briefs.contains_key(key).map_err(io)?
            || self.trees.candidates.contains_key(key).map_err(io)?)
    }

    fn record_evaluation(&self, f: &Finished) -> Result<(), StoreError> {
        let key = id_key(f.record.id);
        let outcome = json(f.outcome)?;
        let brief = json(&OutcomeBrief::of(f.outcome))?;
        let hashes = &f.record.hashes;
        self.record_result(f.record, f.event, |t| {
            t.outcomes.insert(&key[..], outcome.as_slice())?;
            t.briefs.insert(&key[..], brief.as_slice())?;
            t.structural
                .insert(&hashes.structural.to_be_bytes()[..], &key[..])?;
            if let Some(h) = hashes.functional {
                t.functional.insert(&h.to_be_bytes()[..], &key[..])?;
            }
            Ok(())
        })
    }

    fn record_duplicate(&self, record: &CandidateRecord, event: &Event) -> Result<(), StoreError> {
        self.record_result(record, event, |_| Ok(()))
    }

    fn outcome(&self, id: u64) -> Result<Option<serde_json::Value>, StoreError> {
        self.trees
            .outcomes
            .get(id_key(id))
            .map_err(io)?
            .map(|b| parse(&b))
            .transpose()
    }

    fn outcome_brief(&self, id: u64) -> Result<Option<serde_json::Value>, StoreError> {
        let key = id_key(id);
        if let Some(b) = self.trees.briefs.get(key).map_err(io)? {
            return parse(&b).map(Some);
        }
        // A store written before briefs were kept beside outcomes.
        self.trees
            .outcomes
            .get(key)
            .map_err(io)?
            .map(|b| OutcomeBrief::parse(&b).map_err(|e| StoreError::Corrupt(Box::new(e))))
            .transpose()
    }

    fn outcome_briefs(&self) -> Result<HashMap<u64, serde_json::Value>, StoreError> {
        if !self.outcome_briefs_complete()? {
            return super::outcome_briefs_one_by_one(self);
        }
        self.trees
            .briefs
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(io)?;
                Ok((key_id(&k)?, parse(&v)?))
            })
            .collect()
    }

    fn recorded_ids(&self) -> Result<RecordedIds, StoreError> {
        let t = &self.trees;
        let keys = |tree: &sled::Tree| -> Result<HashSet<u64>, StoreError> {
            tree.iter()
                .keys()
                .map(|k| key_id(&k.map_err(io)?))
                .collect()
        };
        // A store begun before briefs were kept reads the records' own
        // keys (the slow read, of every record, older stores only).
        let outcomes = keys(if self.outcome_briefs_complete()? {
            &t.briefs
        } else {
            &t.outcomes
        })?;
        Ok(RecordedIds {
            candidates: keys(if self.briefs_complete()? {
                &t.candidate_briefs
            } else {
                &t.candidates
            })?,
            outcomes,
        })
    }

    fn has_outcome(&self, id: u64) -> Result<bool, StoreError> {
        let key = id_key(id);
        // sled reads a value to answer whether its key is there: the brief
        // is the small one (the outcome itself for older stores).
        Ok(self.trees.briefs.contains_key(key).map_err(io)?
            || self.trees.outcomes.contains_key(key).map_err(io)?)
    }

    fn by_structural(&self, h: u128) -> Result<Option<u64>, StoreError> {
        Ok(self
            .trees
            .structural
            .get(h.to_be_bytes())
            .map_err(io)?
            .and_then(|b| b.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    fn by_functional(&self, h: u128) -> Result<Option<u64>, StoreError> {
        Ok(self
            .trees
            .functional
            .get(h.to_be_bytes())
            .map_err(io)?
            .and_then(|b| b.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    fn put_trial(&self, t: &TrialRecord) -> Result<(), StoreError> {
        self.insert(&self.trees.trials, t.key().as_bytes(), &json(t)?)?;
        self.flush()
    }

    fn trials(&self) -> Result<Vec<TrialRecord>, StoreError> {
        self.trees
            .trials
            .iter()
            .values()
            .map(|v| parse(&v.map_err(io)?))
            .collect()
    }

    fn counters(&self) -> Result<Counters, StoreError> {
        Ok(self
            .trees
            .values
            .get(COUNTERS)
            .map_err(io)?
            .map(|b| parse(&b))
            .transpose()?
            .unwrap_or_default())
    }

    fn put_value(&self, key: &str, v: &serde_json::Value) -> Result<(), StoreError> {
        self.insert(&self.trees.values, key.as_bytes(), &json(v)?)
    }

    fn value(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.trees
            .values
            .get(key.as_bytes())
            .map_err(io)?
            .map(|b| parse(&b))
            .transpose()
    }

    fn append_event(&self, e: &Event) -> Result<(), StoreError> {
        let Some(path) = &self.events else {
            return Err(StoreError::Events(std::io::Error::other(
                "this store was opened without its event log",
            )));
        };
        // A writer that panicked mid-append left at worst a torn line,
        // which the log's readers skip.
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let log = match &mut *log {
            Some(log) => log,
            unopened => unopened.insert(EventLog::open(path).map_err(StoreError::Events)?),
        };
        log.append(e).map_err(StoreError::Events)
    }

    /// A log not written yet holds no events.
    fn events(&self) -> Result<Vec<Event>, StoreError> {
        self.read_log(read_events)
    }

    fn event_marks(&self) -> Result<Vec<Mark>, StoreError> {
        self.read_log(events::read_marks)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.writable()?;
        let db = self.db.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(db.flush());
        });
        match rx.recv_timeout(FLUSH_TIMEOUT) {
            Ok(r) => self.wrote(r).map(drop),
            Err(_) => {
                // The helper stays blocked with its handle; it is leaked
                // with the rest (see `Drop`).
                self.failed.store(true, Ordering::SeqCst);
                Err(StoreError::FlushTimeout {
                    secs: FLUSH_TIMEOUT.as_secs(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::Derivation;
    use crate::store::events::{Duplicate, Evaluated, Failed};
    use crate::store::EventKind;

    /// A resumed run decides from scores read back from the store; they must
    /// be the very f64s the live run used (serde_json's default parser can
    /// be one ulp off: 0.09875483039931301 came back as 0.098754830399313).
    #[test]
    fn scores_read_back_are_the_exact_f64s_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let r = record(1);
        let scores: [f64; 4] = [0.09875483039931301, 0.1, 1.0 / 3.0, 0.30000000000000004];
        for (i, &x) in scores.iter().enumerate() {
            let r = CandidateRecord {
                id: i as u64,
                ..r.clone()
            };
            s.put_outcome(
                r.id,
                &r.hashes,
                &serde_json::json!({"status": "ok", "score": x}),
            )
            .unwrap();
        }
        for (i, &x) in scores.iter().enumerate() {
            let back = s.outcome(i as u64).unwrap().unwrap()["score"]
                .as_f64()
                .unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x} came back as {back}");
        }
    }

    /// The brief of a stored outcome keeps what ranking reads, with the
    /// same values (the exact f64s too), and leaves out the bulk; it and
    /// the existence check agree with the full read.
    #[test]
    fn an_outcome_brief_keeps_what_ranking_reads_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let r = record(1);
        let full = serde_json::json!({"status": "ok", "metric": "likelihood",
            "score": 0.09875483039931301, "accuracy": 0.5, "test_loss": 2.3,
            "wall_secs": 1.5, "loss_curve": [[0, 3.4], [10, 2.9]],
            "routes": [{"tokens": 64, "dropped": 0, "load": [32, 32]}]});
        assert!(!s.has_outcome(1).unwrap());
        assert_eq!(s.outcome_brief(1).unwrap(), None);
        s.put_outcome(r.id, &r.hashes, &full).unwrap();
        assert!(s.has_outcome(1).unwrap());
        let brief = s.outcome_brief(1).unwrap().unwrap();
        assert_eq!(
            brief,
            serde_json::json!({"status": "ok", "metric": "likelihood",
                "score": 0.09875483039931301, "accuracy": 0.5, "test_loss": 2.3,
                "wall_secs": 1.5})
        );
        assert_eq!(brief, OutcomeBrief::of(&full));
        let failed = serde_json::json!({"status": "failed", "reason": "loss became NaN at step 3",
            "retry_may_help": false, "metric": "accuracy", "score": 0.0, "loss_curve": []});
        s.put_outcome(2, &record(2).hashes, &failed).unwrap();
        let brief = s.outcome_brief(2).unwrap().unwrap();
        assert_eq!(brief["reason"], "loss became NaN at step 3");
        assert_eq!(brief["status"], "failed");
        assert!(brief.get("loss_curve").is_none());
        // A store written before briefs were kept: read from the outcome.
        s.trees
            .outcomes
            .insert(id_key(3), serde_json::to_vec(&full).unwrap())
            .unwrap();
        assert!(s.has_outcome(3).unwrap());
        assert_eq!(s.outcome_brief(3).unwrap(), Some(OutcomeBrief::of(&full)));
    }

    /// Every outcome's brief comes from one scan of the briefs, the same
    /// as read one by one; a store an older archgram wrote an outcome to
    /// without its brief is read one by one.
    #[test]
    fn all_outcome_briefs_are_read_at_once_as_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert!(s.outcome_briefs().unwrap().is_empty());
        let outcome = |score: f64| serde_json::json!({"status": "ok", "score": score, "loss_curve": [[0, 3.4]]});
        for id in 1..=3 {
            let r = record(id);
            s.put_candidate(&r).unwrap();
            if id != 2 {
                s.put_outcome(id, &r.hashes, &outcome(id as f64 / 10.0))
                    .unwrap();
            }
        }
        let one_by_one = |s: &SledStore| -> HashMap<u64, serde_json::Value> {
            (0..6)
                .filter_map(|id| Some((id, s.outcome_brief(id).unwrap()?)))
                .collect()
        };
        let all = s.outcome_briefs().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[&3], serde_json::json!({"status": "ok", "score": 0.3}));
        assert_eq!(all, one_by_one(&s));
        // Scanned, not read one by one: a brief without its candidate is
        // found too (no store writes one; it shows which path read it).
        s.trees
            .briefs
            .insert(
                id_key(0),
                serde_json::to_vec(&serde_json::json!({"score": 0})).unwrap(),
            )
            .unwrap();
        assert!(s.outcome_briefs().unwrap().contains_key(&0));
        // An older archgram's outcome, without a brief, for a candidate
        // this one recorded: read one by one, from the outcome.
        let r = record(4);
        s.put_candidate(&r).unwrap();
        s.trees
            .outcomes
            .insert(id_key(4), serde_json::to_vec(&outcome(0.4)).unwrap())
            .unwrap();
        let all = s.outcome_briefs().unwrap();
        assert_eq!(all[&4], serde_json::json!({"status": "ok", "score": 0.4}));
        assert_eq!(all.len(), 3);
    }

    /// The ids listed are those recorded, from the briefs' keys, or from
    /// the records' own for a store an older archgram wrote to.
    #[test]
    fn recorded_ids_are_the_records_and_outcomes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let outcome = serde_json::json!({"status": "ok", "score": 0.5});
        for id in [1, 2, 5] {
            let r = record(id);
            s.put_candidate(&r).unwrap();
            if id != 2 {
                s.put_outcome(id, &r.hashes, &outcome).unwrap();
            }
        }
        let set = |ids: &[u64]| ids.iter().copied().collect::<HashSet<u64>>();
        let ids = s.recorded_ids().unwrap();
        assert_eq!(ids.candidates, set(&[1, 2, 5]));
        assert_eq!(ids.outcomes, set(&[1, 5]));
        // An older archgram adds a record and an outcome without briefs.
        s.trees
            .candidates
            .insert(id_key(7), serde_json::to_vec(&record(7)).unwrap())
            .unwrap();
        s.trees
            .outcomes
            .insert(id_key(7), serde_json::to_vec(&outcome).unwrap())
            .unwrap();
        let ids = s.recorded_ids().unwrap();
        assert_eq!(ids.candidates, set(&[1, 2, 5, 7]));
        assert_eq!(ids.outcomes, set(&[1, 5, 7]));
    }

    /// The briefs of every candidate are their records less the
    /// derivation and text, and existence is answered without a read.
    #[test]
    fn candidate_briefs_are_the_records_without_their_derivations() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let mut dup = record(3);
        dup.duplicate_of = Some(1);
        dup.steps = 120;
        let records = [record(1), record(2), dup];
        for r in &records {
            s.put_candidate(r).unwrap();
        }
        let briefs = s.candidate_briefs().unwrap();
        let expected: Vec<CandidateBrief> = records.iter().map(CandidateBrief::from).collect();
        assert_eq!(briefs, expected);
        assert_eq!(briefs[2].duplicate_of, Some(1));
        assert_eq!(briefs[2].steps, 120);
        assert!(s.has_candidate(2).unwrap());
        assert!(!s.has_candidate(4).unwrap());
        // Read from their own tree: a brief is there for each record.
        assert_eq!(s.trees.candidate_briefs.len(), 3);
        // A store begun before briefs were kept (no marker, records
        // without briefs) reads them from the records, and stays so.
        s.trees.values.remove(KEEPS_CANDIDATE_BRIEFS).unwrap();
        s.trees
            .candidates
            .insert(id_key(4), serde_json::to_vec(&record(4)).unwrap())
            .unwrap();
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        let ids: Vec<u64> = s.candidate_briefs().unwrap().iter().map(|b| b.id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert!(s.has_candidate(4).unwrap());
        // A store begun with briefs, to which an older archgram then added
        // a record without one, reads the records too.
        drop(s);
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        s.put_candidate(&record(1)).unwrap();
        s.trees
            .candidates
            .insert(id_key(2), serde_json::to_vec(&record(2)).unwrap())
            .unwrap();
        let ids: Vec<u64> = s.candidate_briefs().unwrap().iter().map(|b| b.id).collect();
        assert_eq!(ids, [1, 2]);
    }

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

    fn event(kind: EventKind) -> Event {
        Event {
            t: 1.0,
            kind,
            recovered: false,
        }
    }

    #[test]
    fn one_call_writes_every_part_of_a_result_then_its_event() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        let outcome = serde_json::json!({"status": "ok", "score": 0.5, "wall_secs": 2.0});
        {
            let s = SledStore::open_run(&dir.path().join("store"), &events).unwrap();
            let evaluated = event(EventKind::Evaluated(Evaluated {
                id: 1,
                score: 0.5,
                ..Evaluated::default()
            }));
            s.record_evaluation(&Finished {
                record: &record(1),
                outcome: &outcome,
                event: &evaluated,
            })
            .unwrap();
            let failed = event(EventKind::Failed(Failed {
                id: 2,
                reason: "diverged".into(),
                ..Failed::default()
            }));
            s.record_evaluation(&Finished {
                record: &record(2),
                outcome: &serde_json::json!({"status": "failed", "reason": "diverged"}),
                event: &failed,
            })
            .unwrap();
            let merged = CandidateRecord {
                duplicate_of: Some(1),
                ..record(3)
            };
            let duplicate = event(EventKind::Duplicate(Duplicate {
                id: 3,
                of: 1,
                seconds_saved: 2.0,
                stage: "structural".into(),
            }));
            s.record_duplicate(&merged, &duplicate).unwrap();
            assert_eq!(s.events().unwrap(), [evaluated, failed, duplicate]);
        }
        // Durable: all of it is there after the store is closed.
        let s = SledStore::open(&dir.path().join("store")).unwrap();
        assert_eq!(s.candidate(1).unwrap(), Some(record(1)));
        assert_eq!(s.outcome(1).unwrap(), Some(outcome));
        assert_eq!(s.by_structural(0xabc + 1).unwrap(), Some(1));
        assert_eq!(s.by_functional(0xdef + 1).unwrap(), Some(1));
        assert_eq!(s.outcome(2).unwrap().unwrap()["status"], "failed");
        assert_eq!(s.candidate(3).unwrap().unwrap().duplicate_of, Some(1));
        assert_eq!(s.outcome(3).unwrap(), None, "a duplicate has no outcome");
        assert_eq!(s.by_structural(0xabc + 3).unwrap(), None);
        assert_eq!(
            s.counters().unwrap(),
            Counters {
                structural_hits: 1,
                functional_hits: 0,
                misses: 2,
                seconds_saved: 2.0,
                evaluated: 1,
                failed: 1,
            }
        );
    }

    #[test]
    fn counters_stored_before_results_were_one_call_are_counted_on() {
        // A store written by the calls this replaced (counters kept apart).
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        let s = SledStore::open_run(&dir.path().join("store"), &events).unwrap();
        s.put_value(
            "counters",
            &serde_json::json!({"structural_hits": 4, "functional_hits": 1,
                "misses": 9, "seconds_saved": 3.5, "evaluated": 8, "failed": 1}),
        )
        .unwrap();
        let e = event(EventKind::Evaluated(Evaluated::default()));
        let outcome = serde_json::json!({"status": "ok"});
        s.record_evaluation(&Finished {
            record: &record(9),
            outcome: &outcome,
            event: &e,
        })
        .unwrap();
        let c = s.counters().unwrap();
        assert_eq!((c.misses, c.evaluated, c.structural_hits), (10, 9, 4));
    }

    #[test]
    fn a_store_without_its_log_reads_no_events_and_appends_none() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.events().unwrap(), []);
        let e = s.append_event(&event(EventKind::Unknown)).unwrap_err();
        assert!(matches!(e, StoreError::Events(_)), "{e:?}");
        // A run's log not written yet holds no events; one that cannot be
        // read is an error that names it.
        let s = SledStore::open_run(&dir.path().join("s2"), dir.path()).unwrap();
        let e = s.events().unwrap_err();
        assert!(matches!(e, StoreError::Events(_)), "{e:?}");
        let text = std::error::Error::source(&e).unwrap().to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        drop(s);
        let s = SledStore::open_run(&dir.path().join("s3"), &dir.path().join("none")).unwrap();
        assert_eq!(s.events().unwrap(), []);
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
    fn disk_errors_read_as_words_not_debug_output() {
        let full = sled::Error::Io(std::io::Error::from_raw_os_error(28));
        // sled reports a failure it saw earlier as a clone of it, whose
        // text is the original's debug output.
        // The words are the cause kept under the store's error.
        let text = |e: StoreError| {
            let cause = std::error::Error::source(&e).map(|c| c.to_string());
            format!("{e}: {}", cause.unwrap_or_default())
        };
        for e in [full.clone(), full] {
            let e = text(io(e));
            assert!(e.contains("No space left on device"), "{e}");
            assert!(!e.contains("Os {") && !e.contains("kind:"), "{e}");
        }
        let custom = std::io::Error::new(std::io::ErrorKind::StorageFull, "x");
        let e = text(io(sled::Error::Io(custom).clone()));
        assert!(!e.contains("Custom {"), "{e}");
        let corrupt = io(sled::Error::Corruption { at: None, bt: () });
        assert!(matches!(corrupt, StoreError::Corrupt(_)), "{corrupt:?}");
        let e = text(corrupt);
        assert!(e.contains("damaged"), "{e}");
        assert!(!e.contains("backtrace"), "{e}");
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
        assert!(matches!(e, StoreError::Held { .. }), "{e:?}");
        assert!(e.to_string().contains("another archgram process"), "{e}");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let e = SledStore::open(&file).err().expect("a file is not a store");
        assert!(matches!(e, StoreError::Open { .. }), "{e:?}");
        assert!(e.to_string().contains("cannot open the run store"), "{e}");
        assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
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
