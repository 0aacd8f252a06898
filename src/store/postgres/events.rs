//! The event table: the same objects as the lines of `events.jsonl`,
//! numbered per run in commit order, each insert announced on the
//! `archgram_events` channel so that followers wait on LISTEN instead of
//! polling.

use super::{open_run, PgError, Run, Target};
use crate::store::{Event, EventSource};
use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::{Client, GenericClient};
use std::time::{Duration, Instant};

/// The channel every committed event is announced on; the payload is the
/// run's id.
pub const EVENTS_CHANNEL: &str = "archgram_events";

/// Appends an event and returns its sequence number. The run's row stays
/// locked until the event commits (inside a transaction, until it ends),
/// so other writers of the run wait and events commit in sequence order.
pub fn append_event<C: GenericClient>(
    client: &mut C,
    run: &Run,
    event: &Event,
) -> Result<i64, PgError> {
    let body = serde_json::to_value(event).map_err(|e| PgError::Corrupt {
        run: run.name.clone(),
        what: format!("a `{}` event cannot be encoded: {e}", event.name()),
    })?;
    // A time that is not a number was written as null: the column takes
    // the server's clock instead.
    let t = Some(event.t).filter(|t| t.is_finite());
    // One statement, so that even outside a transaction the run's row
    // stays locked until the event is in.
    let seq: i64 = client
        .query_one(
            "WITH next AS (
                 UPDATE archgram.runs SET last_event = last_event + 1 WHERE id = $1
                 RETURNING last_event
             )
             INSERT INTO archgram.events (run, seq, t, body)
             SELECT $1, last_event,
                    COALESCE($2, extract(epoch FROM clock_timestamp())::float8), $3
             FROM next
             RETURNING seq",
            &[&run.id, &t, &body],
        )?
        .get(0);
    Ok(seq)
}

/// The run's events after sequence number `after` (0: all), in order. A
/// body that is not an event is passed over, as a line of `events.jsonl`
/// that is not one is.
pub fn events_after(
    client: &mut Client,
    run: &Run,
    after: i64,
) -> Result<Vec<(i64, Event)>, PgError> {
    let rows = client.query(
        "SELECT seq, body FROM archgram.events WHERE run = $1 AND seq > $2 ORDER BY seq",
        &[&run.id, &after],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let body: serde_json::Value = r.get(1);
            Some((r.get(0), serde_json::from_value(body).ok()?))
        })
        .collect())
}

/// Subscribes this connection to event announcements (for
/// [`wait_for_event`]).
pub fn listen(client: &mut Client) -> Result<(), PgError> {
    client.batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))?;
    Ok(())
}

/// Waits up to `timeout` for an announcement of a new event of `run` on a
/// connection that [`listen`]s; true when one came (or had come since the
/// last call). Announcements of other runs are passed over, and those
/// that have arrived with the one awaited are taken too, since one read
/// of the events answers them all.
pub fn wait_for_event(client: &mut Client, run: &Run, timeout: Duration) -> Result<bool, PgError> {
    let until = Instant::now() + timeout;
    let ours = run.id.to_string();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let mut notes = client.notifications();
        let mut it = notes.timeout_iter(left);
        match it.next()? {
            Some(n) if n.channel() == EVENTS_CHANNEL && n.payload() == ours => break,
            Some(_) => continue,
            None => return Ok(false),
        }
    }
    let mut notes = client.notifications();
    let mut it = notes.iter();
    while it.next()?.is_some() {}
    Ok(true)
}

/// How long [`EventFeed`] waits for an announcement. It must wait a
/// little: the client reads announcements off the connection only while
/// it waits, so a look that does not wait never sees one.
const FEED_WAIT: Duration = Duration::from_millis(2);

/// A run's events as they are committed, read by a process that does not
/// write them (`status`, `watch`). Its connection listens for
/// announcements, so a call that finds none returns (after a moment's
/// wait) without a query; a call after one reads the events after the
/// last it returned.
/// A lost connection is opened again at the next call, which then reads
/// what it missed.
pub struct EventFeed {
    target: Target,
    run: String,
    conn: Option<(Client, Run)>,
    /// The sequence number of the last event returned.
    last: i64,
}

impl EventFeed {
    pub fn new(target: Target, run: &str) -> EventFeed {
        EventFeed {
            target,
            run: run.to_string(),
            conn: None,
            last: 0,
        }
    }

    fn read(&mut self) -> Result<Vec<Event>, PgError> {
        let fresh = self.conn.is_none();
        let (client, run) = match &mut self.conn {
            Some(c) => c,
            unopened => {
                let mut client = self.target.connect()?;
                // Listen before reading, so an event committed in between
                // is announced rather than missed.
                listen(&mut client)?;
                let run = open_run(&mut client, &self.run)?;
                unopened.insert((client, run))
            }
        };
        if !fresh && !wait_for_event(client, run, FEED_WAIT)? {
            return Ok(Vec::new());
        }
        let events = events_after(client, run, self.last)?;
        if let Some((seq, _)) = events.last() {
            self.last = *seq;
        }
        Ok(events.into_iter().map(|(_, e)| e).collect())
    }
}

impl EventSource for EventFeed {
    /// A run not in the database (yet), or a database that cannot be
    /// reached, is an error, as a log not written yet is for a file.
    fn next_batch(&mut self) -> std::io::Result<Vec<Event>> {
        self.read().map_err(|e| {
            self.conn = None;
            std::io::Error::other(e)
        })
    }
}
