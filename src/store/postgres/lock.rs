//! One coordinator per run: a session-level advisory lock, keyed by the
//! run's name, held by a connection of its own for as long as the
//! coordinator lives. The server drops it when that session ends, however
//! it ends (the process killed, the machine gone once TCP gives up), so a
//! dead coordinator never blocks the `resume` that takes over.

use super::PgError;
use ::postgres::Client;
use xxhash_rust::xxh3::xxh3_64;

/// The lock of one run, held while this value lives.
pub struct CoordinatorLock {
    client: Client,
    run: String,
    key: i64,
}

/// The advisory-lock key of a run: a hash of its name (advisory locks take
/// a 64-bit integer), salted so it is unlikely to meet another
/// application's locks in the same database.
fn key(run: &str) -> i64 {
    xxh3_64(format!("archgram coordinator\0{run}").as_bytes()) as i64
}

impl CoordinatorLock {
    /// Takes the lock of `run` on this connection, which the lock then
    /// keeps. Refused, with who holds it, when another session has it.
    pub fn acquire(mut client: Client, run: &str) -> Result<CoordinatorLock, PgError> {
        let key = key(run);
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
            .get(0);
        if !got {
            return Err(PgError::CoordinatorHeld {
                run: run.to_string(),
                holder: holder(&mut client, key)?,
            });
        }
        Ok(CoordinatorLock {
            client,
            run: run.to_string(),
            key,
        })
    }

    /// Checks that the session still holds the lock (the connection can
    /// be cut under a live coordinator, and the lock with it).
    pub fn check(&mut self) -> Result<(), PgError> {
        let held = self.client.query_one(
            "SELECT count(*) > 0 FROM pg_locks
             WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
               AND classid = (($1::bigint >> 32) & 4294967295)::oid
               AND objid = ($1 & 4294967295)::oid AND objsubid = 1",
            &[&self.key],
        );
        match held {
            Ok(row) if row.get::<_, bool>(0) => Ok(()),
            _ => Err(PgError::CoordinatorLost {
                run: self.run.clone(),
            }),
        }
    }
}

/// Who holds a run's lock, in words: the holder's application name (which
/// names archgram's process id), its address and since when.
fn holder(client: &mut Client, key: i64) -> Result<String, PgError> {
    let row = client.query_opt(
        "SELECT coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'a local socket'),
                to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ')
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.classid = (($1::bigint >> 32) & 4294967295)::oid
           AND l.objid = ($1 & 4294967295)::oid AND l.objsubid = 1
         LIMIT 1",
        &[&key],
    )?;
    Ok(match row {
        Some(r) => {
            let (app, addr, since): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let app = if app.is_empty() {
                "a session".to_string()
            } else {
                format!("`{app}`")
            };
            format!("{app} connected from {addr} since {since}")
        }
        // Released between the two queries.
        None => "a session that has just let go of it; try again".to_string(),
    })
}
