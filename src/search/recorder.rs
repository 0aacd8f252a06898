//! Writes what the run loop decides: candidates, outcomes and counters to
//! the store with their events, each result in one call of the store,
//! and every event to the caller. Each result is durable in the store
//! before its event is logged (the order the journal relies on when a
//! killed run resumes).

use super::dedupe::Stage;
use super::journal;
use super::settings::{score_of, SearchError};
use crate::eval::Outcome;
use crate::store::{CandidateRecord, Event, Finished, Store};

pub(super) struct Recorder<'a> {
    store: &'a dyn Store,
    progress: &'a mut dyn FnMut(&Event),
}

impl<'a> Recorder<'a> {
    /// Logs to the store's events; `progress` sees every event logged.
    pub fn open(store: &'a dyn Store, progress: &'a mut dyn FnMut(&Event)) -> Recorder<'a> {
        Recorder { store, progress }
    }

    pub fn emit(&mut self, e: Event) -> Result<(), SearchError> {
        self.store.append_event(&e)?;
        (self.progress)(&e);
        Ok(())
    }

    /// Shows an event another process logged (a worker's result).
    pub fn show(&mut self, e: &Event) {
        (self.progress)(e);
    }

    /// Logs the results the store kept but a killed process never logged.
    pub fn recover(&mut self, budget: usize) -> Result<(), SearchError> {
        let logged = self.store.event_marks()?;
        for e in journal::missing_events(self.store, &logged, budget)? {
            self.emit(e)?;
        }
        Ok(())
    }

    /// A candidate proposed (before it is trained or merged).
    pub fn sampled(&mut self, c: &CandidateRecord) -> Result<(), SearchError> {
        self.emit(journal::sampled_event(c))
    }

    /// A candidate found to be `of` again: stored as its duplicate, with the
    /// training time it saved.
    pub fn duplicate(
        &mut self,
        mut record: CandidateRecord,
        of: u64,
        stage: Stage,
    ) -> Result<(), SearchError> {
        let outcome = self.store.outcome_brief(of)?.unwrap_or_default();
        let saved = outcome["wall_secs"].as_f64().unwrap_or(0.0);
        record.duplicate_of = Some(of);
        let e = journal::duplicate_event(record.id, of, stage.name(), saved);
        self.store.record_duplicate(&record, &e)?;
        (self.progress)(&e);
        Ok(())
    }

    /// A candidate trained: its record and outcome stored, its hashes
    /// indexed, its `evaluated` or `failed` event logged (the run's
    /// `evaluations`-th of `budget`). Returns its score.
    pub fn evaluated(
        &mut self,
        record: &CandidateRecord,
        outcome: &Outcome,
        evaluations: usize,
        budget: usize,
    ) -> Result<f64, SearchError> {
        let value = serde_json::to_value(outcome)
            .map_err(|e| SearchError::failed("cannot encode an outcome", Some(e.into())))?;
        let e = journal::outcome_event(record.id, outcome, evaluations, budget);
        self.store.record_evaluation(&Finished {
            record,
            outcome: &value,
            event: &e,
        })?;
        (self.progress)(&e);
        Ok(score_of(&value))
    }

    /// Makes everything written durable (the run is ending).
    pub fn close(&mut self) -> Result<(), SearchError> {
        Ok(self.store.flush()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Cost;
    use crate::eval::TrainConfig;
    use crate::store::{read_events, EventKind, SledStore};

    fn record(id: u64, structural: u128) -> CandidateRecord {
        let mut r = crate::store::test_record(id);
        r.hashes.structural = structural;
        r
    }

    fn outcome(score: f64, wall_secs: f64) -> Outcome {
        let mut o = Outcome::new(Cost::default(), &TrainConfig::default());
        o.score = score;
        o.wall_secs = wall_secs;
        // A finite loss: NaN is stored as null and would not read back.
        o.final_loss = 1.0;
        o
    }

    #[test]
    fn results_are_stored_before_they_are_logged_and_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        let store = SledStore::open_run(&dir.path().join("store"), &events).unwrap();
        // What the store held when each event reached the caller.
        let mut seen: Vec<(String, bool)> = Vec::new();
        let mut progress = |e: &Event| {
            let id = e.id().unwrap();
            seen.push((e.name().to_string(), store.candidate(id).unwrap().is_some()));
        };
        let mut rec = Recorder::open(&store, &mut progress);
        rec.sampled(&record(0, 1)).unwrap();
        let score = rec
            .evaluated(&record(0, 1), &outcome(0.75, 4.0), 1, 3)
            .unwrap();
        assert_eq!(score, 0.75);
        rec.sampled(&record(1, 2)).unwrap();
        let failed = outcome(0.5, 1.0).failed("diverged".into());
        assert_eq!(rec.evaluated(&record(1, 2), &failed, 2, 3).unwrap(), 0.0);
        rec.sampled(&record(2, 1)).unwrap();
        rec.duplicate(record(2, 1), 0, Stage::Structural).unwrap();
        rec.close().unwrap();
        let kinds = |v: &[(String, bool)]| v.iter().map(|e| e.0.clone()).collect::<Vec<_>>();
        assert_eq!(
            kinds(&seen),
            [
                "sampled",
                "evaluated",
                "sampled",
                "failed",
                "sampled",
                "duplicate"
            ]
        );
        assert!(
            seen.iter()
                .all(|(kind, stored)| *stored == (kind != "sampled")),
            "a result reaches the log only once the store holds it: {seen:?}"
        );
        let logged = read_events(&events).unwrap();
        assert_eq!(
            kinds(
                &logged
                    .iter()
                    .map(|e| (e.name().to_string(), true))
                    .collect::<Vec<_>>()
            ),
            kinds(&seen)
        );
        assert!(matches!(&logged[3].kind, EventKind::Failed(f) if f.evaluations == 2));
        assert!(matches!(&logged[5].kind, EventKind::Duplicate(d) if d.seconds_saved == 4.0));
        assert_eq!(store.by_structural(1).unwrap(), Some(0));
        assert_eq!(store.candidate(2).unwrap().unwrap().duplicate_of, Some(0));
        let c = store.counters().unwrap();
        assert_eq!(
            (
                c.misses,
                c.evaluated,
                c.failed,
                c.structural_hits,
                c.functional_hits
            ),
            (2, 1, 1, 1, 0)
        );
        assert_eq!(c.seconds_saved, 4.0);
    }

    #[test]
    fn recover_logs_what_the_store_kept_and_the_log_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        let store = SledStore::open_run(&dir.path().join("store"), &events).unwrap();
        // A process killed between the store write and the log line.
        let o = serde_json::to_value(outcome(0.5, 2.0)).unwrap();
        store.put_candidate(&record(0, 1)).unwrap();
        store.put_outcome(0, &record(0, 1).hashes, &o).unwrap();
        let mut got = Vec::new();
        let mut progress = |e: &Event| got.push(e.name());
        let mut rec = Recorder::open(&store, &mut progress);
        rec.recover(5).unwrap();
        rec.recover(5).unwrap();
        assert_eq!(got, ["sampled", "evaluated"], "recovered once");
    }
}
