//! Character-level language modelling on a UTF-8 file the user names.
//!
//! The vocabulary is the file's distinct characters; past `max_vocab` the rarest share
//! one UNK id, so a stray symbol cannot blow up the embedding. The last `test_fraction`
//! of the file is held out; windows are those of [`super::windows`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::params::{ParamInfo, Params};
use super::windows::LmTask;
use super::{Task, TaskError, TaskSpec};

pub(super) const NAME: &str = "char_lm";

/// Files above this size are refused rather than risking memory exhaustion.
const MAX_FILE_BYTES: u64 = 256 << 20;

pub(super) const PARAMS: &[ParamInfo] = &[
    super::params::lm_seq_len(),
    ParamInfo::int(
        "max_vocab",
        96.0,
        2.0,
        65536.0,
        "vocabulary cap; beyond it the rarest characters share one UNK id",
    ),
    ParamInfo::real(
        "test_fraction",
        0.1,
        0.01,
        0.5,
        "fraction of the file, taken from its end, held out for testing",
    ),
    super::params::lm_test_examples(),
];

/// Character vocabulary: id by character, with an optional UNK id for the rest.
#[derive(Clone, Debug)]
struct Vocab {
    ids: HashMap<char, u32>,
    unk: Option<u32>,
    size: usize,
}

impl Vocab {
    /// Keeps the most frequent characters (ties: lower code point first) and numbers
    /// them in code-point order, so ids are stable and readable; UNK comes last.
    fn from_text(text: &str, max_vocab: usize) -> Self {
        let mut freq: BTreeMap<char, usize> = BTreeMap::new();
        for c in text.chars() {
            *freq.entry(c).or_default() += 1;
        }
        let mut kept: Vec<char> = freq.keys().copied().collect();
        let unk = if kept.len() > max_vocab {
            kept.sort_by(|a, b| freq[b].cmp(&freq[a]).then(a.cmp(b)));
            kept.truncate(max_vocab - 1);
            kept.sort_unstable();
            Some((max_vocab - 1) as u32)
        } else {
            None
        };
        let ids: HashMap<char, u32> = kept
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        Vocab {
            size: ids.len() + usize::from(unk.is_some()),
            ids,
            unk,
        }
    }

    fn id(&self, c: char) -> u32 {
        // Every character of the file is either kept or covered by UNK.
        self.ids.get(&c).copied().or(self.unk).unwrap_or_default()
    }
}

fn read_text(path: &Path) -> Result<String, TaskError> {
    let unreadable = |reason: String| TaskError::FileUnreadable {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(unreadable(format!(
            "it has {} bytes, more than the {MAX_FILE_BYTES}-byte limit; use an excerpt",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| {
        unreadable(format!(
            "not valid UTF-8 (first bad byte at offset {}); convert it, e.g. with iconv",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// The task and the vocabulary it was read with.
fn make(p: &Params, path: &Path) -> Result<(LmTask, Vocab), TaskError> {
    let seq = p.usize("seq_len");
    let frac = p.get("test_fraction");
    let text = read_text(path)?;
    let vocab = Vocab::from_text(&text, p.usize("max_vocab"));
    let mut ids: Vec<u32> = text.chars().map(|c| vocab.id(c)).collect();
    let n = ids.len();
    let held = ids.split_off(n - (n as f64 * frac).round() as usize);
    let task = LmTask::new(NAME, vocab.size, seq, ids, held, p.usize("test_examples"));
    let task = task.ok_or_else(|| {
        // One window of seq+1 characters in each part.
        let window = seq + 1;
        let needed = ((window as f64) / frac.min(1.0 - frac)).ceil() as usize + 1;
        TaskError::FileTooShort {
            task: NAME.to_string(),
            path: path.to_path_buf(),
            chars: n,
            needed: needed.max(2 * window),
            why: format!(
                "one window of seq_len+1 = {window} characters in both the training part and the held-out {:.0}%",
                frac * 100.0
            ),
        }
    })?;
    Ok((task, vocab))
}

pub(super) fn build(p: &Params, spec: &TaskSpec, _seed: u64) -> Result<Box<dyn Task>, TaskError> {
    let path = spec.file.as_deref().ok_or_else(|| TaskError::MissingFile {
        task: NAME.to_string(),
    })?;
    Ok(Box::new(make(p, path)?.0))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{build as build_task, IGNORE};
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::path::PathBuf;

    /// Deterministic text with common letters, some rare non-ASCII ones, and line breaks.
    fn sample_text(chars: usize) -> String {
        let words = [
            "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "café", "straße",
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let mut s = String::new();
        while s.chars().count() < chars {
            s.push_str(words[rng.gen_range(0..words.len())]);
            s.push(if rng.gen_bool(0.1) { '\n' } else { ' ' });
        }
        s.push('😀');
        s
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn char_spec(path: &Path, pairs: &[(&str, f64)]) -> TaskSpec {
        TaskSpec {
            file: Some(path.to_path_buf()),
            ..spec(NAME, pairs)
        }
    }

    #[test]
    fn vocab_counts_distinct_chars_and_caps_with_unk() {
        let text = "aaaabbbcc😀é";
        let full = Vocab::from_text(text, 96);
        assert_eq!((full.size, full.unk), (5, None));
        assert!(full.id('😀') != full.id('é'));
        // Cap 3: keep 'a' and 'b', everything else is UNK = 2.
        let capped = Vocab::from_text(text, 3);
        assert_eq!((capped.size, capped.unk), (3, Some(2)));
        assert_eq!((capped.id('a'), capped.id('b')), (0, 1));
        assert_eq!([capped.id('c'), capped.id('é'), capped.id('😀')], [2, 2, 2]);
    }

    #[test]
    fn windows_are_contiguous_and_split_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let text = sample_text(20_000);
        let path = write(&dir, "t.txt", text.as_bytes());
        let task = build_task(&char_spec(&path, &[("seq_len", 32.0)]), 0).unwrap();
        assert!(task.causal());
        let distinct: std::collections::HashSet<char> = text.chars().collect();
        assert_eq!(task.vocab(), distinct.len());

        let p = params(NAME, &[("seq_len", 32.0)]);
        let (lm, vocab) = make(&p, &path).unwrap();
        let n = lm.train.len() + lm.held.len();
        assert_eq!(lm.held.len(), (n as f64 * 0.1).round() as usize);
        assert_eq!(task.train_len(), lm.train.len() - 32);

        // Training windows lie in the training part and are shifted.
        let b = task.train_batch(0, 200, &mut ChaCha8Rng::seed_from_u64(1));
        for r in 0..b.batch {
            let (x, y) = (b.input_row(r), b.target_row(r));
            let found = (0..lm.train.len() - 32)
                .any(|s| lm.train[s..s + 32] == *x && lm.train[s + 32] as i32 == y[31]);
            assert!(found, "row {r} is not a training window");
            let next: Vec<i32> = x[1..].iter().map(|&t| t as i32).collect();
            assert_eq!(&y[..31], next.as_slice());
        }
        let again = task.train_batch(7, 200, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(b, again, "sampling depends only on the rng");

        // Test windows tile the held-out part, in order.
        let tests = task.test_batches(10);
        let all: Vec<i32> = tests.iter().flat_map(|b| b.targets.clone()).collect();
        let expected = (lm.held.len() - 1) / 32;
        assert_eq!(all.len(), expected * 32);
        assert_eq!(tests[0].input_row(0), &lm.held[..32]);
        let held: Vec<i32> = lm.held[1..1 + all.len()]
            .iter()
            .map(|&t| t as i32)
            .collect();
        assert_eq!(all, held);
        assert!(all
            .iter()
            .all(|&t| t != IGNORE && (t as usize) < task.vocab()));
        // Oracle and chance.
        let batch = &tests[0];
        let perfect: Vec<u32> = batch.targets.iter().map(|&t| t as u32).collect();
        assert_eq!(accuracy(&*task, &perfect, batch), 1.0);
        let space = vocab.id(' ');
        assert!(accuracy(&*task, &vec![space; perfect.len()], batch) < 0.3);
    }

    #[test]
    fn test_examples_caps_and_spreads_windows() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "t.txt", sample_text(50_000).as_bytes());
        let p = params(NAME, &[("seq_len", 16.0), ("test_examples", 10.0)]);
        let (lm, _) = make(&p, &path).unwrap();
        assert_eq!(lm.test_starts.len(), 10);
        assert!(lm
            .test_starts
            .windows(2)
            .all(|w| w[1] > w[0] && (w[1] - w[0]) % 16 == 0));
        assert!(*lm.test_starts.last().unwrap() > lm.held.len() / 2);
    }

    #[test]
    fn capped_vocab_maps_rare_chars_to_unk() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "t.txt", sample_text(5_000).as_bytes());
        let task = build_task(
            &char_spec(&path, &[("max_vocab", 8.0), ("seq_len", 8.0)]),
            0,
        )
        .unwrap();
        assert_eq!(task.vocab(), 8);
        let b = &task.test_batches(1000)[0];
        assert!(b.inputs.contains(&7), "UNK occurs");
        assert!(b.inputs.iter().all(|&t| t < 8));
    }

    #[test]
    fn file_errors_are_actionable() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.txt");
        let err = build_task(&char_spec(&missing, &[]), 0).err().unwrap();
        assert!(matches!(err, TaskError::FileUnreadable { .. }), "{err}");
        assert!(err.to_string().contains("nope.txt"));

        let bad = write(&dir, "bad.txt", &[b'a', 0xff, b'b']);
        let err = build_task(&char_spec(&bad, &[]), 0).err().unwrap();
        assert!(err.to_string().contains("UTF-8"), "{err}");

        let short = write(&dir, "short.txt", sample_text(300).as_bytes());
        let err = build_task(&char_spec(&short, &[]), 0).err().unwrap();
        match &err {
            TaskError::FileTooShort { needed, chars, .. } => assert!(needed > chars),
            other => panic!("expected FileTooShort, got {other}"),
        }
        // The same file works with shorter windows.
        build_task(&char_spec(&short, &[("seq_len", 8.0)]), 0).unwrap();

        let empty = write(&dir, "empty.txt", b"");
        assert!(matches!(
            build_task(&char_spec(&empty, &[]), 0),
            Err(TaskError::FileTooShort { .. })
        ));
        assert_bad(
            &char_spec(&short, &[("test_fraction", 0.9)]),
            "test_fraction",
        );
        assert_bad(&char_spec(&short, &[("max_vocab", 1.0)]), "max_vocab");
    }
}
