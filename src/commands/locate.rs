//! Which run a command works on: a run folder, or with `--db` (or the
//! `ARCHGRAM_DB` variable) the run of that name in a PostgreSQL database.
//! The one place a command's RUN argument becomes the run's events, its
//! store, settings and space, so every command reads both kinds alike.

use super::CliError;
use crate::cli::DbFlag;
use crate::search::{check_run_name, RunDir, RunSettings};
use crate::space::Space;
use crate::store::postgres::{
    self, check_schema, events_after, open_run, CoordinatorLock, PgError, PgStore, Run, Target,
};
use crate::store::{Event, EventSource, Location, Store};
use ::postgres::Client;
use std::path::{Path, PathBuf};

/// The environment variable read for the database when `--db` is not
/// given: a URL with a password in it then stays out of the process list
/// and the shell's history.
pub const DB_ENV: &str = "ARCHGRAM_DB";

/// A run as a command's RUN argument names it.
pub enum RunRef {
    Folder(RunDir),
    /// The run `name` in the database at `target`; `from` is where the
    /// address came from (`--db` or `ARCHGRAM_DB`), for messages. (Boxed:
    /// a parsed target is large.)
    Db {
        target: Box<Target>,
        name: String,
        from: &'static str,
    },
}

/// A run opened for reading (and for writing trials): its store, the
/// settings it was started with and its space.
pub struct OpenRun {
    pub store: Box<dyn Store>,
    pub settings: RunSettings,
    pub space: Space,
}

/// The run RUN names: a folder, or with `--db` or `ARCHGRAM_DB` (the flag
/// first) a run's name in that database. A database address that cannot
/// be read is bad input (exit 2); nothing is connected to yet.
pub fn locate(run: &Path, db: &DbFlag) -> Result<RunRef, CliError> {
    let Some((target, from)) = database(db)? else {
        return Ok(RunRef::Folder(RunDir::open(run)?));
    };
    let name = run
        .to_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            CliError::bad(format!(
                "{}: with {from}, RUN is the name of a run in the database (not empty, UTF-8)",
                run.display()
            ))
        })?
        .to_string();
    Ok(RunRef::Db { target, name, from })
}

/// The database `--db` names, else `ARCHGRAM_DB` when set, with where
/// the address came from (`--db` or `ARCHGRAM_DB`, for messages); `None`
/// when neither is given. An address that cannot be read is bad input
/// (exit 2); nothing is connected to.
pub fn database(db: &DbFlag) -> Result<Option<(Box<Target>, &'static str)>, CliError> {
    let (url, from) = match &db.db {
        Some(url) => (url.clone(), "--db"),
        None => match std::env::var(DB_ENV) {
            Ok(url) if !url.trim().is_empty() => (url, DB_ENV),
            _ => return Ok(None),
        },
    };
    let target = Target::parse(&url).map_err(|e| CliError::bad_because(from, e))?;
    Ok(Some((Box::new(target), from)))
}

/// The database of a command that works only on one (`worker`, and
/// `search --db` without a URL): `db` when given, else `ARCHGRAM_DB`;
/// neither is bad input.
pub fn required_database(
    db: Option<String>,
    what: &str,
) -> Result<(Box<Target>, &'static str), CliError> {
    database(&DbFlag { db })?.ok_or_else(|| {
        CliError::bad(format!(
            "{what} needs a database: give its URL with --db or in {DB_ENV}"
        ))
    })
}

impl RunRef {
    /// The run for messages: its folder, or its name and database (without
    /// the password).
    pub fn label(&self) -> String {
        match self {
            RunRef::Folder(dir) => dir.path.display().to_string(),
            RunRef::Db { target, name, .. } => format!("run `{name}` in {}", target.redacted()),
        }
    }

    /// The run's name: its folder's, or its name in the database.
    pub fn name(&self) -> String {
        match self {
            RunRef::Folder(dir) => dir
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            RunRef::Db { name, .. } => name.clone(),
        }
    }

    /// Where files written for the run go unless told: RUN/export in its
    /// folder, or export/NAME in the current folder for a run in a
    /// database (which has no folder).
    pub fn export_dir(&self) -> Result<PathBuf, CliError> {
        match self {
            RunRef::Folder(dir) => Ok(dir.path.join("export")),
            RunRef::Db { name, .. } => {
                check_run_name(name).map_err(|_| {
                    CliError::bad(format!(
                        "run `{name}` is no folder name to export into; choose the folder with --out"
                    ))
                })?;
                Ok(Path::new("export").join(name))
            }
        }
    }

    /// Every event the run has logged, read once (a search may be
    /// writing more).
    pub fn events(&self) -> Result<Vec<Event>, CliError> {
        match self {
            RunRef::Folder(dir) => dir.location().events().rest().map_err(|e| {
                CliError::bad_because(
                    format!("{}: cannot read events", dir.events_path().display()),
                    e,
                )
            }),
            RunRef::Db { target, name, .. } => {
                let (mut client, run) = self.connect(target, name)?;
                let events = events_after(&mut client, &run, 0)
                    .map_err(|e| self.db_error("cannot read events", e))?;
                Ok(events.into_iter().map(|(_, e)| e).collect())
            }
        }
    }

    /// The run's events as they are written (by a search in another
    /// process, or on another machine). A run in a database is checked to
    /// be there first, so that a wrong name is an error, not an empty
    /// dashboard.
    pub fn follow(&self) -> Result<Box<dyn EventSource>, CliError> {
        if let RunRef::Db { target, name, .. } = self {
            self.connect(target, name)?;
        }
        Ok(self.location().events())
    }

    /// The run's store, settings and space. A run folder's store is
    /// refused while a search holds it; a database run is shared, and read
    /// while its coordinator runs.
    pub fn open(&self) -> Result<OpenRun, CliError> {
        match self {
            RunRef::Folder(dir) => {
                let store = dir.store()?;
                let settings = dir.settings(store.as_ref())?;
                let space = Space::load(&dir.space_path())?;
                Ok(OpenRun {
                    store,
                    settings,
                    space,
                })
            }
            RunRef::Db { target, name, .. } => {
                let (client, run) = self.connect(target, name)?;
                let space = self.db_space(&run)?;
                let store = PgStore::new(client, run.clone(), &postgres::process_name());
                let settings = self.settings(&store, &run)?;
                Ok(OpenRun {
                    store: Box::new(store),
                    settings,
                    space,
                })
            }
        }
    }

    /// The space the run searches.
    pub fn space(&self) -> Result<Space, CliError> {
        match self {
            RunRef::Folder(dir) => Ok(Space::load(&dir.space_path())?),
            RunRef::Db { target, name, .. } => self.db_space(&self.connect(target, name)?.1),
        }
    }

    /// For a command that adds to a finished run (`fidelity`): a run in a
    /// database is refused while a coordinator searches in it, as a run
    /// folder's store is while a search holds it. The lock is held while
    /// the value returned lives.
    pub fn exclusive(&self) -> Result<Option<CoordinatorLock>, CliError> {
        let RunRef::Db { target, name, .. } = self else {
            return Ok(None);
        };
        let client = target
            .connect()
            .map_err(|e| self.db_error("cannot connect", e))?;
        let lock = CoordinatorLock::acquire(client, name)
            .map_err(|e| self.db_error("the run is in use", e))?;
        Ok(Some(lock))
    }

    /// Where the run's store is.
    pub fn location(&self) -> Location {
        match self {
            RunRef::Folder(dir) => dir.location(),
            RunRef::Db { target, name, .. } => Location::Postgres {
                target: target.clone(),
                run: name.clone(),
            },
        }
    }

    /// A connection to the run's database and the run, after checking that
    /// the server answers, its schema is one this build reads (without
    /// changing it) and the run is there.
    fn connect(&self, target: &Target, name: &str) -> Result<(Client, Run), CliError> {
        let mut client = target
            .connect()
            .map_err(|e| self.db_error("cannot connect", e))?;
        check_schema(&mut client).map_err(|e| self.db_error("cannot read the run", e))?;
        let run = open_run(&mut client, name).map_err(|e| self.db_error("cannot read", e))?;
        Ok((client, run))
    }

    /// A database error as a command's: what the user can fix
    /// ([`PgError::is_users_to_fix`]) exits 2, the rest are failures (exit 1).
    fn db_error(&self, what: &str, e: PgError) -> CliError {
        let (from, shown) = match self {
            RunRef::Db { from, target, .. } => (*from, target.redacted()),
            RunRef::Folder(_) => ("--db", String::new()),
        };
        match e {
            // The message names the address already.
            PgError::BadTarget(_) | PgError::Connect { .. } => CliError::bad_because(from, e),
            e if e.is_users_to_fix() => CliError::bad_because(shown, e),
            _ => CliError::runtime_because(format!("{}: {what}", self.label()), e),
        }
    }

    /// The space a database run was started with, read from the texts the
    /// run keeps (its grammar's too), so no file is needed.
    fn db_space(&self, run: &Run) -> Result<Space, CliError> {
        crate::search::shared::run_space(run).map_err(|e| {
            CliError::runtime_because(format!("{}: its space does not load", self.label()), e)
        })
    }

    /// A database run's settings: those its metadata records, as a run
    /// folder's store holds them, else the run's own.
    fn settings(&self, store: &PgStore, run: &Run) -> Result<RunSettings, CliError> {
        let meta = store.meta()?.map(|m| m["settings"].clone());
        let recorded = meta
            .filter(|s| !s.is_null())
            .unwrap_or(run.settings.clone());
        serde_json::from_value(recorded).map_err(|e| {
            CliError::runtime_because(format!("{}: its settings do not read", self.label()), e)
        })
    }
}
