//! A run kept in PostgreSQL, so that one coordinator and many worker
//! processes on other machines share it: connecting (`connect`), the
//! schema archgram creates and migrates (`schema`), runs and the version
//! check (`run`), the work queue of leased candidates (`queue`), the event
//! table that `watch` follows through LISTEN/NOTIFY (`events`) and the
//! one-coordinator-per-run lock (`lock`), and the run's `Store` over all
//! of them (`store`).
//!
//! Plain synchronous functions over a `postgres::Client`; every time that
//! decides something (a lease's expiry) is the server's clock, so workers'
//! clocks need not agree. Knows records and hashes as data, nothing of
//! training or search.

mod connect;
mod events;
mod lock;
mod queue;
mod run;
mod schema;
mod store;

pub use connect::process_name;
pub use connect::Target;
pub use events::{append_event, events_after, listen, wait_for_event, EventFeed, EVENTS_CHANNEL};
pub use lock::CoordinatorLock;
pub use queue::{
    claim, complete, counts, enqueue, fail, heartbeat, lapsed, settled, waiting, Claimed,
    Completion, Failure, QueueCounts, MAX_ATTEMPTS,
};
pub use run::{
    counters, create_run, ended, newest_run, open_run, open_run_for_worker, NewRun, Run,
};
pub use schema::{check_schema, migrate, migrate_with, SCHEMA_VERSION};
pub use store::PgStore;

/// This build's version, recorded with each run: a worker of another
/// version refuses the run.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What can go wrong talking to the database. No variant's message ever
/// holds a password: connection targets are shown through
/// [`Target::redacted`].
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The connection string is neither libpq `key=value` pairs nor a
    /// `postgres://` URL.
    #[error("cannot read the database address (give libpq `key=value` pairs, such as `host=db1 dbname=archgram`, or a `postgres://user@host/dbname` URL)")]
    BadTarget(#[source] ::postgres::Error),
    #[error("cannot connect to PostgreSQL at {target}")]
    Connect {
        target: String,
        #[source]
        source: ::postgres::Error,
    },
    #[error("database")]
    Db(#[source] ::postgres::Error),
    #[error("the database's archgram schema is version {found}, newer than this archgram knows (version {known}); use the archgram that created it, or a newer one")]
    SchemaTooNew { found: i32, known: i32 },
    #[error("no run named `{name}` in the database")]
    NoRun { name: String },
    #[error(
        "a run named `{name}` already exists in the database (resume it, or choose another name)"
    )]
    RunExists { name: String },
    #[error("run `{run}` was started by archgram {run_version}, and this is archgram {ours}: results trained by different versions are not comparable, so this worker trains nothing (run archgram {run_version} here)")]
    OtherVersion {
        run: String,
        run_version: String,
        ours: String,
    },
    #[error("run `{run}` already has a coordinator ({holder}); only one may run at a time (stop it, or wait for its connection to end)")]
    CoordinatorHeld { run: String, holder: String },
    #[error("run `{run}`: this coordinator lost its database session, and with it the lock that makes it the only one")]
    CoordinatorLost { run: String },
    #[error("run `{run}` has no candidate {id}")]
    NoCandidate { run: String, id: u64 },
    /// The coordinator enqueued one architecture twice with one step count
    /// and both were trained: the second result is refused.
    #[error("run `{run}`: candidate {id} trains the same network (structural hash {structural}) for the same {steps} steps as candidate {of}, whose result is already recorded")]
    TrainedTwice {
        run: String,
        id: u64,
        of: u64,
        structural: String,
        steps: u64,
    },
    /// A second result for a candidate through the run's `Store` (a
    /// worker's second result is not an error: see `complete`).
    #[error("run `{run}`: candidate {id}'s result is already recorded")]
    AlreadyRecorded { run: String, id: u64 },
    /// A stored value does not read back (a row written by something else).
    #[error("database: run `{run}` holds a value that does not read back: {what}")]
    Corrupt { run: String, what: String },
}

impl PgError {
    /// Whether the user can fix it by what they typed or chose (the
    /// address, a server that does not answer there, the run's name, the
    /// archgram version): the CLI's bad input, exit 2. Everything else is
    /// a failure (exit 1), a run another coordinator holds included, as a
    /// run folder another process holds is.
    pub fn is_users_to_fix(&self) -> bool {
        matches!(
            self,
            PgError::BadTarget(_)
                | PgError::Connect { .. }
                | PgError::SchemaTooNew { .. }
                | PgError::NoRun { .. }
                | PgError::RunExists { .. }
                | PgError::OtherVersion { .. }
        )
    }
}

impl From<::postgres::Error> for PgError {
    fn from(e: ::postgres::Error) -> PgError {
        PgError::Db(e)
    }
}

/// A candidate id or step count as PostgreSQL's `bigint`.
fn to_i64(v: u64, run: &str, what: &str) -> Result<i64, PgError> {
    i64::try_from(v).map_err(|_| PgError::Corrupt {
        run: run.to_string(),
        what: format!("{what} {v} is beyond the database's 64-bit signed range"),
    })
}

/// A `bigint` read back as the unsigned id or count it was written from.
fn to_u64(v: i64, run: &str, what: &str) -> Result<u64, PgError> {
    u64::try_from(v).map_err(|_| PgError::Corrupt {
        run: run.to_string(),
        what: format!("{what} {v} is negative"),
    })
}

/// A 128-bit hash as the text it is stored as (the hex the records use).
fn hex128(h: u128) -> String {
    format!("{h:032x}")
}
