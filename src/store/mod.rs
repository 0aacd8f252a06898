//! The run store: candidates, outcomes, the hash → candidate cache,
//! counters and events of one run, behind the `Store` trait (sled and an
//! `events.jsonl` file, or PostgreSQL for a run many machines share).
//! `Location` is the one place a run's store is chosen and opened. Knows
//! the IR's hashes and derivations as data; nothing of training or search.

pub mod events;
pub mod postgres;
mod sled_store;

pub use events::{read_events, Event, EventKind, EventLog, EventSource, EventTail, Finalist, Mark};
pub use sled_store::{SledError, SledStore};

use crate::grammar::Derivation;
use crate::hash::Hashes;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// One candidate of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateRecord {
    pub id: u64,
    /// The annotated derivation (what mutation edits).
    pub derivation: Derivation,
    /// Its one-line text form.
    pub text: String,
    pub hashes: Hashes,
    pub parent: Option<u64>,
    /// `sample`, `mutation: …`, `baseline: NAME`.
    pub origin: String,
    /// Set when a cache hit made training unnecessary.
    pub duplicate_of: Option<u64>,
    pub params: f64,
    pub active_params: f64,
    pub flops: f64,
    /// Training steps of its evaluation (successive halving trains the
    /// same architecture again, with more steps, as a new candidate).
    #[serde(default)]
    pub steps: usize,
}

/// A candidate record for tests: structural hash `id`, no functional one.
#[cfg(test)]
pub(crate) fn test_record(id: u64) -> CandidateRecord {
    CandidateRecord {
        id,
        derivation: Derivation::leaf("x"),
        text: format!("arch {id}"),
        hashes: Hashes {
            structural: id as u128,
            functional: None,
        },
        parent: None,
        origin: "sample".into(),
        duplicate_of: None,
        params: 1.0,
        active_params: 1.0,
        flops: 1.0,
        steps: 10,
    }
}

/// What a scan over a whole run reads of each candidate (ranking,
/// restore, recovery, the Pareto front): its record without the
/// derivation and text form. Read into this shape, those two are skipped
/// rather than built, which is most of a record's parsing time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateBrief {
    pub id: u64,
    pub hashes: Hashes,
    pub parent: Option<u64>,
    pub origin: String,
    pub duplicate_of: Option<u64>,
    pub params: f64,
    pub active_params: f64,
    pub flops: f64,
    #[serde(default)]
    pub steps: usize,
}

impl From<&CandidateRecord> for CandidateBrief {
    fn from(c: &CandidateRecord) -> CandidateBrief {
        CandidateBrief {
            id: c.id,
            hashes: c.hashes,
            parent: c.parent,
            origin: c.origin.clone(),
            duplicate_of: c.duplicate_of,
            params: c.params,
            active_params: c.active_params,
            flops: c.flops,
            steps: c.steps,
        }
    }
}

/// One more training of an evaluated candidate's architecture, with
/// another training seed or step count: the confirm stage's retrainings,
/// seed re-evaluations during a search, and `fidelity`'s measurements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// The candidate whose architecture was trained.
    pub candidate: u64,
    /// `confirm`, `reeval` or `fidelity`.
    pub purpose: String,
    pub steps: usize,
    /// The training seed (initial weights and data order).
    pub seed: u64,
    /// The evaluation's outcome, as stored for candidates.
    pub outcome: serde_json::Value,
}

impl TrialRecord {
    /// The key a trial is stored under: one trial per candidate, purpose,
    /// step count and seed, so writing it again replaces it.
    pub fn key(&self) -> String {
        format!(
            "{:016x}/{}/{:010}/{:016x}",
            self.candidate, self.purpose, self.steps, self.seed
        )
    }
}

/// Cache counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub structural_hits: u64,
    pub functional_hits: u64,
    pub misses: u64,
    /// Training time the hits saved, estimated from the originals' times.
    pub seconds_saved: f64,
    pub evaluated: u64,
    pub failed: u64,
}

impl Counters {
    /// Counts a result event: a training (`evaluated`, `failed`) or a
    /// cache hit (`duplicate`); other events count nothing.
    pub fn count(&mut self, e: &EventKind) {
        match e {
            EventKind::Evaluated(_) => {
                self.misses += 1;
                self.evaluated += 1;
            }
            EventKind::Failed(_) => {
                self.misses += 1;
                self.failed += 1;
            }
            EventKind::Duplicate(d) => {
                if d.stage == "structural" {
                    self.structural_hits += 1;
                } else {
                    self.functional_hits += 1;
                }
                self.seconds_saved += d.seconds_saved;
            }
            _ => {}
        }
    }
}

/// A cause kept under a store error (a damaged record's decoding error, or
/// what a consistency check found).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the run store at {path}")]
    Open {
        path: String,
        #[source]
        source: sled_store::SledError,
    },
    /// The store's lock is held: another process (or another handle in
    /// this one) is using the run.
    #[error("cannot open the run store at {path}: another archgram process is using this run (watch it with `archgram status` or `archgram watch`)")]
    Held { path: String },
    #[error("run store")]
    Io(#[source] sled_store::SledError),
    /// A record could not be encoded for writing.
    #[error("run store: cannot encode a record")]
    Encode(#[source] serde_json::Error),
    /// An earlier write failed, so the store takes no more.
    #[error("run store: an earlier write to the store failed; nothing more is written")]
    WritesStopped,
    #[error("run store: the disk did not take the store's writes within {secs} s (is it full or failing?)")]
    FlushTimeout { secs: u64 },
    #[error("run store record is corrupt")]
    Corrupt(#[source] Cause),
    /// The run's database (PostgreSQL).
    #[error("run store")]
    Db(#[source] postgres::PgError),
    /// Reading or appending to the run's events failed.
    #[error("event log")]
    Events(#[source] std::io::Error),
}

/// One finished evaluation, written by one [`Store::record_evaluation`].
#[derive(Clone, Copy, Debug)]
pub struct Finished<'a> {
    pub record: &'a CandidateRecord,
    /// Its outcome (an `eval::Outcome` as JSON).
    pub outcome: &'a serde_json::Value,
    /// Its `evaluated` or `failed` event.
    pub event: &'a Event,
}

/// The fields of a stored outcome that ranking and accounting read:
/// whether it trained (`status`, and `reason` when not), its `score` and
/// the `metric` it is under, the scores under either metric (`accuracy`,
/// `test_loss`) and its `wall_secs`. Read into this shape, the rest of an
/// outcome is skipped rather than built. The fields are those the scores
/// in `search/settings.rs` read; a test there fails if they part.
#[derive(Debug, Default, Deserialize)]
pub struct OutcomeBrief {
    status: Option<serde_json::Value>,
    reason: Option<serde_json::Value>,
    metric: Option<serde_json::Value>,
    score: Option<serde_json::Value>,
    accuracy: Option<serde_json::Value>,
    test_loss: Option<serde_json::Value>,
    wall_secs: Option<serde_json::Value>,
}

impl OutcomeBrief {
    /// The brief of a stored outcome's JSON text.
    pub fn parse(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
        Ok(serde_json::from_slice::<OutcomeBrief>(bytes)?.value())
    }

    /// The brief of an outcome already read.
    pub fn of(outcome: &serde_json::Value) -> serde_json::Value {
        let field = |k: &str| outcome.get(k).cloned();
        OutcomeBrief {
            status: field("status"),
            reason: field("reason"),
            metric: field("metric"),
            score: field("score"),
            accuracy: field("accuracy"),
            test_loss: field("test_loss"),
            wall_secs: field("wall_secs"),
        }
        .value()
    }

    fn value(self) -> serde_json::Value {
        let fields = [
            ("status", self.status),
            ("reason", self.reason),
            ("metric", self.metric),
            ("score", self.score),
            ("accuracy", self.accuracy),
            ("test_loss", self.test_loss),
            ("wall_secs", self.wall_secs),
        ];
        serde_json::Value::Object(
            fields
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect(),
        )
    }
}

/// What a run keeps. Every write of a result is durable before the call
/// returns. A result (an evaluation, a duplicate) is written by one call
/// with its event, so that a store in a database writes both in one
/// transaction; the sled store writes the records in one transaction and
/// appends the event after it (a resumed run logs what a kill in between
/// left unlogged: `search::journal`).
pub trait Store: Send + Sync {
    fn put_meta(&self, meta: &serde_json::Value) -> Result<(), StoreError>;
    fn meta(&self) -> Result<Option<serde_json::Value>, StoreError>;
    fn candidate(&self, id: u64) -> Result<Option<CandidateRecord>, StoreError>;
    /// All candidates, by id.
    fn candidates(&self) -> Result<Vec<CandidateRecord>, StoreError>;
    /// Every candidate's [`CandidateBrief`], by id.
    fn candidate_briefs(&self) -> Result<Vec<CandidateBrief>, StoreError> {
        Ok(self
            .candidates()?
            .iter()
            .map(CandidateBrief::from)
            .collect())
    }
    /// Whether candidate `id` is recorded, without reading it.
    fn has_candidate(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.candidate(id)?.is_some())
    }
    /// Writes a finished evaluation at once: the candidate, its outcome,
    /// its hashes in the index, the counters it changes (see
    /// [`Counters::count`]) and its event.
    fn record_evaluation(&self, f: &Finished) -> Result<(), StoreError>;
    /// Writes a candidate found to repeat an evaluated one (its record's
    /// `duplicate_of` set) at once: the record, the counters and its
    /// `duplicate` event.
    fn record_duplicate(&self, record: &CandidateRecord, event: &Event) -> Result<(), StoreError>;
    fn outcome(&self, id: u64) -> Result<Option<serde_json::Value>, StoreError>;
    /// The fields of an outcome that ranking and accounting read (see
    /// [`OutcomeBrief`]), without its loss curve, routes and traces: a
    /// routed candidate's outcome runs to hundreds of kilobytes, and a run
    /// ranks all of them.
    fn outcome_brief(&self, id: u64) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self.outcome(id)?.map(|o| OutcomeBrief::of(&o)))
    }
    /// Every outcome's brief, by candidate id: what a scan of the whole run
    /// reads, in one pass over the store instead of a read per candidate.
    fn outcome_briefs(&self) -> Result<HashMap<u64, serde_json::Value>, StoreError> {
        outcome_briefs_one_by_one(self)
    }
    /// The ids of every recorded candidate and of every outcome, without
    /// reading them: for checking a whole log against the store.
    fn recorded_ids(&self) -> Result<RecordedIds, StoreError> {
        Ok(RecordedIds {
            candidates: self.candidate_briefs()?.iter().map(|c| c.id).collect(),
            outcomes: self.outcome_briefs()?.into_keys().collect(),
        })
    }
    /// Whether candidate `id` has an outcome, without reading it.
    fn has_outcome(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.outcome(id)?.is_some())
    }
    /// The evaluated candidate with this structural hash, if any.
    fn by_structural(&self, h: u128) -> Result<Option<u64>, StoreError>;
    fn by_functional(&self, h: u128) -> Result<Option<u64>, StoreError>;
    /// Records a trial, durably.
    fn put_trial(&self, t: &TrialRecord) -> Result<(), StoreError>;
    /// All trials, by candidate.
    fn trials(&self) -> Result<Vec<TrialRecord>, StoreError>;
    fn counters(&self) -> Result<Counters, StoreError>;
    /// A named small value (strategy state, next id).
    fn put_value(&self, key: &str, v: &serde_json::Value) -> Result<(), StoreError>;
    fn value(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError>;
    /// Appends an event that goes with no record (the run started, a
    /// candidate was sampled, a trial's result after its `put_trial`).
    fn append_event(&self, e: &Event) -> Result<(), StoreError>;
    /// Every event the run has logged, in order.
    fn events(&self) -> Result<Vec<Event>, StoreError>;
    /// The [`Mark`] of every event the run has logged, in order: what
    /// checking the log against the store reads, without the events' bulk.
    fn event_marks(&self) -> Result<Vec<Mark>, StoreError> {
        Ok(self.events()?.iter().map(Mark::of).collect())
    }
    fn flush(&self) -> Result<(), StoreError>;
}

/// What [`Store::recorded_ids`] lists.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordedIds {
    pub candidates: HashSet<u64>,
    pub outcomes: HashSet<u64>,
}

/// [`Store::outcome_briefs`] read one candidate at a time: a store's
/// fallback when it cannot scan its briefs.
fn outcome_briefs_one_by_one<S: Store + ?Sized>(
    store: &S,
) -> Result<HashMap<u64, serde_json::Value>, StoreError> {
    let mut out = HashMap::new();
    for c in store.candidate_briefs()? {
        if let Some(b) = store.outcome_brief(c.id)? {
            out.insert(c.id, b);
        }
    }
    Ok(out)
}

/// Where a run keeps its records and events. Every store of a run is
/// opened here, so another kind of store is one more variant and its arm
/// in each method below.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    /// A sled database in the folder `store` and the event log file
    /// `events` (`events.jsonl`) beside it.
    Sled { store: PathBuf, events: PathBuf },
    /// The run named `run` in the PostgreSQL database at `target`, which
    /// many processes share. (Boxed: a parsed target is large.)
    Postgres {
        target: Box<postgres::Target>,
        run: String,
    },
}

impl Location {
    /// The run `run` in the database at `url` (a `postgres://` URL or
    /// libpq `key=value` pairs).
    pub fn postgres(url: &str, run: &str) -> Result<Location, postgres::PgError> {
        Ok(Location::Postgres {
            target: Box::new(postgres::Target::parse(url)?),
            run: run.to_string(),
        })
    }

    /// Opens the run's store. A sled store another process holds is an
    /// error ([`StoreError::Held`]), not a wait; a database run is shared
    /// (one coordinator per run is the coordinator's lock to keep), and
    /// must exist.
    pub fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        match self {
            Location::Sled { store, events } => Ok(Box::new(SledStore::open_run(store, events)?)),
            Location::Postgres { target, run } => {
                Ok(Box::new(postgres::PgStore::open(target, run)?))
            }
        }
    }

    /// The run's events as they are written, without opening the store
    /// (which a running search holds).
    pub fn events(&self) -> Box<dyn EventSource> {
        match self {
            Location::Sled { events, .. } => Box::new(EventTail::new(events)),
            Location::Postgres { target, run } => {
                Box::new(postgres::EventFeed::new((**target).clone(), run))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::events::NewBest;

    #[test]
    fn a_location_opens_its_store_and_follows_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let at = Location::Sled {
            store: dir.path().join("store"),
            events: dir.path().join("events.jsonl"),
        };
        let mut source = at.events();
        assert!(source.next_batch().is_err(), "nothing written yet");
        let store = at.open().unwrap();
        store.put_meta(&serde_json::json!({"seed": 3})).unwrap();
        let best = Event::new(EventKind::NewBest(NewBest {
            arch: "x".into(),
            id: 4,
            score: 0.5,
        }));
        store.append_event(&best).unwrap();
        // Read while the store is held, as `status` and `watch` do.
        assert_eq!(source.next_batch().unwrap(), std::slice::from_ref(&best));
        assert_eq!(source.next_batch().unwrap(), []);
        assert!(matches!(at.open().err(), Some(StoreError::Held { .. })));
        drop(store);
        let store = at.open().unwrap();
        assert_eq!(store.meta().unwrap().unwrap()["seed"], 3);
        assert_eq!(store.events().unwrap(), std::slice::from_ref(&best));
        assert_eq!(at.events().rest().unwrap(), [best]);
    }

    #[test]
    fn a_database_location_is_read_from_a_url_and_shown_without_its_password() {
        let at = Location::postgres("postgres://ann:s3cret@db1:5433/runs", "r1").unwrap();
        let Location::Postgres { target, run } = &at else {
            panic!("{at:?}")
        };
        assert_eq!(
            (target.redacted().as_str(), run.as_str()),
            ("postgres://ann@db1:5433/runs", "r1")
        );
        assert!(!format!("{at:?}").contains("s3cret"), "{at:?}");
        let same = Location::postgres("postgres://ann:other@db1:5433/runs", "r1").unwrap();
        assert_eq!(at, same, "the password is not part of the place");
        assert_ne!(
            at,
            Location::postgres("postgres://ann@db1:5433/runs", "r2").unwrap()
        );
        let e = Location::postgres("host=db1 port=x", "r1").unwrap_err();
        assert!(matches!(e, postgres::PgError::BadTarget(_)), "{e:?}");
    }
}
