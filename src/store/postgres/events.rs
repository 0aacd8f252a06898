//! The event table: the same objects as the lines of `events.jsonl`,
//! numbered per run in commit order, each insert announced on the
//! `archgram_events` channel so that followers wait on LISTEN instead of
//! polling.

use super::{PgError, Run};
use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::{Client, GenericClient};
use std::time::{Duration, Instant};

/// The channel every committed event is announced on; the payload is the
/// run's id.
pub const EVENTS_CHANNEL: &str = "archgram_events";

/// Appends an event (an object with `t` and `event`, as an events.jsonl
/// line) and returns its sequence number. Inside a transaction the run's
/// row stays locked until it ends, so other writers of the run wait and
/// events commit in sequence order.
pub fn append_event<C: GenericClient>(
    client: &mut C,
    run: &Run,
    body: &serde_json::Value,
) -> Result<i64, PgError> {
    let t = body.get("t").and_then(|t| t.as_f64());
    let seq: i64 = client
        .query_one(
            "UPDATE archgram.runs SET last_event = last_event + 1 WHERE id = $1
             RETURNING last_event",
            &[&run.id],
        )?
        .get(0);
    client.execute(
        "INSERT INTO archgram.events (run, seq, t, body)
         VALUES ($1, $2, COALESCE($3, extract(epoch FROM clock_timestamp())::float8), $4)",
        &[&run.id, &seq, &t, body],
    )?;
    Ok(seq)
}

/// The run's events after sequence number `after` (0: all), in order.
pub fn events_after(
    client: &mut Client,
    run: &Run,
    after: i64,
) -> Result<Vec<(i64, serde_json::Value)>, PgError> {
    let rows = client.query(
        "SELECT seq, body FROM archgram.events WHERE run = $1 AND seq > $2 ORDER BY seq",
        &[&run.id, &after],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Subscribes this connection to event announcements (for
/// [`wait_for_event`]).
pub fn listen(client: &mut Client) -> Result<(), PgError> {
    client.batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))?;
    Ok(())
}

/// Waits up to `timeout` for an announcement of a new event of `run` on a
/// connection that [`listen`]s; true when one came. Announcements of other
/// runs are passed over.
pub fn wait_for_event(client: &mut Client, run: &Run, timeout: Duration) -> Result<bool, PgError> {
    let until = Instant::now() + timeout;
    let ours = run.id.to_string();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let mut notes = client.notifications();
        let mut it = notes.timeout_iter(left);
        match it.next()? {
            Some(n) if n.channel() == EVENTS_CHANNEL && n.payload() == ours => return Ok(true),
            Some(_) => continue,
            None => return Ok(false),
        }
    }
}
