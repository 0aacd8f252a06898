//! `Store` on PostgreSQL: one run's records in archgram's tables, each
//! result (its record, outcome, hash index entries, counters and event)
//! written in one transaction, so a run in the database is never half
//! written and needs no recovery of lost events.

use super::queue::{mark_done, record_result, write_candidate};
use super::run::count;
use super::{
    append_event, counters, events_after, hex128, migrate, open_run, to_i64, to_u64, Completion,
    PgError, Run, Target,
};
use crate::store::{
    CandidateBrief, CandidateRecord, Counters, Event, Finished, RecordedIds, Store, StoreError,
    TrialRecord,
};
use ::postgres::error::SqlState;
use ::postgres::Client;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// An outcome's brief (`store::OutcomeBrief`) built by the server from the
/// stored outcome `o`, so that its traces never cross the network.
const OUTCOME_BRIEF: &str = "json_strip_nulls(json_build_object(
    'status', o->'status', 'reason', o->'reason', 'metric', o->'metric',
    'score', o->'score', 'accuracy', o->'accuracy',
    'test_loss', o->'test_loss', 'wall_secs', o->'wall_secs'))";

/// A run in the database, through one connection. Every write commits
/// before the call returns, so there is nothing to flush.
pub struct PgStore {
    client: Mutex<Client>,
    run: Run,
    /// Who the outcomes it records were trained by (the outcomes' `worker`).
    worker: String,
}

impl PgStore {
    /// Opens the run `name` at `target`, bringing the schema up to date
    /// first (so the connection's user must be one that may). The run
    /// must exist: a coordinator creates it with what workers need.
    pub fn open(target: &Target, name: &str) -> Result<PgStore, PgError> {
        let mut client = target.connect()?;
        migrate(&mut client)?;
        let run = open_run(&mut client, name)?;
        Ok(PgStore::new(client, run, &super::process_name()))
    }

    /// A store over a connection and a run already opened; the outcomes
    /// it records are credited to `worker`.
    pub fn new(client: Client, run: Run, worker: &str) -> PgStore {
        PgStore {
            client: Mutex::new(client),
            run,
            worker: worker.to_string(),
        }
    }

    pub fn run(&self) -> &Run {
        &self.run
    }

    /// The connection. A thread that panicked while holding it left no
    /// transaction open (a dropped transaction rolls back), so it is taken
    /// as it is.
    fn client(&self) -> MutexGuard<'_, Client> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn id(&self, id: u64) -> Result<i64, PgError> {
        to_i64(id, &self.run.name, "candidate id")
    }

    /// A result already in the store, refused.
    fn recorded(&self, id: u64) -> StoreError {
        StoreError::Db(PgError::AlreadyRecorded {
            run: self.run.name.clone(),
            id,
        })
    }

    /// The JSON a query's first row holds in its first column, if a row came.
    fn json(
        &self,
        sql: &str,
        params: &[&(dyn ::postgres::types::ToSql + Sync)],
    ) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self.client().query_opt(sql, params)?.map(|r| r.get(0)))
    }

    /// The candidate the hash index holds for a hash of this kind.
    fn indexed(&self, kind: &str, h: u128) -> Result<Option<u64>, StoreError> {
        let row = self.client().query_opt(
            "SELECT candidate FROM archgram.hash_index WHERE run = $1 AND kind = $2 AND hash = $3",
            &[&self.run.id, &kind, &hex128(h)],
        )?;
        let id = row.map(|r| to_u64(r.get(0), &self.run.name, "candidate id"));
        Ok(id.transpose()?)
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt(Box::new(e)))
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> StoreError {
        StoreError::Db(e)
    }
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> StoreError {
        StoreError::Db(PgError::Db(e))
    }
}

impl Store for PgStore {
    fn put_meta(&self, meta: &serde_json::Value) -> Result<(), StoreError> {
        self.client().execute(
            "INSERT INTO archgram.meta (run, value) VALUES ($1, $2)
             ON CONFLICT (run) DO UPDATE SET value = EXCLUDED.value",
            &[&self.run.id, meta],
        )?;
        Ok(())
    }

    fn meta(&self) -> Result<Option<serde_json::Value>, StoreError> {
        self.json(
            "SELECT value FROM archgram.meta WHERE run = $1",
            &[&self.run.id],
        )
    }

    fn candidate(&self, id: u64) -> Result<Option<CandidateRecord>, StoreError> {
        self.json(
            "SELECT record FROM archgram.candidates WHERE run = $1 AND id = $2",
            &[&self.run.id, &self.id(id)?],
        )?
        .map(decode)
        .transpose()
    }

    /// In a run that workers share, the candidates still queued too.
    fn candidates(&self) -> Result<Vec<CandidateRecord>, StoreError> {
        let rows = self.client().query(
            "SELECT record FROM archgram.candidates WHERE run = $1 ORDER BY id",
            &[&self.run.id],
        )?;
        rows.into_iter().map(|r| decode(r.get(0))).collect()
    }

    /// The derivation and text are dropped by the server, so they neither
    /// cross the network nor get parsed.
    fn candidate_briefs(&self) -> Result<Vec<CandidateBrief>, StoreError> {
        let rows = self.client().query(
            "SELECT json_build_object(
                 'id', r->'id', 'hashes', r->'hashes', 'parent', r->'parent',
                 'origin', r->'origin', 'duplicate_of', r->'duplicate_of',
                 'params', r->'params', 'active_params', r->'active_params',
                 'flops', r->'flops', 'steps', COALESCE(r->'steps', '0'::json))
             FROM (SELECT id, record AS r FROM archgram.candidates WHERE run = $1) AS x
             ORDER BY id",
            &[&self.run.id],
        )?;
        rows.into_iter().map(|r| decode(r.get(0))).collect()
    }

    fn has_candidate(&self, id: u64) -> Result<bool, StoreError> {
        let row = self.client().query_one(
            "SELECT EXISTS (SELECT 1 FROM archgram.candidates WHERE run = $1 AND id = $2)",
            &[&self.run.id, &self.id(id)?],
        )?;
        Ok(row.get(0))
    }

    /// Refused, writing nothing, when the candidate already has a result
    /// ([`PgError::AlreadyRecorded`]) or another candidate's training of
    /// the same network for the same steps is recorded
    /// ([`PgError::TrainedTwice`]).
    fn record_evaluation(&self, f: &Finished) -> Result<(), StoreError> {
        let mut client = self.client();
        let mut tx = client.transaction()?;
        write_candidate(&mut tx, &self.run, f.record, true)?;
        match record_result(&mut tx, &self.run, &self.worker, f, false)? {
            Completion::Recorded => Ok(tx.commit()?),
            Completion::Duplicate => Err(self.recorded(f.record.id)),
        }
    }

    /// Refused, writing nothing, when the candidate already has a result.
    fn record_duplicate(&self, record: &CandidateRecord, event: &Event) -> Result<(), StoreError> {
        let key = self.id(record.id)?;
        let mut client = self.client();
        let mut tx = client.transaction()?;
        let status = tx.query_opt(
            "SELECT status FROM archgram.candidates WHERE run = $1 AND id = $2 FOR UPDATE",
            &[&self.run.id, &key],
        )?;
        if status.is_some_and(|r| r.get::<_, &str>(0) == "done") {
            return Err(self.recorded(record.id));
        }
        write_candidate(&mut tx, &self.run, record, true)?;
        mark_done(&mut tx, &self.run, key)?;
        count(&mut tx, &self.run, &event.kind, None)?;
        append_event(&mut tx, &self.run, event)?;
        Ok(tx.commit()?)
    }

    fn outcome(&self, id: u64) -> Result<Option<serde_json::Value>, StoreError> {
        self.json(
            "SELECT outcome FROM archgram.outcomes WHERE run = $1 AND candidate = $2",
            &[&self.run.id, &self.id(id)?],
        )
    }

    /// Built by the server, so a routed candidate's traces do not cross
    /// the network to be dropped here; `json_strip_nulls` leaves out what
    /// the outcome lacks or holds as null, as the sled store's brief does.
    fn outcome_brief(&self, id: u64) -> Result<Option<serde_json::Value>, StoreError> {
        self.json(
            &format!(
                "SELECT {OUTCOME_BRIEF} FROM (SELECT outcome AS o FROM archgram.outcomes
                   WHERE run = $1 AND candidate = $2) AS x"
            ),
            &[&self.run.id, &self.id(id)?],
        )
    }

    fn outcome_briefs(&self) -> Result<HashMap<u64, serde_json::Value>, StoreError> {
        let rows = self.client().query(
            &format!(
                "SELECT candidate, {OUTCOME_BRIEF} FROM (SELECT candidate, outcome AS o
                   FROM archgram.outcomes WHERE run = $1) AS x"
            ),
            &[&self.run.id],
        )?;
        rows.iter()
            .map(|r| Ok((to_u64(r.get(0), &self.run.name, "candidate id")?, r.get(1))))
            .collect()
    }

    fn recorded_ids(&self) -> Result<RecordedIds, StoreError> {
        let ids = |sql: &str| -> Result<HashSet<u64>, StoreError> {
            let rows = self.client().query(sql, &[&self.run.id])?;
            Ok(rows
                .iter()
                .map(|r| to_u64(r.get(0), &self.run.name, "candidate id"))
                .collect::<Result<_, _>>()?)
        };
        Ok(RecordedIds {
            candidates: ids("SELECT id FROM archgram.candidates WHERE run = $1")?,
            outcomes: ids("SELECT candidate FROM archgram.outcomes WHERE run = $1")?,
        })
    }

    fn has_outcome(&self, id: u64) -> Result<bool, StoreError> {
        let row = self.client().query_one(
            "SELECT EXISTS (SELECT 1 FROM archgram.outcomes WHERE run = $1 AND candidate = $2)",
            &[&self.run.id, &self.id(id)?],
        )?;
        Ok(row.get(0))
    }

    fn by_structural(&self, h: u128) -> Result<Option<u64>, StoreError> {
        self.indexed("structural", h)
    }

    fn by_functional(&self, h: u128) -> Result<Option<u64>, StoreError> {
        self.indexed("functional", h)
    }

    /// A trial of a candidate the store lacks is refused
    /// ([`PgError::NoCandidate`]).
    fn put_trial(&self, t: &TrialRecord) -> Result<(), StoreError> {
        let steps = to_i64(t.steps as u64, &self.run.name, "step count")?;
        // Seeds use all 64 bits: stored bit for bit as a bigint.
        let seed = t.seed as i64;
        let written = self.client().execute(
            "INSERT INTO archgram.trials (run, candidate, purpose, steps, seed, outcome)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (run, candidate, purpose, steps, seed)
             DO UPDATE SET outcome = EXCLUDED.outcome",
            &[
                &self.run.id,
                &self.id(t.candidate)?,
                &t.purpose,
                &steps,
                &seed,
                &t.outcome,
            ],
        );
        match written {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                Err(StoreError::Db(PgError::NoCandidate {
                    run: self.run.name.clone(),
                    id: t.candidate,
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// In the order of their keys ([`TrialRecord::key`]), as sled keeps them.
    fn trials(&self) -> Result<Vec<TrialRecord>, StoreError> {
        let rows = self.client().query(
            "SELECT candidate, purpose, steps, seed, outcome FROM archgram.trials WHERE run = $1",
            &[&self.run.id],
        )?;
        let name = &self.run.name;
        let mut out = rows
            .into_iter()
            .map(|r| {
                Ok(TrialRecord {
                    candidate: to_u64(r.get(0), name, "candidate id")?,
                    purpose: r.get(1),
                    steps: to_u64(r.get(2), name, "step count")? as usize,
                    seed: r.get::<_, i64>(3) as u64,
                    outcome: r.get(4),
                })
            })
            .collect::<Result<Vec<_>, PgError>>()?;
        out.sort_by_cached_key(TrialRecord::key);
        Ok(out)
    }

    fn counters(&self) -> Result<Counters, StoreError> {
        Ok(counters(&mut self.client(), &self.run)?)
    }

    fn put_value(&self, key: &str, v: &serde_json::Value) -> Result<(), StoreError> {
        self.client().execute(
            "INSERT INTO archgram.run_values (run, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (run, key) DO UPDATE SET value = EXCLUDED.value",
            &[&self.run.id, &key, v],
        )?;
        Ok(())
    }

    fn value(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.json(
            "SELECT value FROM archgram.run_values WHERE run = $1 AND key = $2",
            &[&self.run.id, &key],
        )
    }

    fn append_event(&self, e: &Event) -> Result<(), StoreError> {
        append_event(&mut *self.client(), &self.run, e)?;
        Ok(())
    }

    fn events(&self) -> Result<Vec<Event>, StoreError> {
        let events = events_after(&mut self.client(), &self.run, 0)?;
        Ok(events.into_iter().map(|(_, e)| e).collect())
    }

    /// Each write committed when it returned.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
