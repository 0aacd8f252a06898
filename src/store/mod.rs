//! The run store: candidates, outcomes, the hash → candidate cache and
//! counters of one run, behind a `Store` trait (sled today; a shared
//! database later), plus the append-only event log beside it. Knows the
//! IR's hashes and derivations as data; nothing of training or search.

mod events;
pub mod postgres;
mod sled_store;

pub use events::{read_events, Event, EventLog, EventTail};
pub use sled_store::{SledError, SledStore};

use crate::grammar::Derivation;
use crate::hash::Hashes;
use serde::{Deserialize, Serialize};

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
}

/// What a run keeps. Every write of a finished evaluation is durable
/// before the call returns.
pub trait Store {
    fn put_meta(&self, meta: &serde_json::Value) -> Result<(), StoreError>;
    fn meta(&self) -> Result<Option<serde_json::Value>, StoreError>;
    fn put_candidate(&self, c: &CandidateRecord) -> Result<(), StoreError>;
    fn candidate(&self, id: u64) -> Result<Option<CandidateRecord>, StoreError>;
    /// All candidates, by id.
    fn candidates(&self) -> Result<Vec<CandidateRecord>, StoreError>;
    /// Records a finished evaluation and indexes its hashes, durably.
    fn put_outcome(
        &self,
        id: u64,
        hashes: &Hashes,
        outcome: &serde_json::Value,
    ) -> Result<(), StoreError>;
    fn outcome(&self, id: u64) -> Result<Option<serde_json::Value>, StoreError>;
    /// The evaluated candidate with this structural hash, if any.
    fn by_structural(&self, h: u128) -> Result<Option<u64>, StoreError>;
    fn by_functional(&self, h: u128) -> Result<Option<u64>, StoreError>;
    /// Records a trial, durably.
    fn put_trial(&self, t: &TrialRecord) -> Result<(), StoreError>;
    /// All trials, by candidate.
    fn trials(&self) -> Result<Vec<TrialRecord>, StoreError>;
    fn counters(&self) -> Result<Counters, StoreError>;
    fn put_counters(&self, c: &Counters) -> Result<(), StoreError>;
    /// A named small value (strategy state, next id).
    fn put_value(&self, key: &str, v: &serde_json::Value) -> Result<(), StoreError>;
    fn value(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError>;
    fn flush(&self) -> Result<(), StoreError>;
}
