//! The event log kept in step with the store. The run loop makes each
//! result durable in the store first and logs it second, so a process
//! killed in between leaves a result the log lacks: a resumed run writes the
//! missing events before it goes on. The other way round cannot happen in a
//! sound run, so a log that records finished work the store lacks means the
//! store was damaged, and nothing may continue from it.

use super::settings::SearchError;
use crate::eval::{Outcome, Status};
use crate::store::events::{Duplicate, Evaluated, Failed, RoutedLayer, Sampled};
use crate::store::{CandidateRecord, Event, EventKind, Mark, Store, StoreError, TrialRecord};
use std::collections::BTreeSet;
use std::path::Path;

/// The `evaluated` or `failed` event of a finished evaluation; `evaluations`
/// counts it.
pub fn outcome_event(id: u64, outcome: &Outcome, evaluations: usize, budget: usize) -> Event {
    Event::new(match &outcome.status {
        Status::Ok => EventKind::Evaluated(Evaluated {
            active_params: outcome.active_params,
            budget,
            evaluations,
            flops: outcome.flops_per_token,
            id,
            metric: outcome.metric.clone(),
            params: outcome.params,
            routing: outcome.routing.as_ref().map(|r| {
                r.stats
                    .iter()
                    .map(|s| RoutedLayer {
                        cv: s.cv,
                        drop_rate: s.dropped_fraction,
                        experts: s.experts,
                        kind: s.kind.clone(),
                        layer: s.layer,
                        load: s.load.clone(),
                        max_vio: s.max_vio,
                        skip_rate: 1.0 - s.processed_fraction,
                    })
                    .collect()
            }),
            score: outcome.score,
            tokens_per_sec: outcome.tokens_per_sec,
            wall_secs: outcome.wall_secs,
        }),
        Status::Failed { reason, .. } => EventKind::Failed(Failed {
            budget,
            evaluations,
            id,
            reason: reason.clone(),
        }),
    })
}

/// The `sampled` event of a candidate.
pub fn sampled_event(c: &CandidateRecord) -> Event {
    Event::new(EventKind::Sampled(Sampled {
        active_params: c.active_params,
        arch: c.text.clone(),
        flops: c.flops,
        id: c.id,
        origin: c.origin.clone(),
        params: c.params,
        parent: c.parent,
        steps: c.origin.starts_with("promotion").then_some(c.steps),
    }))
}

/// The `duplicate` event of a candidate merged into `of` at `stage`.
pub fn duplicate_event(id: u64, of: u64, stage: &str, seconds_saved: f64) -> Event {
    Event::new(EventKind::Duplicate(Duplicate {
        id,
        of,
        seconds_saved,
        stage: stage.to_string(),
    }))
}

/// Ids the log records as finished: evaluated or failed, and merged; and
/// the trials (confirm, re-evaluation, fidelity) it records, by store key.
struct Logged {
    sampled: BTreeSet<u64>,
    finished: BTreeSet<u64>,
    merged: BTreeSet<u64>,
    trials: BTreeSet<String>,
}

fn logged(marks: &[Mark]) -> Logged {
    let mut l = Logged {
        sampled: BTreeSet::new(),
        finished: BTreeSet::new(),
        merged: BTreeSet::new(),
        trials: BTreeSet::new(),
    };
    for m in marks {
        match m {
            Mark::Sampled(id) => l.sampled.insert(*id),
            Mark::Finished(id) => l.finished.insert(*id),
            Mark::Merged(id) => l.merged.insert(*id),
            Mark::Trial {
                id,
                purpose,
                steps,
                seed,
            } => l.trials.insert(
                TrialRecord {
                    candidate: *id,
                    purpose: purpose.clone(),
                    steps: *steps,
                    seed: *seed,
                    outcome: serde_json::Value::Null,
                }
                .key(),
            ),
            Mark::Other => false,
        };
    }
    l
}

/// The events the log lacks for results the store holds, in id order:
/// `sampled` where it is missing, then `evaluated`/`failed` or `duplicate`.
/// Each carries `"recovered": true`.
pub fn missing_events(
    store: &dyn Store,
    logged_marks: &[Mark],
    budget: usize,
) -> Result<Vec<Event>, SearchError> {
    let l = logged(logged_marks);
    let mut out = Vec::new();
    let mut evaluations = 0;
    let outcomes = store.outcome_briefs()?;
    for c in store.candidate_briefs()? {
        let mut found = Vec::new();
        match c.duplicate_of {
            Some(of) if !l.merged.contains(&c.id) => {
                let saved = outcomes
                    .get(&of)
                    .and_then(|o| o["wall_secs"].as_f64())
                    .unwrap_or(0.0);
                let stage = if store.by_structural(c.hashes.structural)? == Some(of) {
                    "structural"
                } else {
                    "functional"
                };
                found.push(duplicate_event(c.id, of, stage, saved));
            }
            Some(_) => {}
            None => {
                if !outcomes.contains_key(&c.id) {
                    continue;
                }
                evaluations += 1;
                // Read in full only when its event is missing: a logged
                // one is counted, not read.
                if !l.finished.contains(&c.id) {
                    let Some(o) = store.outcome(c.id)? else {
                        continue;
                    };
                    let outcome: Outcome = serde_json::from_value(o).map_err(|e| {
                        StoreError::Corrupt(format!("outcome of candidate {}: {e}", c.id).into())
                    })?;
                    found.push(outcome_event(c.id, &outcome, evaluations, budget));
                }
            }
        }
        if !found.is_empty() && !l.sampled.contains(&c.id) {
            // The brief lacks the text form the event carries.
            if let Some(full) = store.candidate(c.id)? {
                out.push(sampled_event(&full));
            }
        }
        for mut e in found {
            e.recovered = true;
            out.push(e);
        }
    }
    Ok(out)
}

/// Refuses a store that lacks finished work the event log records (a
/// truncated or overwritten store would otherwise make a run start over,
/// or an export miss its winners).
pub fn check_store(store: &dyn Store, events_path: &Path) -> Result<(), SearchError> {
    let l = logged(&store.event_marks()?);
    let store_dir = events_path.with_file_name("store");
    let damaged = |what: String| {
        SearchError::Store(StoreError::Corrupt(
            format!(
            "{} {what}, which {} records; the store is damaged (truncated, replaced or overwritten). \
             Nothing continues from it, so that no finished candidate is trained again or lost: \
             restore the store folder from a backup, or start a new run",
            store_dir.display(),
            events_path.display()
        )
            .into(),
        ))
    };
    if store.meta()?.is_none() && !(l.finished.is_empty() && l.merged.is_empty()) {
        return Err(damaged(format!(
            "has no run metadata, yet {} candidates finished",
            l.finished.len() + l.merged.len()
        )));
    }
    let ids = store.recorded_ids()?;
    let mut lost = Vec::new();
    for &id in &l.finished {
        if !ids.outcomes.contains(&id) || !ids.candidates.contains(&id) {
            lost.push(id);
        }
    }
    for &id in &l.merged {
        if !ids.candidates.contains(&id) {
            lost.push(id);
        }
    }
    lost.sort_unstable();
    if let Some(first) = lost.first() {
        let more = match lost.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        return Err(damaged(format!("has lost candidate #{first}{more}")));
    }
    if !l.trials.is_empty() {
        let kept: BTreeSet<String> = store.trials()?.iter().map(|t| t.key()).collect();
        let gone = l.trials.difference(&kept).count();
        if gone > 0 {
            return Err(damaged(format!(
                "has lost {gone} of the {} retrainings (confirm, fidelity)",
                l.trials.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_record as record, SledStore};

    /// The log records 1 and 2 evaluated and 3 merged: a store holding all
    /// of it passes; one that lacks an outcome or a record is refused,
    /// naming the first lost candidate and counting the rest.
    #[test]
    fn a_store_lacking_finished_work_the_log_records_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        let store = SledStore::open_run(&dir.path().join("store"), &events).unwrap();
        store.put_meta(&serde_json::json!({"name": "t"})).unwrap();
        let outcome = serde_json::json!({"status": "ok", "score": 0.5});
        let eval = |id| {
            Event::new(EventKind::Evaluated(Evaluated {
                id,
                ..Default::default()
            }))
        };
        for id in [1, 2] {
            store.put_candidate(&record(id)).unwrap();
            store.append_event(&eval(id)).unwrap();
        }
        store.put_outcome(1, &record(1).hashes, &outcome).unwrap();
        store
            .append_event(&duplicate_event(3, 1, "structural", 0.0))
            .unwrap();
        // The message with its causes.
        let refused = |store: &SledStore| {
            let e = check_store(store, &events).err()?;
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text += &format!(": {c}");
                cause = c.source();
            }
            Some(text)
        };
        let err = refused(&store).expect("outcome 2 and record 3 are missing");
        assert!(err.contains("has lost candidate #2 and 1 more"), "{err}");
        store.put_outcome(2, &record(2).hashes, &outcome).unwrap();
        let err = refused(&store).expect("record 3 is missing");
        assert!(err.contains("has lost candidate #3,"), "{err}");
        let mut dup = record(3);
        dup.duplicate_of = Some(1);
        store.put_candidate(&dup).unwrap();
        assert_eq!(refused(&store), None);
    }
}
