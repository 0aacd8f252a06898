//! The dashboard's loop: terminal setup and teardown, events in (from a
//! search thread or by tailing a run's event log), keys in, at most ten
//! redraws a second, and only when something changed.

use super::draw::draw;
use super::state::{Action, Dashboard};
use crate::store::{Event, EventSource};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

/// Where events come from.
pub enum Feed {
    /// A search running in this process; disconnects when it ends.
    Channel(Receiver<Event>),
    /// A run's events, followed as they are written.
    Log(Box<dyn EventSource>),
}

/// The dashboard's `e` key: writes a candidate's files and says where, or
/// why it could not.
pub type ExportHook<'a> =
    dyn Fn(&Dashboard, u64) -> Result<String, Box<dyn std::error::Error>> + 'a;

/// What the dashboard may do to the world around it.
pub struct Hooks<'a> {
    /// Set by `p` (live search only).
    pub pause: Option<&'a AtomicBool>,
    /// Set by a confirmed `q` (live search only).
    pub stop: Option<&'a AtomicBool>,
    /// Writes the files of one candidate; returns a line for the footer.
    pub export: &'a ExportHook<'a>,
}

const FRAME: Duration = Duration::from_millis(100);

fn key_char(code: KeyCode) -> Option<char> {
    Some(match code {
        KeyCode::Char(c) => c,
        KeyCode::Down => '↓',
        KeyCode::Up => '↑',
        KeyCode::Enter => '\n',
        KeyCode::Tab | KeyCode::BackTab => '\t',
        KeyCode::Esc => '\u{1b}',
        _ => return None,
    })
}

/// Runs the dashboard until the user quits (and, in a search, until the
/// search has stopped). Restores the terminal on every way out.
pub fn run_dashboard(source: Feed, hooks: Hooks<'_>, live: bool) -> std::io::Result<()> {
    let mut terminal = ratatui::init();
    let result = event_loop(&mut terminal, source, hooks, live);
    ratatui::restore();
    result
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    source: Feed,
    hooks: Hooks<'_>,
    live: bool,
) -> std::io::Result<()> {
    let mut d = Dashboard::new(live);
    let (mut rx, mut tail) = match source {
        Feed::Channel(rx) => (Some(rx), None),
        Feed::Log(log) => (None, Some(log)),
    };
    let mut search_over = !live;
    let mut stopping = false;
    let mut dirty = true;
    let mut last_draw = Instant::now() - FRAME;
    let mut last_clock = Instant::now();
    loop {
        // Events in.
        if let Some(r) = &rx {
            loop {
                match r.try_recv() {
                    Ok(e) => {
                        d.apply(&e);
                        dirty = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        search_over = true;
                        rx = None;
                        if d.finished.is_none() {
                            d.finished = Some("stopped".into());
                        }
                        d.message = "search ended; q quits".into();
                        dirty = true;
                        break;
                    }
                }
            }
        }
        // A batch that brought events may have more behind it (a long log
        // comes in chunks): read on at once rather than a batch per frame.
        let mut more_may_follow = false;
        if let Some(t) = tail.as_mut() {
            // A log not written yet (or unreadable for a moment) is read
            // again on the next frame.
            for e in t.next_batch().unwrap_or_default() {
                d.apply(&e);
                dirty = true;
                more_may_follow = true;
            }
        }
        if stopping && search_over {
            return Ok(());
        }
        // The clock moves once a second while a run is going on.
        if d.finished.is_none() && last_clock.elapsed() >= Duration::from_secs(1) {
            last_clock = Instant::now();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |t| t.as_secs_f64());
            if d.started_t > 0.0 {
                d.now = d.now.max(now);
                dirty = true;
            }
        }
        if dirty && last_draw.elapsed() >= FRAME {
            terminal.draw(|f| draw(f, &d))?;
            last_draw = Instant::now();
            dirty = false;
        }
        let wait = if more_may_follow {
            Duration::ZERO
        } else {
            FRAME
        };
        if !event::poll(wait)? {
            continue;
        }
        match event::read()? {
            TermEvent::Resize(..) => dirty = true,
            TermEvent::Key(k) if k.kind == KeyEventKind::Press => {
                dirty = true;
                let ctrl_c =
                    k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c');
                let action = if ctrl_c {
                    if live && !search_over {
                        Action::StopAndQuit
                    } else {
                        Action::Quit
                    }
                } else {
                    match key_char(k.code) {
                        Some(c) => d.key(c),
                        None => Action::None,
                    }
                };
                match action {
                    Action::None => {}
                    Action::Quit => {
                        if search_over {
                            return Ok(());
                        }
                    }
                    Action::StopAndQuit => {
                        if let Some(s) = hooks.stop {
                            s.store(true, Ordering::SeqCst);
                        }
                        stopping = true;
                        d.message = "stopping after the evaluations in flight…".into();
                    }
                    Action::TogglePause => {
                        if let Some(p) = hooks.pause {
                            p.store(d.paused, Ordering::SeqCst);
                        }
                    }
                    Action::Export(id) => {
                        d.message = match (hooks.export)(&d, id) {
                            Ok(m) => m,
                            Err(e) => format!("export failed: {e}"),
                        };
                    }
                }
            }
            _ => {}
        }
    }
}
