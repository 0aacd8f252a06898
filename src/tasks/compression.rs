//! MAD compression (Poli et al. 2024, arXiv 2403.17844), adapted to an unchanged model.
//!
//! In MAD the candidate layers read `L-1` random tokens and a COMP token, and only the
//! hidden state at COMP reaches a fixed decoder that must rebuild every token from that
//! one vector plus position embeddings. We train the candidate as it is, so the
//! adaptation keeps the input (`n` random tokens, then COMP) and asks the model itself
//! to reproduce the sequence after the marker: the input continues with `n-1` more COMP
//! tokens, and at the marker and each following position the target is the next original
//! token. What changes: a model that can look back (attention) may copy instead of
//! compressing, so for it this is a copying task; for fixed-state layers (recurrences,
//! finite convolutions) the score still measures how much of the sequence fits in the
//! state. Unlike selective copying there are no blanks to skip and every token counts.
//! Not shifted, and the future holds only COMP tokens, so the task is not causal.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::dataset::{Example, FixedTask};
use super::params::{self, ParamInfo, Params};
use super::{Task, TaskError, TaskSpec, IGNORE};

pub(super) const NAME: &str = "compression";

pub(super) const PARAMS: &[ParamInfo] = &[
    ParamInfo::int(
        "vocab",
        16.0,
        3.0,
        65536.0,
        "vocabulary: COMP = vocab-1, data tokens below",
    ),
    ParamInfo::int(
        "seq_len",
        32.0,
        2.0,
        65536.0,
        "model input length, even: seq_len/2 data tokens, then seq_len/2 reconstruction positions",
    ),
    params::train_examples(4000.0),
    params::test_examples(256.0),
];

#[derive(Clone, Debug)]
struct Compression {
    comp: u32,
    n: usize,
}

impl Compression {
    fn generate(&self, rng: &mut ChaCha8Rng) -> Example {
        let data: Vec<u32> = (0..self.n).map(|_| rng.gen_range(0..self.comp)).collect();
        let mut inputs = data.clone();
        inputs.extend(std::iter::repeat_n(self.comp, self.n));
        let mut targets = vec![IGNORE; self.n];
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
    if seq % 2 != 0 {
        return Err(p.bad("seq_len", "must be even (half data, half reconstruction)"));
    }
    let gen = Compression {
        comp: (vocab - 1) as u32,
        n: seq / 2,
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
        check_disjoint(&make(&params(NAME, &[]), 1).unwrap());
    }

    #[test]
    fn targets_reproduce_the_sequence_after_the_marker() {
        let task = make(&params(NAME, &[("vocab", 8.0), ("seq_len", 20.0)]), 2).unwrap();
        let b = all_test(&task);
        let mut preds = Vec::new();
        for r in 0..b.batch {
            let (x, y) = (b.input_row(r), b.target_row(r));
            assert!(x[..10].iter().all(|&t| t < 7), "data never uses COMP");
            assert!(x[10..].iter().all(|&t| t == 7));
            assert!(y[..10].iter().all(|&t| t == IGNORE));
            let data: Vec<i32> = x[..10].iter().map(|&t| t as i32).collect();
            assert_eq!(&y[10..], data.as_slice());
            preds.extend(vec![7; 10]);
            preds.extend_from_slice(&x[..10]);
        }
        assert_eq!(accuracy(&task, &preds, &b), 1.0);
        let constant = vec![0; b.inputs.len()];
        assert!(accuracy(&task, &constant, &b) < 0.25, "chance is 1/7");
    }

    #[test]
    fn bad_params() {
        assert_bad(&spec(NAME, &[("seq_len", 31.0)]), "seq_len");
        assert_bad(&spec(NAME, &[("vocab", 2.0)]), "vocab");
    }
}
