//! Next-token language modelling on a token stream read from the user's
//! files, shared by `char_lm` and `token_lm`: the stream comes in two parts
//! split by position, so no held-out token is ever inside a training window.
//! Training windows are any `seq + 1` consecutive tokens of the first part;
//! test windows tile the held-out part with stride `seq` (each held-out
//! token after the first is a target once), an evenly spread subset of
//! them when there are more than asked for. Windows are shifted (next-token
//! prediction), hence causal.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::dataset::METRIC;
use super::{Batch, Task};

pub(super) struct LmTask {
    pub name: &'static str,
    pub vocab: usize,
    pub seq: usize,
    pub train: Vec<u32>,
    pub held: Vec<u32>,
    /// Starts of the test windows in `held`.
    pub test_starts: Vec<usize>,
}

impl LmTask {
    /// `None` when either part is shorter than one window (`seq + 1` tokens).
    pub fn new(
        name: &'static str,
        vocab: usize,
        seq: usize,
        train: Vec<u32>,
        held: Vec<u32>,
        test_examples: usize,
    ) -> Option<LmTask> {
        if train.len() <= seq || held.len() <= seq {
            return None;
        }
        let available = (held.len() - 1) / seq;
        let wanted = test_examples.clamp(1, available);
        let test_starts = (0..wanted)
            .map(|j| (j * available / wanted) * seq)
            .collect();
        Some(LmTask {
            name,
            vocab,
            seq,
            train,
            held,
            test_starts,
        })
    }

    fn window(&self, part: &[u32], start: usize, batch: &mut Batch) {
        let w = &part[start..start + self.seq + 1];
        batch.inputs.extend_from_slice(&w[..self.seq]);
        batch.targets.extend(w[1..].iter().map(|&t| t as i32));
        batch.batch += 1;
    }

    fn empty(&self) -> Batch {
        Batch {
            inputs: Vec::new(),
            targets: Vec::new(),
            batch: 0,
            seq: self.seq,
            domains: None,
        }
    }
}

impl Task for LmTask {
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
        true
    }

    fn train_len(&self) -> usize {
        self.train.len() - self.seq
    }

    fn train_batch(&self, _index: usize, batch_size: usize, rng: &mut ChaCha8Rng) -> Batch {
        let mut b = self.empty();
        for _ in 0..batch_size {
            let start = rng.gen_range(0..self.train_len());
            self.window(&self.train, start, &mut b);
        }
        b
    }

    fn test_batches(&self, batch_size: usize) -> Vec<Batch> {
        self.test_starts
            .chunks(batch_size.max(1))
            .map(|starts| {
                let mut b = self.empty();
                starts
                    .iter()
                    .for_each(|&s| self.window(&self.held, s, &mut b));
                b
            })
            .collect()
    }

    /// A per-token (bigram) model already beats chance on text.
    fn needs_context(&self) -> bool {
        false
    }

    fn metric(&self) -> &'static str {
        METRIC
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn task(train: usize, held: usize, seq: usize, tests: usize) -> Option<LmTask> {
        let stream: Vec<u32> = (0..(train + held) as u32).map(|t| t % 97).collect();
        let (a, b) = stream.split_at(train);
        LmTask::new("t", 97, seq, a.to_vec(), b.to_vec(), tests)
    }

    #[test]
    fn each_part_needs_one_window() {
        assert!(task(4, 100, 4, 8).is_none());
        assert!(task(100, 4, 4, 8).is_none());
        assert!(task(5, 5, 4, 8).is_some());
    }

    #[test]
    fn test_windows_tile_the_held_out_part_evenly() {
        // 41 held-out tokens: (41 - 1) / 4 = 10 windows of 4 targets.
        let t = task(50, 41, 4, 100).unwrap();
        assert_eq!(t.test_starts, (0..10).map(|j| j * 4).collect::<Vec<_>>());
        let b = &t.test_batches(usize::MAX)[0];
        let targets: Vec<i32> = t.held[1..41].iter().map(|&x| x as i32).collect();
        assert_eq!(b.targets, targets);
        // Fewer asked for: spread over the whole part, stride a multiple of seq.
        let t = task(50, 41, 4, 3).unwrap();
        assert_eq!(t.test_starts, vec![0, 12, 24]);
    }

    #[test]
    fn training_windows_are_shifted_and_inside_the_training_part() {
        let t = task(30, 20, 5, 2).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let b = t.train_batch(0, 200, &mut rng);
        for r in 0..b.batch {
            let (x, y) = (b.input_row(r), b.target_row(r));
            let start = t
                .train
                .windows(5)
                .position(|w| w == x)
                .expect("a training window");
            assert!(start + 5 < t.train.len());
            assert_eq!(y[4], t.train[start + 5] as i32);
            assert_eq!(
                &y[..4],
                &x[1..].iter().map(|&v| v as i32).collect::<Vec<_>>()[..]
            );
        }
    }
}
