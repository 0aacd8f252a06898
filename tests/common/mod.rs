//! Checks that need a tool the machine may lack (python3 with torch, tmux).
#![allow(dead_code)] // each test crate uses part of it

pub mod pg;

use std::io::Write;
use std::process::Command;

/// Whether `python3` can import torch.
pub fn torch_available() -> bool {
    Command::new("python3")
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether tmux runs.
pub fn tmux_available() -> bool {
    Command::new("tmux").arg("-V").output().is_ok()
}

/// Starts `cmd` in a detached tmux session `session`, 100 × 30, in the
/// crate's folder: a real terminal for a dashboard. Whether it started.
pub fn tmux_session(session: &str, cmd: &str) -> bool {
    Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "100",
            "-y",
            "30",
            "-c",
        ])
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg(cmd)
        .status()
        .is_ok_and(|s| s.success())
}

/// Reports a check that cannot run here. The line goes straight to the
/// stderr handle, which the test harness does not capture (it captures
/// `eprintln!` only), so it shows in a plain `cargo test` beside the
/// summary. With `ARCHGRAM_REQUIRE_ALL_CHECKS` set (`.ci/run` sets it) the
/// test fails instead, so CI cannot pass without the check.
pub fn skip(check: &str, why: &str) {
    if std::env::var_os("ARCHGRAM_REQUIRE_ALL_CHECKS").is_some() {
        panic!("{check} cannot run: {why} (ARCHGRAM_REQUIRE_ALL_CHECKS is set)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {check}: {why} (`.ci/run` installs what it needs)"
    );
}

/// Reports a check this machine cannot host (no permission to mount a
/// small file system, say): shown like [`skip`], but never an error, since
/// no install step can change it.
pub fn skip_here(check: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {check}: {why}");
}
