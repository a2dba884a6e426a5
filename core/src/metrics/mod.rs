//! The numbers of the ADM evaluator (guided-diffusion's `evaluations/evaluator.py`), computed
//! from Inception features without TensorFlow: FID and sFID ([`frechet_distance`] of two
//! [`Statistics`], accumulated by [`Moments`]), the Inception Score ([`inception_score`], [`InceptionScore`] row by row) and
//! improved precision and recall ([`ManifoldEstimator`]). The features themselves come from the
//! worker (`fidshard_worker::inception`); a reference batch's statistics or images are read by
//! [`reference`]. docs/evaluation.md ("How fidshard computes the metrics") says how far each
//! number can be from the evaluator's and why.
mod distance;
mod frechet;
mod inception_score;
mod manifold;
mod moments;
pub mod reference;

pub use distance::{pairwise_distances, DistancePrecision};
pub use frechet::{frechet_distance, trace_sqrt_product, Statistics, FRECHET_EPS};
pub use inception_score::{inception_score, softmax, InceptionScore, IS_SPLIT_SIZE};
pub use manifold::{ManifoldEstimator, PrecisionRecall};
pub use moments::Moments;

/// What a metric cannot be computed from.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    #[error("feature rows have {found} values, expected {expected}")]
    Dimension { expected: usize, found: usize },
    #[error("a covariance needs at least 2 feature rows, got {0}")]
    TooFewRows(u64),
    #[error("{0} is not finite")]
    NotFinite(&'static str),
    #[error("no feature rows")]
    Empty,
}

#[cfg(test)]
mod tests;
