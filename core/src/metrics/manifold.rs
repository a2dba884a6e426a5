//! Improved precision and recall (Kynkäänniemi et al. 2019) as the ADM evaluator's
//! `ManifoldEstimator` computes them with its defaults: `nhood_sizes=(3,)`, row and column
//! batches of 10000, no radius clamping, distances from its `DistanceBlock` ([`super::distance`]).
use super::distance::{pairwise_distances, DistancePrecision};
use super::MetricsError;

/// `ManifoldEstimator(session)` with the evaluator's defaults.
#[derive(Clone, Debug)]
pub struct ManifoldEstimator {
    /// `row_batch_size` and `col_batch_size` (equal in the evaluator): the blocks whose float16
    /// distances fall back to float32 together.
    pub batch_size: usize,
    /// `nhood_sizes[0]`: the radius of a point is its `(k + 1)`-th smallest distance, its own
    /// (about 0) included.
    pub k: usize,
    pub precision: DistancePrecision,
}

/// `compute_prec_recall`'s pair: the fraction of samples inside the reference manifold and of
/// reference points inside the samples' manifold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrecisionRecall {
    pub precision: f64,
    pub recall: f64,
}

impl ManifoldEstimator {
    /// The evaluator's: k = 3, batches of 10000, float16 distances.
    pub fn adm() -> ManifoldEstimator {
        ManifoldEstimator {
            batch_size: 10000,
            k: 3,
            precision: DistancePrecision::Float16,
        }
    }

    /// `manifold_radii(features)`: for each row, the `k`-th entry (0-based) of its distances to
    /// all rows sorted (numpy's `partition` by `arange(k + 1)`), row blocks against column
    /// blocks in order. Only the `k + 1` smallest distances of a row are kept at a time.
    pub fn radii(&self, features: &[f32], dim: usize) -> Result<Vec<f32>, MetricsError> {
        let n = rows(features, dim)?;
        if n <= self.k {
            return Err(MetricsError::TooFewRows(n as u64));
        }
        let mut radii = Vec::with_capacity(n);
        for rows_block in features.chunks(self.batch_size * dim) {
            let m = rows_block.len() / dim;
            let mut smallest = vec![Vec::with_capacity(self.k + 2); m];
            for cols_block in features.chunks(self.batch_size * dim) {
                let d = pairwise_distances(rows_block, cols_block, dim, self.precision);
                let cols = cols_block.len() / dim;
                for (best, row) in smallest.iter_mut().zip(d.chunks_exact(cols)) {
                    keep_smallest(best, row, self.k + 1);
                }
            }
            radii.extend(smallest.iter().map(|best| best[self.k]));
        }
        Ok(radii)
    }

    /// `compute_prec_recall(ref, sample)`: radii of both sets, then `evaluate_pr`: a sample is
    /// in (precision) when its distance to some reference point is `<=` that point's radius, a
    /// reference point is in (recall) likewise against the samples. Distances are taken with
    /// the reference block as `U` and the sample block as `V`, as `less_thans` does.
    pub fn precision_recall(
        &self,
        reference: &[f32],
        samples: &[f32],
        dim: usize,
    ) -> Result<PrecisionRecall, MetricsError> {
        let radii_ref = self.radii(reference, dim)?;
        let radii_sample = self.radii(samples, dim)?;
        let mut ref_in = vec![false; radii_ref.len()];
        let mut sample_in = vec![false; radii_sample.len()];
        let block = self.batch_size * dim;
        for (b1, ref_block) in reference.chunks(block).enumerate() {
            for (b2, sample_block) in samples.chunks(block).enumerate() {
                let d = pairwise_distances(ref_block, sample_block, dim, self.precision);
                let cols = sample_block.len() / dim;
                let (i0, j0) = (b1 * self.batch_size, b2 * self.batch_size);
                for (i, row) in d.chunks_exact(cols).enumerate() {
                    for (j, &dij) in row.iter().enumerate() {
                        ref_in[i0 + i] |= dij <= radii_sample[j0 + j];
                        sample_in[j0 + j] |= dij <= radii_ref[i0 + i];
                    }
                }
            }
        }
        Ok(PrecisionRecall {
            precision: fraction(&sample_in),
            recall: fraction(&ref_in),
        })
    }
}

fn rows(features: &[f32], dim: usize) -> Result<usize, MetricsError> {
    if dim == 0 || !features.chunks_exact(dim).remainder().is_empty() {
        return Err(MetricsError::Dimension {
            expected: dim,
            found: features.len(),
        });
    }
    Ok(features.len() / dim)
}

/// Merges `row` into `best`, the ascending `keep` smallest values seen so far.
fn keep_smallest(best: &mut Vec<f32>, row: &[f32], keep: usize) {
    for &v in row {
        if best.len() == keep && v >= best[keep - 1] {
            continue;
        }
        let at = best.partition_point(|&b| b <= v);
        best.insert(at, v);
        best.truncate(keep);
    }
}

/// `np.mean(status.astype(np.float64))`.
fn fraction(status: &[bool]) -> f64 {
    status.iter().filter(|&&s| s).count() as f64 / status.len() as f64
}
