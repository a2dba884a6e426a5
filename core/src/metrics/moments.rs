//! Streaming mean and covariance of feature rows: what `np.mean(acts, axis=0)` and
//! `np.cov(acts, rowvar=False)` give in the ADM evaluator's `Evaluator.compute_statistics`,
//! without holding the 50,000 rows.
use super::{MetricsError, Statistics};
use nalgebra::{DMatrix, DVector};
use std::ops::Range;

/// Feature rows per tile of [`Moments::add_rows_with_threads`].
const TILE_ROWS: usize = 64;

/// Count, sum and sum of outer products of feature rows, in float64.
///
/// A row is added on its own (`x x^T` into the upper triangle, entry by entry), never as part of
/// a batch product: each entry is the sum of its per-row terms in row order, so the result does
/// not depend on how rows were batched. Partial moments (one per shard) combine with
/// [`Moments::merge`]; float64 addition is not associative, so the caller merges them in shard
/// index order to get the same bits every time (another shard plan differs in the last bits,
/// about 1e-16 relative).
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    dim: usize,
    count: u64,
    sum: Vec<f64>,
    /// The upper triangle of `sum x x^T`, row by row: row `i` holds columns `i..dim`.
    outer: Vec<f64>,
}

impl Moments {
    pub fn new(dim: usize) -> Moments {
        Moments {
            dim,
            count: 0,
            sum: vec![0.0; dim],
            outer: vec![0.0; dim * (dim + 1) / 2],
        }
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds one feature row (float32 values are exact in float64).
    pub fn add(&mut self, row: &[f32]) -> Result<(), MetricsError> {
        if row.len() != self.dim {
            return Err(MetricsError::Dimension {
                expected: self.dim,
                found: row.len(),
            });
        }
        let x: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        let mut start = 0;
        for (i, &xi) in x.iter().enumerate() {
            let len = self.dim - i;
            let dst = &mut self.outer[start..start + len];
            for (o, &xj) in dst.iter_mut().zip(&x[i..]) {
                *o += xi * xj;
            }
            start += len;
        }
        for (s, v) in self.sum.iter_mut().zip(&x) {
            *s += v;
        }
        self.count += 1;
        Ok(())
    }

    /// Adds `rows.len() / dim` rows stored one after the other, on
    /// `std::thread::available_parallelism()` threads; the same bits as [`Moments::add`] row by
    /// row (see [`Moments::add_rows_with_threads`]).
    pub fn add_rows(&mut self, rows: &[f32]) -> Result<(), MetricsError> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        self.add_rows_with_threads(rows, threads)
    }

    /// [`Moments::add_rows`] on `threads` threads. Each thread owns a range of the triangle's
    /// rows (about the same number of entries each) and adds every feature row's terms to it in
    /// row order, so each entry is the same sum, in the same order, as with [`Moments::add`]. The
    /// rows go in tiles of [`TILE_ROWS`]: a triangle row (16 KB at 2048 dimensions) takes a
    /// tile's terms while it is in cache, where adding a row at a time streams the whole
    /// triangle (16 MB) from memory for each row.
    pub fn add_rows_with_threads(
        &mut self,
        rows: &[f32],
        threads: usize,
    ) -> Result<(), MetricsError> {
        let dim = self.dim;
        if dim == 0 || !rows.chunks_exact(dim).remainder().is_empty() {
            return Err(MetricsError::Dimension {
                expected: dim,
                found: rows.len(),
            });
        }
        let parts = self.triangle_parts(threads.max(1));
        let work = |(range, outer): (Range<usize>, &mut [f64])| add_outer(rows, dim, range, outer);
        if parts.len() == 1 {
            parts.into_iter().for_each(work);
        } else {
            std::thread::scope(|s| {
                for part in parts {
                    s.spawn(move || work(part));
                }
            });
        }
        for x in rows.chunks_exact(dim) {
            for (s, &v) in self.sum.iter_mut().zip(x) {
                *s += f64::from(v);
            }
        }
        self.count += (rows.len() / dim) as u64;
        Ok(())
    }

    /// The triangle cut into at most `parts` ranges of its rows with about the same number of
    /// entries, each with its entries.
    fn triangle_parts(&mut self, parts: usize) -> Vec<(Range<usize>, &mut [f64])> {
        let dim = self.dim;
        let per_part = self.outer.len().div_ceil(parts).max(1);
        let mut out = Vec::with_capacity(parts);
        let mut rest: &mut [f64] = &mut self.outer;
        let mut first = 0;
        while first < dim {
            let (mut last, mut len) = (first, 0);
            while last < dim && (len < per_part || last == first) {
                len += dim - last;
                last += 1;
            }
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(len);
            out.push((first..last, part));
            rest = tail;
            first = last;
        }
        out
    }
    /// Adds another accumulator's rows (see the type's docs for the order).
    pub fn merge(&mut self, other: &Moments) -> Result<(), MetricsError> {
        if other.dim != self.dim {
            return Err(MetricsError::Dimension {
                expected: self.dim,
                found: other.dim,
            });
        }
        self.count += other.count;
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        for (a, b) in self.outer.iter_mut().zip(&other.outer) {
            *a += b;
        }
        Ok(())
    }

    /// `np.mean(acts, axis=0)`.
    pub fn mean(&self) -> Result<DVector<f64>, MetricsError> {
        if self.count == 0 {
            return Err(MetricsError::Empty);
        }
        let n = self.count as f64;
        Ok(DVector::from_iterator(
            self.dim,
            self.sum.iter().map(|s| s / n),
        ))
    }

    /// `np.cov(acts, rowvar=False)` (ddof 1): `(sum x x^T - n mu mu^T) / (n - 1)`. numpy
    /// centres the rows first; the two agree to about 1e-16 times `|mu|^2 / variance`, far below
    /// what FID shows for Inception features (docs/evaluation.md).
    pub fn covariance(&self) -> Result<DMatrix<f64>, MetricsError> {
        if self.count < 2 {
            return Err(MetricsError::TooFewRows(self.count));
        }
        let n = self.count as f64;
        let mu = self.mean()?;
        let mut cov = DMatrix::zeros(self.dim, self.dim);
        let mut start = 0;
        for i in 0..self.dim {
            for j in i..self.dim {
                let c = (self.outer[start + j - i] - n * mu[i] * mu[j]) / (n - 1.0);
                cov[(i, j)] = c;
                cov[(j, i)] = c;
            }
            start += self.dim - i;
        }
        Ok(cov)
    }

    /// The mean and covariance, as `FIDStatistics(mu, sigma)`.
    pub fn statistics(&self) -> Result<Statistics, MetricsError> {
        Ok(Statistics {
            mu: self.mean()?,
            sigma: self.covariance()?,
        })
    }
}

/// Adds `x_i x_j` of each row of `rows` to triangle rows `range` (`outer`, row `i` holding
/// columns `i..dim`), row after row for each entry, a tile of rows at a time.
fn add_outer(rows: &[f32], dim: usize, range: Range<usize>, outer: &mut [f64]) {
    for tile in rows.chunks(TILE_ROWS * dim) {
        let mut start = 0;
        for i in range.clone() {
            let dst = &mut outer[start..start + dim - i];
            for x in tile.chunks_exact(dim) {
                let xi = f64::from(x[i]);
                for (o, &xj) in dst.iter_mut().zip(&x[i..]) {
                    *o += xi * f64::from(xj);
                }
            }
            start += dim - i;
        }
    }
}
