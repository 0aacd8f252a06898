//! A cheap model of score from architecture, fitted on the candidates a run
//! has trained, so a strategy can rank many untrained candidates and train
//! only the promising ones (sequential model-based optimisation).
//!
//! The model is an ensemble: each member is fitted on its own bootstrap
//! resample, and the spread of the members' predictions is the uncertainty
//! an acquisition function trades against the mean (as SMAC's random
//! forest does, Hutter et al. 2011). This module knows features and
//! numbers only, nothing of runs, stores or strategies.

pub mod features;

use crate::stats::{kendall_tau, mean, sd};
use rand::Rng;
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::metrics::distance::euclidian::Euclidian;
use smartcore::neighbors::knn_regressor::{KNNRegressor, KNNRegressorParameters};

/// Members of an ensemble.
pub const MEMBERS: usize = 24;

/// The model class of the members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Randomised regression trees (one tree of a random forest each: a
    /// bootstrap sample, a third of the features tried per split).
    Forest,
    /// The mean score of the k = 5 nearest trained candidates in
    /// standardised feature space, one per bootstrap sample.
    Neighbours,
}

impl ModelKind {
    pub const ALL: [ModelKind; 2] = [ModelKind::Forest, ModelKind::Neighbours];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Forest => "forest",
            ModelKind::Neighbours => "knn",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SurrogateError {
    #[error("a surrogate needs at least {need} scored candidates, got {got}")]
    TooFew { need: usize, got: usize },
    #[error("feature rows of different lengths ({0} and {1})")]
    Ragged(usize, usize),
    #[error("the surrogate's learner failed")]
    Fit(#[from] smartcore::error::Failed),
}

/// The fewest points a surrogate is fitted on.
pub const MIN_POINTS: usize = 4;

type Forest = RandomForestRegressor<f64, f64, DenseMatrix<f64>, Vec<f64>>;
type Knn = KNNRegressor<f64, f64, DenseMatrix<f64>, Vec<f64>, Euclidian<f64>>;

/// Neighbours a k-nearest-neighbour member averages.
const NEIGHBOURS: usize = 5;

enum Member {
    Forest(Forest),
    Knn(Knn),
}

/// A prediction: the members' mean and their spread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    pub mean: f64,
    pub sd: f64,
}

/// A fitted ensemble.
pub struct Surrogate {
    members: Vec<Member>,
    /// Per feature: mean and scale used to standardise (distances need it;
    /// trees do not care, and it costs nothing to share the path).
    centre: Vec<f64>,
    scale: Vec<f64>,
}

impl Surrogate {
    /// Fits `MEMBERS` members of `kind` on rows `xs` with targets `ys`;
    /// `seed` fixes the bootstrap samples and the trees' randomness.
    pub fn fit(
        kind: ModelKind,
        xs: &[Vec<f64>],
        ys: &[f64],
        seed: u64,
    ) -> Result<Surrogate, SurrogateError> {
        if xs.len() < MIN_POINTS || xs.len() != ys.len() {
            return Err(SurrogateError::TooFew {
                need: MIN_POINTS,
                got: xs.len().min(ys.len()),
            });
        }
        let width = xs[0].len();
        if let Some(r) = xs.iter().find(|r| r.len() != width) {
            return Err(SurrogateError::Ragged(width, r.len()));
        }
        let (centre, scale) = standardiser(xs);
        let rows: Vec<Vec<f64>> = xs.iter().map(|r| apply(r, &centre, &scale)).collect();
        let mut rng = crate::seed::rng(seed, "surrogate", 0);
        let mut members = Vec::with_capacity(MEMBERS);
        for m in 0..MEMBERS {
            // Each member sees its own bootstrap sample of the points.
            let pick: Vec<usize> = (0..rows.len())
                .map(|_| rng.gen_range(0..rows.len()))
                .collect();
            let bx: Vec<Vec<f64>> = pick.iter().map(|&i| rows[i].clone()).collect();
            let by: Vec<f64> = pick.iter().map(|&i| ys[i]).collect();
            let x = DenseMatrix::from_2d_vec(&bx)?;
            members.push(match kind {
                ModelKind::Forest => {
                    let params = RandomForestRegressorParameters::default()
                        .with_n_trees(1)
                        .with_m((width / 3).max(1))
                        .with_min_samples_leaf(2)
                        .with_seed(seed.wrapping_add(m as u64));
                    Member::Forest(Forest::fit(&x, &by, params)?)
                }
                ModelKind::Neighbours => {
                    let params =
                        KNNRegressorParameters::default().with_k(NEIGHBOURS.min(rows.len()));
                    Member::Knn(Knn::fit(&x, &by, params)?)
                }
            });
        }
        Ok(Surrogate {
            members,
            centre,
            scale,
        })
    }

    /// Predictions for each row of `xs`.
    pub fn predict(&self, xs: &[Vec<f64>]) -> Result<Vec<Prediction>, SurrogateError> {
        if xs.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<Vec<f64>> = xs
            .iter()
            .map(|r| apply(r, &self.centre, &self.scale))
            .collect();
        let x = DenseMatrix::from_2d_vec(&rows)?;
        let mut per_member = Vec::with_capacity(self.members.len());
        for m in &self.members {
            let p = match m {
                Member::Forest(f) => f.predict(&x),
                Member::Knn(k) => k.predict(&x),
            };
            per_member.push(p?);
        }
        Ok((0..xs.len())
            .map(|i| {
                let v: Vec<f64> = per_member.iter().map(|p| p[i]).collect();
                Prediction {
                    mean: mean(&v),
                    sd: sd(&v),
                }
            })
            .collect())
    }
}

/// Per-feature mean and standard deviation (1 where a feature is constant).
fn standardiser(xs: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let width = xs[0].len();
    let col = |j: usize| xs.iter().map(|r| r[j]).collect::<Vec<f64>>();
    let centre: Vec<f64> = (0..width).map(|j| mean(&col(j))).collect();
    let scale: Vec<f64> = (0..width)
        .map(|j| {
            let s = sd(&col(j));
            if s > 1e-12 {
                s
            } else {
                1.0
            }
        })
        .collect();
    (centre, scale)
}

fn apply(r: &[f64], centre: &[f64], scale: &[f64]) -> Vec<f64> {
    r.iter()
        .zip(centre.iter().zip(scale))
        .map(|(x, (c, s))| (x - c) / s)
        .collect()
}

/// Kendall τ between held-out predictions and the true scores, from
/// `folds`-fold cross-validation (each point predicted by a model that did
/// not see it); `None` when there are too few points for it.
pub fn cross_validated_tau(
    kind: ModelKind,
    xs: &[Vec<f64>],
    ys: &[f64],
    folds: usize,
    seed: u64,
) -> Result<Option<f64>, SurrogateError> {
    let n = xs.len();
    let folds = folds.min(n);
    if folds < 2 || n - n.div_ceil(folds) < MIN_POINTS {
        return Ok(None);
    }
    let mut predicted = vec![0.0; n];
    for f in 0..folds {
        let train: Vec<usize> = (0..n).filter(|i| i % folds != f).collect();
        let test: Vec<usize> = (0..n).filter(|i| i % folds == f).collect();
        let tx: Vec<Vec<f64>> = train.iter().map(|&i| xs[i].clone()).collect();
        let ty: Vec<f64> = train.iter().map(|&i| ys[i]).collect();
        let model = Surrogate::fit(kind, &tx, &ty, seed.wrapping_add(f as u64))?;
        let hx: Vec<Vec<f64>> = test.iter().map(|&i| xs[i].clone()).collect();
        for (&i, p) in test.iter().zip(model.predict(&hx)?) {
            predicted[i] = p.mean;
        }
    }
    Ok(kendall_tau(&predicted, ys))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points whose score is a noisy function of two of five features.
    fn data(n: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut rng = crate::seed::rng(3, "test", 0);
        let xs: Vec<Vec<f64>> = (0..n)
            .map(|_| (0..5).map(|_| rng.gen_range(0.0..1.0)).collect())
            .collect();
        let ys = xs
            .iter()
            .map(|r| 2.0 * r[0] - r[3] + rng.gen_range(-0.05..0.05))
            .collect();
        (xs, ys)
    }

    #[test]
    fn both_model_classes_rank_held_out_points_of_a_learnable_function() {
        let (xs, ys) = data(60);
        for kind in ModelKind::ALL {
            let tau = cross_validated_tau(kind, &xs, &ys, 5, 1).unwrap().unwrap();
            assert!(tau > 0.6, "{}: tau {tau}", kind.name());
        }
    }

    #[test]
    fn a_fit_is_deterministic_for_a_seed_and_its_spread_grows_away_from_the_data() {
        let (xs, ys) = data(40);
        let a = Surrogate::fit(ModelKind::Forest, &xs, &ys, 9).unwrap();
        let b = Surrogate::fit(ModelKind::Forest, &xs, &ys, 9).unwrap();
        let probe = vec![vec![0.5; 5], vec![30.0, 0.5, 0.5, -30.0, 0.5]];
        assert_eq!(a.predict(&probe).unwrap(), b.predict(&probe).unwrap());
        // Members disagree more far from the data than in its middle.
        let p = a.predict(&probe).unwrap();
        assert!(p[1].sd > p[0].sd, "extrapolation is less certain: {p:?}");
    }

    #[test]
    fn too_few_or_ragged_points_are_refused() {
        let (xs, ys) = data(3);
        assert!(matches!(
            Surrogate::fit(ModelKind::Forest, &xs, &ys, 1),
            Err(SurrogateError::TooFew { need: 4, got: 3 })
        ));
        let (mut xs, ys) = data(6);
        xs[2].pop();
        assert!(matches!(
            Surrogate::fit(ModelKind::Neighbours, &xs, &ys, 1),
            Err(SurrogateError::Ragged(5, 4))
        ));
        assert_eq!(
            cross_validated_tau(ModelKind::Forest, &xs[..4], &ys[..4], 5, 1).unwrap(),
            None
        );
    }
}
