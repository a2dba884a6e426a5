//! Pairwise squared Euclidean distances as the ADM evaluator's `DistanceBlock` computes them
//! (guided-diffusion `evaluations/evaluator.py`): `_batch_pairwise_distances`
//! (`max(|u|^2 - 2 u.v + |v|^2, 0)`) on the features cast to float16, or on the float32
//! features when a float16 block is not all finite.
//!
//! The dot products are float64 GEMMs (nalgebra's, on matrixmultiply's kernels), which sum each
//! `u.v` over the dimensions in runs of 256 (matrixmultiply's `kc`) added in order, or in one
//! run when a side of the product is 5 or less (nalgebra's small-matrix path): the order depends
//! neither on how many rows a call gets nor on which operand is on the left. So a block is
//! computed by chunks of its rows (more than 5 each when it has more than 5), on several threads,
//! with the bits of one product of the whole block; and `u.v` is `v.u` bit for bit, so one
//! product serves `d(u, v)` and `d(v, u)` ([`block_pass`]'s `mirror`). tests.rs checks both
//! against the one-call GEMM on data where another order of the terms gives other sums.
use half::f16;
use nalgebra::DMatrix;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    let cols = v.len() / dim;
    let collect = |arith| {
        let block = Block {
            u,
            v,
            dim,
            arith,
            mirror: false,
            threads: 1,
        };
        let pass = block_pass(&block, Vec::new, |out, _, d, _| out.extend_from_slice(d));
        debug_assert_eq!(
            pass.states.iter().map(Vec::len).sum::<usize>(),
            cols * (u.len() / dim)
        );
        (pass.finite_uv, pass.states.concat())
    };
    if precision == DistancePrecision::Float16 {
        if let (true, d) = collect(DistancePrecision::Float16) {
            return d;
        }
    }
    collect(DistancePrecision::Float32).1
}

/// What [`block_pass`] gives back: each thread's state, and whether all the float16 distances
/// `d(u, v)` (and, mirrored, `d(v, u)`) were finite; when not, the states hold float16 values
/// of a block that the evaluator computes in float32, and the caller must redo it.
pub(crate) struct Pass<S> {
    pub states: Vec<S>,
    pub finite_uv: bool,
    pub finite_vu: bool,
}

/// One `(U, V)` block of [`block_pass`]: the rows of `u` and `v` (`dim` values each), the
/// arithmetic, whether `d(v, u)` is wanted too, on how many threads.
pub(crate) struct Block<'a> {
    pub u: &'a [f32],
    pub v: &'a [f32],
    pub dim: usize,
    pub arith: DistancePrecision,
    pub mirror: bool,
    pub threads: usize,
}

/// The distances of one block in `arith` (no fallback here: see [`Pass`]), handed to
/// `visit(state, rows, d_uv, d_vu)` a chunk of `U`'s rows at a time: `d_uv` holds
/// `rows.len() x rows(v)` values row-major, `d(u_i, v_j)`; with `mirror`, `d_vu` holds
/// `d(v_j, u_i)` in the same layout (the `(V, U)` block, transposed). The chunks go to
/// `threads` threads, each with its own `init()` state, in no fixed order: `visit` must only
/// gather what does not depend on it (smallest values, flags). With threads = 1 the chunks
/// are visited in order, on the calling thread.
pub(crate) fn block_pass<S: Send>(
    block: &Block,
    init: impl Fn() -> S + Sync,
    visit: impl Fn(&mut S, Range<usize>, &[f32], Option<&[f32]>) + Sync,
) -> Pass<S> {
    let Block {
        u,
        v,
        dim,
        arith,
        mirror,
        threads,
    } = *block;
    let u_op = Operand::new(u, dim, arith, true);
    let v_op = Operand::new(v, dim, arith, false);
    let chunks = row_chunks(
        u_op.rows,
        u_op.rows.div_ceil(threads.max(1)).min(CHUNK_ROWS),
    );
    let next = AtomicUsize::new(0);
    let work = || {
        let mut state = init();
        let (mut finite_uv, mut finite_vu) = (true, true);
        let (mut d_uv, mut d_vu) = (Vec::new(), Vec::new());
        while let Some(rows) = chunks.get(next.fetch_add(1, Ordering::Relaxed)).cloned() {
            let dots = chunk_dots(&u_op, &v_op, rows.clone());
            let nu = &u_op.norms[rows.clone()];
            finite_uv &= finish(arith, nu, dots.as_slice(), &v_op.norms, false, &mut d_uv);
            let vu = if mirror {
                finite_vu &= finish(arith, nu, dots.as_slice(), &v_op.norms, true, &mut d_vu);
                Some(&d_vu[..])
            } else {
                None
            };
            visit(&mut state, rows, &d_uv, vu);
        }
        (state, finite_uv, finite_vu)
    };
    let results: Vec<(S, bool, bool)> = if threads <= 1 || chunks.len() <= 1 {
        vec![work()]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads.min(chunks.len()))
                .map(|_| s.spawn(work))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a distance thread panicked"))
                .collect()
        })
    };
    let finite_uv = results.iter().all(|r| r.1);
    let finite_vu = results.iter().all(|r| r.2);
    Pass {
        states: results.into_iter().map(|r| r.0).collect(),
        finite_uv,
        finite_vu,
    }
}

/// `V U[rows]^T`, `(rows(v), rows.len())` column-major: the chunk's rows of `U V^T` one after
/// the other.
fn chunk_dots(u: &Operand, v: &Operand, rows: Range<usize>) -> DMatrix<f64> {
    &v.values * u.values.columns(rows.start, rows.len())
}

/// `U V^T` row-major, as [`block_pass`] takes it: by chunks of `chunk` rows of `u`, in float64
/// on the float32 values.
#[cfg(test)]
pub(crate) fn chunked_dot_products(u: &[f32], v: &[f32], dim: usize, chunk: usize) -> Vec<f64> {
    let u_op = Operand::new(u, dim, DistancePrecision::Float32, true);
    let v_op = Operand::new(v, dim, DistancePrecision::Float32, false);
    row_chunks(u_op.rows, chunk)
        .into_iter()
        .flat_map(|rows| chunk_dots(&u_op, &v_op, rows).as_slice().to_vec())
        .collect()
}

/// Rows of `U` per GEMM call: big enough that packing `V` (once per call) is a few percent of
/// the call, small enough for `512 x 10000` float64 dots (40 MB) per thread.
const CHUNK_ROWS: usize = 512;

/// nalgebra multiplies matrices with a side of at most 5 without matrixmultiply (another
/// summation order): a block's chunks keep more than 5 rows each when the block has.
const SMALL_DIM: usize = 5;

/// `0..n` in chunks of `size` rows, the last one merged into the one before when it would have
/// 5 rows or fewer (see [`SMALL_DIM`]).
fn row_chunks(n: usize, size: usize) -> Vec<Range<usize>> {
    let size = size.max(SMALL_DIM + 1);
    let mut chunks: Vec<Range<usize>> =
        (0..n).step_by(size).map(|s| s..(s + size).min(n)).collect();
    if chunks.len() > 1 && chunks.last().is_some_and(|c| c.len() <= SMALL_DIM) {
        let last = chunks.pop().expect("two chunks");
        chunks.last_mut().expect("one chunk").end = last.end;
    }
    chunks
}

/// One block's rows as the GEMM reads them, and their squared norms, in `arith`'s arithmetic.
struct Operand {
    rows: usize,
    /// The values the products are taken of: the float16 roundings (as float64) in Float16,
    /// the features themselves in Float32; `rows x dim` for `V`, `dim x rows` (column `i` =
    /// row `i`) for `U`, whose chunks are column ranges.
    values: DMatrix<f64>,
    /// `|x|^2`: in Float16 a float16 number (as float32), `reduce_sum(square(x16))` with each
    /// square rounded to float16 and the sum rounded once; in Float32 the float64 sum rounded
    /// to float32.
    norms: Vec<f32>,
}

impl Operand {
    fn new(x: &[f32], dim: usize, arith: DistancePrecision, transposed: bool) -> Operand {
        let rows = x.len() / dim;
        let (values, norms): (Vec<f32>, Vec<f32>) = match arith {
            DistancePrecision::Float16 => {
                // tf.cast(x, tf.float16)
                let x16: Vec<f32> = x.iter().map(|&a| f16::from_f32(a).to_f32()).collect();
                let norms = x16.chunks_exact(dim).map(norm_f16).collect();
                (x16, norms)
            }
            DistancePrecision::Float32 => (x.to_vec(), x.chunks_exact(dim).map(norm_f32).collect()),
        };
        let values = values.iter().map(|&a| f64::from(a));
        let values = if transposed {
            DMatrix::from_iterator(dim, rows, values)
        } else {
            DMatrix::from_row_iterator(rows, dim, values)
        };
        Operand {
            rows,
            values,
            norms,
        }
    }
}

/// `tf.reduce_sum(tf.square(x16), 1)` of one float16 row: each square rounded to float16, their
/// sum (float64) rounded once.
fn norm_f16(row: &[f32]) -> f32 {
    let s: f64 = row
        .iter()
        .map(|&a| f64::from(f16::from_f32(a * a).to_f32()))
        .sum();
    f16::from_f64(s).to_f32()
}

/// `|x|^2` of one float32 row: the float64 sum rounded to float32.
fn norm_f32(row: &[f32]) -> f32 {
    row.iter()
        .map(|&a| f64::from(a) * f64::from(a))
        .sum::<f64>() as f32
}

/// The distances of a chunk from its dots (`u_i.v_j` at `i * rows(v) + j`) into `out`, row by
/// row: `d(u_i, v_j)`, or with `mirror` `d(v_j, u_i)`. Whether all were finite (before
/// `max(., 0)`).
fn finish(
    arith: DistancePrecision,
    nu: &[f32],
    dots: &[f64],
    nv: &[f32],
    mirror: bool,
    out: &mut Vec<f32>,
) -> bool {
    out.clear();
    let mut finite = true;
    for (&nu_i, row) in nu.iter().zip(dots.chunks_exact(nv.len())) {
        let start = out.len();
        match (arith, mirror) {
            (DistancePrecision::Float16, false) => out.extend(
                row.iter()
                    .zip(nv)
                    .map(|(&m, &nv_j)| distance_f16(nu_i, m, nv_j)),
            ),
            (DistancePrecision::Float16, true) => out.extend(
                row.iter()
                    .zip(nv)
                    .map(|(&m, &nv_j)| distance_f16(nv_j, m, nu_i)),
            ),
            (DistancePrecision::Float32, false) => out.extend(
                row.iter()
                    .zip(nv)
                    .map(|(&m, &nv_j)| distance_f32(nu_i, m, nv_j)),
            ),
            (DistancePrecision::Float32, true) => out.extend(
                row.iter()
                    .zip(nv)
                    .map(|(&m, &nv_j)| distance_f32(nv_j, m, nu_i)),
            ),
        }
        if arith == DistancePrecision::Float16 {
            finite &= out[start..].iter().all(|d| d.is_finite());
        }
    }
    if arith == DistancePrecision::Float16 {
        for d in out.iter_mut() {
            *d = d.max(0.0);
        }
    }
    finite
}

/// `max((nu - 2 m) + nv, 0)` with each step rounded to float16 (`m` the float64 dot product,
/// `nu`, `nv` float16 numbers); not finite values are returned as they are, before the `max`.
#[inline]
fn distance_f16(nu: f32, m: f64, nv: f32) -> f32 {
    let m = f16::from_f64(m);
    let two_m = f16::from_f32(2.0 * m.to_f32());
    let a = f16::from_f32(nu - two_m.to_f32());
    f16::from_f32(a.to_f32() + nv).to_f32()
}

/// `max(nu - 2 m + nv, 0)` in float32 (`m` the float64 dot product rounded to float32).
#[inline]
fn distance_f32(nu: f32, m: f64, nv: f32) -> f32 {
    (nu - 2.0 * (m as f32) + nv).max(0.0)
}
