//! The dashboard: golden screens from a recorded event log, and `watch`
//! driven through a real pseudo-terminal (tmux).

mod common;

use archgram::store::read_events;
use archgram::tui::{draw, Dashboard};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn dashboard(keys: &str) -> Dashboard {
    dashboard_of("tests/fixtures/events.jsonl", keys)
}

fn dashboard_of(events: &str, keys: &str) -> Dashboard {
    let mut d = Dashboard::new(false);
    for e in read_events(Path::new(events)).unwrap() {
        d.apply(&e);
    }
    for k in keys.chars() {
        d.key(k);
    }
    d
}

/// The screen as text, one line per row.
fn render(d: &Dashboard, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, d)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        for x in 0..w {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

/// A run longer than the dashboard keeps says, over its Pareto chart, that
/// only the best are drawn; a short one does not.
#[test]
fn a_long_run_says_its_pareto_chart_draws_only_the_best() {
    let screen_after = |n: u64| {
        let mut d = Dashboard::new(false);
        for id in 0..n {
            let ev = |v: serde_json::Value| serde_json::from_value(v).unwrap();
            d.apply(&ev(
                serde_json::json!({"t": 1.0, "event": "sampled", "id": id,
                "arch": "seq(linear(width=8))", "active_params": (id % 97) as f64}),
            ));
            d.apply(&ev(
                serde_json::json!({"t": 2.0, "event": "evaluated", "id": id,
                "score": (id % 89) as f64 / 89.0, "evaluations": id + 1}),
            ));
        }
        render(&d, 160, 48)
    };
    let title = format!("the best {} drawn", archgram::tui::KEPT);
    assert!(!screen_after(archgram::tui::KEPT as u64).contains(&title));
    assert!(screen_after(archgram::tui::KEPT as u64 + 1).contains(&title));
}

fn golden(name: &str, screen: &str) {
    let p = Path::new("tests/golden/tui").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, screen).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&p)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", p.display()));
    if want != screen {
        let diff: Vec<String> = want
            .lines()
            .zip(screen.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("row {i}:\n  want {a}\n  got  {b}"))
            .collect();
        panic!("{} differs:\n{}", p.display(), diff.join("\n"));
    }
}

#[test]
fn golden_screens_at_80x24_and_160x48() {
    let d = dashboard("");
    golden("main-80x24.txt", &render(&d, 80, 24));
    golden("main-160x48.txt", &render(&d, 160, 48));
    golden("help-80x24.txt", &render(&dashboard("?"), 80, 24));
    golden("details-160x48.txt", &render(&dashboard("jj\n"), 160, 48));
}

#[test]
fn a_confirmed_run_ranks_its_winner_first_and_says_which_scores_are_proxies() {
    // The fixture's best single-seed score is #1 (0.2696), but the confirm
    // stage's fresh seeds put #2 first.
    let d = dashboard_of("tests/fixtures/events-confirmed.jsonl", "");
    assert_eq!(d.winner, Some(2));
    let order: Vec<u64> = d.ranked().iter().map(|c| c.id).collect();
    assert_eq!(&order[..3], &[2, 5, 1]);
    let screen = render(&d, 120, 40);
    assert!(screen.contains("winner #2 0.2256±0.0085"), "{screen}");
    assert!(
        screen.contains("✓ confirmed mean±sd; others one seed"),
        "{screen}"
    );
    assert!(screen.contains("τ +0.60 all, +0.50 top 8"), "{screen}");
    golden("confirmed-120x40.txt", &screen);
}

#[test]
fn the_same_events_draw_the_same_screen() {
    assert_eq!(
        render(&dashboard("j"), 120, 40),
        render(&dashboard("j"), 120, 40)
    );
    assert_ne!(
        render(&dashboard(""), 120, 40),
        render(&dashboard("j"), 120, 40)
    );
}

#[test]
fn screen_shows_progress_best_and_routing() {
    let d = dashboard("");
    let s = render(&d, 160, 48);
    assert!(s.contains("10/10"), "{s}");
    assert!(s.contains("finished: budget spent"));
    let best = d.ranked()[0];
    assert!(s.contains(&format!("#{}", best.id)));
    // Tiny screens still draw every panel's frame without panicking.
    for (w, h) in [(80, 24), (60, 15), (20, 6)] {
        render(&d, w, h);
    }
}

fn tmux(args: &[&str]) -> Option<String> {
    let out = Command::new("tmux").args(args).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The screen once `done` holds for it, or after 20 s (the caller asserts).
fn wait_until(session: &str, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]).unwrap_or_default();
        if done(&screen) || start.elapsed() > Duration::from_secs(20) {
            return screen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for(session: &str, text: &str) -> String {
    wait_until(session, |s| s.contains(text))
}

fn wait_for_no(session: &str, text: &str) -> String {
    wait_until(session, |s| !s.contains(text))
}

#[test]
fn watch_in_a_real_terminal() {
    if !common::tmux_available() {
        common::skip("watch_in_a_real_terminal", "tmux is not installed");
        return;
    }
    // A run folder made of the fixture's events and the quickstart space.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("fixture");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::copy("tests/fixtures/events.jsonl", run.join("events.jsonl")).unwrap();
    let space = std::fs::read_to_string("spaces/quickstart.ron")
        .unwrap()
        .replace("../grammars/blocks.ron", "grammar.ron");
    std::fs::write(run.join("space.ron"), space).unwrap();
    std::fs::copy("grammars/blocks.ron", run.join("grammar.ron")).unwrap();
    let session = format!("archgram-test-{}", std::process::id());
    let cmd = format!("{} watch {}", env!("CARGO_BIN_EXE_archgram"), run.display());
    assert!(common::tmux_session(&session, &cmd));
    let screen = wait_for(&session, "top candidates");
    assert!(screen.contains("top candidates"), "{screen}");
    assert!(screen.contains("finished: budget spent"), "{screen}");
    // The first row is selected; j moves down, Enter opens its details.
    tmux(&["send-keys", "-t", &session, "j", "Enter"]);
    let d = dashboard("j");
    let second = d.ranked()[1].id;
    let screen = wait_for(&session, &format!("candidate #{second}"));
    assert!(screen.contains(&format!("candidate #{second}")), "{screen}");
    // ESC followed at once by a key reads as Alt+key, so each next key
    // waits until the screen shows the ESC was taken.
    tmux(&["send-keys", "-t", &session, "Escape"]);
    let screen = wait_for_no(&session, &format!("candidate #{second}"));
    assert!(
        !screen.contains(&format!("candidate #{second}")),
        "{screen}"
    );
    tmux(&["send-keys", "-t", &session, "?"]);
    let screen = wait_for(&session, "this help");
    assert!(screen.contains("pause or resume sampling"), "{screen}");
    tmux(&["send-keys", "-t", &session, "Escape"]);
    let screen = wait_for_no(&session, "this help");
    assert!(!screen.contains("this help"), "{screen}");
    tmux(&["send-keys", "-t", &session, "q"]);
    let start = Instant::now();
    while tmux(&["has-session", "-t", &session])
        .map(|_| {
            Command::new("tmux")
                .args(["has-session", "-t", &session])
                .status()
                .is_ok_and(|s| s.success())
        })
        .unwrap_or(false)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "watch did not quit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
