//! `search --db`, `resume --db` and `worker`: a run in a PostgreSQL
//! database, coordinated by one process and trained by workers anywhere.

use super::search::{plan, shown, stop_flag};
use super::CliError;
use crate::search::shared::{
    check_shareable, run_settings, run_space, work, Board, WorkerSettings,
};
use crate::search::{frozen_space, hash_recipes, run_meta, run_shared, Ending, RunSettings};
use crate::space::Space;
use crate::store::postgres::{self as pg, CoordinatorLock, PgError, PgStore, Run, Target};
use crate::store::Store;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A database error as the CLI reports it: what the user can fix exits
/// with 2 ([`PgError::is_users_to_fix`]).
fn db_error(e: PgError) -> CliError {
    if e.is_users_to_fix() {
        CliError::bad_because("database", e)
    } else {
        CliError::runtime_because("database", e)
    }
}

/// A lease length given in seconds.
fn lease_of(secs: f64) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| CliError::bad(format!("--lease {secs}: give a positive number of seconds")))
}

/// Who this process is to the database, per worker thread: host, process
/// and thread, so that leases held by workers on different machines never
/// share an owner.
fn worker_name(thread: usize) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}/{}/{thread}", pg::process_name())
}

/// `archgram search --db URL`: creates the run in the database with its
/// space, then coordinates it.
pub fn search(
    space_path: &Path,
    args: crate::cli::SearchFlags,
    target: &Target,
    lease: f64,
    no_tui: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (time, here) = (args.time, args.workers.unwrap_or(0));
    let lease = lease_of(lease)?;
    let (space, mut settings) = plan(space_path, args)?;
    settings.workers = here.max(1);
    check_shareable(&settings)?;
    let mut client = target.connect().map_err(db_error)?;
    pg::migrate(&mut client).map_err(db_error)?;
    let (space_text, grammar_text) = frozen_space(&space)?;
    let settings_json = serde_json::to_value(&settings)
        .map_err(|e| CliError::runtime_because("cannot encode the run's settings", e))?;
    let run = pg::create_run(
        &mut client,
        &pg::NewRun {
            name: &settings.name,
            space_path: "space.ron",
            space_text: &space_text,
            grammar_path: "grammar.ron",
            grammar_text: &grammar_text,
            settings: &settings_json,
            hash_recipes: &hash_recipes(),
        },
    )
    .map_err(db_error)?;
    // Workers read the space from the database: the coordinator reads it
    // the same way, so both search one space.
    let space = run_space(&run)?;
    let store = PgStore::new(client, run.clone(), &worker_name(0));
    store.put_meta(&run_meta(&space, &settings))?;
    coordinate(
        target, store, &space, &settings, time, here, lease, no_tui, out,
    )
}

/// `archgram resume NAME --db URL`: takes over a run whose coordinator
/// stopped or died.
pub fn resume(
    name: &str,
    target: &Target,
    time: Option<Duration>,
    no_tui: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let store = PgStore::open(target, name).map_err(db_error)?;
    // Another version's training would not be comparable with the run's.
    pg::open_run_for_worker(&mut target.connect().map_err(db_error)?, name).map_err(db_error)?;
    let space = run_space(store.run())?;
    let settings = run_settings(store.run())?;
    // The coordinator trains the confirm stage itself, where the run began.
    super::opened(
        settings.device,
        &format!("the run's device, {}", settings.device.name()),
    )?;
    let lease = Duration::from_secs(60);
    coordinate(
        target, store, &space, &settings, time, 0, lease, no_tui, out,
    )
}

/// Takes the run's coordinator lock, starts `here` workers in this
/// process, and runs the search loop on the board until it ends.
#[allow(clippy::too_many_arguments)]
fn coordinate(
    target: &Target,
    store: PgStore,
    space: &Space,
    settings: &RunSettings,
    time: Option<Duration>,
    here: usize,
    lease: Duration,
    no_tui: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let run = store.run().clone();
    let lock = CoordinatorLock::acquire(target.connect().map_err(db_error)?, &run.name)
        .map_err(db_error)?;
    let mut board =
        Board::new(target.connect().map_err(db_error)?, run.clone(), lock).map_err(db_error)?;
    let ctl = stop_flag();
    let quit = AtomicBool::new(false);
    let connect = || target.connect();
    let ending = std::thread::scope(|sc| {
        let workers: Vec<_> = (0..here)
            .map(|i| {
                let (run, connect, quit) = (&run, &connect, &quit);
                sc.spawn(move || {
                    let ws = WorkerSettings {
                        name: worker_name(i + 1),
                        device: settings.device,
                        lease,
                    };
                    work(connect, run, &ws, quit, &mut |_| {})
                })
            })
            .collect();
        // A database run has no folder: the dashboard's exports go where
        // `export` puts them by default.
        let export = Path::new("export").join(&run.name);
        let ending = shown(no_tui, &ctl, export, space, out, |progress| {
            run_shared(&mut board, &store, space, settings, time, &ctl, progress)
        });
        quit.store(true, Ordering::SeqCst);
        for w in workers {
            match w.join() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(CliError::from(e)),
                Err(_) => return Err(CliError::runtime("a worker thread panicked")),
            }
        }
        Ok(ending??)
    })?;
    let resume = format!("archgram resume {} --db '{}'", run.name, target.redacted());
    match ending {
        Ending::Interrupted => {
            writeln!(out, "stopped; continue with `{resume}`")?;
            Err(CliError::Interrupted)
        }
        _ => {
            writeln!(out, "run `{}` in {}", run.name, target.redacted())?;
            Ok(())
        }
    }
}

/// `archgram worker --db URL`: trains the run's candidates until its
/// coordinator has finished it.
pub fn worker(
    target: &Target,
    name: Option<&str>,
    workers: usize,
    device: &str,
    lease: f64,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let lease = lease_of(lease)?;
    let device = super::open_device(device)?;
    let mut client = target.connect().map_err(db_error)?;
    let name = match name {
        Some(n) => n.to_string(),
        None => pg::newest_run(&mut client).map_err(db_error)?.name,
    };
    let run: Run = pg::open_run_for_worker(&mut client, &name).map_err(db_error)?;
    drop(client);
    writeln!(
        out,
        "worker: run `{}` in {}, {workers} at once",
        run.name,
        target.redacted()
    )?;
    out.flush()?;
    let ctl = stop_flag();
    let connect = || target.connect();
    // Worker threads' lines reach `out` through this thread.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reports = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..workers)
            .map(|i| {
                let (run, connect, ctl, tx) = (&run, &connect, &ctl, tx.clone());
                sc.spawn(move || {
                    let ws = WorkerSettings {
                        name: worker_name(i),
                        device,
                        lease,
                    };
                    work(connect, run, &ws, &ctl.stop, &mut |line| {
                        let _ = tx.send(line.to_string());
                    })
                })
            })
            .collect();
        drop(tx);
        for line in rx {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| CliError::runtime("a worker thread panicked"))?
                    .map_err(CliError::from)
            })
            .collect::<Result<Vec<_>, CliError>>()
    })?;
    let recorded: usize = reports.iter().map(|r| r.recorded).sum();
    writeln!(
        out,
        "worker done: {recorded} result(s) recorded; run `{}` has ended",
        run.name
    )?;
    if ctl.stop.load(Ordering::SeqCst) {
        return Err(CliError::Interrupted);
    }
    Ok(())
}
