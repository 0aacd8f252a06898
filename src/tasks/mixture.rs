//! Mixtures of hidden domains, for testing whether MoE routing specialises.
//!
//! Each sequence comes from one of `K` domains, reported in `Batch::domains`. Without
//! separable sub-distributions a router has nothing to learn, so the domains differ
//! strongly:
//! - kind 0: `K` first-order Markov chains over one vocabulary, each transition row drawn
//!   from a symmetric Dirichlet with small concentration (peaked, so chains disagree).
//!   Targets are every next token.
//! - kind 1: `K` fact tables in the style of MAD memorization (Poli et al. 2024), over
//!   shared keys; a sequence lists `key value` pairs of its domain and the values are
//!   the targets. Total facts grow with `K`, which is where MoE capacity should help.
//!
//! With `tagged = 1` the sequence starts with a domain token (`vocab + domain`);
//! without it the domain has to be inferred from context (for kind 1 the first value of
//! a sequence is then a guess among the tables). Both kinds are shifted, hence causal.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

use super::dataset::{structure_rng, Example, FixedTask};
use super::params::{self, ParamInfo, Params};
use super::{Task, TaskError, TaskSpec, IGNORE};

pub(super) const NAME: &str = "moe_mixture";

pub(super) const PARAMS: &[ParamInfo] = &[
    ParamInfo::int("kind", 0.0, 0.0, 1.0, "0: K random Markov chains; 1: K key->value fact tables"),
    ParamInfo::int("domains", 4.0, 1.0, 256.0, "number of hidden domains K"),
    ParamInfo::int("tagged", 1.0, 0.0, 1.0, "1: start each sequence with a domain token; 0: the domain is latent"),
    ParamInfo::int("vocab", 32.0, 2.0, 65536.0, "data vocabulary shared by all domains (kind 1: keys are the lower half, at least 4); domain tokens come on top"),
    ParamInfo::int("seq_len", 64.0, 2.0, 65536.0, "model input length (the generator makes seq_len+1 tokens and shifts)"),
    ParamInfo::real("concentration", 0.1, 0.001, 100.0, "kind 0: Dirichlet concentration of each transition row; small means near-deterministic chains"),
    params::train_examples(4000.0),
    params::test_examples(256.0),
];

/// What generates the data tokens of one domain.
#[derive(Clone, Debug)]
enum Domains {
    /// Per domain, per state: cumulative transition probabilities.
    Markov(Vec<Vec<Vec<f64>>>),
    /// Per domain: value of each key (keys are `0..table.len()`).
    Facts(Vec<Vec<u32>>),
}

#[derive(Clone, Debug)]
struct Mixture {
    vocab: u32,
    seq: usize,
    tagged: bool,
    domains: Domains,
}

/// One Dirichlet(alpha, ..., alpha) draw over `n` outcomes, as a cumulative distribution.
/// Normalised Gamma(alpha) draws; at tiny alpha every draw can underflow to 0, and the
/// limit of the distribution is then a point mass at a uniform outcome, which we use.
fn dirichlet_cdf(rng: &mut ChaCha8Rng, gamma: &Gamma<f64>, n: usize) -> Vec<f64> {
    let mut w: Vec<f64> = (0..n).map(|_| gamma.sample(rng)).collect();
    let total: f64 = w.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        w.iter_mut().for_each(|x| *x = 0.0);
        w[rng.gen_range(0..n)] = 1.0;
    }
    let total: f64 = w.iter().sum();
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = w
        .iter()
        .map(|x| {
            acc += x / total;
            acc
        })
        .collect();
    // Exactly 1 at the end, so a uniform draw in [0, 1) always lands on an outcome.
    cdf[n - 1] = 1.0;
    cdf
}

/// Draws from a cumulative distribution that ends at exactly 1.
fn sample_cdf(rng: &mut ChaCha8Rng, cdf: &[f64]) -> u32 {
    let r: f64 = rng.gen();
    cdf.partition_point(|&c| c <= r) as u32
}

impl Mixture {
    fn num_domains(&self) -> usize {
        match &self.domains {
            Domains::Markov(d) => d.len(),
            Domains::Facts(d) => d.len(),
        }
    }

    fn generate(&self, rng: &mut ChaCha8Rng) -> Example {
        let d = rng.gen_range(0..self.num_domains());
        let total = self.seq + 1;
        let mut x = Vec::with_capacity(total);
        let mut labels = Vec::with_capacity(total);
        if self.tagged {
            x.push(self.vocab + d as u32);
            labels.push(IGNORE);
        }
        match &self.domains {
            Domains::Markov(chains) => {
                // The first state is uniform, so it is not a target after a tag.
                let mut s = rng.gen_range(0..self.vocab);
                x.push(s);
                labels.push(IGNORE);
                while x.len() < total {
                    s = sample_cdf(rng, &chains[d][s as usize]);
                    x.push(s);
                    labels.push(s as i32);
                }
            }
            Domains::Facts(tables) => {
                let table = &tables[d];
                while x.len() < total {
                    let k = rng.gen_range(0..table.len());
                    x.push(k as u32);
                    labels.push(IGNORE);
                    x.push(table[k]);
                    labels.push(table[k] as i32);
                }
                x.truncate(total);
                labels.truncate(total);
            }
        }
        x.pop();
        labels.remove(0);
        Example {
            inputs: x,
            targets: labels,
            domain: Some(d as u32),
        }
    }
}

fn make(p: &Params, seed: u64) -> Result<FixedTask, TaskError> {
    let vocab = p.usize("vocab");
    let seq = p.usize("seq_len");
    let k = p.usize("domains");
    let tagged = p.flag("tagged");
    let mut rng = structure_rng(seed);
    let domains = if p.usize("kind") == 0 {
        let alpha = p.get("concentration");
        let gamma = Gamma::new(alpha, 1.0).map_err(|e| p.bad("concentration", e.to_string()))?;
        if k.saturating_mul(vocab).saturating_mul(vocab) > 1 << 24 {
            return Err(p.bad("vocab", "domains x vocab^2 transition entries must stay under 16M; use a smaller vocab or fewer domains"));
        }
        Domains::Markov(
            (0..k)
                .map(|_| {
                    (0..vocab)
                        .map(|_| dirichlet_cdf(&mut rng, &gamma, vocab))
                        .collect()
                })
                .collect(),
        )
    } else {
        if vocab < 4 {
            return Err(p.bad(
                "vocab",
                "must be at least 4 for kind 1 (2 keys and 2 values)",
            ));
        }
        let keys = vocab / 2;
        Domains::Facts(
            (0..k)
                .map(|_| {
                    let mut values: Vec<u32> = (keys as u32..vocab as u32).collect();
                    values.shuffle(&mut rng);
                    values.truncate(keys);
                    values
                })
                .collect(),
        )
    };
    let gen = Mixture {
        vocab: vocab as u32,
        seq,
        tagged,
        domains,
    };
    FixedTask::generate(
        NAME,
        p,
        seed,
        vocab + if tagged { k } else { 0 },
        seq,
        true,
        k,
        |rng, _| gen.generate(rng),
    )
    .map(|t| FixedTask {
        // Each domain's next token follows from the current one (and the
        // domain tag): a per-token model beats chance.
        needs_context: false,
        ..t
    })
}

pub(super) fn build(p: &Params, _: &TaskSpec, seed: u64) -> Result<Box<dyn Task>, TaskError> {
    Ok(Box::new(make(p, seed)?))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use std::collections::HashMap;

    fn mix(pairs: &[(&str, f64)]) -> FixedTask {
        make(&params(NAME, pairs), 1).unwrap()
    }

    #[test]
    fn contract_and_disjoint() {
        for kind in [0.0, 1.0] {
            for tagged in [0.0, 1.0] {
                let s = [
                    ("kind", kind),
                    ("tagged", tagged),
                    ("train_examples", 500.0),
                ];
                check_contract(&spec(NAME, &s));
                let task = mix(&s);
                assert_eq!(task.num_domains(), 4);
                assert_eq!(task.vocab(), 32 + 4 * tagged as usize);
                check_disjoint(&task);
            }
        }
    }

    #[test]
    fn markov_targets_are_next_tokens_and_tags_match_domains() {
        for tagged in [true, false] {
            let task = mix(&[("tagged", tagged as u8 as f64)]);
            let b = train_sample(&task, 300);
            let domains = b.domains.as_ref().unwrap();
            for (r, &domain) in domains.iter().enumerate() {
                let (x, y) = (b.input_row(r), b.target_row(r));
                let data = if tagged {
                    assert_eq!(x[0], 32 + domain, "tag is vocab + domain");
                    assert_eq!(y[0], IGNORE, "the first state after the tag is uniform");
                    1
                } else {
                    0
                };
                assert!(x[data..].iter().all(|&t| t < 32));
                let next: Vec<i32> = x[data + 1..].iter().map(|&t| t as i32).collect();
                assert_eq!(&y[data..b.seq - 1], next.as_slice());
            }
            // All domains occur about equally often.
            let mut counts = [0usize; 4];
            domains.iter().for_each(|&d| counts[d as usize] += 1);
            assert!(counts.iter().all(|&c| c > 40), "{counts:?}");
        }
    }

    /// Per-domain bigram models fitted on training sequences classify held-out sequences
    /// by likelihood; this fails if domains are alike or labels are wrong.
    #[test]
    fn markov_domains_are_distinguishable_from_bigrams() {
        let task = mix(&[("tagged", 0.0)]);
        let train = train_sample(&task, 2000);
        let v = 32;
        let mut counts = vec![vec![1.0f64; v * v]; 4];
        for r in 0..train.batch {
            let d = train.domains.as_ref().unwrap()[r] as usize;
            for w in train.input_row(r).windows(2) {
                counts[d][w[0] as usize * v + w[1] as usize] += 1.0;
            }
        }
        let logp: Vec<Vec<f64>> = counts
            .iter()
            .map(|c| {
                (0..v * v)
                    .map(|i| {
                        let row: f64 = c[i / v * v..(i / v + 1) * v].iter().sum();
                        (c[i] / row).ln()
                    })
                    .collect()
            })
            .collect();
        let test = all_test(&task);
        let mut correct = 0;
        for r in 0..test.batch {
            let ll = |d: usize| -> f64 {
                test.input_row(r)
                    .windows(2)
                    .map(|w| logp[d][w[0] as usize * v + w[1] as usize])
                    .sum()
            };
            let best = (0..4).max_by(|&a, &b| ll(a).total_cmp(&ll(b))).unwrap();
            correct += usize::from(best == test.domains.as_ref().unwrap()[r] as usize);
        }
        assert!(
            correct as f64 / test.batch as f64 > 0.95,
            "{correct}/{}",
            test.batch
        );
    }

    #[test]
    fn facts_are_consistent_within_and_differ_across_domains() {
        for tagged in [true, false] {
            let task = mix(&[("kind", 1.0), ("tagged", tagged as u8 as f64)]);
            let b = train_sample(&task, 1000);
            let mut tables: Vec<HashMap<u32, u32>> = vec![HashMap::new(); 4];
            for r in 0..b.batch {
                let d = b.domains.as_ref().unwrap()[r] as usize;
                let (x, y) = (b.input_row(r), b.target_row(r));
                let start = usize::from(tagged);
                if tagged {
                    assert_eq!(x[0], 32 + d as u32);
                    assert_eq!(y[0], IGNORE);
                }
                for t in start..b.seq {
                    if (t - start) % 2 == 0 {
                        assert!(x[t] < 16, "key slot");
                        assert!(y[t] >= 16, "value targets follow keys");
                        let v = *tables[d].entry(x[t]).or_insert(y[t] as u32);
                        assert_eq!(v as i32, y[t], "one value per key within a domain");
                    } else {
                        assert!(x[t] >= 16 && x[t] < 32, "value slot");
                        assert_eq!(y[t], IGNORE);
                        assert_eq!(tables[d][&x[t - 1]], x[t], "value input matches the fact");
                    }
                }
            }
            for (a, ta) in tables.iter().enumerate() {
                assert_eq!(ta.len(), 16);
                for tb in &tables[a + 1..] {
                    let same = (0..16).filter(|k| ta[k] == tb[k]).count();
                    assert!(same < 6, "tables too alike: {same} shared facts");
                }
            }
        }
    }

    #[test]
    fn oracle_and_chance_on_facts() {
        // With a tag, the tables read off the training split answer every test target.
        let task = mix(&[("kind", 1.0)]);
        let train = train_sample(&task, 1000);
        let mut table = HashMap::new();
        for r in 0..train.batch {
            let d = train.domains.as_ref().unwrap()[r];
            for (t, &y) in train.target_row(r).iter().enumerate() {
                if y != IGNORE {
                    table.insert((d, train.input_row(r)[t]), y as u32);
                }
            }
        }
        let test = all_test(&task);
        let preds: Vec<u32> = (0..test.batch)
            .flat_map(|r| {
                let tag = test.input_row(r)[0] - 32;
                test.input_row(r)
                    .iter()
                    .map(move |&x| (tag, x))
                    .collect::<Vec<_>>()
            })
            .map(|key| table.get(&key).copied().unwrap_or(0))
            .collect();
        assert_eq!(accuracy(&task, &preds, &test), 1.0);
        assert!(accuracy(&task, &vec![20; preds.len()], &test) < 0.15);
    }

    #[test]
    fn bad_params() {
        assert_bad(&spec(NAME, &[("kind", 2.0)]), "kind");
        assert_bad(&spec(NAME, &[("kind", 1.0), ("vocab", 3.0)]), "vocab");
        assert_bad(&spec(NAME, &[("concentration", 0.0)]), "concentration");
        assert_bad(&spec(NAME, &[("domains", 0.0)]), "domains");
        assert_bad(&spec(NAME, &[("vocab", 4096.0), ("domains", 4.0)]), "vocab");
    }

    #[test]
    fn tiny_concentration_still_gives_distributions() {
        // Near-deterministic chains have few distinct sequences, so few training ones.
        let task = mix(&[
            ("concentration", 0.001),
            ("vocab", 64.0),
            ("train_examples", 50.0),
            ("test_examples", 20.0),
        ]);
        assert!(all_test(&task).inputs.iter().all(|&t| t < 68));
    }
}
