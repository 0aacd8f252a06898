//! Fixed train/test splits of generated sequences and the [`Task`] impl they share.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::params::Params;
use super::{Batch, Task, TaskError};

pub(super) const METRIC: &str = "accuracy";

/// Upper bound on generated tokens (train + test), so that a typo in a spec file gets an
/// error instead of exhausting memory: 16M tokens is ~128 MB of inputs and targets.
pub(super) const MAX_TOKENS: usize = 1 << 24;

/// RNG streams: one for the task's fixed structure, one per split.
const STREAM_STRUCTURE: u64 = 0;
const STREAM_TRAIN: u64 = 1;
const STREAM_TEST: u64 = 2;

/// Which split an example is generated for; some MAD tasks differ between the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Train,
    Test,
}

/// One generated sequence, already shifted where the task is shifted.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Example {
    pub inputs: Vec<u32>,
    pub targets: Vec<i32>,
    pub domain: Option<u32>,
}

/// Examples of one split, stored row-major.
#[derive(Clone, Debug, Default)]
pub(super) struct Split {
    seq: usize,
    inputs: Vec<u32>,
    targets: Vec<i32>,
    domains: Option<Vec<u32>>,
}

impl Split {
    fn with_capacity(seq: usize, n: usize) -> Self {
        Split {
            seq,
            inputs: Vec::with_capacity(seq * n),
            targets: Vec::with_capacity(seq * n),
            domains: None,
        }
    }

    fn push(&mut self, ex: Example) {
        debug_assert_eq!(ex.inputs.len(), self.seq);
        debug_assert_eq!(ex.targets.len(), self.seq);
        self.inputs.extend_from_slice(&ex.inputs);
        self.targets.extend_from_slice(&ex.targets);
        if let Some(d) = ex.domain {
            self.domains.get_or_insert_with(Vec::new).push(d);
        }
    }

    pub fn len(&self) -> usize {
        self.inputs.len() / self.seq.max(1)
    }

    pub(super) fn row(&self, i: usize) -> &[u32] {
        &self.inputs[i * self.seq..(i + 1) * self.seq]
    }

    /// Gathers the given rows into a batch.
    fn gather(&self, rows: impl Iterator<Item = usize>) -> Batch {
        let mut b = Batch {
            inputs: Vec::new(),
            targets: Vec::new(),
            batch: 0,
            seq: self.seq,
            domains: self.domains.as_ref().map(|_| Vec::new()),
        };
        for i in rows {
            let r = i * self.seq..(i + 1) * self.seq;
            b.inputs.extend_from_slice(&self.inputs[r.clone()]);
            b.targets.extend_from_slice(&self.targets[r]);
            if let (Some(out), Some(all)) = (b.domains.as_mut(), self.domains.as_ref()) {
                out.push(all[i]);
            }
            b.batch += 1;
        }
        b
    }
}

/// Checks the size limit shared by generated tasks.
pub(super) fn check_size(p: &Params, seq: usize) -> Result<(usize, usize), TaskError> {
    let n_train = p.usize("train_examples");
    let n_test = p.usize("test_examples");
    let tokens = (n_train + n_test).saturating_mul(seq);
    if tokens > MAX_TOKENS {
        return Err(p.bad(
            "train_examples",
            format!(
                "(train_examples + test_examples) x sequence length = {tokens} tokens, over the limit of {MAX_TOKENS}; use fewer examples or shorter sequences"
            ),
        ));
    }
    Ok((n_train, n_test))
}

/// Draws the training split, then test examples whose inputs differ from every training
/// sequence (rejection sampling). The generator must return sequences of length `seq`.
pub(super) fn generate_splits(
    task: &str,
    seed: u64,
    seq: usize,
    n_train: usize,
    n_test: usize,
    mut gen: impl FnMut(&mut ChaCha8Rng, Mode) -> Example,
) -> Result<(Split, Split), TaskError> {
    let mut rng = stream_rng(seed, STREAM_TRAIN);
    let mut train = Split::with_capacity(seq, n_train);
    for _ in 0..n_train {
        train.push(gen(&mut rng, Mode::Train));
    }

    let seen: HashSet<&[u32]> = (0..train.len()).map(|i| train.row(i)).collect();
    let mut rng = stream_rng(seed, STREAM_TEST);
    let mut test = Split::with_capacity(seq, n_test);
    // Generous budget: tasks whose space is nearly exhausted by the training split fail
    // with an actionable error instead of looping.
    let budget = 20 * n_test + 1000;
    let mut found = 0;
    for _ in 0..budget {
        if found == n_test {
            break;
        }
        let ex = gen(&mut rng, Mode::Test);
        if !seen.contains(ex.inputs.as_slice()) {
            test.push(ex);
            found += 1;
        }
    }
    if found < n_test {
        return Err(TaskError::SpaceTooSmall {
            task: task.to_string(),
            wanted: n_test,
            found,
        });
    }
    Ok((train, test))
}

/// A fresh generator on one stream of `seed`; streams never overlap.
fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Structure RNG for fixed tables and chains (independent of both splits).
pub(super) fn structure_rng(seed: u64) -> ChaCha8Rng {
    stream_rng(seed, STREAM_STRUCTURE)
}

/// A task whose examples are all generated up front.
pub(super) struct FixedTask {
    pub name: &'static str,
    pub vocab: usize,
    pub seq: usize,
    pub causal: bool,
    pub num_domains: usize,
    /// See [`Task::needs_context`].
    pub needs_context: bool,
    pub train: Split,
    pub test: Split,
}

impl FixedTask {
    /// Generates a task's train and test splits (sizes from `p`'s
    /// `train_examples`/`test_examples`, checked against the token limit)
    /// from `gen`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn generate(
        name: &'static str,
        p: &Params,
        seed: u64,
        vocab: usize,
        seq: usize,
        causal: bool,
        num_domains: usize,
        gen: impl FnMut(&mut ChaCha8Rng, Mode) -> Example,
    ) -> Result<FixedTask, TaskError> {
        let (n_train, n_test) = check_size(p, seq)?;
        let (train, test) = generate_splits(name, seed, seq, n_train, n_test, gen)?;
        Ok(FixedTask {
            name,
            vocab,
            seq,
            causal,
            num_domains,
            needs_context: true,
            train,
            test,
        })
    }
}

impl Task for FixedTask {
    fn name(&self) -> &str {
        self.name
    }

    fn vocab(&self) -> usize {
        self.vocab
    }

    fn seq_len(&self) -> usize {
        self.seq
    }

    fn causal(&self) -> bool {
        self.causal
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn train_batch(&self, _index: usize, batch_size: usize, rng: &mut ChaCha8Rng) -> Batch {
        let n = self.train.len();
        let rows: Vec<usize> = (0..batch_size).map(|_| rng.gen_range(0..n)).collect();
        self.train.gather(rows.into_iter())
    }

    fn test_batches(&self, batch_size: usize) -> Vec<Batch> {
        let n = self.test.len();
        let bs = batch_size.max(1);
        (0..n)
            .step_by(bs)
            .map(|start| self.test.gather(start..(start + bs).min(n)))
            .collect()
    }

    fn metric(&self) -> &'static str {
        METRIC
    }

    fn num_domains(&self) -> usize {
        self.num_domains
    }

    fn needs_context(&self) -> bool {
        self.needs_context
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(rng: &mut ChaCha8Rng, _: Mode) -> Example {
        // Only 4 distinct sequences exist.
        let a = rng.gen_range(0..2u32);
        let b = rng.gen_range(0..2u32);
        Example {
            inputs: vec![a, b],
            targets: vec![a as i32, b as i32],
            domain: None,
        }
    }

    #[test]
    fn test_split_avoids_training_sequences() {
        // 1 training draw leaves 3 sequences for the test split.
        let (train, test) = generate_splits("tiny", 3, 2, 1, 50, tiny).unwrap();
        for i in 0..test.len() {
            assert_ne!(test.row(i), train.row(0));
        }
    }

    #[test]
    fn exhausted_space_is_an_error_not_a_hang() {
        let err = generate_splits("tiny", 3, 2, 200, 5, tiny).unwrap_err();
        assert!(
            matches!(err, TaskError::SpaceTooSmall { found: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn test_split_does_not_depend_on_train_size() {
        let gen = |rng: &mut ChaCha8Rng, _: Mode| Example {
            inputs: (0..8).map(|_| rng.gen_range(0..1000)).collect(),
            targets: vec![0; 8],
            domain: None,
        };
        let (_, a) = generate_splits("t", 9, 8, 10, 20, gen).unwrap();
        let (_, b) = generate_splits("t", 9, 8, 300, 20, gen).unwrap();
        assert_eq!(a.inputs, b.inputs);
    }
}
