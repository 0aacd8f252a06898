//! A run's folder: `runs/<name>/` with a self-contained copy of the space
//! (`space.ron`, `grammar.ron`), the store and `events.jsonl`.

use super::settings::{RunSettings, SearchError};
use crate::space::{Space, SpaceFile};
use crate::store::{Location, Store};
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

    /// Where the run keeps its records and events.
    pub fn location(&self) -> Location {
        Location::Sled {
            store: self.store_path(),
            events: self.events_path(),
        }
    }

    /// Creates `runs_dir/name` for a new run of `space` and returns it with
    /// its store open. An existing run of that name is an error (resume it
    /// instead).
    pub fn create(
        runs_dir: &Path,
        space: &Space,
        settings: &RunSettings,
    ) -> Result<(RunDir, Box<dyn Store>), SearchError> {
        check_run_name(&settings.name).map_err(SearchError::bad)?;
        let path = runs_dir.join(&settings.name);
        if path.join("store").exists() || path.join("events.jsonl").exists() {
            return Err(SearchError::bad(format!(
                "run `{}` already exists in {}; continue it with `archgram resume {}` or pick another --name",
                settings.name,
                runs_dir.display(),
                path.display()
            )));
        }
        std::fs::create_dir_all(&path)
            .map_err(|e| SearchError::io(format!("cannot create {}", path.display()), e))?;
        let dir = RunDir { path };
        // Copy the space so the run can be resumed and read later even if
        // the original files change.
        let (text, grammar_text) = frozen_space(space)?;
        let write = |p: PathBuf, t: &str| {
            std::fs::write(&p, t)
                .map_err(|e| SearchError::io(format!("cannot write {}", p.display()), e))
        };
        write(dir.path.join("grammar.ron"), &grammar_text)?;
        write(dir.space_path(), &text)?;
        let store = dir.location().open()?;
        store.put_meta(&run_meta(space, settings))?;
        Ok((dir, store))
    }

    /// An existing run folder.
    pub fn open(path: &Path) -> Result<RunDir, SearchError> {
        if !path.join("space.ron").is_file() {
            return Err(SearchError::bad(format!(
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
    pub fn store(&self) -> Result<Box<dyn Store>, SearchError> {
        let store = self.location().open()?;
        super::journal::check_store(store.as_ref(), &self.events_path())?;
        Ok(store)
    }

    /// The run's settings as recorded when it started.
    pub fn settings(&self, store: &dyn Store) -> Result<RunSettings, SearchError> {
        let meta = store.meta()?.ok_or_else(|| {
            SearchError::Store(crate::store::StoreError::Corrupt(
                format!(
                    "{} has no run metadata: the run never started, or its store was replaced or damaged",
                    self.store_path().display()
                )
                .into(),
            ))
        })?;
        serde_json::from_value(meta["settings"].clone())
            .map_err(|e| SearchError::bad_because(self.path.display().to_string(), e))
    }
}

/// A run's own copy of its space: the space file's text, naming its
/// grammar `grammar.ron` beside it, with its start symbol and task data
/// file made explicit, and the grammar's text. A run folder keeps them as
/// files, a database run as text, so the run reads the same space later
/// whatever happens to the originals.
pub fn frozen_space(space: &Space) -> Result<(String, String), SearchError> {
    let dir = space.path.parent().unwrap_or(Path::new("."));
    let grammar_src = dir.join(&space.file.grammar);
    let grammar_text = std::fs::read_to_string(&grammar_src)
        .map_err(|e| SearchError::io(format!("cannot read {}", grammar_src.display()), e))?;
    let mut file: SpaceFile = space.file.clone();
    file.grammar = PathBuf::from("grammar.ron");
    file.start = Some(space.grammar.start.clone());
    if let Some(f) = &file.task.file {
        let abs = dir.join(f);
        file.task.file = Some(std::fs::canonicalize(&abs).unwrap_or(abs));
    }
    let text = ron::ser::to_string_pretty(&file, ron::ser::PrettyConfig::default())
        .map_err(|e| SearchError::failed("cannot write the run's space file", Some(e.into())))?;
    Ok((text, grammar_text))
}

/// What a run's store records about it when it starts (its settings, where
/// its space came from, the versions it was made with).
pub fn run_meta(space: &Space, settings: &RunSettings) -> serde_json::Value {
    serde_json::json!({
        "settings": settings,
        "space": space.name(),
        "source": space.path.display().to_string(),
        "archgram_version": env!("CARGO_PKG_VERSION"),
        "hash_recipes": hash_recipes(),
    })
}

/// The hash recipes this build hashes candidates with, as a run's
/// metadata records them.
pub fn hash_recipes() -> serde_json::Value {
    serde_json::json!({
        "structural": crate::hash::HASH_RECIPE_VERSION,
        "functional": crate::hash::FUNCTIONAL_RECIPE_VERSION,
    })
}

/// Refuses to search on in a store whose candidates were hashed with other
/// recipes: none of their hashes would match a new candidate's, so every
/// architecture proposed again would be trained again, silently. A store
/// with no candidates yet is adopted (its metadata gets this build's
/// recipes). Runs from before the recipes were recorded hashed with
/// structural 1 and functional 2.
pub fn check_hash_recipes(store: &dyn Store, path: &Path) -> Result<(), SearchError> {
    let Some(mut meta) = store.meta()? else {
        return Ok(());
    };
    let now = hash_recipes();
    let had = meta.get("hash_recipes").cloned();
    if had.as_ref() == Some(&now) {
        return Ok(());
    }
    if store.candidate_briefs()?.is_empty() {
        meta["hash_recipes"] = now;
        return Ok(store.put_meta(&meta)?);
    }
    let recipe = |v: &serde_json::Value, which: &str| v[which].to_string();
    let old = had.unwrap_or_else(|| serde_json::json!({"structural": 1, "functional": 2}));
    Err(SearchError::bad(format!(
        "{}: hash version mismatch: this run's candidates were hashed with structural recipe {} \
         and functional recipe {}, this archgram hashes with {} and {}, so a resumed search would \
         not recognise the architectures it has already trained and would train them again. \
         The run stays readable (`status`, `report`, `export`); to search further, start a new \
         run with `archgram search`, or finish this one with the archgram version that began it",
        path.display(),
        recipe(&old, "structural"),
        recipe(&old, "functional"),
        recipe(&now, "structural"),
        recipe(&now, "functional"),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[test]
    fn a_store_hashed_with_other_recipes_is_refused_unless_it_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let old = serde_json::json!({"settings": {"name": "old"}});
        // No metadata: nothing to compare (check_store judges such stores).
        check_hash_recipes(&store, dir.path()).unwrap();
        // Metadata from before the recipes were recorded, no candidates:
        // adopted, and recorded from now on.
        store.put_meta(&old).unwrap();
        check_hash_recipes(&store, dir.path()).unwrap();
        let meta = store.meta().unwrap().unwrap();
        assert_eq!(meta["hash_recipes"], hash_recipes());
        assert_eq!(meta["settings"], old["settings"]);
        // With candidates, only the same recipes go on.
        let c = crate::store::CandidateRecord {
            id: 0,
            derivation: crate::grammar::Derivation::leaf("x"),
            text: "x".into(),
            hashes: crate::hash::Hashes {
                structural: 1,
                functional: None,
            },
            parent: None,
            origin: "sample".into(),
            duplicate_of: None,
            params: 0.0,
            active_params: 0.0,
            flops: 0.0,
            steps: 1,
        };
        store.put_candidate(&c).unwrap();
        check_hash_recipes(&store, dir.path()).unwrap();
        for recipes in [
            None,
            Some(serde_json::json!({"structural": 1, "functional": 2})),
        ] {
            let mut meta = old.clone();
            if let Some(r) = recipes {
                meta["hash_recipes"] = r;
            }
            store.put_meta(&meta).unwrap();
            let e = check_hash_recipes(&store, dir.path())
                .unwrap_err()
                .to_string();
            assert!(e.contains("hash version mismatch"), "{e}");
            assert!(
                e.contains("structural recipe 1 and functional recipe 2"),
                "{e}"
            );
            assert!(matches!(
                check_hash_recipes(&store, dir.path()),
                Err(SearchError::BadInput { .. })
            ));
        }
    }

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
