//! MAD selective copying (Poli et al. 2024, arXiv 2403.17844).
//!
//! `n` data tokens are scattered among BLANKs; after a COPY marker come `n` BLANKs, and
//! at the k-th of them the model must output the k-th data token. Not shifted: the
//! answer never appears later in the input, so a model that sees the future gains
//! nothing and the task is not causal.

use rand::seq::index;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::dataset::{Example, FixedTask};
use super::params::{self, ParamInfo, Params};
use super::{Task, TaskError, TaskSpec, IGNORE};

pub(super) const NAME: &str = "selective_copying";

pub(super) const PARAMS: &[ParamInfo] = &[
    ParamInfo::int(
        "vocab",
        16.0,
        3.0,
        65536.0,
        "vocabulary: COPY = vocab-1, BLANK = vocab-2, data tokens below",
    ),
    ParamInfo::int(
        "seq_len",
        64.0,
        4.0,
        65536.0,
        "sequence length; at least 2*copy_tokens+2 so that some BLANKs are scattered",
    ),
    ParamInfo::int(
        "copy_tokens",
        8.0,
        1.0,
        32768.0,
        "number of data tokens to copy",
    ),
    params::train_examples(4000.0),
    params::test_examples(256.0),
];

#[derive(Clone, Debug)]
struct Copying {
    copy: u32,
    blank: u32,
    n: usize,
    seq: usize,
}

impl Copying {
    fn generate(&self, rng: &mut ChaCha8Rng) -> Example {
        let region = self.seq - self.n - 1;
        let data: Vec<u32> = (0..self.n).map(|_| rng.gen_range(0..self.blank)).collect();
        // Data positions are a uniform n-subset of the region (every gap, including
        // before the first and after the last data token, can hold BLANKs).
        let mut at = index::sample(rng, region, self.n).into_vec();
        at.sort_unstable();
        let mut inputs = vec![self.blank; self.seq];
        for (&pos, &d) in at.iter().zip(&data) {
            inputs[pos] = d;
        }
        inputs[region] = self.copy;
        let mut targets = vec![IGNORE; region + 1];
        targets.extend(data.iter().map(|&d| d as i32));
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
    let n = p.usize("copy_tokens");
    if seq < 2 * n + 2 {
        return Err(p.bad(
            "copy_tokens",
            format!(
                "must be at most (seq_len - 2) / 2 = {} for seq_len {seq}",
                (seq - 2) / 2
            ),
        ));
    }
    let gen = Copying {
        copy: (vocab - 1) as u32,
        blank: (vocab - 2) as u32,
        n,
        seq,
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

    #[test]
    fn contract_and_disjoint() {
        check_contract(&spec(NAME, &[("train_examples", 500.0)]));
        let task = make(&params(NAME, &[]), 1).unwrap();
        check_disjoint(&task);
    }

    #[test]
    fn targets_are_the_data_tokens_in_order() {
        let task = make(&params(NAME, &[]), 2).unwrap();
        let (copy, blank, n) = (15, 14, 8);
        for b in [all_test(&task), train_sample(&task, 200)] {
            let mut preds = Vec::new();
            for r in 0..b.batch {
                let (x, y) = (b.input_row(r), b.target_row(r));
                let marker = x.iter().position(|&t| t == copy).unwrap();
                assert_eq!(marker, 64 - n - 1, "COPY sits before the last n positions");
                assert!(x[marker + 1..].iter().all(|&t| t == blank));
                let data: Vec<u32> = x[..marker]
                    .iter()
                    .copied()
                    .filter(|&t| t != blank)
                    .collect();
                assert_eq!(data.len(), n);
                assert!(y[..=marker].iter().all(|&t| t == IGNORE));
                let expected: Vec<i32> = data.iter().map(|&d| d as i32).collect();
                assert_eq!(&y[marker + 1..], expected.as_slice());
                // Oracle: read the data tokens off the input.
                preds.extend(vec![0; marker + 1]);
                preds.extend(data);
            }
            assert_eq!(accuracy(&task, &preds, &b), 1.0);
            let constant = vec![0; b.inputs.len()];
            assert!(accuracy(&task, &constant, &b) < 0.2, "chance is 1/14");
        }
    }

    #[test]
    fn blanks_fall_in_every_gap() {
        // The first region position is sometimes BLANK and the last one sometimes data.
        let task = make(&params(NAME, &[]), 3).unwrap();
        let b = all_test(&task);
        let rows: Vec<&[u32]> = (0..b.batch).map(|r| b.input_row(r)).collect();
        assert!(rows.iter().any(|x| x[0] == 14));
        assert!(rows.iter().any(|x| x[54] != 14));
    }

    #[test]
    fn bad_params() {
        assert_bad(&spec(NAME, &[("copy_tokens", 32.0)]), "copy_tokens");
        assert_bad(&spec(NAME, &[("vocab", 2.0)]), "vocab");
    }
}
