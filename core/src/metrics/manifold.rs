//! Improved precision and recall (Kynkäänniemi et al. 2019) as the ADM evaluator's
//! `ManifoldEstimator` (guided-diffusion `evaluations/evaluator.py`) computes them with its
//! defaults: `nhood_sizes=(3,)`, row and column batches of 10000, no radius clamping, distances
//! from its `DistanceBlock` ([`super::distance`]).
//!
//! The blocks are computed on several threads ([`block_pass`]); what is gathered from them (the
//! `k + 1` smallest distances of a row, the `<=` flags) does not depend on the order in which
//! the distances come, so the results are those of the evaluator's block loops, bit for bit,
//! whatever the thread count.
use super::distance::{block_pass, Block, DistancePrecision, Pass};
use super::MetricsError;
use std::ops::Range;

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
    /// Threads for the distances; `None`: `std::thread::available_parallelism()`. The results
    /// do not depend on it.
    pub threads: Option<usize>,
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
            threads: None,
        }
    }

    fn thread_count(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// `manifold_radii(features)`: for each row, the `k`-th entry (0-based) of its distances to
    /// all rows sorted (numpy's `partition` by `arange(k + 1)`), row blocks against column
    /// blocks. Only the `k + 1` smallest distances of a row are kept at a time.
    ///
    /// Block `(b2, b1)` is the mirror of `(b1, b2)` (the same dot products, see
    /// [`super::distance`]): for `b1 < b2` one pass gives both, each with its own float32
    /// fallback: `B (B + 1) / 2` block products for `B` blocks instead of `B^2` (15 for 25 at
    /// 50,000 samples).
    pub fn radii(&self, features: &[f32], dim: usize) -> Result<Vec<f32>, MetricsError> {
        let n = rows(features, dim)?;
        if n <= self.k {
            return Err(MetricsError::TooFewRows(n as u64));
        }
        let keep = self.k + 1;
        let mut smallest = Smallest::new(n, keep);
        let blocks = batches(n, self.batch_size);
        let slice = |b: &Range<usize>| &features[b.start * dim..b.end * dim];
        for (i, b1) in blocks.iter().enumerate() {
            for b2 in &blocks[i..] {
                let mirror = b1 != b2;
                let pass = self.smallest_pass(slice(b1), slice(b2), dim, self.precision, mirror);
                if pass.finite_uv {
                    pass.states
                        .iter()
                        .for_each(|s| smallest.merge_rows(b1.start, s));
                } else {
                    let redo = self.smallest_pass(
                        slice(b1),
                        slice(b2),
                        dim,
                        DistancePrecision::Float32,
                        false,
                    );
                    redo.states
                        .iter()
                        .for_each(|s| smallest.merge_rows(b1.start, s));
                }
                if !mirror {
                    continue;
                }
                if pass.finite_vu {
                    pass.states
                        .iter()
                        .for_each(|s| smallest.merge_cols(b2.start, s));
                } else {
                    let redo = self.smallest_pass(
                        slice(b2),
                        slice(b1),
                        dim,
                        DistancePrecision::Float32,
                        false,
                    );
                    redo.states
                        .iter()
                        .for_each(|s| smallest.merge_rows(b2.start, s));
                }
            }
        }
        Ok(smallest.kth(self.k))
    }

    /// One block's `k + 1` smallest distances per row of `u` (and, mirrored, per row of `v`).
    fn smallest_pass(
        &self,
        u: &[f32],
        v: &[f32],
        dim: usize,
        arith: DistancePrecision,
        mirror: bool,
    ) -> Pass<BlockSmallest> {
        let (m, c, keep) = (u.len() / dim, v.len() / dim, self.k + 1);
        let block = Block {
            u,
            v,
            dim,
            arith,
            mirror,
            threads: self.thread_count(),
        };
        block_pass(
            &block,
            || BlockSmallest {
                rows: Smallest::new(m, keep),
                cols: Smallest::new(if mirror { c } else { 0 }, keep),
            },
            |s, rows, d_uv, d_vu| {
                for (i, row) in rows.clone().zip(d_uv.chunks_exact(c)) {
                    row.iter().for_each(|&d| s.rows.insert(i, d));
                }
                if let Some(d_vu) = d_vu {
                    for row in d_vu.chunks_exact(c) {
                        row.iter()
                            .enumerate()
                            .for_each(|(j, &d)| s.cols.insert(j, d));
                    }
                }
            },
        )
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
        for b1 in batches(radii_ref.len(), self.batch_size) {
            for b2 in batches(radii_sample.len(), self.batch_size) {
                let (u, v) = (
                    &reference[b1.start * dim..b1.end * dim],
                    &samples[b2.start * dim..b2.end * dim],
                );
                let (rr, rs) = (&radii_ref[b1.clone()], &radii_sample[b2.clone()]);
                let mut pass = self.in_pass(u, v, dim, self.precision, rr, rs);
                if !pass.finite_uv {
                    pass = self.in_pass(u, v, dim, DistancePrecision::Float32, rr, rs);
                }
                for s in &pass.states {
                    or_into(&mut ref_in[b1.clone()], &s.rows);
                    or_into(&mut sample_in[b2.clone()], &s.cols);
                }
            }
        }
        Ok(PrecisionRecall {
            precision: fraction(&sample_in),
            recall: fraction(&ref_in),
        })
    }

    /// `less_thans` of one block: which reference rows (`u`) have a sample within its radius
    /// and which samples (`v`) lie within some reference row's radius.
    fn in_pass(
        &self,
        u: &[f32],
        v: &[f32],
        dim: usize,
        arith: DistancePrecision,
        radii_u: &[f32],
        radii_v: &[f32],
    ) -> Pass<BlockFlags> {
        let c = radii_v.len();
        let block = Block {
            u,
            v,
            dim,
            arith,
            mirror: false,
            threads: self.thread_count(),
        };
        block_pass(
            &block,
            || BlockFlags {
                rows: vec![false; radii_u.len()],
                cols: vec![false; c],
            },
            |s, rows, d_uv, _| {
                for (i, row) in rows.zip(d_uv.chunks_exact(c)) {
                    let r_i = radii_u[i];
                    let mut row_in = s.rows[i];
                    for ((&d, &r_j), col_in) in row.iter().zip(radii_v).zip(s.cols.iter_mut()) {
                        row_in |= d <= r_j;
                        *col_in |= d <= r_i;
                    }
                    s.rows[i] = row_in;
                }
            },
        )
    }
}

/// A block pass's per-thread `k + 1` smallest distances: of `U`'s rows, and of `V`'s rows
/// when mirrored.
struct BlockSmallest {
    rows: Smallest,
    cols: Smallest,
}

/// A block pass's per-thread flags: `U`'s rows with some `V` row within their radius, `V`'s
/// rows within some `U` row's radius.
struct BlockFlags {
    rows: Vec<bool>,
    cols: Vec<bool>,
}

/// The `keep` smallest values seen so far of each of `rows` rows, ascending, `+inf` until
/// filled: a row sees at least `keep` values (`n > k`), so the padding is gone by the end, and
/// the kept values do not depend on the order the values came in.
struct Smallest {
    keep: usize,
    values: Vec<f32>,
}

impl Smallest {
    fn new(rows: usize, keep: usize) -> Smallest {
        Smallest {
            keep,
            values: vec![f32::INFINITY; rows * keep],
        }
    }

    /// Merges `v` into row `row`'s smallest values.
    #[inline]
    fn insert(&mut self, row: usize, v: f32) {
        let best = &mut self.values[row * self.keep..(row + 1) * self.keep];
        if v >= best[self.keep - 1] {
            return;
        }
        let mut at = self.keep - 1;
        while at > 0 && best[at - 1] > v {
            best[at] = best[at - 1];
            at -= 1;
        }
        best[at] = v;
    }

    /// Merges a block pass's rows (`U`'s, starting at row `start` of `self`).
    fn merge_rows(&mut self, start: usize, block: &BlockSmallest) {
        self.merge(start, &block.rows);
    }

    /// Merges a mirrored block pass's columns (`V`'s, starting at row `start` of `self`).
    fn merge_cols(&mut self, start: usize, block: &BlockSmallest) {
        self.merge(start, &block.cols);
    }

    fn merge(&mut self, start: usize, other: &Smallest) {
        for (i, best) in other.values.chunks_exact(self.keep).enumerate() {
            best.iter().for_each(|&v| self.insert(start + i, v));
        }
    }

    /// Each row's `k`-th smallest value (0-based).
    fn kth(&self, k: usize) -> Vec<f32> {
        self.values.chunks_exact(self.keep).map(|b| b[k]).collect()
    }
}

/// The evaluator's batches of `batch_size` rows, in order.
fn batches(n: usize, batch_size: usize) -> Vec<Range<usize>> {
    (0..n)
        .step_by(batch_size.max(1))
        .map(|s| s..(s + batch_size).min(n))
        .collect()
}

fn or_into(dst: &mut [bool], src: &[bool]) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d |= s);
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

/// `np.mean(status.astype(np.float64))`.
fn fraction(status: &[bool]) -> f64 {
    status.iter().filter(|&&s| s).count() as f64 / status.len() as f64
}
