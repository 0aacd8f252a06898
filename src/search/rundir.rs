//! A run's folder: `runs/<name>/` with a self-contained copy of the space
//! (`space.ron`, `grammar.ron`), the store and `events.jsonl`.

use super::settings::{RunSettings, SearchError};
use crate::space::{Space, SpaceFile};
use crate::store::{SledStore, Store};
use std::path::{Path, PathBuf};

/// The rule a run name follows: one folder inside the runs folder.
pub const RUN_NAME_RULE: &str = "a run name is one folder name: not empty, `.` or `..`, without `/`, `\\` or control characters, at most 100 bytes";

/// Whether `name` names one folder inside the runs folder (never the runs
/// folder itself, a folder outside it or a nested one).
pub fn check_run_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 100
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        Err(format!(
            "bad run name {name:?}: {RUN_NAME_RULE} (choose one with --name)"
        ))
    } else {
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    pub fn store_path(&self) -> PathBuf {
        self.path.join("store")
    }

    pub fn events_path(&self) -> PathBuf {
        self.path.join("events.jsonl")
    }

    pub fn space_path(&self) -> PathBuf {
        self.path.join("space.ron")
    }

    /// Creates `runs_dir/name` for a new run of `space` and returns it with
    /// its store open. An existing run of that name is an error (resume it
    /// instead).
    pub fn create(
        runs_dir: &Path,
        space: &Space,
        settings: &RunSettings,
    ) -> Result<(RunDir, SledStore), SearchError> {
        check_run_name(&settings.name).map_err(SearchError::BadInput)?;
        let path = runs_dir.join(&settings.name);
        if path.join("store").exists() || path.join("events.jsonl").exists() {
            return Err(SearchError::BadInput(format!(
                "run `{}` already exists in {}; continue it with `archgram resume {}` or pick another --name",
                settings.name,
                runs_dir.display(),
                path.display()
            )));
        }
        std::fs::create_dir_all(&path)
            .map_err(|e| SearchError::Io(format!("cannot create {}: {e}", path.display())))?;
        let dir = RunDir { path };
        // Copy the space so the run can be resumed and read later even if
        // the original files change.
        let grammar_src = space
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&space.file.grammar);
        let grammar_text = std::fs::read_to_string(&grammar_src)
            .map_err(|e| SearchError::Io(format!("cannot read {}: {e}", grammar_src.display())))?;
        let mut file: SpaceFile = space.file.clone();
        file.grammar = PathBuf::from("grammar.ron");
        file.start = Some(space.grammar.start.clone());
        if let Some(f) = &file.task.file {
            let abs = space.path.parent().unwrap_or(Path::new(".")).join(f);
            file.task.file = Some(std::fs::canonicalize(&abs).unwrap_or(abs));
        }
        let text = ron::ser::to_string_pretty(&file, ron::ser::PrettyConfig::default())
            .map_err(|e| SearchError::Io(e.to_string()))?;
        let write = |p: PathBuf, t: &str| {
            std::fs::write(&p, t)
                .map_err(|e| SearchError::Io(format!("cannot write {}: {e}", p.display())))
        };
        write(dir.path.join("grammar.ron"), &grammar_text)?;
        write(dir.space_path(), &text)?;
        let store = SledStore::open(&dir.store_path())?;
        store.put_meta(&serde_json::json!({
            "settings": settings,
            "space": space.name(),
            "source": space.path.display().to_string(),
            "archgram_version": env!("CARGO_PKG_VERSION"),
        }))?;
        Ok((dir, store))
    }

    /// An existing run folder.
    pub fn open(path: &Path) -> Result<RunDir, SearchError> {
        if !path.join("space.ron").is_file() {
            return Err(SearchError::BadInput(format!(
                "{} is not a run folder (no space.ron); runs live in runs/<name>/",
                path.display()
            )));
        }
        Ok(RunDir {
            path: path.to_path_buf(),
        })
    }

    /// Opens the run's store, refusing one that has lost finished work the
    /// event log records. Open it once per process and pass it on: sled
    /// holds the lock a moment after a handle is dropped.
    pub fn store(&self) -> Result<SledStore, SearchError> {
        let store = SledStore::open(&self.store_path())?;
        super::journal::check_store(&store, &self.events_path())?;
        Ok(store)
    }

    /// The run's settings as recorded when it started.
    pub fn settings(&self, store: &dyn Store) -> Result<RunSettings, SearchError> {
        let meta = store.meta()?.ok_or_else(|| {
            SearchError::Store(crate::store::StoreError::Corrupt(format!(
                "{} has no run metadata: the run never started, or its store was replaced or damaged",
                self.store_path().display()
            )))
        })?;
        serde_json::from_value(meta["settings"].clone())
            .map_err(|e| SearchError::BadInput(format!("{}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_stay_one_folder_inside_the_runs_folder() {
        for ok in ["quickstart-1", "moe random", "a.b", "..x", "ünï"] {
            check_run_name(ok).unwrap();
        }
        let long = "x".repeat(101);
        for bad in [
            "", ".", "..", "../x", "a/b", "/abs", "a\\b", "a\nb", "a\tb", &long,
        ] {
            let e = check_run_name(bad).unwrap_err();
            assert!(e.contains("one folder name"), "{bad:?}: {e}");
        }
    }
}
