//! MAD memorization (Poli et al. 2024, arXiv 2403.17844).
//!
//! One key->value table is fixed by the seed and shared by the train and test splits, so
//! the test measures how many facts the weights store (capacity), not generalisation.
//! Each sequence is `seq_len/2` slots `[key, INSERT]`; the target at INSERT is the key's
//! value. Not shifted, and the value never appears in the input: not causal.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::dataset::{structure_rng, Example, FixedTask};
use super::params::{self, ParamInfo, Params};
use super::{Task, TaskError, TaskSpec, IGNORE};

pub(super) const NAME: &str = "memorization";

pub(super) const PARAMS: &[ParamInfo] = &[
    ParamInfo::int(
        "vocab",
        256.0,
        4.0,
        65536.0,
        "vocabulary: INSERT = vocab-1; (vocab-1)/2 keys, each mapped to a distinct value token",
    ),
    ParamInfo::int(
        "seq_len",
        32.0,
        2.0,
        65536.0,
        "sequence length, even: seq_len/2 [key, INSERT] slots",
    ),
    params::train_examples(256.0),
    params::test_examples(256.0),
];

/// A random injection from keys `0..n` into the value tokens `n..insert`.
pub(super) fn fact_table(rng: &mut ChaCha8Rng, keys: u32, insert: u32) -> Vec<u32> {
    let mut values: Vec<u32> = (keys..insert).collect();
    values.shuffle(rng);
    values.truncate(keys as usize);
    values
}

#[derive(Clone, Debug)]
struct Memorization {
    insert: u32,
    table: Vec<u32>,
    slots: usize,
}

impl Memorization {
    fn generate(&self, rng: &mut ChaCha8Rng) -> Example {
        let mut inputs = Vec::with_capacity(2 * self.slots);
        let mut targets = Vec::with_capacity(2 * self.slots);
        for _ in 0..self.slots {
            let k = rng.gen_range(0..self.table.len());
            inputs.extend([k as u32, self.insert]);
            targets.extend([IGNORE, self.table[k] as i32]);
        }
        Example {
            inputs,
            targets,
            domain: None,
        }
    }
}

fn make(p: &Params, seed: u64) -> Result<FixedTask, TaskError> {
    let vocab = p.usize("vocab");
    let seq = p.usize("seq_len");
    if seq % 2 != 0 {
        return Err(p.bad(
            "seq_len",
            "must be even (the sequence is made of [key, INSERT] slots)",
        ));
    }
    let insert = (vocab - 1) as u32;
    let gen = Memorization {
        insert,
        table: fact_table(&mut structure_rng(seed), insert / 2, insert),
        slots: seq / 2,
    };
    FixedTask::generate(NAME, p, seed, vocab, seq, false, 1, |rng, _| {
        gen.generate(rng)
    })
}

pub(super) fn build(p: &Params, _: &TaskSpec, seed: u64) -> Result<Box<dyn Task>, TaskError> {
    Ok(Box::new(make(p, seed)?))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::tasks::Batch;
    use std::collections::{BTreeMap, HashSet};

    /// key -> value as seen in the targets of a batch; panics if a key has two values.
    fn facts(b: &Batch) -> BTreeMap<u32, i32> {
        let mut map = BTreeMap::new();
        for (i, pair) in b.inputs.chunks(2).enumerate() {
            assert_eq!(pair[1], 255, "INSERT follows every key");
            assert_eq!(b.targets[2 * i], IGNORE);
            let v = b.targets[2 * i + 1];
            assert_eq!(
                *map.entry(pair[0]).or_insert(v),
                v,
                "key {} has two values",
                pair[0]
            );
        }
        map
    }

    #[test]
    fn contract_and_disjoint() {
        check_contract(&spec(NAME, &[]));
        check_disjoint(&make(&params(NAME, &[]), 1).unwrap());
    }

    #[test]
    fn train_and_test_share_one_injective_table() {
        let task = make(&params(NAME, &[]), 2).unwrap();
        let test = all_test(&task);
        let train = facts(&train_sample(&task, 2000));
        assert_eq!(train.len(), 127, "every key is drawn");
        let values: HashSet<_> = train.values().collect();
        assert_eq!(values.len(), 127, "distinct keys get distinct values");
        assert!(train.keys().all(|&k| k < 127) && values.iter().all(|&&v| (127..255).contains(&v)));
        // Oracle: the table read off the training split scores 1.0 on the test split.
        let preds: Vec<u32> = test
            .inputs
            .iter()
            .map(|&k| train.get(&k).map_or(0, |&v| v as u32))
            .collect();
        let shifted: Vec<u32> = std::iter::once(0)
            .chain(preds.iter().copied())
            .take(preds.len())
            .collect();
        assert_eq!(accuracy(&task, &shifted, &test), 1.0);
        let constant = vec![200; test.inputs.len()];
        assert!(accuracy(&task, &constant, &test) < 0.05);
        // Another seed draws another table.
        let other = facts(&train_sample(&make(&params(NAME, &[]), 3).unwrap(), 2000));
        assert_ne!(train, other);
    }

    #[test]
    fn bad_params() {
        assert_bad(&spec(NAME, &[("seq_len", 33.0)]), "seq_len");
        assert_bad(&spec(NAME, &[("vocab", 3.0)]), "vocab");
    }
}
