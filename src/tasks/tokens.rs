//! Language modelling on pre-tokenised files, in the layout nanoGPT-style
//! preparation scripts write: a folder with `train.bin` and `val.bin`, each a
//! flat array of little-endian unsigned token ids (uint16 by default, or
//! uint32 for vocabularies past 65,536), with no header. `train.bin` gives
//! the training windows and `val.bin` the held-out ones (see
//! [`super::windows`]). At most `max_tokens` tokens are read from the start
//! of each file, so a large corpus costs bounded memory.

use std::io::Read;
use std::path::Path;

use super::params::{ParamInfo, Params};
use super::windows::LmTask;
use super::{Task, TaskError, TaskSpec};

pub(super) const NAME: &str = "token_lm";

/// The file names inside the folder the task spec names.
pub(super) const TRAIN_FILE: &str = "train.bin";
pub(super) const VAL_FILE: &str = "val.bin";

pub(super) const PARAMS: &[ParamInfo] = &[
    super::params::lm_seq_len(),
    ParamInfo::int(
        "vocab",
        50257.0,
        2.0,
        16_777_216.0,
        "the tokenizer's vocabulary size (GPT-2's by default); every token must be below it",
    ),
    ParamInfo::int(
        "token_bytes",
        2.0,
        2.0,
        4.0,
        "bytes per token in the files: 2 (uint16) or 4 (uint32), little-endian",
    ),
    ParamInfo::int(
        "max_tokens",
        4_194_304.0,
        2.0,
        268_435_456.0,
        "tokens read from the start of each file at most",
    ),
    super::params::lm_test_examples(),
];

fn bad_file(path: &Path, reason: String) -> TaskError {
    TaskError::TokenFile {
        path: path.to_path_buf(),
        reason,
    }
}

/// The first `max_tokens` token ids of `path`, each checked against `vocab`.
fn read_tokens(
    path: &Path,
    bytes: usize,
    vocab: usize,
    max_tokens: usize,
) -> Result<Vec<u32>, TaskError> {
    let unreadable = |e: std::io::Error| TaskError::FileUnreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    if len % bytes as u64 != 0 {
        return Err(bad_file(
            path,
            format!(
                "its {len} bytes are not a whole number of {}-bit tokens; set `token_bytes` to the width the file was written with (2 for uint16, 4 for uint32)",
                bytes * 8
            ),
        ));
    }
    let n = (len / bytes as u64).min(max_tokens as u64) as usize;
    let mut raw = Vec::with_capacity(n * bytes);
    file.take((n * bytes) as u64)
        .read_to_end(&mut raw)
        .map_err(unreadable)?;
    if raw.len() != n * bytes {
        return Err(bad_file(path, "the file shrank while it was read".into()));
    }
    let tokens: Vec<u32> = match bytes {
        2 => raw
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        _ => raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    if let Some((i, t)) = tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= vocab)
    {
        return Err(bad_file(
            path,
            format!(
                "token {i} (byte offset {}) is {t}, not below vocab {vocab}; set `vocab` to the tokenizer's vocabulary size, or check `token_bytes`",
                i * bytes
            ),
        ));
    }
    Ok(tokens)
}

pub(super) fn build(p: &Params, spec: &TaskSpec, _seed: u64) -> Result<Box<dyn Task>, TaskError> {
    let dir = spec.file.as_deref().ok_or_else(|| TaskError::MissingFile {
        task: NAME.to_string(),
    })?;
    if dir.is_file() {
        return Err(bad_file(
            dir,
            format!("`file` of task {NAME} names the folder that holds {TRAIN_FILE} and {VAL_FILE}, not a file"),
        ));
    }
    let bytes = p.usize("token_bytes");
    if bytes == 3 {
        return Err(p.bad("token_bytes", "must be 2 (uint16) or 4 (uint32)"));
    }
    let (seq, vocab, max) = (p.usize("seq_len"), p.usize("vocab"), p.usize("max_tokens"));
    let train_path = dir.join(TRAIN_FILE);
    let val_path = dir.join(VAL_FILE);
    let train = read_tokens(&train_path, bytes, vocab, max)?;
    let val = read_tokens(&val_path, bytes, vocab, max)?;
    let short = |path: &Path, have: usize| {
        bad_file(
            path,
            format!(
                "it holds {have} tokens, fewer than one window of seq_len+1 = {}; use a smaller seq_len",
                seq + 1
            ),
        )
    };
    let (n_train, n_val) = (train.len(), val.len());
    match LmTask::new(NAME, vocab, seq, train, val, p.usize("test_examples")) {
        Some(task) => Ok(Box::new(task)),
        None if n_train <= seq => Err(short(&train_path, n_train)),
        None => Err(short(&val_path, n_val)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::build as build_task;
    use super::super::testutil::*;
    use super::*;

    /// Writes `train` and `val` as `bytes`-wide little-endian files into a
    /// fresh folder.
    fn data(bytes: usize, train: &[u32], val: &[u32]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let encode = |tokens: &[u32]| -> Vec<u8> {
            tokens
                .iter()
                .flat_map(|&t| match bytes {
                    2 => u16::try_from(t).unwrap().to_le_bytes().to_vec(),
                    _ => t.to_le_bytes().to_vec(),
                })
                .collect()
        };
        std::fs::write(dir.path().join(TRAIN_FILE), encode(train)).unwrap();
        std::fs::write(dir.path().join(VAL_FILE), encode(val)).unwrap();
        dir
    }

    fn token_spec(dir: &Path, pairs: &[(&str, f64)]) -> TaskSpec {
        TaskSpec {
            file: Some(dir.to_path_buf()),
            ..spec(NAME, pairs)
        }
    }

    /// A token stream whose next token follows from the current one.
    fn stream(n: usize, vocab: u32, from: u32) -> Vec<u32> {
        (0..n as u32).map(|i| (from + i * 7) % vocab).collect()
    }

    #[test]
    fn reads_uint16_and_uint32_files_as_written() {
        for (bytes, vocab) in [(2usize, 1000u32), (4, 100_000)] {
            let (train, val) = (stream(500, vocab, 3), stream(200, vocab, 11));
            let dir = data(bytes, &train, &val);
            let pairs = [
                ("vocab", vocab as f64),
                ("token_bytes", bytes as f64),
                ("seq_len", 8.0),
            ];
            let task = build_task(&token_spec(dir.path(), &pairs), 0).unwrap();
            assert_eq!(
                (task.name(), task.vocab(), task.seq_len()),
                (NAME, vocab as usize, 8)
            );
            assert!(task.causal());
            assert_eq!(task.train_len(), 500 - 8);
            // Test windows are val.bin's tokens, in order, shifted by one.
            let b = all_test(&*task);
            let targets: Vec<i32> = val[1..1 + b.targets.len()]
                .iter()
                .map(|&t| t as i32)
                .collect();
            assert_eq!(b.targets, targets);
            assert_eq!(b.input_row(0), &val[..8]);
            // Training windows come from train.bin.
            let t = train_sample(&*task, 50);
            for r in 0..t.batch {
                assert!(train.windows(8).any(|w| w == t.input_row(r)), "row {r}");
            }
            // The oracle scores 1.
            let perfect: Vec<u32> = b.targets.iter().map(|&t| t as u32).collect();
            assert_eq!(accuracy(&*task, &perfect, &b), 1.0);
        }
    }

    #[test]
    fn max_tokens_reads_a_prefix() {
        let dir = data(2, &stream(1000, 50, 0), &stream(300, 50, 1));
        let p = [("vocab", 50.0), ("seq_len", 4.0), ("max_tokens", 100.0)];
        let task = build_task(&token_spec(dir.path(), &p), 0).unwrap();
        assert_eq!(task.train_len(), 100 - 4);
        // (100 - 1) / 4 = 24 test windows at most in 100 held-out tokens.
        assert_eq!(all_test(&*task).batch, 24);
    }

    fn err(dir: &Path, pairs: &[(&str, f64)]) -> String {
        build_task(&token_spec(dir, pairs), 0)
            .err()
            .expect("an error")
            .to_string()
    }

    #[test]
    fn bad_files_are_named_with_what_to_change() {
        let ok = data(2, &stream(100, 50, 0), &stream(100, 50, 0));
        let p = [("vocab", 50.0), ("seq_len", 8.0)];

        // Missing folder or file.
        let gone = ok.path().join("nope");
        assert!(err(&gone, &p).contains("train.bin"), "{}", err(&gone, &p));
        std::fs::remove_file(ok.path().join(VAL_FILE)).unwrap();
        let e = build_task(&token_spec(ok.path(), &p), 0).err().unwrap();
        assert!(matches!(e, TaskError::FileUnreadable { .. }), "{e}");
        assert!(e.to_string().contains("val.bin"), "{e}");

        // A byte count that is not a whole number of tokens.
        let odd = data(2, &stream(100, 50, 0), &stream(100, 50, 0));
        let mut bytes = std::fs::read(odd.path().join(TRAIN_FILE)).unwrap();
        bytes.push(7);
        std::fs::write(odd.path().join(TRAIN_FILE), &bytes).unwrap();
        let e = err(odd.path(), &p);
        assert!(
            e.contains("train.bin") && e.contains("201 bytes") && e.contains("token_bytes"),
            "{e}"
        );
        // Six bytes are three uint16 tokens but not a whole number of uint32 ones.
        let six = data(4, &stream(100, 50, 0), &[]);
        std::fs::write(six.path().join(VAL_FILE), [1, 0, 2, 0, 3, 0]).unwrap();
        let e = err(six.path(), &[("vocab", 50.0), ("token_bytes", 4.0)]);
        assert!(e.contains("val.bin") && e.contains("32-bit"), "{e}");

        // A token at or past vocab, with where it is.
        let mut val = stream(100, 50, 0);
        val[42] = 50;
        let big = data(2, &stream(100, 50, 0), &val);
        let e = err(big.path(), &p);
        assert!(
            e.contains("val.bin") && e.contains("token 42") && e.contains("is 50"),
            "{e}"
        );

        // Too short for one window.
        let short = data(2, &stream(100, 50, 0), &stream(5, 50, 0));
        let e = err(short.path(), &p);
        assert!(
            e.contains("val.bin") && e.contains("5 tokens") && e.contains("seq_len"),
            "{e}"
        );

        // `file` naming a file, and an impossible width.
        let e = err(&ok.path().join(TRAIN_FILE), &p);
        assert!(e.contains("folder"), "{e}");
        assert_bad(
            &token_spec(ok.path(), &[("token_bytes", 3.0)]),
            "token_bytes",
        );
    }

    #[test]
    fn catalogue_entry_needs_a_folder() {
        let info = super::super::catalog()
            .into_iter()
            .find(|t| t.name == NAME)
            .unwrap();
        assert!(info.needs_file && info.causal);
        assert!(matches!(
            build_task(&TaskSpec::new(NAME), 0),
            Err(TaskError::MissingFile { .. })
        ));
    }
}
