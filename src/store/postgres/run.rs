//! Runs: created by a coordinator with everything a worker needs to train
//! (the space and grammar texts, the settings), opened by name, and refused
//! to a worker of another archgram version.

use super::{to_i64, PgError, VERSION};
use crate::store::{Counters, EventKind};
use ::postgres::error::SqlState;
use ::postgres::{Client, GenericClient, Row};

/// What a coordinator records when it starts a run.
#[derive(Clone, Debug)]
pub struct NewRun<'a> {
    pub name: &'a str,
    /// The space file as the user named it, and its text.
    pub space_path: &'a str,
    pub space_text: &'a str,
    /// The grammar file as the space names it, and its text.
    pub grammar_path: &'a str,
    pub grammar_text: &'a str,
    /// The run's settings (seed, budget, strategy, training settings).
    pub settings: &'a serde_json::Value,
    /// The hash recipes its candidates are hashed with.
    pub hash_recipes: &'a serde_json::Value,
}

/// A run as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub(super) id: i64,
    pub name: String,
    pub space_path: String,
    pub space_text: String,
    pub grammar_path: String,
    pub grammar_text: String,
    pub settings: serde_json::Value,
    /// The archgram version of the coordinator that created it.
    pub archgram_version: String,
    pub hash_recipes: serde_json::Value,
    /// When it was created, in seconds since the Unix epoch.
    pub created: f64,
}

const COLUMNS: &str = "id, name, space_path, space_text, grammar_path, grammar_text, settings, \
                       archgram_version, hash_recipes, extract(epoch FROM created)::float8";

fn from_row(r: &Row) -> Run {
    Run {
        id: r.get(0),
        name: r.get(1),
        space_path: r.get(2),
        space_text: r.get(3),
        grammar_path: r.get(4),
        grammar_text: r.get(5),
        settings: r.get(6),
        archgram_version: r.get(7),
        hash_recipes: r.get(8),
        created: r.get(9),
    }
}

/// Creates a run, recorded as made by this archgram version, with its
/// counters at zero. A name already taken is refused.
pub fn create_run(client: &mut Client, new: &NewRun) -> Result<Run, PgError> {
    let mut tx = client.transaction()?;
    let row = tx.query_one(
        &format!(
            "INSERT INTO archgram.runs (name, space_path, space_text, grammar_path, grammar_text,
                 settings, archgram_version, hash_recipes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             RETURNING {COLUMNS}"
        ),
        &[
            &new.name,
            &new.space_path,
            &new.space_text,
            &new.grammar_path,
            &new.grammar_text,
            new.settings,
            &VERSION,
            new.hash_recipes,
        ],
    );
    let run = match row {
        Ok(row) => from_row(&row),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            return Err(PgError::RunExists {
                name: new.name.to_string(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    tx.execute(
        "INSERT INTO archgram.counters (run) VALUES ($1)",
        &[&run.id],
    )?;
    tx.commit()?;
    Ok(run)
}

/// The run with this name. A database without archgram's tables has no
/// runs.
pub fn open_run(client: &mut Client, name: &str) -> Result<Run, PgError> {
    let row = client.query_opt(
        &format!("SELECT {COLUMNS} FROM archgram.runs WHERE name = $1"),
        &[&name],
    );
    let no_run = || PgError::NoRun {
        name: name.to_string(),
    };
    match row {
        Ok(row) => row.map(|r| from_row(&r)).ok_or_else(no_run),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Err(no_run()),
        Err(e) => Err(e.into()),
    }
}

/// The run with this name, for a worker: refused when it was created by
/// another archgram version, whose training would not give comparable
/// results.
pub fn open_run_for_worker(client: &mut Client, name: &str) -> Result<Run, PgError> {
    let run = open_run(client, name)?;
    if run.archgram_version != VERSION {
        return Err(PgError::OtherVersion {
            run: run.name,
            run_version: run.archgram_version,
            ours: VERSION.to_string(),
        });
    }
    Ok(run)
}

/// The run's cache counters.
pub fn counters(client: &mut Client, run: &Run) -> Result<Counters, PgError> {
    let r = client.query_one(
        "SELECT structural_hits, functional_hits, misses, seconds_saved, evaluated, failed
         FROM archgram.counters WHERE run = $1",
        &[&run.id],
    )?;
    let count = |i: usize, what: &str| super::to_u64(r.get(i), &run.name, what);
    Ok(Counters {
        structural_hits: count(0, "counter structural_hits")?,
        functional_hits: count(1, "counter functional_hits")?,
        misses: count(2, "counter misses")?,
        seconds_saved: r.get(3),
        evaluated: count(4, "counter evaluated")?,
        failed: count(5, "counter failed")?,
    })
}

/// Counts a result event into the run's counters, as [`Counters::count`]
/// counts it, taking back what `replaced` (a result counted before, which
/// this one replaces) was counted as.
pub(super) fn count<C: GenericClient>(
    client: &mut C,
    run: &Run,
    event: &EventKind,
    replaced: Option<&EventKind>,
) -> Result<(), PgError> {
    let (mut plus, mut minus) = (Counters::default(), Counters::default());
    plus.count(event);
    if let Some(r) = replaced {
        minus.count(r);
    }
    let delta = |p: u64, m: u64| -> Result<i64, PgError> {
        Ok(to_i64(p, &run.name, "counter")? - to_i64(m, &run.name, "counter")?)
    };
    client.execute(
        "UPDATE archgram.counters
         SET structural_hits = structural_hits + $2, functional_hits = functional_hits + $3,
             misses = misses + $4, seconds_saved = seconds_saved + $5,
             evaluated = evaluated + $6, failed = failed + $7
         WHERE run = $1",
        &[
            &run.id,
            &delta(plus.structural_hits, minus.structural_hits)?,
            &delta(plus.functional_hits, minus.functional_hits)?,
            &delta(plus.misses, minus.misses)?,
            &(plus.seconds_saved - minus.seconds_saved),
            &delta(plus.evaluated, minus.evaluated)?,
            &delta(plus.failed, minus.failed)?,
        ],
    )?;
    Ok(())
}

/// Whether the run's coordinator has ended it: its last `run_started` was
/// followed by a `run_finished` (the budget spent, the time up, or a stop;
/// a `resume` starts it again). A coordinator that was killed ended
/// nothing, so its workers go on with the queue.
pub fn ended(client: &mut Client, run: &Run) -> Result<bool, PgError> {
    let last: Option<String> = client
        .query_opt(
            "SELECT body->>'event' FROM archgram.events
             WHERE run = $1 AND body->>'event' IN ('run_started', 'run_finished')
             ORDER BY seq DESC LIMIT 1",
            &[&run.id],
        )?
        .map(|r| r.get(0));
    Ok(last.as_deref() == Some("run_finished"))
}

/// The newest run in the database (for a worker not told which).
pub fn newest_run(client: &mut Client) -> Result<Run, PgError> {
    let row = client.query_opt(
        &format!("SELECT {COLUMNS} FROM archgram.runs ORDER BY created DESC, id DESC LIMIT 1"),
        &[],
    );
    let none = || PgError::NoRun {
        name: "(any)".to_string(),
    };
    match row {
        Ok(row) => row.map(|r| from_row(&r)).ok_or_else(none),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Err(none()),
        Err(e) => Err(e.into()),
    }
}
