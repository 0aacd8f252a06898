//! `events.jsonl`: one JSON object per line, appended and flushed as things
//! happen, so other processes (`status`, `watch`, scripts) can follow a run
//! without touching the locked store.
//!
//! Every line has `"t"` (seconds since the Unix epoch, float) and
//! `"event"`, one of:
//! - `run_started` `{name, space, seed, budget, strategy, resumed, best_id, best_score}`
//! - `sampled` `{id, origin, parent, arch, params, active_params, flops}`
//! - `duplicate` `{id, of, stage: "structural"|"functional", seconds_saved}`
//! - `evaluated` `{id, score, metric, params, active_params, flops, wall_secs, tokens_per_sec}`
//! - `failed` `{id, reason}`
//! - `new_best` `{id, score, arch}`
//! - `run_finished` `{evaluations, best_id, best_score, reason}`
//!
//! Readers must ignore unknown events and fields. A process killed while
//! writing may leave a torn last line; readers skip it, and the next writer
//! ends it first. Events a resumed run writes for results the store kept but
//! the log lacked carry `"recovered": true`.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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
    path: PathBuf,
}

impl EventLog {
    /// Opens the log for appending. A torn last line (a writer killed
    /// mid-line) is ended first, so that the next event starts a line of
    /// its own instead of being glued onto the fragment and lost with it.
    pub fn open(path: &Path) -> std::io::Result<EventLog> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| in_file(e, path, "cannot open"))?;
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")
                    .map_err(|e| in_file(e, path, "cannot append to"))?;
            }
        }
        Ok(EventLog {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn append(&mut self, e: &Event) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|e| in_file(e, &self.path, "cannot append to"))
    }
}

/// An I/O error that names the file and what was being done to it.
fn in_file(e: std::io::Error, path: &Path, doing: &str) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

/// Reads a log's events as they are appended: each call returns the
/// complete lines written since the last one. A torn last line waits for
/// its end; a line that is not UTF-8 or not an event is skipped.
pub struct EventTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl EventTail {
    pub fn new(path: &Path) -> EventTail {
        EventTail {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The events completed since the last call.
    pub fn read_new(&mut self) -> std::io::Result<Vec<Event>> {
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let mut out = Vec::new();
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            out.extend(parse_line(&line));
        }
        Ok(out)
    }
}

fn parse_line(line: &[u8]) -> Option<Event> {
    serde_json::from_slice::<Event>(line).ok()
}

/// Every complete event in the file: a torn line, a line that is not UTF-8
/// or not an event is skipped. (A last line whose newline is missing but
/// whose event is whole counts.)
pub fn read_events(path: &Path) -> std::io::Result<Vec<Event>> {
    let mut tail = EventTail::new(path);
    let mut out = tail.read_new()?;
    out.extend(parse_line(&tail.partial));
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

    #[test]
    fn appending_after_a_torn_line_keeps_the_new_event() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        std::fs::write(
            &p,
            "{\"t\": 1.0, \"event\": \"sampled\", \"id\": 1}\n{\"t\": 2.0, \"ev",
        )
        .unwrap();
        let mut log = EventLog::open(&p).unwrap();
        log.append(&Event::new("evaluated", serde_json::json!({"id": 1})))
            .unwrap();
        drop(log);
        let ev = read_events(&p).unwrap();
        let kinds: Vec<&str> = ev.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(kinds, ["sampled", "evaluated"]);
        // A log that ends cleanly gains no blank line.
        EventLog::open(&p).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("}\n"));
        assert!(!std::fs::read_to_string(&p).unwrap().ends_with("\n\n"));
    }

    #[test]
    fn a_tail_returns_each_line_once_and_waits_for_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let mut tail = EventTail::new(&p);
        assert!(tail.read_new().is_err(), "no file yet");
        std::fs::write(
            &p,
            "{\"t\": 1.0, \"event\": \"sampled\"}\n{\"t\": 2.0, \"ev",
        )
        .unwrap();
        let kinds = |v: Vec<Event>| v.into_iter().map(|e| e.event).collect::<Vec<_>>();
        assert_eq!(kinds(tail.read_new().unwrap()), ["sampled"]);
        assert_eq!(kinds(tail.read_new().unwrap()), Vec::<String>::new());
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"ent\": \"evaluated\"}\n").unwrap();
        assert_eq!(kinds(tail.read_new().unwrap()), ["evaluated"]);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let mut bytes = b"{\"t\": 1.0, \"event\": \"sampled\"}\n".to_vec();
        bytes.extend_from_slice(b"{\"t\": 2.0, \"event\": \"sa\xffmpled\"}\n\xfe\xfe\n");
        bytes.extend_from_slice(b"{\"t\": 3.0, \"event\": \"evaluated\"}\n");
        std::fs::write(&p, bytes).unwrap();
        let ev = read_events(&p).unwrap();
        let kinds: Vec<&str> = ev.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(kinds, ["sampled", "evaluated"]);
    }
}
