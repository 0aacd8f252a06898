//! Search-space files: a grammar, the task it is trained on, the model
//! width, limits, seed and search defaults — everything a run needs.
//!
//! ```ron
//! Space(
//!     grammar: "../grammars/blocks.ron",   // relative to this file
//!     task: (name: "in_context_recall", params: {"vocab": 16, "seq_len": 32}),
//!     width: 64,
//!     limits: (max_depth: 12, max_params: 300000, max_flops: 2e6),
//!     seed: 7,
//! )
//! ```

use crate::arch::{ArchContext, ArchSemantics, Limits, Network};
use crate::diag::from_ron;
use crate::grammar::{
    annotate, Derivation, Grammar, SampleError, Sampler, SamplerConfig, Semantics, Source,
    SourceError, Tables, Warning,
};
use crate::tasks::{self, Task, TaskSpec};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Limits as written in a space file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Maximum derivation height.
    #[serde(default = "default_depth")]
    pub max_depth: usize,
    #[serde(default)]
    pub max_nodes: Option<f64>,
    #[serde(default)]
    pub max_params: Option<f64>,
    #[serde(default)]
    pub max_active_params: Option<f64>,
    /// Forward FLOPs per token.
    #[serde(default)]
    pub max_flops: Option<f64>,
}

fn default_depth() -> usize {
    16
}

/// How each candidate's proxy is trained (the `train` section); its home
/// is beside the training it configures.
pub use crate::eval::TrainSettings;

// The search sections' settings live here, with the file they are read
// from, so that `search` depends on `space` and not the reverse.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Halving {
    /// Where new candidates come from: `random` or `evolution`.
    pub source: String,
    /// Keep 1/eta of each rung.
    pub eta: usize,
    /// Rungs; the top one trains for the space's `train.steps`.
    pub rungs: usize,
    /// Hyperband brackets (1: plain successive halving), at most `rungs`.
    pub brackets: usize,
}

impl Default for Halving {
    fn default() -> Self {
        Halving {
            source: "random".into(),
            eta: 3,
            rungs: 3,
            brackets: 1,
        }
    }
}

impl Halving {
    /// Training steps at `rung` when the top rung trains `full` steps.
    pub fn steps_at(&self, rung: usize, full: usize) -> usize {
        let down = (self.eta.max(2) as u64).pow((self.rungs.max(1) - 1 - rung) as u32);
        ((full as u64 / down) as usize).max(1)
    }
}

/// Settings of the confirm stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Confirm {
    /// Architectures retrained.
    pub top: usize,
    /// Fresh training seeds each.
    pub seeds: usize,
}

impl Default for Confirm {
    fn default() -> Self {
        Confirm { top: 5, seeds: 3 }
    }
}

/// Settings of the model-based strategy (`strategy: "model"`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// Untrained candidates the surrogate ranks per proposal.
    pub pool: usize,
    /// Best trained candidates whose mutations make half the pool.
    pub parents: usize,
    /// Weight of the ensemble's spread in the upper confidence bound
    /// mean + κ·sd (0: pure exploitation).
    pub kappa: f64,
    /// Share of the picks after the warm-up that are plain samples the
    /// surrogate does not choose: SMAC interleaves random configurations
    /// with the model's (Hutter et al. 2011) so that a surrogate that is
    /// wrong about a region still gets points from it.
    pub random_share: f64,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            pool: 200,
            parents: 4,
            kappa: 1.0,
            random_share: 0.25,
        }
    }
}

/// Search defaults; command-line flags override them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSettings {
    /// `random`, `evolution` or `halving`.
    pub strategy: String,
    /// Evaluations (new candidates trained) in a run.
    pub budget: usize,
    /// Regularised evolution: population size and tournament sample size.
    pub population: usize,
    pub tournament: usize,
    /// Parallel evaluations (0 = decide by measurement).
    pub workers: usize,
    /// Successive halving (`strategy: "halving"`).
    pub halving: Halving,
    /// The confirm stage that ends a search: the top candidates retrained
    /// with fresh seeds.
    pub confirm: Confirm,
    /// Regularised evolution: a new candidate whose score would rank among
    /// the population's best `reeval` is trained once more with a fresh
    /// seed, and the population ranks it by the mean (0: never).
    pub reeval: usize,
    /// The model-based strategy's pool and acquisition.
    pub model: ModelSettings,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            strategy: "evolution".into(),
            budget: 60,
            population: 16,
            tournament: 4,
            workers: 0,
            halving: Halving::default(),
            confirm: Confirm::default(),
            model: ModelSettings::default(),
            reeval: 0,
        }
    }
}

/// A space file as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Space", deny_unknown_fields)]
pub struct SpaceFile {
    #[serde(default)]
    pub name: Option<String>,
    /// Grammar file, relative to the space file.
    pub grammar: PathBuf,
    /// Start symbol; the grammar's own by default.
    #[serde(default)]
    pub start: Option<String>,
    pub task: TaskSpec,
    /// Model width (embedding size).
    pub width: usize,
    /// Whether routers that look at the whole sequence (expert choice,
    /// top-k mixture-of-depths) may appear in a causal task. Off by
    /// default: their scores could not be reached when generating one token
    /// at a time. When allowed they are flagged.
    #[serde(default)]
    pub allow_noncausal_routing: bool,
    /// Draw again (sampling and mutation) when a network cannot use the
    /// context its task needs: it mixes no tokens, or ignores its input.
    /// Such networks score at chance by construction.
    #[serde(default)]
    pub reject_trivial: bool,
    pub limits: LimitsFile,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub train: TrainSettings,
    #[serde(default)]
    pub search: SearchSettings,
    /// Named hand-written architectures (text form) to compare against or
    /// seed a population with.
    #[serde(default, deserialize_with = "crate::diag::unique_keys")]
    pub baselines: BTreeMap<String, String>,
}

/// A loaded, checked space.
pub struct Space {
    pub path: PathBuf,
    /// The file's text, to point errors found later (sampling) into it.
    pub text: String,
    pub file: SpaceFile,
    pub grammar: Grammar,
    pub grammar_warnings: Vec<Warning>,
    pub sem: ArchSemantics,
    pub sampler_config: SamplerConfig,
    /// The grammar compiled for sampling, once per space.
    tables: Tables<ArchSemantics>,
    /// The task's name.
    pub task_name: String,
    /// What candidates are scored by (`train.score`'s name).
    pub metric: &'static str,
    /// Whether the task's targets need context (`Task::needs_context`).
    pub needs_context: bool,
}

/// Draws `reject_trivial` makes before it gives up on a non-trivial sample.
const TRIVIAL_TRIES: usize = 64;

/// A hand-written architecture that is not in the space.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    #[error("{0}")]
    Syntax(SourceError),
    #[error("not derivable from the grammar {grammar}: {detail}")]
    NotInGrammar { grammar: String, detail: String },
    #[error("invalid in this space: {0}")]
    Invalid(String),
}

impl Space {
    /// Reads a space file and everything it names; every problem is a
    /// `SourceError` pointing into the file at fault.
    pub fn load(path: &Path) -> Result<Space, SourceError> {
        Space::from_source(Source::read(path)?, Source::read)
    }

    /// A space from the texts a database run keeps: its file's, named
    /// `path` in errors and placing what it names, and its grammar's,
    /// which stands in for the grammar file.
    pub fn from_texts(path: &Path, text: &str, grammar_text: &str) -> Result<Space, SourceError> {
        let src = Source {
            path: path.to_path_buf(),
            text: text.to_string(),
        };
        Space::from_source(src, |grammar_path| {
            Ok(Source {
                path: grammar_path.to_path_buf(),
                text: grammar_text.to_string(),
            })
        })
    }

    /// A space from its file's text (`src.path` places it: the grammar and
    /// a task's file are named relative to its folder) and its grammar's,
    /// which `grammar` reads given the grammar's path: how a run kept in a
    /// database, which holds both texts, is read without files.
    pub fn from_source(
        src: Source,
        grammar: impl FnOnce(&Path) -> Result<Source, SourceError>,
    ) -> Result<Space, SourceError> {
        let path = src.path.as_path();
        let file: SpaceFile = ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
            .from_str(&src.text)
            .map_err(|e| from_ron(e, path, &src.text))?;
        let at = |needle: &str, msg: String| {
            let mut e = SourceError::new(msg).in_file(path);
            e.pos = src.pos_of(needle);
            e
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let grammar_path = dir.join(&file.grammar);
        let mut spec = file.task.clone();
        if let Some(f) = &spec.file {
            spec.file = Some(dir.join(f));
        }
        let task = tasks::build(&spec, file.seed).map_err(|e| at("task", e.to_string()))?;
        check_settings(&file, &src)?;
        let ctx = ArchContext {
            seq_len: task.seq_len(),
            width: file.width,
            vocab: task.vocab(),
            causal: task.causal(),
            allow_noncausal_routing: file.allow_noncausal_routing,
        };
        let limits = Limits {
            max_params: file.limits.max_params,
            max_active_params: file.limits.max_active_params,
            max_flops: file.limits.max_flops,
            max_nodes: file.limits.max_nodes,
        };
        let sem = ArchSemantics::new(ctx, limits);
        // The smallest possible network is the embedding and head alone.
        let floor = sem.total(&sem.start());
        let floor_err = |name: &str, what: &str, need: f64, max: Option<f64>| {
            match max {
            Some(m) if need > m => Err(at(
                name,
                format!(
                    "impossible limit: {name} {m} is below the {need} {what} that the embedding and head alone need (vocab {}, width {})",
                    ctx.vocab, ctx.width
                ),
            )),
            _ => Ok(()),
        }
        };
        floor_err("max_params", "parameters", floor.params, limits.max_params)?;
        floor_err(
            "max_active_params",
            "parameters",
            floor.active_params,
            limits.max_active_params,
        )?;
        floor_err(
            "max_flops",
            "FLOPs per token",
            floor.flops,
            limits.max_flops,
        )?;
        // Errors the grammar's reader or parser places nowhere in a file
        // (an unreadable file, a grammar-wide problem) point at the space
        // file's `grammar` field instead.
        let in_space = |e: SourceError| {
            at(
                "grammar",
                format!("grammar `{}`: {}", grammar_path.display(), e.message),
            )
        };
        let grammar_src = grammar(&grammar_path).map_err(in_space)?;
        let (mut grammar, grammar_warnings) = Grammar::from_source(&grammar_src, &sem)
            .map_err(|e| if e.file.is_none() { in_space(e) } else { e })?;
        if let Some(start) = &file.start {
            if !grammar.rules.contains_key(start) {
                return Err(at(
                    "start",
                    format!(
                        "start symbol `{start}` is not in {}; it defines: {}",
                        grammar_path.display(),
                        grammar.rules.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            grammar.start = start.clone();
        }
        let sampler_config = SamplerConfig {
            max_depth: file.limits.max_depth,
            ..SamplerConfig::default()
        };
        let space = Space {
            tables: Tables::new(&grammar, &sem),
            path: path.to_path_buf(),
            text: src.text.clone(),
            task_name: task.name().to_string(),
            metric: file.train.score.name(),
            needs_context: task.needs_context(),
            file,
            grammar,
            grammar_warnings,
            sem,
            sampler_config,
        };
        for (name, text) in &space.file.baselines {
            space
                .parse_arch(text)
                .map_err(|e| at(&format!("\"{name}\""), format!("baseline `{name}`: {e}")))?;
        }
        Ok(space)
    }

    /// An error about this file, located at the first `needle`.
    pub fn error_at(&self, needle: &str, message: String) -> SourceError {
        let mut e = SourceError::new(message).in_file(&self.path);
        e.pos = crate::diag::find_in_code(&self.text, needle)
            .map(|o| crate::diag::Pos::of_offset(&self.text, o));
        e
    }

    pub fn ctx(&self) -> &ArchContext {
        &self.sem.ctx
    }

    pub fn name(&self) -> String {
        self.file.name.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map_or("space".into(), |s| s.to_string_lossy().into_owned())
        })
    }

    pub fn sampler(&self) -> Sampler<'_, ArchSemantics> {
        Sampler::with_tables(&self.grammar, &self.sem, &self.tables, self.sampler_config)
    }

    /// Why `n` cannot beat chance on this space's task by construction, if
    /// it cannot: it ignores its input, or uses no context the task needs.
    pub fn trivial(&self, n: &Network) -> Option<&'static str> {
        match crate::hash::context_use(&n.arch) {
            crate::hash::Context::IgnoresInput => Some("ignores its input"),
            crate::hash::Context::TokenWise if self.needs_context => {
                Some("mixes no tokens, and the task needs context")
            }
            _ => None,
        }
    }

    /// Retries `draw` while it gives a network `reject_trivial` refuses.
    fn non_trivial<T>(
        &self,
        mut draw: impl FnMut() -> Result<T, SampleError>,
        net: impl Fn(&T) -> &Network,
    ) -> Result<T, SampleError> {
        if !self.file.reject_trivial {
            return draw();
        }
        let mut refused = 0u64;
        let mut last = String::new();
        for _ in 0..TRIVIAL_TRIES {
            let got = draw()?;
            match self.trivial(net(&got)) {
                None => return Ok(got),
                Some(why) => {
                    refused += 1;
                    last = format!("a network that {why}");
                }
            }
        }
        Err(SampleError {
            attempts: TRIVIAL_TRIES,
            reasons: vec![("trivial", refused, last)],
        })
    }

    /// Draws one valid network (with `reject_trivial`, one that can use
    /// the context its task needs).
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> Result<Network, SampleError> {
        self.non_trivial(|| self.draw(rng), |n| n)
    }

    /// One valid network as the grammar draws it, trivial or not.
    pub fn draw(&self, rng: &mut ChaCha8Rng) -> Result<Network, SampleError> {
        let (d, _) = self.sampler().sample(&self.sem.start(), rng)?;
        Network::build(d, self.ctx()).map_err(|r| SampleError {
            attempts: 1,
            reasons: vec![(r.key, 1, r.to_string())],
        })
    }

    /// A valid mutant of `parent` (einspace-style: resample one subtree or
    /// retune one parameter), lowered.
    pub fn mutate(
        &self,
        parent: &Derivation,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Network, crate::grammar::Mutation), SampleError> {
        self.non_trivial(
            || {
                let (d, m) = self.sampler().mutate(parent, &self.sem.start(), rng)?;
                let n = Network::build(d, self.ctx()).map_err(|r| SampleError {
                    attempts: 1,
                    reasons: vec![(r.key, 1, r.to_string())],
                })?;
                Ok((n, m))
            },
            |(n, _)| n,
        )
    }

    /// Validates a derivation (from a sample, a mutation or the store)
    /// against this space's grammar, rules and limits, and lowers it.
    pub fn network(&self, d: Derivation) -> Result<Network, ArchError> {
        self.sampler()
            .replay(&d, &self.sem.start())
            .map_err(|r| ArchError::Invalid(r.to_string()))?;
        Network::build(d, self.ctx()).map_err(|r| ArchError::Invalid(r.to_string()))
    }

    /// Parses a hand-written text form, matches it to the grammar and checks it.
    pub fn parse_arch(&self, text: &str) -> Result<Network, ArchError> {
        let term = Derivation::parse(text.trim()).map_err(ArchError::Syntax)?;
        let d = annotate(&self.grammar, &self.sem, &term).map_err(|e| ArchError::NotInGrammar {
            grammar: self.file.grammar.display().to_string(),
            detail: e.to_string(),
        })?;
        self.network(d)
    }

    /// The task, built from the space's spec (paths relative to the file).
    pub fn build_task(&self, seed: u64) -> Result<Box<dyn Task>, tasks::TaskError> {
        let mut spec = self.file.task.clone();
        if let Some(f) = &spec.file {
            spec.file = Some(self.path.parent().unwrap_or(Path::new(".")).join(f));
        }
        tasks::build(&spec, seed)
    }

    /// Checks the final state of a subtree-level sample too (used by tests).
    pub fn check(&self, n: &Network) -> Result<(), String> {
        let out = crate::grammar::replay(&self.sem, &n.term, &self.sem.start())
            .map_err(|r| r.to_string())?;
        self.sem.finish(&out).map_err(|r| r.to_string())
    }
}

/// Every number a space file sets, checked once on load, each error at its
/// field's `file:line:col` (or at `also`'s when the field is left out).
fn check_settings(file: &SpaceFile, src: &Source) -> Result<(), SourceError> {
    let err = |key: &str, also: &str, msg: String| {
        let mut e = SourceError::new(msg).in_file(&src.path);
        e.pos = src
            .pos_of_key(key)
            .or_else(|| src.pos_of_key(also))
            .or_else(|| src.pos_of(key));
        Err(e)
    };
    let count = |key: &str, v: usize, min: usize, max: usize| match v {
        _ if (min..=max).contains(&v) => Ok(()),
        _ if max == usize::MAX => err(key, key, format!("{key} must be at least {min}, got {v}")),
        _ => err(
            key,
            key,
            format!("{key} must be from {min} to {max}, got {v}"),
        ),
    };
    // A finite number above zero (or zero too), at most `max`.
    let real = |key: &str, v: f64, zero_ok: bool, max: f64| {
        let low_ok = v > 0.0 || (zero_ok && v == 0.0);
        if v.is_finite() && low_ok && v <= max {
            return Ok(());
        }
        let what = if zero_ok {
            "zero or a positive number"
        } else {
            "a positive number"
        };
        let cap = if max < f64::MAX {
            format!(" up to {max}")
        } else {
            String::new()
        };
        err(key, key, format!("{key} must be {what}{cap}, got {v}"))
    };
    let largest = crate::arch::forms::LARGEST as usize;
    count("width", file.width, 1, largest)?;
    count(
        "max_depth",
        file.limits.max_depth,
        2,
        crate::grammar::MAX_HEIGHT,
    )?;
    for (key, v) in [
        ("max_nodes", file.limits.max_nodes),
        ("max_params", file.limits.max_params),
        ("max_active_params", file.limits.max_active_params),
        ("max_flops", file.limits.max_flops),
    ] {
        if let Some(v) = v {
            real(key, v, false, f64::MAX)?;
        }
    }
    let t = &file.train;
    count("steps", t.steps, 1, usize::MAX)?;
    count("batch_size", t.batch_size, 1, largest)?;
    real("lr", t.lr, false, 10.0)?;
    real("weight_decay", t.weight_decay, true, 10.0)?;
    real("clip_norm", t.clip_norm, true, f64::MAX)?;
    let r = &t.routing;
    real("aux_alpha", r.aux_alpha, true, f64::MAX)?;
    real("z_loss", r.z_loss, true, f64::MAX)?;
    real("bias_rate", r.bias_rate, true, f64::MAX)?;
    count("micro_batch", r.micro_batch, 1, largest)?;
    let s = &file.search;
    count("budget", s.budget, 1, usize::MAX)?;
    count("population", s.population, 1, usize::MAX)?;
    if !(1..=s.population).contains(&s.tournament) {
        return err(
            "tournament",
            "population",
            format!(
                "tournament must be from 1 to the population ({}), got {}",
                s.population, s.tournament
            ),
        );
    }
    // eta^(rungs-1) divides the top rung's steps: 100^9 still fits.
    count("eta", s.halving.eta, 2, 100)?;
    count("rungs", s.halving.rungs, 1, 10)?;
    count("brackets", s.halving.brackets, 1, s.halving.rungs)?;
    // A pool of 100,000 already costs minutes of sampling per pick.
    count("pool", s.model.pool, 1, 100_000)?;
    count("parents", s.model.parents, 1, usize::MAX)?;
    real("kappa", s.model.kappa, true, 100.0)?;
    real("random_share", s.model.random_share, true, 1.0)?;
    Ok(())
}
