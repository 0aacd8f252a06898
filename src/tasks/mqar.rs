//! Multi-query associative recall, MQAR (Arora, Eyuboglu et al. 2023, "Zoology:
//! Measuring and Improving Recall in Efficient Language Models", arXiv 2312.04927).
//!
//! The context lists `D` key-value pairs (distinct keys from `1..V/2`, distinct values
//! from `V/2..V`); then a query region holds each key once, at slots drawn without
//! replacement with probability proportional to `a (g+1)^(a-1)`, so most queries come
//! soon after the context, as repeated bigrams do in text. The target at a queried key
//! is its value; every other position is ignored, in training as in testing. Sequences
//! are generated at `L+1` tokens and shifted, exactly as in Zoology. The answer never
//! appears after its query, but the task is posed to causal language models, so it is
//! reported as causal and evaluated with the same masking as the paper.

use rand::seq::index;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::dataset::{Example, FixedTask};
use super::params::{self, ParamInfo, Params};
use super::{Task, TaskError, TaskSpec, IGNORE};

pub(super) const NAME: &str = "mqar";

pub(super) const PARAMS: &[ParamInfo] = &[
    ParamInfo::int("vocab", 128.0, 5.0, 65536.0, "vocabulary, larger than seq_len: keys from 1..vocab/2, values from vocab/2..vocab"),
    ParamInfo::int("seq_len", 64.0, 4.0, 32768.0, "model input length, even"),
    ParamInfo::int("pairs", 8.0, 1.0, 8192.0, "key-value pairs D per sequence, each queried once; 4*pairs <= seq_len"),
    ParamInfo::real("power_a", 0.01, 0.0001, 1.0, "power-law exponent a for query placement; 1 is uniform"),
    ParamInfo::int("random_non_queries", 1.0, 0.0, 1.0, "1: fill the gaps of the query region with uniform random tokens; 0: with token 0 (the paper's sweeps)"),
    params::train_examples(4000.0),
    params::test_examples(256.0),
];

#[derive(Clone, Debug)]
struct Mqar {
    vocab: u32,
    seq: usize,
    pairs: usize,
    /// Unnormalised probability of each query slot.
    slot_weight: Vec<f64>,
    random_non_queries: bool,
}

impl Mqar {
    fn new(vocab: usize, seq: usize, pairs: usize, a: f64, random_non_queries: bool) -> Self {
        let slots = (seq - 2 * pairs) / 2;
        Mqar {
            vocab: vocab as u32,
            seq,
            pairs,
            slot_weight: (0..slots)
                .map(|g| a * ((g + 1) as f64).powf(a - 1.0))
                .collect(),
            random_non_queries,
        }
    }

    /// `pairs` distinct slots, each drawn in proportion to its weight among those left.
    fn query_slots(&self, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let mut w = self.slot_weight.clone();
        let mut chosen = Vec::with_capacity(self.pairs);
        for _ in 0..self.pairs {
            let total: f64 = w.iter().sum();
            let mut r = rng.gen::<f64>() * total;
            // Fall back to the last slot with weight left, against rounding at the end.
            let mut pick = w.iter().rposition(|&x| x > 0.0).unwrap_or(0);
            for (g, &x) in w.iter().enumerate() {
                if x > 0.0 && r < x {
                    pick = g;
                    break;
                }
                r -= x;
            }
            w[pick] = 0.0;
            chosen.push(pick);
        }
        chosen
    }

    fn generate(&self, rng: &mut ChaCha8Rng) -> Example {
        let half = self.vocab / 2;
        let keys: Vec<u32> = index::sample(rng, half as usize - 1, self.pairs)
            .iter()
            .map(|i| i as u32 + 1)
            .collect();
        let values: Vec<u32> = index::sample(rng, (self.vocab - half) as usize, self.pairs)
            .iter()
            .map(|i| i as u32 + half)
            .collect();
        let context = 2 * self.pairs;
        let mut x = vec![0u32; self.seq + 1];
        let mut labels = vec![IGNORE; self.seq + 1];
        for (j, (&k, &v)) in keys.iter().zip(&values).enumerate() {
            x[2 * j] = k;
            x[2 * j + 1] = v;
        }
        for (j, g) in self.query_slots(rng).into_iter().enumerate() {
            x[context + 2 * g] = keys[j];
            labels[context + 2 * g + 1] = values[j] as i32;
        }
        x.pop();
        if self.random_non_queries {
            for t in x.iter_mut().filter(|t| **t == 0) {
                *t = rng.gen_range(0..self.vocab);
            }
        }
        labels.remove(0);
        Example {
            inputs: x,
            targets: labels,
            domain: None,
        }
    }
}

fn make(p: &Params, seed: u64) -> Result<FixedTask, TaskError> {
    let vocab = p.usize("vocab");
    let seq = p.usize("seq_len");
    let pairs = p.usize("pairs");
    if seq % 2 != 0 {
        return Err(p.bad("seq_len", "must be even"));
    }
    if vocab <= seq {
        return Err(p.bad("vocab", format!("must be larger than seq_len ({seq})")));
    }
    if 4 * pairs > seq {
        return Err(p.bad("pairs", format!("must be at most seq_len/4 = {}", seq / 4)));
    }
    let gen = Mqar::new(
        vocab,
        seq,
        pairs,
        p.get("power_a"),
        p.flag("random_non_queries"),
    );
    FixedTask::generate(NAME, p, seed, vocab, seq, true, 1, |rng, _| {
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
    use std::collections::{HashMap, HashSet};

    /// Checks the layout of one row and returns the oracle's predictions: each context
    /// key is answered with its value wherever it appears after the context.
    fn oracle(x: &[u32], y: &[i32], vocab: u32, pairs: usize, random: bool) -> Vec<u32> {
        let ctx = 2 * pairs;
        let map: HashMap<u32, u32> = x[..ctx].chunks(2).map(|kv| (kv[0], kv[1])).collect();
        assert_eq!(map.len(), pairs, "keys are distinct");
        assert!(map.keys().all(|&k| (1..vocab / 2).contains(&k)));
        let values: HashSet<_> = map.values().collect();
        assert_eq!(values.len(), pairs, "values are distinct");
        assert!(values.iter().all(|&&v| (vocab / 2..vocab).contains(&v)));
        assert!(y[..ctx].iter().all(|&t| t == IGNORE));
        let mut queried = HashSet::new();
        for (t, &target) in y.iter().enumerate().skip(ctx) {
            if target != IGNORE {
                assert_eq!((t - ctx) % 2, 0, "queries sit on even region offsets");
                assert_eq!(map.get(&x[t]).map(|&v| v as i32), Some(target));
                assert!(queried.insert(x[t]), "each key is queried once");
            } else if !random {
                assert_eq!(x[t], 0, "unqueried region positions are 0");
            }
        }
        assert_eq!(queried.len(), pairs);
        x.iter()
            .enumerate()
            .map(|(t, k)| {
                if t >= ctx {
                    map.get(k).copied().unwrap_or(0)
                } else {
                    0
                }
            })
            .collect()
    }

    #[test]
    fn contract_and_disjoint() {
        check_contract(&spec(NAME, &[("train_examples", 500.0)]));
        check_disjoint(&make(&params(NAME, &[]), 1).unwrap());
    }

    #[test]
    fn layout_and_oracle() {
        for random in [0.0, 1.0] {
            let p = params(NAME, &[("random_non_queries", random), ("vocab", 100.0)]);
            let task = make(&p, 2).unwrap();
            for b in [all_test(&task), train_sample(&task, 100)] {
                let mut preds = Vec::new();
                for r in 0..b.batch {
                    preds.extend(oracle(
                        b.input_row(r),
                        b.target_row(r),
                        100,
                        8,
                        random == 1.0,
                    ));
                }
                assert_eq!(accuracy(&task, &preds, &b), 1.0);
                assert_eq!(b.scored_positions(), 8 * b.batch);
                let constant = vec![70; b.inputs.len()];
                assert!(accuracy(&task, &constant, &b) < 0.1, "chance is 1/50");
            }
            let zeros = all_test(&task).inputs.iter().filter(|&&t| t == 0).count();
            assert_eq!(
                zeros > 1000,
                random == 0.0,
                "gaps are 0 only without random fill"
            );
        }
    }

    #[test]
    fn queries_follow_the_power_law() {
        // 30 slots, 2 queries: with a = 0.01 about 80% land in the first half; uniform 50%.
        let first_half = |a: f64| {
            let p = params(
                NAME,
                &[("pairs", 2.0), ("power_a", a), ("test_examples", 2000.0)],
            );
            let b = all_test(&make(&p, 3).unwrap());
            let pos: Vec<usize> = b
                .targets
                .iter()
                .enumerate()
                .filter(|(_, &t)| t != IGNORE)
                .map(|(i, _)| i % 64)
                .collect();
            pos.iter().filter(|&&t| (t - 4) / 2 < 15).count() as f64 / pos.len() as f64
        };
        let skewed = first_half(0.01);
        let uniform = first_half(1.0);
        assert!(skewed > 0.72, "power law share {skewed}");
        assert!((uniform - 0.5).abs() < 0.05, "uniform share {uniform}");
    }

    #[test]
    fn bad_params() {
        assert_bad(&spec(NAME, &[("vocab", 64.0)]), "vocab");
        assert_bad(&spec(NAME, &[("pairs", 17.0)]), "pairs");
        assert_bad(&spec(NAME, &[("seq_len", 63.0)]), "seq_len");
        assert_bad(&spec(NAME, &[("power_a", 0.0)]), "power_a");
        assert_bad(
            &spec(NAME, &[("random_non_queries", 2.0)]),
            "random_non_queries",
        );
    }
}
