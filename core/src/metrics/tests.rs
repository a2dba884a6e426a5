//! Parity of the metrics with the ADM evaluator's numpy code on the features of
//! tests/fixtures/inception/metrics.safetensors (made by make_fixtures.py in that folder).
use super::reference::{for_each_image_batch, read_statistics};
use super::*;
use half::f16;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/inception")
        .join(name)
}

/// Every tensor of the fixture as float64 values (and its shape).
fn fixtures() -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(fixture_path("metrics.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let values: Vec<f64> = match view.dtype() {
                safetensors::Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                safetensors::Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
                    .collect(),
                safetensors::Dtype::I32 => data
                    .chunks_exact(4)
                    .map(|b| f64::from(i32::from_le_bytes(b.try_into().unwrap())))
                    .collect(),
                d => panic!("{name}: {d:?}"),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

fn features(fx: &HashMap<String, (Vec<usize>, Vec<f64>)>, name: &str) -> (Vec<f32>, usize) {
    let (shape, v) = &fx[name];
    (v.iter().map(|&x| x as f32).collect(), shape[1])
}

fn scalar(fx: &HashMap<String, (Vec<usize>, Vec<f64>)>, name: &str) -> f64 {
    fx[name].1[0]
}

fn moments(rows: &[f32], dim: usize) -> Moments {
    let mut m = Moments::new(dim);
    m.add_rows(rows).unwrap();
    m
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn moments_equal_np_mean_and_np_cov() {
    let fx = fixtures();
    let (rows, dim) = features(&fx, "ref");
    let stats = moments(&rows, dim).statistics().unwrap();
    let max_diff = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    };
    let mu_err = max_diff(stats.mu.as_slice(), &fx["mu_ref_f64"].1);
    let sigma_err = max_diff(stats.sigma.as_slice(), &fx["sigma_ref"].1);
    // The evaluator's np.mean of float32 rows is a float32 running sum (docs/evaluation.md).
    let mu32_err = max_diff(stats.mu.as_slice(), &fx["mu_ref"].1);
    println!("max |mu - np.mean(f64)| = {mu_err:.2e}, vs ADM's float32 np.mean {mu32_err:.2e}, max |sigma - np.cov| = {sigma_err:.2e}");
    assert!(mu_err < 1e-13, "{mu_err}");
    assert!(mu32_err < 1e-5, "{mu32_err}");
    assert!(sigma_err < 1e-12, "{sigma_err}");
}

#[test]
fn moments_do_not_depend_on_batches_and_merge_in_shard_order() {
    let fx = fixtures();
    let (rows, dim) = features(&fx, "sample");
    let whole = moments(&rows, dim);
    let mut one_by_one = Moments::new(dim);
    for r in rows.chunks(dim) {
        one_by_one.add(r).unwrap();
    }
    assert_eq!(whole, one_by_one, "the rows' batching changed the sums");
    // Three shards of uneven size, merged in index order, twice: the same bits; against one
    // accumulator over all rows: the last bits only.
    let merged = || {
        let mut m = Moments::new(dim);
        for shard in [
            &rows[..100 * dim],
            &rows[100 * dim..350 * dim],
            &rows[350 * dim..],
        ] {
            m.merge(&moments(shard, dim)).unwrap();
        }
        m
    };
    let (a, b) = (merged(), merged());
    assert_eq!(a, b);
    assert_eq!(a.count(), 600);
    let (sa, sw) = (a.statistics().unwrap(), whole.statistics().unwrap());
    let err = (&sa.sigma - &sw.sigma).amax();
    println!("merged shards vs one accumulator: max |d sigma| = {err:.2e}");
    assert!(err < 1e-12, "{err}");
    assert!(matches!(
        Moments::new(3).merge(&Moments::new(4)),
        Err(MetricsError::Dimension { .. })
    ));
    assert!(matches!(
        Moments::new(3).add(&[1.0]),
        Err(MetricsError::Dimension { .. })
    ));
    let mut one = Moments::new(2);
    one.add(&[1.0, 2.0]).unwrap();
    assert_eq!(one.covariance(), Err(MetricsError::TooFewRows(1)));
}

#[test]
fn fid_equals_adm_frechet_distance() {
    let fx = fixtures();
    let (r, dim) = features(&fx, "ref");
    let (s, _) = features(&fx, "sample");
    let ours = frechet_distance(
        &moments(&s, dim).statistics().unwrap(),
        &moments(&r, dim).statistics().unwrap(),
    )
    .unwrap();
    // The same on the evaluator's own mu and sigma (np.mean, np.cov), as a reference npz gives.
    let stat = |mu: &str, sigma: &str| Statistics {
        mu: nalgebra::DVector::from_vec(fx[mu].1.clone()),
        sigma: nalgebra::DMatrix::from_row_slice(dim, dim, &fx[sigma].1),
    };
    let on_np = frechet_distance(
        &stat("mu_sample", "sigma_sample"),
        &stat("mu_ref", "sigma_ref"),
    )
    .unwrap();
    let want = scalar(&fx, "fid");
    let want64 = scalar(&fx, "fid_f64_mean");
    println!(
        "FID {ours:.15}, ADM {want:.15} (rel {:.2e}), ADM with float64 means {want64:.15} (rel {:.2e}); on ADM's mu and sigma {on_np:.15} (rel {:.2e})",
        rel(ours, want), rel(ours, want64), rel(on_np, want)
    );
    assert!(rel(ours, want) < 1e-6, "{ours} vs {want}");
    assert!(rel(ours, want64) < 1e-9, "{ours} vs {want64}");
    // On ADM's float32 means, ADM's `diff.dot(diff)` is float32 arithmetic, ours float64.
    assert!(rel(on_np, want) < 1e-7, "{on_np} vs {want}");
    // Fewer rows (40) than dimensions (64): singular covariance, sqrtm's complex case.
    let low = frechet_distance(
        &moments(&r[..40 * dim], dim).statistics().unwrap(),
        &moments(&r, dim).statistics().unwrap(),
    )
    .unwrap();
    let want = scalar(&fx, "fid_singular");
    println!(
        "FID (rank 39) {low:.15}, ADM {want:.15}: rel {:.2e}",
        rel(low, want)
    );
    assert!(rel(low, want) < 1e-6, "{low} vs {want}");
    // Identical statistics: 0 up to rounding.
    let same = moments(&r, dim).statistics().unwrap();
    assert!(frechet_distance(&same, &same).unwrap().abs() < 1e-9);
}

#[test]
fn fid_of_non_finite_statistics_is_an_error_not_a_hang() {
    let mut a = Statistics {
        mu: nalgebra::DVector::zeros(3),
        sigma: nalgebra::DMatrix::identity(3, 3),
    };
    let b = a.clone();
    a.sigma[(1, 1)] = f64::NAN;
    assert_eq!(
        frechet_distance(&a, &b),
        Err(MetricsError::NotFinite("the Fréchet distance"))
    );
    // Two singular covariances (the eigenvector route): N(0, diag(1, 0)) and N(0, diag(4, 0)).
    let s = |v: f64| nalgebra::DMatrix::from_diagonal(&nalgebra::DVector::from_vec(vec![v, 0.0]));
    let d = frechet_distance(
        &Statistics {
            mu: nalgebra::DVector::zeros(2),
            sigma: s(1.0),
        },
        &Statistics {
            mu: nalgebra::DVector::zeros(2),
            sigma: s(4.0),
        },
    )
    .unwrap();
    assert!((d - 1.0).abs() < 1e-12, "{d}"); // 1 + 4 - 2 * 2
}

#[test]
fn inception_score_equals_adm_compute_inception_score() {
    let fx = fixtures();
    let (shape, logits) = &fx["logits"];
    let rows: Vec<Vec<f64>> = logits
        .chunks(shape[1])
        .map(|r| softmax(&r.iter().map(|&v| v as f32).collect::<Vec<_>>()))
        .collect();
    for (split, name) in [(200, "is_split200_f64"), (IS_SPLIT_SIZE, "is_split5000")] {
        let ours = inception_score(&rows, split).unwrap();
        let want = scalar(&fx, name);
        println!(
            "IS split {split}: {ours:.15} vs ADM {want:.15}: rel {:.2e}",
            rel(ours, want)
        );
        assert!(rel(ours, want) < 1e-9, "{ours} vs {want}");
    }
    // The evaluator's own run is in float32 (TF's float32 softmax rows).
    let ours = inception_score(&rows, 200).unwrap();
    let f32_run = scalar(&fx, "is_split200_f32");
    println!(
        "IS vs ADM's float32 arithmetic: rel {:.2e}",
        rel(ours, f32_run)
    );
    assert!(rel(ours, f32_run) < 1e-6);
    // Row by row, one split held at a time: the same bits.
    let mut streamed = InceptionScore::new(200);
    for r in logits.chunks(shape[1]) {
        streamed.add(&r.iter().map(|&v| v as f32).collect::<Vec<_>>());
    }
    assert_eq!(streamed.finish(), Some(ours));
    assert_eq!(InceptionScore::new(5000).finish(), None);
    assert_eq!(inception_score(&[], 5000), None);
    assert_eq!(inception_score(&rows, 0), None);
}

#[test]
fn half_rounding_equals_numpy() {
    let fx = fixtures();
    let probe = &fx["probe_f64"].1;
    for ((&x, &want64), &want32) in probe
        .iter()
        .zip(&fx["probe_f64_to_f16_bits"].1)
        .zip(&fx["probe_f32_to_f16_bits"].1)
    {
        assert_eq!(
            f16::from_f64(x).to_bits() as i16,
            want64 as i16,
            "{x} from f64"
        );
        assert_eq!(
            f16::from_f32(x as f32).to_bits() as i16,
            want32 as i16,
            "{x} from f32"
        );
    }
}

#[test]
fn precision_recall_equal_adm_manifold_estimator() {
    let fx = fixtures();
    let (r, dim) = features(&fx, "ref");
    let (s, _) = features(&fx, "sample");
    let adm = ManifoldEstimator::adm();
    // The radii first: float16 distances, 4th smallest, bit for bit.
    for (set, rows) in [("ref", &r), ("sample", &s)] {
        let radii = adm.radii(rows, dim).unwrap();
        let want = &fx[&format!("radii_{set}_f16")].1;
        let differ = radii
            .iter()
            .zip(want)
            .filter(|(a, b)| f64::from(**a) != **b)
            .count();
        assert_eq!(differ, 0, "{differ} radii of {set} differ");
    }
    let pr16 = adm.precision_recall(&r, &s, dim).unwrap();
    let want16 = PrecisionRecall {
        precision: scalar(&fx, "precision_f16"),
        recall: scalar(&fx, "recall_f16"),
    };
    assert_eq!(pr16, want16);
    let f32_est = ManifoldEstimator {
        precision: DistancePrecision::Float32,
        ..ManifoldEstimator::adm()
    };
    let pr32 = f32_est.precision_recall(&r, &s, dim).unwrap();
    let want32 = PrecisionRecall {
        precision: scalar(&fx, "precision_f32"),
        recall: scalar(&fx, "recall_f32"),
    };
    assert_eq!(pr32, want32);
    println!("float16 {pr16:?}, float32 {pr32:?}");
    // 600 points: 3 of them make 0.5 %.
    assert!((pr16.precision - pr32.precision).abs() <= 0.005 + 1e-12);
    assert!((pr16.recall - pr32.recall).abs() <= 0.005 + 1e-12);
    // Blocks of 128 rows: the float16 values do not depend on the blocks (none falls back).
    let small = ManifoldEstimator {
        batch_size: 128,
        ..ManifoldEstimator::adm()
    };
    assert_eq!(small.precision_recall(&r, &s, dim).unwrap(), pr16);
}

#[test]
fn float16_overflow_falls_back_to_float32_for_the_block() {
    // |u|^2 = 4 * 200^2 = 160000 overflows float16 (max 65504): the block is float32.
    let u = [200.0f32; 4];
    let v = [199.0f32; 4];
    let d16 = pairwise_distances(&u, &v, 4, DistancePrecision::Float16);
    let d32 = pairwise_distances(&u, &v, 4, DistancePrecision::Float32);
    assert_eq!(d16, d32);
    assert_eq!(d32, vec![4.0]);
    // In range, float16 rounds: 0.1 and 0.3 are not float16 numbers.
    let d16 = pairwise_distances(&[0.1], &[0.3], 1, DistancePrecision::Float16);
    let (a, b) = (f16::from_f32(0.1).to_f32(), f16::from_f32(0.3).to_f32());
    assert_ne!(d16[0], (0.3f32 - 0.1).powi(2));
    assert!((d16[0] - (b - a).powi(2)).abs() < 1e-4);
    assert_eq!(
        ManifoldEstimator::adm().radii(&[0.0; 3], 1),
        Err(MetricsError::TooFewRows(3))
    );
}

#[test]
fn reference_npz_statistics_or_streamed_images() {
    let fx = fixtures();
    let (pool, spatial) = read_statistics(&fixture_path("reference-stats.npz"))
        .unwrap()
        .unwrap();
    assert_eq!(pool.mu.as_slice(), &fx["mu_ref"].1[..]); // float32 in the npz, as ADM's
    assert_eq!(pool.sigma.transpose().as_slice(), &fx["sigma_ref"].1[..]);
    assert_eq!(spatial.mu.as_slice(), &fx["mu_ref"].1[..8]);
    assert_eq!(spatial.sigma[(2, 5)], fx["sigma_ref"].1[2 * 64 + 5]);
    // No `mu`: the images, deflated, in batches of 2, 2, 1.
    let path = fixture_path("reference-images.npz");
    assert!(read_statistics(&path).unwrap().is_none());
    let mut seen = Vec::new();
    let mut bytes = 0;
    let shape = for_each_image_batch(&path, 2, |images, n| {
        seen.push(n);
        bytes += images.len();
        Ok(())
    })
    .unwrap();
    assert_eq!(shape, (5, 8, 8));
    assert_eq!(seen, vec![2, 2, 1]);
    assert_eq!(bytes, 5 * 8 * 8 * 3);
    let missing = read_statistics(&fixture_path("make_fixtures.py")).unwrap_err();
    assert!(missing.to_string().contains("not an npz"), "{missing}");
}

/// Singular covariances (fewer samples than dimensions, features ReLU keeps at 0), as 64
/// digits give in 2048 dimensions: `tr(sqrtm(S1 S2))` equals the symmetric route's
/// `tr(sqrt(sqrt(S1) S2 sqrt(S1)))` whichever route is taken. (The case where a Cholesky factor
/// of rounding-noise pivots gave sFID 46.4 for 9.1 needs 2023-dimensional spatial features; it
/// is checked end to end by tests/cli/eval.rs against scipy's `sqrtm`.)
#[test]
fn trace_sqrt_of_singular_covariances_is_exact() {
    use crate::metrics::trace_sqrt_product;
    use nalgebra::{DMatrix, SymmetricEigen};
    let dim = 48;
    let cov = |rows: usize, salt: usize, zeros: usize| {
        let x: Vec<f32> = (0..rows * dim)
            .map(|i| {
                let (r, c) = (i / dim, i % dim);
                let h = (r * 7919 + c * 104729 + salt * 15485863) % 100003;
                if c < zeros {
                    0.0
                } else {
                    ((h as f32 / 100003.0) * 2.0 - 1.0).max(0.0) * (1.0 + c as f32 / 8.0)
                }
            })
            .collect();
        moments(&x, dim).covariance().unwrap()
    };
    let reference = |s1: &DMatrix<f64>, s2: &DMatrix<f64>| {
        let e = SymmetricEigen::new(s1.clone());
        let root = e.eigenvalues.map(|v| v.max(0.0).sqrt());
        let r = &e.eigenvectors * DMatrix::from_diagonal(&root) * e.eigenvectors.transpose();
        let m = &r * s2 * &r;
        let m = (&m + m.transpose()) * 0.5;
        m.symmetric_eigenvalues()
            .iter()
            .map(|&v| v.max(0.0).sqrt())
            .sum::<f64>()
    };
    for (n1, n2, zeros) in [
        (16, 30, 0),
        (30, 16, 3),
        (47, 40, 0),
        (200, 20, 0),
        (20, 200, 5),
    ] {
        let (s1, s2) = (cov(n1, 1, zeros), cov(n2, 2, zeros));
        let (got, want) = (trace_sqrt_product(&s1, &s2), reference(&s1, &s2));
        assert!(rel(got, want) < 1e-6, "{n1} and {n2} rows: {got} vs {want}");
    }
}

/// The single-threaded code this module had before the distances went by chunks on several
/// threads (one nalgebra GEMM per block, the block loops of `manifold_radii` and `evaluate_pr`
/// in order): the oracle the parallel code must equal bit for bit.
mod single_threaded {
    use super::super::DistancePrecision;
    use half::f16;
    use nalgebra::DMatrix;

    /// `U V^T`, row-major.
    pub fn dots(u: &[f32], v: &[f32], dim: usize) -> Vec<f64> {
        dot_products(u, v, dim).transpose().as_slice().to_vec()
    }

    pub fn pairwise_distances(u: &[f32], v: &[f32], dim: usize, p: DistancePrecision) -> Vec<f32> {
        if p == DistancePrecision::Float16 {
            if let Some(d) = distances_f16(u, v, dim) {
                return d;
            }
        }
        distances_f32(u, v, dim)
    }

    fn distances_f16(u: &[f32], v: &[f32], dim: usize) -> Option<Vec<f32>> {
        let round =
            |x: &[f32]| -> Vec<f32> { x.iter().map(|&a| f16::from_f32(a).to_f32()).collect() };
        let (u16, v16) = (round(u), round(v));
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
        let mut out = Vec::with_capacity(nu.len() * nv.len());
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

    fn dot_products(u: &[f32], v: &[f32], dim: usize) -> DMatrix<f64> {
        let as_matrix = |x: &[f32]| {
            DMatrix::from_row_iterator(x.len() / dim, dim, x.iter().map(|&a| f64::from(a)))
        };
        as_matrix(u) * as_matrix(v).transpose()
    }

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

    pub fn radii(x: &[f32], dim: usize, batch: usize, k: usize, p: DistancePrecision) -> Vec<f32> {
        let mut radii = Vec::new();
        for rows_block in x.chunks(batch * dim) {
            let mut smallest = vec![Vec::with_capacity(k + 2); rows_block.len() / dim];
            for cols_block in x.chunks(batch * dim) {
                let d = pairwise_distances(rows_block, cols_block, dim, p);
                for (best, row) in smallest
                    .iter_mut()
                    .zip(d.chunks_exact(cols_block.len() / dim))
                {
                    keep_smallest(best, row, k + 1);
                }
            }
            radii.extend(smallest.iter().map(|best| best[k]));
        }
        radii
    }

    /// `(precision, recall)`.
    pub fn precision_recall(
        r: &[f32],
        s: &[f32],
        dim: usize,
        batch: usize,
        k: usize,
        p: DistancePrecision,
    ) -> (f64, f64) {
        let (rr, rs) = (radii(r, dim, batch, k, p), radii(s, dim, batch, k, p));
        let (mut ref_in, mut sample_in) = (vec![false; rr.len()], vec![false; rs.len()]);
        for (b1, rb) in r.chunks(batch * dim).enumerate() {
            for (b2, sb) in s.chunks(batch * dim).enumerate() {
                let d = pairwise_distances(rb, sb, dim, p);
                let (i0, j0) = (b1 * batch, b2 * batch);
                for (i, row) in d.chunks_exact(sb.len() / dim).enumerate() {
                    for (j, &dij) in row.iter().enumerate() {
                        ref_in[i0 + i] |= dij <= rs[j0 + j];
                        sample_in[j0 + j] |= dij <= rr[i0 + i];
                    }
                }
            }
        }
        let frac = |f: &[bool]| f.iter().filter(|&&b| b).count() as f64 / f.len() as f64;
        (frac(&sample_in), frac(&ref_in))
    }
}

/// `rows x dim` values of both signs over 28 binary orders of magnitude (up to 16, down to
/// float16 subnormals), so that float64 sums of their products (exact products of float16
/// numbers, over more than 53 bits) depend on the order of the terms; the rows in `outliers`
/// are 200 everywhere, whose float16 `|u|^2` overflows (float32 fallback).
fn spread_features(seed: u64, rows: usize, dim: usize, outliers: &[usize]) -> Vec<f32> {
    let mut rng = rand_mt::Mt64::new(seed);
    let mut unit = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (0..rows * dim)
        .map(|i| {
            if outliers.contains(&(i / dim)) {
                return 200.0;
            }
            let scale = (4.0 - (unit() * 28.0).floor()).exp2();
            ((unit() * 2.0 - 1.0) * scale) as f32
        })
        .collect()
}

#[test]
fn dot_products_by_chunks_and_mirrored_equal_one_gemm_bit_for_bit() {
    use super::distance::chunked_dot_products;
    let bits = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let mut order_mattered = 0;
    for dim in [3, 64, 600] {
        for (ru, rv) in [(1, 7), (5, 30), (6, 6), (7, 5), (40, 33), (1100, 9)] {
            let u = spread_features(dim as u64, ru, dim, &[]);
            let v = spread_features(1000 + dim as u64, rv, dim, &[]);
            let want = single_threaded::dots(&u, &v, dim);
            let mirrored = single_threaded::dots(&v, &u, dim);
            for chunk in [1, 6, 7, 512] {
                let got = chunked_dot_products(&u, &v, dim, chunk);
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{ru} x {rv} rows of {dim}, chunks of {chunk}"
                );
            }
            for (i, row) in want.chunks_exact(rv).enumerate() {
                for (j, &m) in row.iter().enumerate() {
                    assert_eq!(m.to_bits(), mirrored[j * ru + i].to_bits(), "u.v vs v.u");
                    let sequential: f64 = (0..dim)
                        .map(|k| f64::from(u[i * dim + k]) * f64::from(v[j * dim + k]))
                        .sum();
                    order_mattered += usize::from(sequential != m);
                }
            }
        }
    }
    // The data is such that another order of the terms gives other sums.
    assert!(order_mattered > 1000, "{order_mattered}");
}

#[test]
fn distances_equal_the_single_threaded_gemm_bit_for_bit() {
    // 600 dimensions: three of matrixmultiply's 256-long partial sums; 1 to 5 rows: nalgebra's
    // small-matrix path (one run over the dimensions).
    for dim in [3, 64, 600] {
        for (ru, rv) in [(1, 7), (5, 30), (6, 6), (7, 5), (40, 33), (1100, 9)] {
            let u = spread_features(dim as u64, ru, dim, &[]);
            let v = spread_features(1000 + dim as u64, rv, dim, &[]);
            for p in [DistancePrecision::Float16, DistancePrecision::Float32] {
                let want = single_threaded::pairwise_distances(&u, &v, dim, p);
                let got = pairwise_distances(&u, &v, dim, p);
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits())
                        && got.len() == want.len(),
                    "{ru} x {rv} rows of {dim}, {p:?}"
                );
            }
        }
    }
    // An overflowing row: the whole float16 block falls back to float32.
    let u = spread_features(5, 12, 64, &[4]);
    let v = spread_features(6, 9, 64, &[]);
    let want = single_threaded::pairwise_distances(&u, &v, 64, DistancePrecision::Float16);
    assert_eq!(
        want,
        single_threaded::pairwise_distances(&u, &v, 64, DistancePrecision::Float32)
    );
    assert_eq!(
        pairwise_distances(&u, &v, 64, DistancePrecision::Float16),
        want
    );
}

#[test]
fn precision_recall_on_threads_equal_single_threaded_bit_for_bit() {
    // 203 and 157 rows in batches of 50: several blocks, the last ones of 3 and 7 rows; 300
    // dimensions (two partial sums); rows 17 and 120 overflow float16: their blocks fall back
    // to float32, in one direction of a mirrored pair or both.
    let dim = 300;
    let r = spread_features(11, 157, dim, &[120]);
    let s = spread_features(12, 203, dim, &[17]);
    for p in [DistancePrecision::Float16, DistancePrecision::Float32] {
        let want_radii = single_threaded::radii(&s, dim, 50, 3, p);
        let want_pr = single_threaded::precision_recall(&r, &s, dim, 50, 3, p);
        for threads in [1, 2, 3, 8] {
            let est = ManifoldEstimator {
                batch_size: 50,
                precision: p,
                threads: Some(threads),
                ..ManifoldEstimator::adm()
            };
            let radii = est.radii(&s, dim).unwrap();
            assert!(
                radii
                    .iter()
                    .zip(&want_radii)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{p:?}, {threads} threads: radii differ"
            );
            let pr = est.precision_recall(&r, &s, dim).unwrap();
            assert_eq!(
                (pr.precision, pr.recall),
                want_pr,
                "{p:?}, {threads} threads"
            );
        }
    }
}

#[test]
fn moments_on_threads_equal_row_by_row() {
    let dim = 70;
    let rows = spread_features(21, 150, dim, &[]);
    let mut one_by_one = Moments::new(dim);
    rows.chunks(dim).for_each(|r| one_by_one.add(r).unwrap());
    for threads in [1, 2, 3, 16, 200] {
        let mut m = Moments::new(dim);
        m.add_rows_with_threads(&rows[..7 * dim], threads).unwrap();
        m.add_rows_with_threads(&rows[7 * dim..], threads).unwrap();
        assert_eq!(m, one_by_one, "{threads} threads");
    }
}
