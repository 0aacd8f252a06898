//! MAD in-context recall and noisy in-context recall (Poli et al. 2024, "Mechanistic
//! Design and Scaling of Hybrid Architectures", arXiv 2403.17844), multi-query variant
//! as in the MAD benchmark.
//!
//! A sequence is `L/2` key-value pairs; the last pair probes a key shown earlier. Keys
//! are the lower half of the clean vocabulary, values the upper half, and a key keeps its
//! value within a sequence. Training targets are the shifted inputs (plain next-token
//! loss); test targets are only the values whose key appeared earlier, so the test
//! measures recall and nothing else. Noisy recall replaces pairs by two noise tokens.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::dataset::{Example, FixedTask, Mode};
use super::params::{self, ParamInfo, Params};
use super::{Task, TaskError, TaskSpec, IGNORE};

pub(super) const RECALL: &str = "in_context_recall";
pub(super) const NOISY: &str = "noisy_recall";

const SEQ_LEN_HELP: &str =
    "generated length L (even, L/2 pairs); the model sees L-1 tokens after the next-token shift";

pub(super) const RECALL_PARAMS: &[ParamInfo] = &[
    ParamInfo::int(
        "vocab",
        16.0,
        4.0,
        65536.0,
        "vocabulary: keys are the lower half, values the upper half",
    ),
    ParamInfo::int("seq_len", 64.0, 4.0, 65536.0, SEQ_LEN_HELP),
    params::train_examples(4000.0),
    params::test_examples(256.0),
];

pub(super) const NOISY_PARAMS: &[ParamInfo] = &[
    ParamInfo::int("vocab", 32.0, 5.0, 65536.0, "total vocabulary; the top noise_vocab tokens are noise, the rest split into keys and values"),
    ParamInfo::int("noise_vocab", 16.0, 1.0, 65536.0, "number of noise tokens"),
    ParamInfo::real("frac_noise", 0.2, 0.0, 1.0, "probability that a pair (except one protected pair) becomes two noise tokens"),
    ParamInfo::int("seq_len", 64.0, 4.0, 65536.0, SEQ_LEN_HELP),
    params::train_examples(4000.0),
    params::test_examples(256.0),
];

/// Generator settings; `noise_vocab == 0` is plain in-context recall.
#[derive(Clone, Debug)]
pub(super) struct Recall {
    /// Keys are `0..keys`, values `keys..clean`, noise `clean..clean+noise_vocab`.
    keys: u32,
    clean: u32,
    noise_vocab: u32,
    frac_noise: f64,
    pairs: usize,
}

impl Recall {
    /// One sequence of `2 * pairs` tokens, shifted to `2 * pairs - 1`.
    pub(super) fn generate(&self, rng: &mut ChaCha8Rng, mode: Mode) -> Example {
        let len = 2 * self.pairs;
        let mut x = Vec::with_capacity(len);
        let mut y = Vec::with_capacity(len);
        let mut value_of: Vec<Option<u32>> = vec![None; self.keys as usize];
        // One non-final slot is never noise, so the probe always has a shown key. (MAD
        // draws the protected slot among all pairs including the probe slot, which can
        // leave no key shown when frac_noise is high.)
        let protected = rng.gen_range(0..self.pairs - 1);
        for slot in 0..self.pairs - 1 {
            let noisy = self.frac_noise > 0.0 && slot != protected && rng.gen_bool(self.frac_noise);
            if noisy {
                for _ in 0..2 {
                    x.push(rng.gen_range(self.clean..self.clean + self.noise_vocab));
                    y.push(IGNORE);
                }
                continue;
            }
            let k = rng.gen_range(0..self.keys);
            let seen = value_of[k as usize].is_some();
            let v =
                *value_of[k as usize].get_or_insert_with(|| rng.gen_range(self.keys..self.clean));
            x.extend([k, v]);
            y.extend([IGNORE, if seen { v as i32 } else { IGNORE }]);
        }
        let shown: Vec<u32> = (0..self.keys)
            .filter(|&k| value_of[k as usize].is_some())
            .collect();
        let probe = shown[rng.gen_range(0..shown.len())];
        let v = value_of[probe as usize].unwrap_or_default();
        x.extend([probe, v]);
        y.extend([IGNORE, v as i32]);
        shift(x, y, mode)
    }
}

/// Next-token shift; training learns every next token, testing scores only `labels`.
pub(super) fn shift(x: Vec<u32>, labels: Vec<i32>, mode: Mode) -> Example {
    let targets = match mode {
        Mode::Train => x[1..].iter().map(|&t| t as i32).collect(),
        Mode::Test => labels[1..].to_vec(),
    };
    let mut inputs = x;
    inputs.pop();
    Example {
        inputs,
        targets,
        domain: None,
    }
}

fn seq_pairs(p: &Params) -> Result<usize, TaskError> {
    let len = p.usize("seq_len");
    if len % 2 != 0 {
        return Err(p.bad(
            "seq_len",
            "must be even (the sequence is made of key-value pairs)",
        ));
    }
    Ok(len / 2)
}

fn make(
    name: &'static str,
    gen: Recall,
    vocab: usize,
    p: &Params,
    seed: u64,
) -> Result<FixedTask, TaskError> {
    let seq = 2 * gen.pairs - 1;
    FixedTask::generate(name, p, seed, vocab, seq, true, 1, |rng, mode| {
        gen.generate(rng, mode)
    })
}

fn make_recall(p: &Params, seed: u64) -> Result<FixedTask, TaskError> {
    let vocab = p.usize("vocab");
    let gen = Recall {
        keys: (vocab / 2) as u32,
        clean: vocab as u32,
        noise_vocab: 0,
        frac_noise: 0.0,
        pairs: seq_pairs(p)?,
    };
    make(RECALL, gen, vocab, p, seed)
}

fn make_noisy(p: &Params, seed: u64) -> Result<FixedTask, TaskError> {
    let vocab = p.usize("vocab");
    let noise = p.usize("noise_vocab");
    if noise + 4 > vocab {
        return Err(p.bad(
            "noise_vocab",
            format!(
                "must leave at least 4 clean tokens (2 keys, 2 values): at most vocab - 4 = {}",
                vocab.saturating_sub(4)
            ),
        ));
    }
    let clean = vocab - noise;
    let gen = Recall {
        keys: (clean / 2) as u32,
        clean: clean as u32,
        noise_vocab: noise as u32,
        frac_noise: p.get("frac_noise"),
        pairs: seq_pairs(p)?,
    };
    make(NOISY, gen, vocab, p, seed)
}

pub(super) fn build_recall(
    p: &Params,
    _: &TaskSpec,
    seed: u64,
) -> Result<Box<dyn Task>, TaskError> {
    Ok(Box::new(make_recall(p, seed)?))
}

pub(super) fn build_noisy(p: &Params, _: &TaskSpec, seed: u64) -> Result<Box<dyn Task>, TaskError> {
    Ok(Box::new(make_noisy(p, seed)?))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use std::collections::HashMap;

    /// Reads only the inputs: at each key slot whose key was paired earlier, predicts the
    /// stored value. Returns the predictions and the positions where it knows the answer.
    fn oracle(inputs: &[u32], keys: u32, clean: u32) -> (Vec<u32>, Vec<bool>) {
        let mut map = HashMap::new();
        let mut pred = vec![0; inputs.len()];
        let mut knows = vec![false; inputs.len()];
        for t in (0..inputs.len()).step_by(2) {
            let k = inputs[t];
            if k >= keys {
                continue; // noise pair
            }
            if let Some(&v) = map.get(&k) {
                pred[t] = v;
                knows[t] = true;
            }
            if let Some(&v) = inputs.get(t + 1) {
                assert!(v >= keys && v < clean, "value slot holds {v}");
                assert_eq!(*map.entry(k).or_insert(v), v, "a key changed its value");
            }
        }
        (pred, knows)
    }

    fn check_oracle(task: &FixedTask, keys: u32, clean: u32) {
        let test = all_test(task);
        let mut preds = Vec::new();
        for r in 0..test.batch {
            let (pred, knows) = oracle(test.input_row(r), keys, clean);
            let scored: Vec<bool> = test.target_row(r).iter().map(|&t| t != IGNORE).collect();
            // Targets sit exactly on the recallable values, and the final probe is one.
            assert_eq!(scored, knows, "row {r}");
            assert!(scored[task.seq - 1]);
            preds.extend(pred);
        }
        assert_eq!(accuracy(task, &preds, &test), 1.0);
        // A constant guess gets about 1/#values.
        let constant = vec![keys; test.inputs.len()];
        let chance = accuracy(task, &constant, &test);
        assert!(
            chance < 2.0 / (clean - keys) as f64,
            "constant predictor scored {chance}"
        );
    }

    #[test]
    fn recall_contract_and_disjoint() {
        check_contract(&spec(RECALL, &[("train_examples", 500.0)]));
        let task = make_recall(&params(RECALL, &[]), 1).unwrap();
        assert_eq!(task.seq, 63);
        assert_eq!((task.train_len(), task.test.len()), (4000, 256));
        check_disjoint(&task);
    }

    #[test]
    fn recall_test_targets_only_on_recallable_values() {
        check_oracle(&make_recall(&params(RECALL, &[]), 2).unwrap(), 8, 16);
        let t = make_recall(&params(RECALL, &[("vocab", 64.0), ("seq_len", 32.0)]), 2).unwrap();
        check_oracle(&t, 32, 64);
    }

    #[test]
    fn recall_training_targets_are_shifted_inputs() {
        let task = make_recall(&params(RECALL, &[]), 3).unwrap();
        let b = train_sample(&task, 50);
        for r in 0..b.batch {
            let (x, y) = (b.input_row(r), b.target_row(r));
            let shifted: Vec<i32> = x[1..].iter().map(|&t| t as i32).collect();
            assert_eq!(&y[..b.seq - 1], shifted.as_slice());
            assert!(y[b.seq - 1] >= 8, "last target is the probe value");
        }
    }

    #[test]
    fn noisy_recall_targets_and_noise_rate() {
        let task = make_noisy(&params(NOISY, &[]), 4).unwrap();
        check_oracle(&task, 8, 16);
        check_disjoint(&task);
        // Slot 0..pairs-1 become noise at frac_noise, except the protected one.
        let test = all_test(&task);
        let (mut noisy, mut slots) = (0, 0);
        for r in 0..test.batch {
            let row = test.input_row(r);
            for t in (0..row.len() - 2).step_by(2) {
                slots += 1;
                if row[t] >= 16 {
                    assert!(row[t + 1] >= 16, "noise comes in pairs");
                    noisy += 1;
                }
            }
        }
        let rate = noisy as f64 / slots as f64;
        let expected = 0.2 * 30.0 / 31.0;
        assert!((rate - expected).abs() < 0.02, "noise rate {rate}");
    }

    #[test]
    fn noisy_recall_all_noise_keeps_one_pair() {
        let task = make_noisy(
            &params(NOISY, &[("frac_noise", 1.0), ("test_examples", 50.0)]),
            5,
        )
        .unwrap();
        check_oracle(&task, 8, 16);
        let test = all_test(&task);
        for r in 0..test.batch {
            let keys = test
                .input_row(r)
                .iter()
                .step_by(2)
                .filter(|&&k| k < 8)
                .count();
            assert_eq!(keys, 2, "protected pair plus probe");
        }
    }

    #[test]
    fn bad_params() {
        assert_bad(&spec(RECALL, &[("seq_len", 63.0)]), "seq_len");
        assert_bad(&spec(RECALL, &[("vocab", 3.0)]), "vocab");
        assert_bad(&spec(NOISY, &[("noise_vocab", 29.0)]), "noise_vocab");
        assert_bad(&spec(NOISY, &[("frac_noise", 1.5)]), "frac_noise");
        assert_bad(
            &spec(RECALL, &[("train_examples", 1e6), ("seq_len", 1024.0)]),
            "train_examples",
        );
    }
}
