//! `events.jsonl`: one JSON object per line, appended and flushed as things
//! happen, so other processes (`status`, `watch`, scripts) can follow a run
//! without touching the locked store.
//!
//! Every line has `"t"` (seconds since the Unix epoch, float) and
//! `"event"`, one of:
//! - `run_started` `{name, space, seed, budget, strategy, resumed}`
//! - `sampled` `{id, origin, parent, arch, params, active_params, flops}`
//! - `duplicate` `{id, of, stage: "structural"|"functional", seconds_saved}`
//! - `evaluated` `{id, score, metric, params, active_params, flops, wall_secs, tokens_per_sec}`
//! - `failed` `{id, reason}`
//! - `new_best` `{id, score, arch}`
//! - `run_finished` `{evaluations, best_id, best_score, reason}`
//!
//! Readers must ignore unknown events and fields. A process killed while
//! writing may leave a torn last line; readers skip it.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// One event: its kind and fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub t: f64,
    pub event: String,
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    pub fn new(kind: &str, fields: serde_json::Value) -> Event {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Event {
            t,
            event: kind.to_string(),
            fields: match fields {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
        }
    }

    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.fields.get(key)
    }
}

/// Appends events to a file, one flushed line each.
pub struct EventLog {
    file: File,
}

impl EventLog {
    pub fn open(path: &Path) -> std::io::Result<EventLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog { file })
    }

    pub fn append(&mut self, e: &Event) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.flush()
    }
}

/// Every complete event in the file (a torn or foreign line is skipped).
pub fn read_events(path: &Path) -> std::io::Result<Vec<Event>> {
    let f = File::open(path)?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line?;
        if let Ok(e) = serde_json::from_str::<Event>(&line) {
            out.push(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_and_skip_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let mut log = EventLog::open(&p).unwrap();
        log.append(&Event::new(
            "sampled",
            serde_json::json!({"id": 1, "arch": "mlp"}),
        ))
        .unwrap();
        log.append(&Event::new(
            "evaluated",
            serde_json::json!({"id": 1, "score": 0.5}),
        ))
        .unwrap();
        drop(log);
        // A writer killed mid-line.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"t\": 3.0, \"event\": \"evalu").unwrap();
        let ev = read_events(&p).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].event, "sampled");
        assert_eq!(ev[1].get("score").unwrap(), 0.5);
        assert!(ev[0].t > 1.6e9);
    }
}
