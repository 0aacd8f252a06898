//! The event log kept in step with the store. The run loop makes each
//! result durable in the store first and logs it second, so a process
//! killed in between leaves a result the log lacks: a resumed run writes the
//! missing events before it goes on. The other way round cannot happen in a
//! sound run, so a log that records finished work the store lacks means the
//! store was damaged, and nothing may continue from it.

use super::settings::SearchError;
use crate::eval::{Outcome, Status};
use crate::store::{
    read_events, CandidateRecord, Event, SledStore, Store, StoreError, TrialRecord,
};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;

/// The `evaluated` or `failed` event of a finished evaluation; `evaluations`
/// counts it.
pub fn outcome_event(id: u64, outcome: &Outcome, evaluations: usize, budget: usize) -> Event {
    match &outcome.status {
        Status::Ok => Event::new(
            "evaluated",
            json!({"id": id, "score": outcome.score, "metric": outcome.metric, "params": outcome.params,
                   "active_params": outcome.active_params, "flops": outcome.flops_per_token,
                   "wall_secs": outcome.wall_secs, "tokens_per_sec": outcome.tokens_per_sec,
                   "evaluations": evaluations, "budget": budget,
                   "routing": outcome.routing.as_ref().map(|r| r.summary())}),
        ),
        Status::Failed { reason } => Event::new(
            "failed",
            json!({"id": id, "reason": reason, "evaluations": evaluations, "budget": budget}),
        ),
    }
}

/// The `sampled` event of a candidate.
pub fn sampled_event(c: &CandidateRecord) -> Event {
    let mut e = Event::new(
        "sampled",
        json!({"id": c.id, "origin": c.origin, "parent": c.parent, "arch": c.text,
               "params": c.params, "active_params": c.active_params, "flops": c.flops}),
    );
    if c.origin.starts_with("promotion") {
        e.fields.insert("steps".into(), json!(c.steps));
    }
    e
}

/// The `duplicate` event of a candidate merged into `of` at `stage`.
pub fn duplicate_event(id: u64, of: u64, stage: &str, seconds_saved: f64) -> Event {
    Event::new(
        "duplicate",
        json!({"id": id, "of": of, "stage": stage, "seconds_saved": seconds_saved}),
    )
}

/// Ids the log records as finished: evaluated or failed, and merged; and
/// the trials (confirm, re-evaluation, fidelity) it records, by store key.
struct Logged {
    sampled: BTreeSet<u64>,
    finished: BTreeSet<u64>,
    merged: BTreeSet<u64>,
    trials: BTreeSet<String>,
}

fn logged(events: &[Event]) -> Logged {
    let mut l = Logged {
        sampled: BTreeSet::new(),
        finished: BTreeSet::new(),
        merged: BTreeSet::new(),
        trials: BTreeSet::new(),
    };
    for e in events {
        let Some(id) = e.get("id").and_then(|v| v.as_u64()) else {
            continue;
        };
        match e.event.as_str() {
            "sampled" => l.sampled.insert(id),
            "evaluated" | "failed" => l.finished.insert(id),
            "duplicate" => l.merged.insert(id),
            "trial" => {
                let num = |k: &str| e.get(k).and_then(|v| v.as_u64());
                match (
                    e.get("purpose").and_then(|v| v.as_str()),
                    num("steps"),
                    num("seed"),
                ) {
                    (Some(purpose), Some(steps), Some(seed)) => l.trials.insert(
                        TrialRecord {
                            candidate: id,
                            purpose: purpose.to_string(),
                            steps: steps as usize,
                            seed,
                            outcome: serde_json::Value::Null,
                        }
                        .key(),
                    ),
                    _ => false,
                }
            }
            _ => false,
        };
    }
    l
}

/// The events the log lacks for results the store holds, in id order:
/// `sampled` where it is missing, then `evaluated`/`failed` or `duplicate`.
/// Each carries `"recovered": true`.
pub fn missing_events(
    store: &SledStore,
    events: &[Event],
    budget: usize,
) -> Result<Vec<Event>, SearchError> {
    let l = logged(events);
    let mut out = Vec::new();
    let mut evaluations = 0;
    for c in store.candidates()? {
        let mut found = Vec::new();
        match c.duplicate_of {
            Some(of) if !l.merged.contains(&c.id) => {
                let saved = store
                    .outcome(of)?
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
                let Some(o) = store.outcome(c.id)? else {
                    continue;
                };
                evaluations += 1;
                if !l.finished.contains(&c.id) {
                    let outcome: Outcome = serde_json::from_value(o).map_err(|e| {
                        StoreError::Corrupt(format!("outcome of candidate {}: {e}", c.id).into())
                    })?;
                    found.push(outcome_event(c.id, &outcome, evaluations, budget));
                }
            }
        }
        if !found.is_empty() && !l.sampled.contains(&c.id) {
            out.push(sampled_event(&c));
        }
        for mut e in found {
            e.fields.insert("recovered".into(), json!(true));
            out.push(e);
        }
    }
    Ok(out)
}

/// Refuses a store that lacks finished work the event log records (a
/// truncated or overwritten store would otherwise make a run start over,
/// or an export miss its winners).
pub fn check_store(store: &SledStore, events_path: &Path) -> Result<(), SearchError> {
    let events = match read_events(events_path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(SearchError::io(
                format!("cannot read {}", events_path.display()),
                e,
            ))
        }
    };
    let l = logged(&events);
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
    let mut lost = Vec::new();
    for &id in &l.finished {
        if store.outcome(id)?.is_none() || store.candidate(id)?.is_none() {
            lost.push(id);
        }
    }
    for &id in &l.merged {
        if store.candidate(id)?.is_none() {
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
