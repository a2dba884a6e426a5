//! Pairwise squared Euclidean distances as the ADM evaluator's `DistanceBlock` computes them:
//! `_batch_pairwise_distances` (`max(|u|^2 - 2 u.v + |v|^2, 0)`) on the features cast to
//! float16, or on the float32 features when a float16 block is not all finite.
use half::f16;
use nalgebra::DMatrix;

/// The arithmetic of the distances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistancePrecision {
    /// The evaluator's: the TF graph on float16 tensors, with its float32 fallback per block.
    Float16,
    /// Plain float32 distances (no float16 rounding), the reference the float16 results are
    /// compared with in docs/evaluation.md.
    Float32,
}

/// The `rows(u) x rows(v)` distances, row-major, between the rows of `u` and `v` (`dim` values
/// each) — one `DistanceBlock.pairwise_distances(U, V)` call. The operands are not symmetric:
/// in float16, `d(u, v) = (|u|^2 - 2 u.v) + |v|^2` rounds other than `d(v, u)`.
///
/// Float16, as the TF graph does on `tf.cast(x, tf.float16)`: `tf.square` and each of `2 m`,
/// `nu - 2 m`, `+ nv`, `max(., 0)` is computed in float32 and rounded to float16 (Eigen's
/// `half` arithmetic, and numpy's); the two reductions (`reduce_sum` of the squares and the
/// `matmul`) are taken here in float64 on the float16 values, nearly exact, and rounded once to
/// float16. TF's GPU kernels accumulate those in float32 in their own order, which moves a sum
/// by ~1e-7 relative and so, rarely, its float16 rounding by one unit (docs/evaluation.md).
/// If any float16 distance of the block is not finite, the whole block is computed in float32
/// (`tf.cond(reduce_all(is_finite(d16)), ...)`), with the reductions in float64 rounded to
/// float32.
pub fn pairwise_distances(
    u: &[f32],
    v: &[f32],
    dim: usize,
    precision: DistancePrecision,
) -> Vec<f32> {
    if precision == DistancePrecision::Float16 {
        if let Some(d) = distances_f16(u, v, dim) {
            return d;
        }
    }
    distances_f32(u, v, dim)
}

fn distances_f16(u: &[f32], v: &[f32], dim: usize) -> Option<Vec<f32>> {
    let round = |x: &[f32]| -> Vec<f32> { x.iter().map(|&a| f16::from_f32(a).to_f32()).collect() };
    let (u16, v16) = (round(u), round(v));
    // tf.reduce_sum(tf.square(U), 1): each square rounded to float16, their sum rounded once.
    let norms = |x: &[f32]| -> Vec<f16> {
        x.chunks_exact(dim)
            .map(|r| {
                let s: f64 = r
                    .iter()
                    .map(|&a| f64::from(f16::from_f32(a * a).to_f32()))
                    .sum();
                f16::from_f64(s)
            })
            .collect()
    };
    let (nu, nv) = (norms(&u16), norms(&v16));
    let dots = dot_products(&u16, &v16, dim);
    let cols = nv.len();
    let mut out = Vec::with_capacity(nu.len() * cols);
    for (i, &nu_i) in nu.iter().enumerate() {
        for (j, &nv_j) in nv.iter().enumerate() {
            let m = f16::from_f64(dots[(i, j)]);
            let two_m = f16::from_f32(2.0 * m.to_f32());
            let a = f16::from_f32(nu_i.to_f32() - two_m.to_f32());
            let d = f16::from_f32(a.to_f32() + nv_j.to_f32()).to_f32();
            if !d.is_finite() {
                return None;
            }
            out.push(d.max(0.0));
        }
    }
    Some(out)
}

fn distances_f32(u: &[f32], v: &[f32], dim: usize) -> Vec<f32> {
    let norms = |x: &[f32]| -> Vec<f32> {
        x.chunks_exact(dim)
            .map(|r| r.iter().map(|&a| f64::from(a) * f64::from(a)).sum::<f64>() as f32)
            .collect()
    };
    let (nu, nv) = (norms(u), norms(v));
    let dots = dot_products(u, v, dim);
    let mut out = Vec::with_capacity(nu.len() * nv.len());
    for (i, &nu_i) in nu.iter().enumerate() {
        for (j, &nv_j) in nv.iter().enumerate() {
            let m = dots[(i, j)] as f32;
            out.push((nu_i - 2.0 * m + nv_j).max(0.0));
        }
    }
    out
}

/// `U V^T` in float64 (nalgebra's blocked GEMM): `(rows(u), rows(v))`.
fn dot_products(u: &[f32], v: &[f32], dim: usize) -> DMatrix<f64> {
    let as_matrix =
        |x: &[f32]| DMatrix::from_row_iterator(x.len() / dim, dim, x.iter().map(|&a| f64::from(a)));
    as_matrix(u) * as_matrix(v).transpose()
}
