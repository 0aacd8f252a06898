//! Proxy tasks: token-sequence datasets generated from a seed, with no downloads.
//!
//! This module owns the task catalogue, the generators (MAD suite, Zoology MQAR, MoE
//! domain mixtures, language modelling on the user's text or pre-tokenised files), the
//! fixed train/test splits and the scoring rule. It must not know about the rest of the
//! crate: it imports only the shared diagnostics helpers (`diag`), and models see it
//! only through [`Task`] and [`Batch`].
//!
//! Conventions shared by every task:
//! - Tokens are `u32` in `0..vocab()`; targets are `i32` in `0..vocab()` or [`IGNORE`]
//!   (-1 here; MAD and Zoology write -100, the meaning is the same).
//! - "Shifted" tasks generate `seq_len() + 1` tokens `x` and return `(x[..n-1], x[1..])`,
//!   so the target at position `t` is what follows input `t`; they report `causal()`.
//!   Each task's `seq_len` parameter help says whether it is the model length or, as in
//!   MAD's recall tasks, the length before the shift.
//! - All randomness comes from `ChaCha8Rng` seeded with the build seed; the task structure
//!   (fact tables, Markov chains), the training split and the test split use separate
//!   streams, so the test split does not move when `train_examples` changes.
//! - Scores are micro-averaged exact match over non-ignored targets. MAD reports
//!   torchmetrics' macro average over classes; we return `(credit, count)` pairs so that
//!   batches aggregate exactly, which only works for the micro average.

mod charlm;
mod compression;
mod copying;
mod dataset;
mod fuzzy;
mod memorization;
mod mixture;
mod mqar;
mod params;
mod recall;
mod tokens;
mod windows;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use params::ParamInfo;

/// Ignored target (not scored, no loss).
pub const IGNORE: i32 = -1;

/// What a user writes in a space file to pick a task.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Catalogue name, e.g. `"in_context_recall"`.
    pub name: String,
    /// Numeric parameters; anything left out takes the default listed by [`catalog`].
    #[serde(default, deserialize_with = "crate::diag::unique_keys")]
    pub params: BTreeMap<String, f64>,
    /// The user's data: a UTF-8 text file for `char_lm`, a folder holding
    /// `train.bin` and `val.bin` for `token_lm`; every other task rejects it.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl TaskSpec {
    /// A spec with all parameters at their defaults.
    pub fn new(name: impl Into<String>) -> Self {
        TaskSpec {
            name: name.into(),
            params: BTreeMap::new(),
            file: None,
        }
    }

    /// Builder-style parameter setter.
    pub fn with(mut self, param: &str, value: f64) -> Self {
        self.params.insert(param.to_string(), value);
        self
    }
}

/// A batch of equal-length sequences, row-major (`batch` rows of `seq` tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<i32>,
    pub batch: usize,
    pub seq: usize,
    /// Hidden domain of each sequence, for mixtures; `None` for single-domain tasks.
    pub domains: Option<Vec<u32>>,
}

impl Batch {
    /// Inputs of sequence `row`.
    pub fn input_row(&self, row: usize) -> &[u32] {
        &self.inputs[row * self.seq..(row + 1) * self.seq]
    }

    /// Targets of sequence `row`.
    pub fn target_row(&self, row: usize) -> &[i32] {
        &self.targets[row * self.seq..(row + 1) * self.seq]
    }

    /// Number of targets that are scored (not [`IGNORE`]).
    pub fn scored_positions(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE).count()
    }
}

/// A generated dataset with a fixed held-out split.
pub trait Task: Send + Sync {
    fn name(&self) -> &str;
    /// Input and output vocabulary size of the model.
    fn vocab(&self) -> usize;
    /// Model input length (after any shift).
    fn seq_len(&self) -> usize;
    /// True when a model that sees future inputs could cheat (shifted next-token targets).
    fn causal(&self) -> bool;
    /// Number of training examples (for `char_lm`: number of distinct training windows).
    fn train_len(&self) -> usize;
    /// Samples `batch_size` training examples with replacement, using only `rng`.
    /// `index` is the caller's step counter; the current tasks have no curriculum and
    /// ignore it, so reproducibility rests on the rng alone.
    fn train_batch(
        &self,
        index: usize,
        batch_size: usize,
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Batch;
    /// The fixed held-out split, in order, in batches of at most `batch_size`
    /// (a `batch_size` of 0 is treated as 1).
    fn test_batches(&self, batch_size: usize) -> Vec<Batch>;
    /// Name of what [`Task::score`] measures, e.g. `"accuracy"`.
    fn metric(&self) -> &'static str;
    /// Returns (sum of per-position credit, number of scored positions).
    fn score(&self, predictions: &[u32], batch: &Batch) -> (f64, usize) {
        exact_match(predictions, batch)
    }
    /// Number of hidden domains (mixtures); 1 otherwise.
    fn num_domains(&self) -> usize {
        1
    }
    /// Whether the targets depend on other tokens than the one at their
    /// position, so that a network that mixes no tokens stays at chance.
    /// Language modelling and Markov mixtures do not: a per-token (bigram)
    /// model already beats chance there.
    fn needs_context(&self) -> bool {
        true
    }
}

/// Exact-match credit over every target that is not [`IGNORE`]. A position with no
/// prediction (short `predictions`) counts as wrong rather than being skipped, so a
/// truncated output cannot inflate the score.
pub fn exact_match(predictions: &[u32], batch: &Batch) -> (f64, usize) {
    let mut credit = 0.0;
    let mut scored = 0;
    for (i, &t) in batch.targets.iter().enumerate() {
        if t == IGNORE {
            continue;
        }
        scored += 1;
        if predictions
            .get(i)
            .is_some_and(|&p| i64::from(p) == i64::from(t))
        {
            credit += 1.0;
        }
    }
    (credit, scored)
}

/// One catalogue entry, for `archgram tasks`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TaskInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub metric: &'static str,
    pub causal: bool,
    /// Whether the task reads `TaskSpec::file`.
    pub needs_file: bool,
    pub params: Vec<ParamInfo>,
}

/// Errors from [`build`]; every message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("unknown task `{name}`; known tasks: {known}")]
    UnknownTask { name: String, known: String },
    #[error("task `{task}` has no parameter `{param}`; valid parameters: {valid}")]
    UnknownParam {
        task: String,
        param: String,
        valid: String,
    },
    #[error("bad value {value} for parameter `{param}` of task `{task}`: {reason}")]
    BadValue {
        task: String,
        param: String,
        value: f64,
        reason: String,
    },
    #[error("task `{task}` reads your data: set `file` in the task spec (char_lm: a UTF-8 text file; token_lm: a folder with train.bin and val.bin)")]
    MissingFile { task: String },
    #[error("task `{task}` does not read a file; remove `file` from the task spec (only char_lm and token_lm use it)")]
    UnexpectedFile { task: String },
    #[error("cannot read `{path}`: {reason}")]
    FileUnreadable { path: PathBuf, reason: String },
    #[error("`{path}`: {reason}")]
    TokenFile { path: PathBuf, reason: String },
    #[error("`{path}` is too short for task `{task}`: it has {chars} characters but needs at least {needed} ({why}); use a longer file or a smaller seq_len")]
    FileTooShort {
        task: String,
        path: PathBuf,
        chars: usize,
        needed: usize,
        why: String,
    },
    #[error("task `{task}` could only draw {found} of {wanted} test sequences that differ from every training sequence; increase vocab or seq_len, or reduce train_examples or test_examples")]
    SpaceTooSmall {
        task: String,
        wanted: usize,
        found: usize,
    },
}

type Builder = fn(&params::Params, &TaskSpec, u64) -> Result<Box<dyn Task>, TaskError>;

/// Static description of one task plus its constructor.
struct Entry {
    name: &'static str,
    description: &'static str,
    causal: bool,
    needs_file: bool,
    params: &'static [ParamInfo],
    build: Builder,
}

/// The catalogue, in the order `archgram tasks` prints it.
const ENTRIES: &[Entry] = &[
    Entry {
        name: recall::RECALL,
        description: "MAD in-context recall: key-value pairs, multi-query; score on values whose key appeared earlier",
        causal: true,
        needs_file: false,
        params: recall::RECALL_PARAMS,
        build: recall::build_recall,
    },
    Entry {
        name: fuzzy::NAME,
        description: "MAD fuzzy recall: keys and values are runs of 1-3 tokens; test keys have 3 tokens",
        causal: true,
        needs_file: false,
        params: fuzzy::PARAMS,
        build: fuzzy::build,
    },
    Entry {
        name: recall::NOISY,
        description: "MAD noisy recall: in-context recall with pairs replaced by noise tokens",
        causal: true,
        needs_file: false,
        params: recall::NOISY_PARAMS,
        build: recall::build_noisy,
    },
    Entry {
        name: copying::NAME,
        description: "MAD selective copying: data tokens among blanks; after COPY, output them in order",
        causal: false,
        needs_file: false,
        params: copying::PARAMS,
        build: copying::build,
    },
    Entry {
        name: compression::NAME,
        description: "MAD compression, adapted: reproduce the whole sequence after a COMP marker",
        causal: false,
        needs_file: false,
        params: compression::PARAMS,
        build: compression::build,
    },
    Entry {
        name: memorization::NAME,
        description: "MAD memorization: a fixed key->value table shared by train and test (capacity)",
        causal: false,
        needs_file: false,
        params: memorization::PARAMS,
        build: memorization::build,
    },
    Entry {
        name: mqar::NAME,
        description: "Zoology multi-query associative recall: queries placed by a power law after the context",
        causal: true,
        needs_file: false,
        params: mqar::PARAMS,
        build: mqar::build,
    },
    Entry {
        name: mixture::NAME,
        description: "MoE specialisation: K hidden domains (Markov chains or fact tables), optionally tagged",
        causal: true,
        needs_file: false,
        params: mixture::PARAMS,
        build: mixture::build,
    },
    Entry {
        name: charlm::NAME,
        description: "character-level language modelling on a UTF-8 file; last part held out",
        causal: true,
        needs_file: true,
        params: charlm::PARAMS,
        build: charlm::build,
    },
    Entry {
        name: tokens::NAME,
        description: "language modelling on pre-tokenised files: a folder with train.bin and val.bin (flat little-endian uint16 or uint32 token ids, as nanoGPT writes them)",
        causal: true,
        needs_file: true,
        params: tokens::PARAMS,
        build: tokens::build,
    },
];

/// Every task with its parameters and defaults.
pub fn catalog() -> Vec<TaskInfo> {
    ENTRIES
        .iter()
        .map(|e| TaskInfo {
            name: e.name,
            description: e.description,
            metric: dataset::METRIC,
            causal: e.causal,
            needs_file: e.needs_file,
            params: e.params.to_vec(),
        })
        .collect()
}

/// Validates `spec` and generates the task's splits deterministically from `seed`.
pub fn build(spec: &TaskSpec, seed: u64) -> Result<Box<dyn Task>, TaskError> {
    let entry = ENTRIES
        .iter()
        .find(|e| e.name == spec.name)
        .ok_or_else(|| TaskError::UnknownTask {
            name: spec.name.clone(),
            known: ENTRIES
                .iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    match (&spec.file, entry.needs_file) {
        (None, true) => {
            return Err(TaskError::MissingFile {
                task: entry.name.to_string(),
            })
        }
        (Some(_), false) => {
            return Err(TaskError::UnexpectedFile {
                task: entry.name.to_string(),
            })
        }
        _ => {}
    }
    let params = params::Params::resolve(entry.name, entry.params, &spec.params)?;
    (entry.build)(&params, spec, seed)
}

#[cfg(test)]
mod testutil;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_lists_every_task_once_with_valid_defaults() {
        let cat = catalog();
        let mut names: Vec<_> = cat.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cat.len());
        assert_eq!(cat.len(), 10);
        for info in &cat {
            assert!(!info.description.is_empty());
            for p in &info.params {
                assert!(
                    p.min <= p.default && p.default <= p.max,
                    "{}.{}",
                    info.name,
                    p.name
                );
                assert!(!p.help.is_empty());
            }
            if info.needs_file {
                continue;
            }
            // Every default configuration must build, and agree with the catalogue.
            let task = build(&TaskSpec::new(info.name), 7).unwrap();
            assert_eq!(task.name(), info.name);
            assert_eq!(task.causal(), info.causal, "{}", info.name);
            assert_eq!(task.metric(), info.metric);
        }
    }

    #[test]
    fn unknown_task_lists_known_ones() {
        let err = build(&TaskSpec::new("recal"), 0).err().unwrap();
        let msg = err.to_string();
        assert!(matches!(err, TaskError::UnknownTask { .. }));
        assert!(
            msg.contains("recal") && msg.contains("in_context_recall") && msg.contains("char_lm")
        );
    }

    #[test]
    fn file_rules() {
        let spec = TaskSpec {
            file: Some("x.txt".into()),
            ..TaskSpec::new("mqar")
        };
        assert!(matches!(
            build(&spec, 0),
            Err(TaskError::UnexpectedFile { .. })
        ));
        assert!(matches!(
            build(&TaskSpec::new("char_lm"), 0),
            Err(TaskError::MissingFile { .. })
        ));
    }

    #[test]
    fn spec_parses_from_ron_and_rejects_unknown_fields() {
        let spec: TaskSpec =
            ron::from_str(r#"(name: "mqar", params: {"vocab": 256.0, "pairs": 4.0})"#).unwrap();
        assert_eq!(spec.params["vocab"], 256.0);
        assert_eq!(spec.file, None);
        assert!(ron::from_str::<TaskSpec>(r#"(name: "mqar", parms: {})"#).is_err());
    }

    /// Values a user might type: small and edge integers, fractions, negatives,
    /// non-finite and huge numbers.
    fn any_value() -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u32..90).prop_map(f64::from),
            1 => -3.0f64..3.0,
            1 => Just(f64::NAN),
            1 => Just(f64::NEG_INFINITY),
            1 => Just(1e12),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// No spec reachable from a file makes `build` panic: it returns a task or an error.
        #[test]
        fn build_never_panics(
            entry in 0..ENTRIES.len(),
            seed in 0u64..4,
            values in proptest::collection::vec(proptest::option::of(any_value()), 8),
        ) {
            let e = &ENTRIES[entry];
            let mut spec = TaskSpec::new(e.name);
            if e.needs_file {
                spec.file = Some("/nonexistent/archgram-test.txt".into());
            }
            for (p, v) in e.params.iter().zip(&values) {
                if let Some(mut v) = *v {
                    // Keep accepted specs quick to build; the size cap has its own tests.
                    if p.name.ends_with("_examples") && v > 40.0 {
                        v = 40.0;
                    }
                    spec.params.insert(p.name.to_string(), v);
                }
            }
            match build(&spec, seed) {
                Ok(task) => {
                    let b = task.test_batches(64);
                    proptest::prop_assert!(!b.is_empty());
                    proptest::prop_assert!(b[0].inputs.iter().all(|&t| (t as usize) < task.vocab()));
                }
                Err(err) => proptest::prop_assert!(!err.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn exact_match_counts_only_scored_positions() {
        let batch = Batch {
            inputs: vec![0; 4],
            targets: vec![IGNORE, 3, IGNORE, 5],
            batch: 1,
            seq: 4,
            domains: None,
        };
        assert_eq!(exact_match(&[9, 3, 9, 5], &batch), (2.0, 2));
        assert_eq!(exact_match(&[3, 9, 5, 9], &batch), (0.0, 2));
        // Missing predictions are wrong, not skipped.
        assert_eq!(exact_match(&[9, 3], &batch), (1.0, 2));
    }
}
