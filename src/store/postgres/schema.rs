//! The tables, created and upgraded by archgram itself. They live in a
//! PostgreSQL schema of their own (`archgram`), beside whatever else the
//! database holds; `archgram.schema_version` holds one row, the version
//! they are at. Every table is keyed by run.

use super::PgError;
use ::postgres::Client;

/// The SQL that brings the schema from version `i` to `i + 1`. A change to
/// the tables is a new entry here, never an edit of an old one: databases
/// already at that version would never see the edit.
const MIGRATIONS: &[&str] = &[V1, V2];

/// The schema version this build creates and knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The transaction-level advisory lock that makes two processes migrating
/// one database at once take turns (an arbitrary key: "archgram" in ASCII).
const MIGRATION_LOCK: i64 = 0x6172_6368_6772_616d;

/// Creates the schema if the database has none, upgrades an older one, and
/// refuses one newer than this build knows. Safe to call on every start:
/// at the current version it changes nothing.
pub fn migrate(client: &mut Client) -> Result<(), PgError> {
    migrate_with(client, MIGRATIONS)
}

/// Refuses a schema newer than this build knows, changing nothing: for a
/// process that only reads runs (`status`, `watch`, `export`), which may
/// connect as a user that cannot create tables. A database without the
/// schema passes (it holds no runs).
pub fn check_schema(client: &mut Client) -> Result<(), PgError> {
    let found = client.query_opt("SELECT version FROM archgram.schema_version", &[]);
    let found: i32 = match found {
        Ok(row) => row.map_or(0, |r| r.get(0)),
        Err(e) if e.code() == Some(&::postgres::error::SqlState::UNDEFINED_TABLE) => 0,
        Err(e) => return Err(e.into()),
    };
    if found > SCHEMA_VERSION {
        return Err(PgError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// [`migrate`] with another list of migrations (the SQL from version `i`
/// to `i + 1` at index `i`): how tests take a database through an upgrade
/// that this build's single version cannot show.
#[doc(hidden)]
pub fn migrate_with(client: &mut Client, migrations: &[&str]) -> Result<(), PgError> {
    let known = migrations.len() as i32;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS archgram;
         CREATE TABLE IF NOT EXISTS archgram.schema_version (
             one boolean PRIMARY KEY DEFAULT true CHECK (one),
             version integer NOT NULL
         );",
    )?;
    let found: i32 = match tx.query_opt("SELECT version FROM archgram.schema_version", &[])? {
        Some(row) => row.get(0),
        None => 0,
    };
    if found > known {
        return Err(PgError::SchemaTooNew { found, known });
    }
    for sql in &migrations[found as usize..] {
        tx.batch_execute(sql)?;
    }
    if found < known {
        tx.execute(
            "INSERT INTO archgram.schema_version (version) VALUES ($1)
             ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
            &[&known],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Version 1.
///
/// Hashes are the 32 hex digits the records hold. Candidate ids, step
/// counts and seeds are `bigint`s (seeds bit-cast from u64, so a large one
/// shows negative in psql). JSON is `jsonb` here; version 2 makes it
/// `json`.
const V1: &str = r#"
CREATE TABLE archgram.runs (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    -- The space file's text and its grammar's, so a worker needs no files.
    space_path text NOT NULL,
    space_text text NOT NULL,
    grammar_path text NOT NULL,
    grammar_text text NOT NULL,
    settings jsonb NOT NULL,
    archgram_version text NOT NULL,
    hash_recipes jsonb NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    -- The last event's sequence number (see `events`).
    last_event bigint NOT NULL DEFAULT 0
);

CREATE TABLE archgram.candidates (
    run bigint NOT NULL REFERENCES archgram.runs (id) ON DELETE CASCADE,
    id bigint NOT NULL CHECK (id >= 0),
    record jsonb NOT NULL,
    structural text NOT NULL,
    functional text,
    steps bigint NOT NULL CHECK (steps >= 0),
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'claimed', 'done', 'failed')),
    lease_owner text,
    lease_expires timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    -- The last failed attempt's reason (the final one's once `failed`).
    failure text,
    PRIMARY KEY (run, id),
    CONSTRAINT candidates_lease_iff_claimed
        CHECK ((status = 'claimed') = (lease_owner IS NOT NULL AND lease_expires IS NOT NULL))
);
-- What `claim` scans: the waiting candidates of a run, oldest first.
CREATE INDEX candidates_waiting ON archgram.candidates (run, id)
    WHERE status IN ('pending', 'claimed');
CREATE INDEX candidates_structural ON archgram.candidates (run, structural);
CREATE INDEX candidates_functional ON archgram.candidates (run, functional)
    WHERE functional IS NOT NULL;

-- One row per trained candidate. The primary key makes a second outcome for
-- a candidate impossible; `outcomes_trained_once`, a second training of one
-- network for the same number of steps.
CREATE TABLE archgram.outcomes (
    run bigint NOT NULL,
    candidate bigint NOT NULL,
    structural text NOT NULL,
    steps bigint NOT NULL,
    outcome jsonb NOT NULL,
    worker text NOT NULL,
    recorded timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outcomes_one_per_candidate PRIMARY KEY (run, candidate),
    CONSTRAINT outcomes_trained_once UNIQUE (run, structural, steps),
    FOREIGN KEY (run, candidate)
        REFERENCES archgram.candidates (run, id) ON DELETE CASCADE
);

-- Further trainings of an evaluated network (confirm, re-evaluation,
-- fidelity): one per candidate, purpose, step count and seed.
CREATE TABLE archgram.trials (
    run bigint NOT NULL,
    candidate bigint NOT NULL,
    purpose text NOT NULL,
    steps bigint NOT NULL,
    seed bigint NOT NULL,
    outcome jsonb NOT NULL,
    PRIMARY KEY (run, candidate, purpose, steps, seed),
    FOREIGN KEY (run, candidate)
        REFERENCES archgram.candidates (run, id) ON DELETE CASCADE
);

-- Cache counters, one row per run, updated in place by each result.
CREATE TABLE archgram.counters (
    run bigint PRIMARY KEY REFERENCES archgram.runs (id) ON DELETE CASCADE,
    structural_hits bigint NOT NULL DEFAULT 0,
    functional_hits bigint NOT NULL DEFAULT 0,
    misses bigint NOT NULL DEFAULT 0,
    seconds_saved double precision NOT NULL DEFAULT 0,
    evaluated bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0
);

-- Named small values (strategy state, the next id).
CREATE TABLE archgram.run_values (
    run bigint NOT NULL REFERENCES archgram.runs (id) ON DELETE CASCADE,
    key text NOT NULL,
    value jsonb NOT NULL,
    PRIMARY KEY (run, key)
);

CREATE TABLE archgram.meta (
    run bigint PRIMARY KEY REFERENCES archgram.runs (id) ON DELETE CASCADE,
    value jsonb NOT NULL
);

-- The run's events, each the object an events.jsonl line holds. `seq` counts
-- per run from 1 and is taken from `runs.last_event` inside the writing
-- transaction, which holds the run row until it commits: events commit in
-- `seq` order, so a reader that has seen `seq` n has seen every event
-- before it (a sequence would hand out numbers that commit out of order).
CREATE TABLE archgram.events (
    run bigint NOT NULL REFERENCES archgram.runs (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    t double precision NOT NULL,
    body jsonb NOT NULL,
    PRIMARY KEY (run, seq)
);

-- Each committed event wakes the LISTENers of `archgram_events`; the
-- payload is the run's id.
CREATE FUNCTION archgram.notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('archgram_events', NEW.run::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER events_notify AFTER INSERT ON archgram.events
    FOR EACH ROW EXECUTE FUNCTION archgram.notify_event();
"#;

/// Version 2: what the run store (`PgStore`) needs beyond the queue.
///
/// JSON columns become `json`, which keeps the text archgram wrote: `jsonb`
/// stores numbers as `numeric`, which has no negative zero (-0.0 read back
/// as 0.0) and drops an exponent (1e16, an f64, read back as the integer
/// 10000000000000000), so a value read back was not always the one
/// written. The hash index says which evaluated candidate each hash was
/// last recorded for, as the sled store's index does (a network trained
/// again for more steps points its hashes at the later training).
const V2: &str = r#"
ALTER TABLE archgram.runs
    ALTER COLUMN settings TYPE json USING settings::json,
    ALTER COLUMN hash_recipes TYPE json USING hash_recipes::json;
ALTER TABLE archgram.candidates ALTER COLUMN record TYPE json USING record::json;
ALTER TABLE archgram.outcomes ALTER COLUMN outcome TYPE json USING outcome::json;
ALTER TABLE archgram.trials ALTER COLUMN outcome TYPE json USING outcome::json;
ALTER TABLE archgram.run_values ALTER COLUMN value TYPE json USING value::json;
ALTER TABLE archgram.meta ALTER COLUMN value TYPE json USING value::json;
ALTER TABLE archgram.events ALTER COLUMN body TYPE json USING body::json;

CREATE TABLE archgram.hash_index (
    run bigint NOT NULL,
    kind text NOT NULL CHECK (kind IN ('structural', 'functional')),
    hash text NOT NULL,
    candidate bigint NOT NULL,
    PRIMARY KEY (run, kind, hash),
    FOREIGN KEY (run, candidate)
        REFERENCES archgram.candidates (run, id) ON DELETE CASCADE
);
"#;
