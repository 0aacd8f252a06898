//! A run's events: one typed [`Event`] per thing that happened, kept in
//! `events.jsonl` (one JSON object per line, appended and flushed as things
//! happen) so that other processes (`status`, `watch`, scripts) can follow
//! a run without touching the locked store.
//!
//! Every line has `"t"` (seconds since the Unix epoch, float) and
//! `"event"`, one of the [`EventKind`] variants, with these fields (`a[b, c]`
//! is a list of objects with the fields `b, c`; the README's event table
//! says the same, and a test holds both to these types):
//! - `run_started` `name, space, seed, budget, strategy, workers, resumed, evaluations, metric, best_id, best_score`
//! - `sampled` `id, origin, parent, arch, params, active_params, flops, steps`
//! - `duplicate` `id, of, stage, seconds_saved`
//! - `evaluated` `id, score, metric, params, active_params, flops, wall_secs, tokens_per_sec, evaluations, budget, routing[layer, kind, experts, load, drop_rate, skip_rate, cv, max_vio]`
//! - `failed` `id, reason, evaluations, budget`
//! - `new_best` `id, score, arch`
//! - `trial` `id, purpose, steps, seed, index, score, metric, accuracy, status, reason, wall_secs`
//! - `confirm_started` `candidates, seeds, steps, trainings`
//! - `confirmed` `winner, score, sd, proxy, seeds, steps, metric, finalists[id, proxy, scores, mean, sd]`
//! - `fidelity_started` `candidates, trainings, long_steps, seeds`
//! - `fidelity` the fields of the `archgram fidelity --json` report
//! - `surrogate` `trained, tau`
//! - `run_finished` `evaluations, best_id, best_score, reason, winner, winner_score, winner_sd`
//!
//! Readers ignore unknown events ([`EventKind::Unknown`]) and unknown
//! fields; a field a line lacks reads as its default (0, "", null), as a
//! log written by an older archgram may lack fields added since. A float
//! the writer could not write as a number (NaN, ±∞ are written as `null`)
//! reads back as NaN. A process killed while writing may leave a torn last
//! line; readers skip it, and the next writer ends it first. Events a
//! resumed run writes for results the store kept but the log lacked carry
//! `"recovered": true`.
//!
//! Each payload declares its fields in alphabetical order, the order logs
//! have always had them in, so a line matches one an older archgram wrote
//! byte for byte.

use serde::{Deserialize, Deserializer, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One event: when, what, and whether a resumed run wrote it late.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub t: f64,
    #[serde(flatten)]
    pub kind: EventKind,
    /// Written by a resumed run for a result the store kept but the log
    /// lacked (the process was killed in between).
    #[serde(default, skip_serializing_if = "is_false")]
    pub recovered: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What happened. The variant's name in snake case is the line's `event`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    RunStarted(RunStarted),
    Sampled(Sampled),
    Duplicate(Duplicate),
    Evaluated(Evaluated),
    Failed(Failed),
    NewBest(NewBest),
    Trial(Trial),
    ConfirmStarted(ConfirmStarted),
    Confirmed(Confirmed),
    FidelityStarted(FidelityStarted),
    /// The `archgram fidelity --json` report. Its shape belongs to the
    /// search (`search::fidelity::FidelityReport` reads and writes it),
    /// which the store may not know, so it is kept here as it came.
    Fidelity(serde_json::Map<String, serde_json::Value>),
    Surrogate(Surrogate),
    RunFinished(RunFinished),
    /// An event this archgram does not know (a newer writer's): skipped.
    #[serde(other)]
    Unknown,
}

/// Reads a float that may have been written as `null` (NaN, ±∞ are) as
/// NaN, for `#[serde(deserialize_with = …)]`.
pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A search started or resumed; `evaluations` and the best so far are a
/// resumed run's (0 and null for a new one).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunStarted {
    pub best_id: Option<u64>,
    pub best_score: Option<f64>,
    pub budget: usize,
    pub evaluations: usize,
    pub metric: String,
    pub name: String,
    pub resumed: bool,
    pub seed: u64,
    pub space: String,
    pub strategy: String,
    pub workers: usize,
}

/// A candidate proposed (before it is trained or merged).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampled {
    #[serde(deserialize_with = "float")]
    pub active_params: f64,
    /// Its text form.
    pub arch: String,
    #[serde(deserialize_with = "float")]
    pub flops: f64,
    pub id: u64,
    /// `sample`, `mutation: …`, `baseline: NAME`, `promotion …`.
    pub origin: String,
    #[serde(deserialize_with = "float")]
    pub params: f64,
    pub parent: Option<u64>,
    /// Training steps, for halving promotions only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
}

/// A candidate found to be `of` again: not trained, costs no budget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Duplicate {
    pub id: u64,
    pub of: u64,
    /// Training time the original took, which this one saved.
    #[serde(deserialize_with = "float")]
    pub seconds_saved: f64,
    /// `structural` or `functional`: which hash matched.
    pub stage: String,
}

/// A candidate trained and scored; the run's `evaluations`-th of `budget`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Evaluated {
    #[serde(deserialize_with = "float")]
    pub active_params: f64,
    pub budget: usize,
    pub evaluations: usize,
    #[serde(deserialize_with = "float")]
    pub flops: f64,
    pub id: u64,
    pub metric: String,
    #[serde(deserialize_with = "float")]
    pub params: f64,
    /// One summary per routed layer, or null for a network without any.
    pub routing: Option<Vec<RoutedLayer>>,
    #[serde(deserialize_with = "float")]
    pub score: f64,
    #[serde(deserialize_with = "float")]
    pub tokens_per_sec: f64,
    #[serde(deserialize_with = "float")]
    pub wall_secs: f64,
}

/// How one routed layer spread its tokens, on the held-out split.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoutedLayer {
    /// Coefficient of variation of the experts' loads.
    #[serde(deserialize_with = "float")]
    pub cv: f64,
    /// Dropped assignments / assignments the router chose.
    #[serde(deserialize_with = "float")]
    pub drop_rate: f64,
    pub experts: usize,
    pub kind: String,
    pub layer: usize,
    /// Tokens processed per expert.
    pub load: Vec<u64>,
    /// (max load − mean load) / mean load.
    #[serde(deserialize_with = "float")]
    pub max_vio: f64,
    /// Tokens the layer let through unprocessed.
    #[serde(deserialize_with = "float")]
    pub skip_rate: f64,
}

/// A candidate whose training failed; it counts against the budget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Failed {
    pub budget: usize,
    pub evaluations: usize,
    pub id: u64,
    pub reason: String,
}

/// A single-seed search score better than every one before it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewBest {
    pub arch: String,
    pub id: u64,
    #[serde(deserialize_with = "float")]
    pub score: f64,
}

/// One retraining of candidate `id` with a fresh seed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Trial {
    /// The task's metric, whatever `score` measures (null in outcomes
    /// from before it was recorded apart).
    pub accuracy: Option<f64>,
    pub id: u64,
    /// The seed's place in its purpose's seed stream.
    pub index: usize,
    pub metric: String,
    /// `confirm`, `reeval` or `fidelity`.
    pub purpose: String,
    /// Why the training failed; null when it did not.
    pub reason: Option<String>,
    #[serde(deserialize_with = "float")]
    pub score: f64,
    pub seed: u64,
    /// `ok` or `failed`.
    pub status: String,
    pub steps: usize,
    #[serde(deserialize_with = "float")]
    pub wall_secs: f64,
}

/// The confirm stage began: `candidates` retrained with `seeds` fresh seeds
/// at `steps`, `trainings` of them still to run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfirmStarted {
    pub candidates: Vec<u64>,
    pub seeds: usize,
    pub steps: usize,
    pub trainings: usize,
}

/// The confirm stage's results: the winner's mean, sd and search score
/// (null without finalists) and every finalist, best mean first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Confirmed {
    pub finalists: Vec<Finalist>,
    pub metric: String,
    pub proxy: Option<f64>,
    pub score: Option<f64>,
    pub sd: Option<f64>,
    pub seeds: usize,
    pub steps: usize,
    pub winner: Option<u64>,
}

/// One finalist's confirm results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Finalist {
    pub id: u64,
    pub mean: f64,
    /// The search's (single-seed, selection-biased) score.
    pub proxy: f64,
    /// One score per fresh seed (0 for a training that failed).
    pub scores: Vec<f64>,
    pub sd: f64,
}

/// `archgram fidelity` began: `candidates` retrained with `seeds` seeds at
/// the run's steps and at `long_steps`, `trainings` still to run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FidelityStarted {
    pub candidates: usize,
    pub long_steps: usize,
    pub seeds: usize,
    pub trainings: usize,
}

/// The model strategy's surrogate, validated on what was trained so far:
/// its 5-fold cross-validated Kendall τ (null while too few candidates
/// are trained to fold).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Surrogate {
    pub tau: Option<f64>,
    pub trained: usize,
}

/// The run ended: why, and its best search score and confirmed winner
/// (null where there is none).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunFinished {
    pub best_id: Option<u64>,
    pub best_score: Option<f64>,
    pub evaluations: usize,
    /// `budget spent`, `time limit`, `interrupted`, `space exhausted`.
    pub reason: String,
    pub winner: Option<u64>,
    pub winner_score: Option<f64>,
    pub winner_sd: Option<f64>,
}

impl Event {
    /// The event, happening now.
    pub fn new(kind: EventKind) -> Event {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Event {
            t,
            kind,
            recovered: false,
        }
    }

    /// The line's `event`: `run_started`, `sampled`, … (`unknown` for one
    /// this archgram does not know).
    pub fn name(&self) -> &'static str {
        match self.kind {
            EventKind::RunStarted(_) => "run_started",
            EventKind::Sampled(_) => "sampled",
            EventKind::Duplicate(_) => "duplicate",
            EventKind::Evaluated(_) => "evaluated",
            EventKind::Failed(_) => "failed",
            EventKind::NewBest(_) => "new_best",
            EventKind::Trial(_) => "trial",
            EventKind::ConfirmStarted(_) => "confirm_started",
            EventKind::Confirmed(_) => "confirmed",
            EventKind::FidelityStarted(_) => "fidelity_started",
            EventKind::Fidelity(_) => "fidelity",
            EventKind::Surrogate(_) => "surrogate",
            EventKind::RunFinished(_) => "run_finished",
            EventKind::Unknown => "unknown",
        }
    }

    /// The candidate the event is about, for those about one.
    pub fn id(&self) -> Option<u64> {
        match &self.kind {
            EventKind::Sampled(e) => Some(e.id),
            EventKind::Duplicate(e) => Some(e.id),
            EventKind::Evaluated(e) => Some(e.id),
            EventKind::Failed(e) => Some(e.id),
            EventKind::NewBest(e) => Some(e.id),
            EventKind::Trial(e) => Some(e.id),
            _ => None,
        }
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

/// A run's events as they are written, for a reader outside the process
/// that writes them (`status`, `watch`): the store itself may be held by a
/// running search, so a source reads what the store publishes instead.
pub trait EventSource {
    /// Events completed since the last call, oldest first. A long backlog
    /// may come over several calls (a file's in reads of
    /// [`READ_CHUNK`] bytes, so a reader folding a long run holds a chunk
    /// of it at a time); an empty batch means caught up.
    fn next_batch(&mut self) -> std::io::Result<Vec<Event>>;

    /// The events from the last call on, to the end: for a reader that
    /// reads once, so an event the writer has not ended yet counts if it
    /// is whole.
    fn rest(&mut self) -> std::io::Result<Vec<Event>> {
        self.next_batch()
    }
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

    /// Events completed since the last call, from at most [`READ_CHUNK`]
    /// more bytes of the file.
    pub fn read_new(&mut self) -> std::io::Result<Vec<Event>> {
        self.read_new_as(parse_line)
    }

    /// Each line completed since the last call, read by `parse`.
    fn read_new_as<T: Send>(&mut self, parse: fn(&[u8]) -> Option<T>) -> std::io::Result<Vec<T>> {
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.take(READ_CHUNK).read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        // Lines are parsed in place and the consumed bytes dropped once:
        // draining line by line moved the rest of the buffer every time,
        // quadratic in the log (8 s for `status` on 10,000 candidates).
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(i) = self.partial[start..].iter().position(|&b| b == b'\n') {
            lines.push(&self.partial[start..start + i + 1]);
            start += i + 1;
        }
        // A long log (a resumed or watched run of many candidates) is
        // parsed on every core; a live tail's few lines stay on this one.
        let out = if lines.len() >= PARALLEL_LINES {
            use rayon::prelude::*;
            lines.par_iter().filter_map(|l| parse(l)).collect()
        } else {
            lines.iter().filter_map(|l| parse(l)).collect()
        };
        self.partial.drain(..start);
        Ok(out)
    }

    /// Every line from the last call on, to the end, read by `parse`; a
    /// last line whose newline is missing but which is whole counts.
    fn rest_as<T: Send>(&mut self, parse: fn(&[u8]) -> Option<T>) -> std::io::Result<Vec<T>> {
        let mut out = Vec::new();
        loop {
            let before = self.offset;
            out.extend(self.read_new_as(parse)?);
            if self.offset == before {
                break;
            }
        }
        out.extend(parse(&std::mem::take(&mut self.partial)));
        Ok(out)
    }
}

impl EventSource for EventTail {
    fn next_batch(&mut self) -> std::io::Result<Vec<Event>> {
        self.read_new()
    }

    /// A last line whose newline is missing but whose event is whole counts.
    fn rest(&mut self) -> std::io::Result<Vec<Event>> {
        self.rest_as(parse_line)
    }
}

/// The most bytes of a log one [`EventTail::read_new`] reads (about 16,000
/// events of a quickstart run, at about 520 bytes each).
pub const READ_CHUNK: u64 = 8 << 20;

/// Lines from which a read is parsed in parallel (a live tail's reads are
/// a few lines; reading a whole long log is thousands).
const PARALLEL_LINES: usize = 4096;

/// The fields every line has beside its payload's.
#[derive(Deserialize)]
struct LineHead<'a> {
    t: f64,
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(default)]
    recovered: bool,
}

/// One line of the log. The derived `Event` deserializer buffers a whole
/// line twice (a flattened, internally tagged enum), which made reading a
/// long run's log most of `resume`'s time; here the head is read first
/// and the payload's struct is then read straight from the line (serde
/// skips the head's fields in it). Kinds not listed take the derived path,
/// which a test holds equal to this one for every kind.
fn parse_line(line: &[u8]) -> Option<Event> {
    fn payload<'a, T: Deserialize<'a>>(line: &'a [u8], f: fn(T) -> EventKind) -> Option<EventKind> {
        serde_json::from_slice::<T>(line).ok().map(f)
    }
    let head = serde_json::from_slice::<LineHead>(line).ok()?;
    let kind = match head.event.as_ref() {
        "sampled" => payload(line, EventKind::Sampled)?,
        "evaluated" => payload(line, EventKind::Evaluated)?,
        "duplicate" => payload(line, EventKind::Duplicate)?,
        "failed" => payload(line, EventKind::Failed)?,
        "new_best" => payload(line, EventKind::NewBest)?,
        "trial" => payload(line, EventKind::Trial)?,
        _ => return serde_json::from_slice::<Event>(line).ok(),
    };
    Some(Event {
        t: head.t,
        kind,
        recovered: head.recovered,
    })
}

/// Every complete event in the file: a torn line, a line that is not UTF-8
/// or not an event is skipped. (A last line whose newline is missing but
/// whose event is whole counts.)
pub fn read_events(path: &Path) -> std::io::Result<Vec<Event>> {
    EventTail::new(path).rest()
}

/// What an event records about which candidate, without the rest of it
/// (routing statistics, text forms): all that checking a whole log against
/// the store reads.
#[derive(Clone, Debug, PartialEq)]
pub enum Mark {
    Sampled(u64),
    /// Evaluated or failed.
    Finished(u64),
    /// Found to be a duplicate.
    Merged(u64),
    Trial {
        id: u64,
        purpose: String,
        steps: usize,
        seed: u64,
    },
    /// An event about no one candidate's result.
    Other,
}

impl Mark {
    pub fn of(e: &Event) -> Mark {
        match &e.kind {
            EventKind::Sampled(s) => Mark::Sampled(s.id),
            EventKind::Evaluated(Evaluated { id, .. }) | EventKind::Failed(Failed { id, .. }) => {
                Mark::Finished(*id)
            }
            EventKind::Duplicate(d) => Mark::Merged(d.id),
            EventKind::Trial(t) => Mark::Trial {
                id: t.id,
                purpose: t.purpose.clone(),
                steps: t.steps,
                seed: t.seed,
            },
            _ => Mark::Other,
        }
    }
}

/// A line's [`Mark`], read in one pass with its other fields skipped
/// unread (and unchecked: [`parse_line`] refuses a line whose other fields
/// have the wrong type, which no archgram writes).
fn parse_mark(line: &[u8]) -> Option<Mark> {
    // Optional as the payloads' own fields may be null (a `sampled`
    // event's `steps`); absent or null reads as the payload reads it, 0.
    #[derive(Deserialize)]
    struct Line<'a> {
        #[allow(dead_code)] // required, as `parse_line` requires it
        t: serde::de::IgnoredAny,
        #[serde(borrow)]
        event: std::borrow::Cow<'a, str>,
        id: Option<u64>,
        purpose: Option<String>,
        steps: Option<usize>,
        seed: Option<u64>,
    }
    let l = serde_json::from_slice::<Line>(line).ok()?;
    let id = l.id.unwrap_or(0);
    Some(match l.event.as_ref() {
        "sampled" => Mark::Sampled(id),
        "evaluated" | "failed" => Mark::Finished(id),
        "duplicate" => Mark::Merged(id),
        "trial" => Mark::Trial {
            id,
            purpose: l.purpose.unwrap_or_default(),
            steps: l.steps.unwrap_or(0),
            seed: l.seed.unwrap_or(0),
        },
        _ => Mark::Other,
    })
}

/// The [`Mark`] of every complete event in the file, read as
/// [`read_events`] reads them.
pub fn read_marks(path: &Path) -> std::io::Result<Vec<Mark>> {
    EventTail::new(path).rest_as(parse_mark)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sampled(id: u64, arch: &str) -> Event {
        Event::new(EventKind::Sampled(Sampled {
            id,
            arch: arch.into(),
            ..Sampled::default()
        }))
    }

    fn evaluated(id: u64, score: f64) -> Event {
        Event::new(EventKind::Evaluated(Evaluated {
            id,
            score,
            ..Evaluated::default()
        }))
    }

    fn kinds(v: &[Event]) -> Vec<&'static str> {
        v.iter().map(Event::name).collect()
    }

    #[test]
    fn append_read_and_skip_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let mut log = EventLog::open(&p).unwrap();
        log.append(&sampled(1, "mlp")).unwrap();
        log.append(&evaluated(1, 0.5)).unwrap();
        drop(log);
        // A writer killed mid-line.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"t\": 3.0, \"event\": \"evalu").unwrap();
        let ev = read_events(&p).unwrap();
        assert_eq!(kinds(&ev), ["sampled", "evaluated"]);
        assert!(matches!(&ev[1].kind, EventKind::Evaluated(e) if e.score == 0.5));
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
        log.append(&evaluated(1, 0.0)).unwrap();
        drop(log);
        let ev = read_events(&p).unwrap();
        assert_eq!(kinds(&ev), ["sampled", "evaluated"]);
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
        assert!(tail.next_batch().is_err(), "no file yet");
        std::fs::write(
            &p,
            "{\"t\": 1.0, \"event\": \"sampled\"}\n{\"t\": 2.0, \"ev",
        )
        .unwrap();
        assert_eq!(kinds(&tail.next_batch().unwrap()), ["sampled"]);
        assert!(tail.next_batch().unwrap().is_empty());
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"ent\": \"evaluated\"}\n").unwrap();
        assert_eq!(kinds(&tail.next_batch().unwrap()), ["evaluated"]);
        // A whole event the writer has not ended yet: only a reader that
        // reads to the end takes it.
        f.write_all(b"{\"t\": 3.0, \"event\": \"failed\"}").unwrap();
        assert!(tail.next_batch().unwrap().is_empty());
        assert_eq!(kinds(&tail.rest().unwrap()), ["failed"]);
    }

    /// A log longer than one read comes in bounded batches that together
    /// hold every event once, in order (lines torn at a chunk's end
    /// included); `rest` reads it all.
    #[test]
    fn a_long_log_comes_in_bounded_batches_each_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let mut log = EventLog::open(&p).unwrap();
        let arch = "seq(linear(width=8), act(fn=relu))".repeat(8);
        let mut n = 0;
        while std::fs::metadata(&p).map_or(0, |m| m.len()) < 2 * READ_CHUNK + 1000 {
            for _ in 0..1000 {
                log.append(&sampled(n, &arch)).unwrap();
                n += 1;
            }
        }
        drop(log);
        let mut tail = EventTail::new(&p);
        let mut batches = Vec::new();
        loop {
            let b = tail.next_batch().unwrap();
            if b.is_empty() {
                break;
            }
            batches.push(b);
        }
        assert!(batches.len() >= 3, "{} batches", batches.len());
        let ids: Vec<u64> = batches
            .iter()
            .flatten()
            .map(|e| match &e.kind {
                EventKind::Sampled(s) => s.id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, (0..n).collect::<Vec<_>>());
        assert_eq!(EventTail::new(&p).rest().unwrap().len() as u64, n);
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
        assert_eq!(kinds(&ev), ["sampled", "evaluated"]);
    }

    /// One event of every kind, with every field set to something other
    /// than its default.
    fn one_of_each() -> Vec<Event> {
        let kinds = vec![
            EventKind::RunStarted(RunStarted {
                best_id: Some(3),
                best_score: Some(0.5),
                budget: 10,
                evaluations: 4,
                metric: "accuracy".into(),
                name: "r".into(),
                resumed: true,
                seed: 7,
                space: "quickstart".into(),
                strategy: "evolution".into(),
                workers: 2,
            }),
            EventKind::Sampled(Sampled {
                active_params: 10.0,
                arch: "seq(mlp)".into(),
                flops: 20.0,
                id: 4,
                origin: "promotion to rung 1".into(),
                params: 12.0,
                parent: Some(1),
                steps: Some(200),
            }),
            EventKind::Duplicate(Duplicate {
                id: 5,
                of: 4,
                seconds_saved: 1.25,
                stage: "functional".into(),
            }),
            EventKind::Evaluated(Evaluated {
                active_params: 10.0,
                budget: 10,
                evaluations: 5,
                flops: 20.0,
                id: 4,
                metric: "accuracy".into(),
                params: 12.0,
                routing: Some(vec![RoutedLayer {
                    cv: 0.25,
                    drop_rate: 0.125,
                    experts: 4,
                    kind: "moe".into(),
                    layer: 1,
                    load: vec![3, 5, 0, 8],
                    max_vio: 0.5,
                    skip_rate: 0.0625,
                }]),
                score: 0.09875483039931301,
                tokens_per_sec: 1000.5,
                wall_secs: 2.5,
            }),
            EventKind::Failed(Failed {
                budget: 10,
                evaluations: 6,
                id: 6,
                reason: "diverged".into(),
            }),
            EventKind::NewBest(NewBest {
                arch: "seq(mlp)".into(),
                id: 4,
                score: 0.75,
            }),
            EventKind::Trial(Trial {
                accuracy: Some(0.5),
                id: 4,
                index: 1,
                metric: "likelihood".into(),
                purpose: "confirm".into(),
                reason: Some("diverged".into()),
                score: 0.25,
                seed: u64::MAX,
                status: "failed".into(),
                steps: 250,
                wall_secs: 3.5,
            }),
            EventKind::ConfirmStarted(ConfirmStarted {
                candidates: vec![4, 1],
                seeds: 3,
                steps: 250,
                trainings: 6,
            }),
            EventKind::Confirmed(Confirmed {
                finalists: vec![Finalist {
                    id: 4,
                    mean: 0.5,
                    proxy: 0.75,
                    scores: vec![0.25, 0.75],
                    sd: 0.25,
                }],
                metric: "accuracy".into(),
                proxy: Some(0.75),
                score: Some(0.5),
                sd: Some(0.25),
                seeds: 2,
                steps: 250,
                winner: Some(4),
            }),
            EventKind::FidelityStarted(FidelityStarted {
                candidates: 12,
                long_steps: 1000,
                seeds: 2,
                trainings: 48,
            }),
            EventKind::Fidelity(
                json!({"pick": 4, "plan": {"top": 8}, "regret": 0.0})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            EventKind::Surrogate(Surrogate {
                tau: Some(0.5),
                trained: 10,
            }),
            EventKind::RunFinished(RunFinished {
                best_id: Some(4),
                best_score: Some(0.75),
                evaluations: 10,
                reason: "budget spent".into(),
                winner: Some(4),
                winner_score: Some(0.5),
                winner_sd: Some(0.25),
            }),
        ];
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event {
                t: 1.7e9 + i as f64 / 3.0,
                kind,
                recovered: i % 2 == 1,
            })
            .collect()
    }

    #[test]
    fn every_kind_reads_back_as_written_with_its_name_as_the_tag() {
        let all = one_of_each();
        assert_eq!(all.len(), 13, "one of each known kind");
        for e in &all {
            let line = serde_json::to_string(e).unwrap();
            let back: Event = serde_json::from_str(&line).unwrap();
            assert_eq!(&back, e, "{line}");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["event"], e.name(), "{line}");
            assert!(line.starts_with("{\"t\":"), "{line}");
            assert_eq!(v.get("recovered").is_some(), e.recovered, "{line}");
            // Each payload lists its fields alphabetically, as the untyped
            // writer did: the line is the one it would have written.
            serde_json::from_str::<SortedKeys>(&line).unwrap_or_else(|err| panic!("{err}"));
        }
    }

    /// Deserialises any JSON, failing where an object's keys (beside `t`,
    /// `event` and `recovered`) are not in alphabetical order.
    struct SortedKeys;

    impl<'de> Deserialize<'de> for SortedKeys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(SortedKeys)
        }
    }

    impl<'de> serde::de::Visitor<'de> for SortedKeys {
        type Value = SortedKeys;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<SortedKeys, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = m.next_key::<String>()? {
                m.next_value::<SortedKeys>()?;
                if !["t", "event", "recovered"].contains(&k.as_str()) {
                    keys.push(k);
                }
            }
            if !keys.is_sorted() {
                return Err(serde::de::Error::custom(format!(
                    "keys out of order: {keys:?}"
                )));
            }
            Ok(SortedKeys)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<SortedKeys, A::Error> {
            while s.next_element::<SortedKeys>()?.is_some() {}
            Ok(SortedKeys)
        }

        fn visit_bool<E>(self, _: bool) -> Result<SortedKeys, E> {
            Ok(SortedKeys)
        }
        fn visit_u64<E>(self, _: u64) -> Result<SortedKeys, E> {
            Ok(SortedKeys)
        }
        fn visit_i64<E>(self, _: i64) -> Result<SortedKeys, E> {
            Ok(SortedKeys)
        }
        fn visit_f64<E>(self, _: f64) -> Result<SortedKeys, E> {
            Ok(SortedKeys)
        }
        fn visit_str<E>(self, _: &str) -> Result<SortedKeys, E> {
            Ok(SortedKeys)
        }
        fn visit_unit<E>(self) -> Result<SortedKeys, E> {
            Ok(SortedKeys)
        }
    }

    /// The log reader's fast path reads every line as the derived
    /// deserializer does: known and unknown kinds, extra and missing
    /// fields, floats written as null, lines that are not events.
    #[test]
    fn the_log_reader_reads_each_line_as_the_derived_deserializer() {
        let lines = lines_of_every_kind();
        let text = |e: Option<Event>| e.map(|e| serde_json::to_string(&e).unwrap());
        for line in &lines {
            let derived = serde_json::from_str::<Event>(line).ok();
            assert_eq!(text(parse_line(line.as_bytes())), text(derived), "{line}");
        }
        assert!(parse_line(lines[0].as_bytes()).is_some());
    }

    #[test]
    fn a_lines_mark_is_the_mark_of_its_event() {
        let lines = lines_of_every_kind();
        for line in &lines {
            let event = parse_line(line.as_bytes());
            assert_eq!(
                parse_mark(line.as_bytes()),
                event.as_ref().map(Mark::of),
                "{line}"
            );
        }
        // Null where a payload's field is optional, as the mark reads it.
        let sampled = r#"{"t": 1.0, "event": "sampled", "id": 4, "steps": null}"#;
        assert_eq!(parse_mark(sampled.as_bytes()), Some(Mark::Sampled(4)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let marks: Vec<Mark> = read_events(&path).unwrap().iter().map(Mark::of).collect();
        assert_eq!(read_marks(&path).unwrap(), marks);
        assert!(marks.iter().any(|m| matches!(m, Mark::Trial { .. })));
    }

    /// A line of each event kind as written, and lines an older or newer
    /// writer, a torn write or another program could leave.
    fn lines_of_every_kind() -> Vec<String> {
        let mut lines: Vec<String> = one_of_each()
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        lines.extend(
            [
                r#"{"t": 1.0, "event": "worker_joined", "host": "b"}"#,
                r#"{"t": 2.0, "event": "new_best", "id": 3, "score": 0.5, "lease": {"a": 1}}"#,
                r#"{"event": "sampled", "t": 2.5, "recovered": true, "id": 9, "arch": "x"}"#,
                r#"{"t": 3.0, "event": "evaluated", "id": 1, "score": null}"#,
                r#"{"t": 3.5, "event": "duplicate", "id": 2}"#,
                r#"{"t": 4.0, "event": "failed", "id": "two"}"#,
                r#"{"t": 4.5, "event": "tr\u0069al", "id": 1, "purpose": "confirm"}"#,
                r#"{"event": "sampled", "id": 1}"#,
                r#"{"t": 1.0, "id": 1}"#,
                r#"[1, 2]"#,
            ]
            .map(String::from),
        );
        lines
    }

    #[test]
    fn unknown_events_and_fields_are_tolerated_and_missing_fields_default() {
        let unknown: Event =
            serde_json::from_str(r#"{"t": 1.0, "event": "worker_joined", "host": "b", "n": 3}"#)
                .unwrap();
        assert_eq!(unknown.kind, EventKind::Unknown);
        assert_eq!(unknown.name(), "unknown");
        let again: Event = serde_json::from_str(&serde_json::to_string(&unknown).unwrap()).unwrap();
        assert_eq!(again, unknown);
        let extra: Event = serde_json::from_str(
            r#"{"t": 2.0, "event": "new_best", "id": 3, "score": 0.5, "arch": "x", "lease": {"a": 1}}"#,
        )
        .unwrap();
        assert_eq!(
            extra.kind,
            EventKind::NewBest(NewBest {
                arch: "x".into(),
                id: 3,
                score: 0.5
            })
        );
        // An old writer's run_started: no best so far, no workers.
        let old: Event =
            serde_json::from_str(r#"{"t": 3.0, "event": "run_started", "name": "q", "budget": 5}"#)
                .unwrap();
        let EventKind::RunStarted(r) = old.kind else {
            panic!("{old:?}")
        };
        assert_eq!((r.name.as_str(), r.budget, r.best_id), ("q", 5, None));
        // A float written as null (it was NaN) reads as NaN, not as a
        // line to skip.
        let nan: Event = serde_json::from_str(
            r#"{"t": 4.0, "event": "evaluated", "id": 1, "score": null, "tokens_per_sec": null}"#,
        )
        .unwrap();
        let EventKind::Evaluated(e) = nan.kind else {
            panic!("{nan:?}")
        };
        assert!(e.score.is_nan() && e.tokens_per_sec.is_nan());
        assert_eq!(e.id, 1);
        // What is not an event stays unreadable.
        for bad in [
            r#"{"event": "sampled", "id": 1}"#,
            r#"{"t": 1.0, "id": 1}"#,
            r#"[1, 2]"#,
        ] {
            assert!(serde_json::from_str::<Event>(bad).is_err(), "{bad}");
        }
    }
}
