//! Checks shared by the task tests: determinism, shapes, vocabulary bounds, errors.

use std::collections::{BTreeMap, HashSet};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::dataset::FixedTask;
use super::params::Params;
use super::{build, Batch, Task, TaskError, TaskSpec, ENTRIES, IGNORE};

pub fn spec(name: &str, pairs: &[(&str, f64)]) -> TaskSpec {
    let mut s = TaskSpec::new(name);
    for &(k, v) in pairs {
        s = s.with(k, v);
    }
    s
}

/// Resolved parameters, as `build` would pass them to the task module.
pub fn params(name: &str, pairs: &[(&str, f64)]) -> Params {
    let entry = ENTRIES.iter().find(|e| e.name == name).unwrap();
    let given: BTreeMap<String, f64> = pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    Params::resolve(entry.name, entry.params, &given).unwrap()
}

/// The whole test split as one batch.
pub fn all_test(task: &dyn Task) -> Batch {
    let mut batches = task.test_batches(usize::MAX);
    assert_eq!(batches.len(), 1);
    batches.pop().unwrap()
}

/// A large training batch drawn with a fixed rng.
pub fn train_sample(task: &dyn Task, n: usize) -> Batch {
    task.train_batch(0, n, &mut ChaCha8Rng::seed_from_u64(11))
}

fn check_batch(task: &dyn Task, b: &Batch) {
    assert_eq!(b.seq, task.seq_len());
    assert_eq!(b.inputs.len(), b.batch * b.seq);
    assert_eq!(b.targets.len(), b.batch * b.seq);
    if let Some(d) = &b.domains {
        assert_eq!(d.len(), b.batch);
        assert!(d.iter().all(|&d| (d as usize) < task.num_domains()));
    }
    let v = task.vocab();
    assert!(
        b.inputs.iter().all(|&x| (x as usize) < v),
        "input out of vocab"
    );
    assert!(
        b.targets
            .iter()
            .all(|&t| t == IGNORE || (t >= 0 && (t as usize) < v)),
        "target out of vocab"
    );
}

/// Determinism, shapes, batching and vocabulary bounds of a buildable spec.
pub fn check_contract(spec: &TaskSpec) {
    let a = build(spec, 5).unwrap();
    let b = build(spec, 5).unwrap();
    let c = build(spec, 6).unwrap();
    assert_eq!(
        a.test_batches(7),
        b.test_batches(7),
        "same seed, same test split"
    );
    assert_ne!(
        all_test(&*a).inputs,
        all_test(&*c).inputs,
        "seed must matter"
    );
    assert_eq!(train_sample(&*a, 64), train_sample(&*b, 64));

    let all = all_test(&*a);
    assert!(all.scored_positions() > 0);
    let batches = a.test_batches(7);
    assert_eq!(batches.iter().map(|b| b.batch).sum::<usize>(), all.batch);
    assert!(batches[..batches.len() - 1].iter().all(|b| b.batch == 7));
    for batch in &batches {
        check_batch(&*a, batch);
    }
    let train = train_sample(&*a, 256);
    assert_eq!(train.batch, 256);
    check_batch(&*a, &train);
    assert!(train.scored_positions() > 0);
    assert_eq!(
        a.train_batch(3, 0, &mut ChaCha8Rng::seed_from_u64(0)).batch,
        0
    );
    assert!(a.train_len() > 0);
}

/// No test sequence equals a training sequence.
pub fn check_disjoint(task: &FixedTask) {
    let rows: HashSet<&[u32]> = (0..task.train_len()).map(|i| task.train.row(i)).collect();
    let test = all_test(task);
    for r in 0..test.batch {
        assert!(
            !rows.contains(test.input_row(r)),
            "test row {r} is a training sequence"
        );
    }
}

/// Building `spec` fails with a `BadValue` that names `param`.
pub fn assert_bad(spec: &TaskSpec, param: &str) {
    match build(spec, 0) {
        Err(e @ TaskError::BadValue { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("`{param}`")), "{msg}");
        }
        Err(e) => panic!("expected BadValue for {param}, got {e}"),
        Ok(_) => panic!("expected BadValue for {param}, got a task"),
    }
}

/// Accuracy of `predictions` on `batch`.
pub fn accuracy(task: &dyn Task, predictions: &[u32], batch: &Batch) -> f64 {
    let (credit, n) = task.score(predictions, batch);
    credit / n as f64
}
