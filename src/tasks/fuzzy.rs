//! MAD fuzzy in-context recall (Poli et al. 2024, arXiv 2403.17844), multi-query.
//!
//! Keys and values are runs of 1-3 distinct tokens, so the model has to recall by
//! matching variable-length motifs, not single tokens. Test keys always have the maximal
//! length. Values are scored only when their key (the exact run) was shown earlier; the
//! sequence ends with a probe pair whose key is always shown before. Sequences are
//! left-padded with PAD to `seq_len + 1` and shifted.

use std::collections::{HashMap, HashSet};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::dataset::{Example, FixedTask, Mode};
use super::params::{self, ParamInfo, Params};
use super::recall::shift;
use super::{Task, TaskError, TaskSpec, IGNORE};

pub(super) const NAME: &str = "fuzzy_recall";

/// Longest key and value run (MAD's motif sizes).
const MOTIF: usize = 3;

pub(super) const PARAMS: &[ParamInfo] = &[
    ParamInfo::int(
        "vocab",
        16.0,
        7.0,
        65536.0,
        "vocabulary: PAD = vocab-1, keys 0..(vocab-1)/2, values up to vocab-2",
    ),
    ParamInfo::int(
        "seq_len",
        64.0,
        12.0,
        65536.0,
        "model input length (the generator pads to seq_len+1 and shifts)",
    ),
    params::train_examples(4000.0),
    params::test_examples(256.0),
];

#[derive(Clone, Debug)]
struct Fuzzy {
    pad: u32,
    /// Keys are `0..keys`, values `keys..pad`.
    keys: u32,
    seq: usize,
}

/// `m` distinct tokens from `lo..hi` in random order; `m` is at most 3, so rejection is cheap.
fn motif(rng: &mut ChaCha8Rng, lo: u32, hi: u32, m: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(m);
    while out.len() < m {
        let t = rng.gen_range(lo..hi);
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

impl Fuzzy {
    fn key_len(&self, rng: &mut ChaCha8Rng, mode: Mode) -> usize {
        match mode {
            Mode::Train => rng.gen_range(1..=MOTIF),
            Mode::Test => MOTIF,
        }
    }

    fn generate(&self, rng: &mut ChaCha8Rng, mode: Mode) -> Example {
        let total = self.seq + 1;
        let probe_key = {
            let m = self.key_len(rng, mode);
            motif(rng, 0, self.keys, m)
        };
        let probe_value = {
            let m = rng.gen_range(1..=MOTIF);
            motif(rng, self.keys, self.pad, m)
        };
        let probe_len = probe_key.len() + probe_value.len();
        // Tokens available before the final probe pair.
        let body = total - probe_len;
        let insert_at = rng.gen_range(0..=body - probe_len);

        let mut x: Vec<u32> = Vec::with_capacity(total);
        let mut y: Vec<i32> = Vec::with_capacity(total);
        let mut value_of: HashMap<Vec<u32>, Vec<u32>> = HashMap::new();
        value_of.insert(probe_key.clone(), probe_value.clone());
        let mut shown: HashSet<Vec<u32>> = HashSet::new();
        let mut probe_shown = false;

        // Room is reserved for the probe's first showing, so it always precedes the final
        // query. (MAD can skip it when the insertion point falls after its loop ends,
        // which leaves an unrecallable final target.)
        loop {
            let reserve = if probe_shown { 0 } else { probe_len };
            if x.len() + 2 * MOTIF + reserve > body {
                break;
            }
            let (klen, vlen) = (self.key_len(rng, mode), rng.gen_range(1..=MOTIF));
            if !probe_shown && x.len() >= insert_at {
                push_pair(&mut x, &mut y, &probe_key, &probe_value, false);
                shown.insert(probe_key.clone());
                probe_shown = true;
                continue;
            }
            let key = motif(rng, 0, self.keys, klen);
            let value = value_of
                .entry(key.clone())
                .or_insert_with(|| motif(rng, self.keys, self.pad, vlen))
                .clone();
            probe_shown |= key == probe_key;
            push_pair(&mut x, &mut y, &key, &value, shown.contains(&key));
            shown.insert(key);
        }
        if !probe_shown {
            push_pair(&mut x, &mut y, &probe_key, &probe_value, false);
        }
        push_pair(&mut x, &mut y, &probe_key, &probe_value, true);

        let pad = total - x.len();
        let mut xs = vec![self.pad; pad];
        xs.extend(x);
        let mut ys = vec![IGNORE; pad];
        ys.extend(y);
        shift(xs, ys, mode)
    }
}

fn push_pair(x: &mut Vec<u32>, y: &mut Vec<i32>, key: &[u32], value: &[u32], scored: bool) {
    x.extend_from_slice(key);
    y.extend(std::iter::repeat_n(IGNORE, key.len()));
    x.extend_from_slice(value);
    y.extend(
        value
            .iter()
            .map(|&v| if scored { v as i32 } else { IGNORE }),
    );
}

fn make(p: &Params, seed: u64) -> Result<FixedTask, TaskError> {
    let vocab = p.usize("vocab");
    let seq = p.usize("seq_len");
    let gen = Fuzzy {
        pad: (vocab - 1) as u32,
        keys: ((vocab - 1) / 2) as u32,
        seq,
    };
    FixedTask::generate(NAME, p, seed, vocab, seq, true, 1, |rng, mode| {
        gen.generate(rng, mode)
    })
}

pub(super) fn build(p: &Params, _: &TaskSpec, seed: u64) -> Result<Box<dyn Task>, TaskError> {
    Ok(Box::new(make(p, seed)?))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    /// Parses an input row into (key run, value run start) by token range and predicts
    /// every value token of a key run seen before. Independent of the generator.
    fn oracle(inputs: &[u32], keys: u32, pad: u32) -> (Vec<u32>, Vec<bool>, Vec<usize>) {
        let mut pred = vec![pad; inputs.len()];
        let mut knows = vec![false; inputs.len()];
        let mut key_lens = Vec::new();
        let mut map: HashMap<Vec<u32>, Vec<u32>> = HashMap::new();
        let mut t = inputs.iter().take_while(|&&x| x == pad).count();
        while t < inputs.len() {
            let k_start = t;
            while t < inputs.len() && inputs[t] < keys {
                t += 1;
            }
            let key = inputs[k_start..t].to_vec();
            assert!(!key.is_empty(), "a value run without a key at {k_start}");
            key_lens.push(key.len());
            let v_start = t;
            while t < inputs.len() && inputs[t] >= keys {
                assert_ne!(inputs[t], pad, "PAD inside the sequence");
                t += 1;
            }
            let value = inputs[v_start..t].to_vec();
            if let Some(known) = map.get(&key) {
                // Position v_start-1+i predicts value token i.
                for (i, &v) in known.iter().enumerate() {
                    let pos = v_start - 1 + i;
                    if pos < inputs.len() {
                        pred[pos] = v;
                        knows[pos] = true;
                    }
                }
                if t < inputs.len() {
                    assert_eq!(known, &value, "a key changed its value");
                }
            } else {
                map.insert(key, value);
            }
        }
        (pred, knows, key_lens)
    }

    #[test]
    fn contract_and_disjoint() {
        check_contract(&spec(NAME, &[("train_examples", 500.0)]));
        let task = make(&params(NAME, &[]), 1).unwrap();
        assert_eq!(task.seq, 64);
        check_disjoint(&task);
    }

    #[test]
    fn test_targets_exactly_on_recallable_values() {
        // The smallest setting has only 90 distinct test sequences, so few training ones.
        for (vocab, seq) in [(16.0, 64.0), (32.0, 128.0), (7.0, 12.0)] {
            let p = params(
                NAME,
                &[
                    ("vocab", vocab),
                    ("seq_len", seq),
                    ("train_examples", 200.0),
                ],
            );
            let task = make(&p, 2).unwrap();
            let (keys, pad) = (((task.vocab - 1) / 2) as u32, task.vocab as u32 - 1);
            let test = all_test(&task);
            let mut preds = Vec::new();
            for r in 0..test.batch {
                let (pred, knows, key_lens) = oracle(test.input_row(r), keys, pad);
                let scored: Vec<bool> = test.target_row(r).iter().map(|&t| t != IGNORE).collect();
                assert_eq!(scored, knows, "row {r}");
                assert!(scored[task.seq - 1], "final probe value is scored");
                assert!(
                    key_lens.iter().all(|&l| l == MOTIF),
                    "test keys have full length"
                );
                preds.extend(pred);
            }
            assert_eq!(accuracy(&task, &preds, &test), 1.0);
            // A constant value token scores about 1/#values.
            let constant = vec![keys; test.inputs.len()];
            let chance = accuracy(&task, &constant, &test);
            assert!(
                chance < 1.5 / (pad - keys) as f64,
                "constant predictor scored {chance}"
            );
        }
    }

    #[test]
    fn training_uses_all_key_lengths_and_shifted_targets() {
        let task = make(&params(NAME, &[]), 3).unwrap();
        let b = train_sample(&task, 100);
        let mut lens = HashSet::new();
        for r in 0..b.batch {
            let (x, y) = (b.input_row(r), b.target_row(r));
            let shifted: Vec<i32> = x[1..].iter().map(|&t| t as i32).collect();
            assert_eq!(&y[..b.seq - 1], shifted.as_slice());
            lens.extend(oracle(x, 7, 15).2);
        }
        assert_eq!(lens, HashSet::from([1, 2, 3]));
    }

    #[test]
    fn tiny_space_reports_space_too_small() {
        let p = params(NAME, &[("vocab", 7.0), ("seq_len", 12.0)]);
        assert!(matches!(make(&p, 0), Err(TaskError::SpaceTooSmall { .. })));
    }

    #[test]
    fn bad_params() {
        assert_bad(&spec(NAME, &[("vocab", 6.0)]), "vocab");
        assert_bad(&spec(NAME, &[("seq_len", 11.0)]), "seq_len");
    }
}
