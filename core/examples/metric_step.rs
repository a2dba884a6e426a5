//! The metric step of `fidshard evaluate` on synthetic features: the time of each part of what
//! guided-diffusion's `evaluations/evaluator.py` computes from the Inception features (moments,
//! FID, sFID, IS, precision/recall).
//!
//! `cargo run -p fidshard-core --release --example metric_step -- --samples 50000 --reference 10000`
//! (`--threads T` pins the precision/recall and moments threads; `--no-pr` skips precision/recall,
//! `--pr-only` all but it).
use fidshard_core::metrics::{
    frechet_distance, InceptionScore, ManifoldEstimator, Moments, IS_SPLIT_SIZE,
};
use rand_mt::Mt64;
use std::time::Instant;

/// The evaluator's feature sizes: pool_3, the spatial features (mixed_6/conv, first 7 channels
/// of 17 x 17), the logits.
const POOL: usize = 2048;
const SPATIAL: usize = 2023;
const LOGITS: usize = 1008;

struct Args {
    samples: usize,
    reference: usize,
    threads: Option<usize>,
    pr: bool,
    only_pr: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        samples: 50_000,
        reference: 10_000,
        threads: None,
        pr: true,
        only_pr: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{a} needs a number"))
        };
        match a.as_str() {
            "--samples" => args.samples = value(),
            "--reference" => args.reference = value(),
            "--threads" => args.threads = Some(value()),
            "--no-pr" => args.pr = false,
            "--pr-only" => args.only_pr = true,
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// `rows x dim` non-negative features, as ReLU outputs are (a third of them 0), with a
/// per-feature scale so that the covariance is not the identity.
fn features(rng: &mut Mt64, rows: usize, dim: usize) -> Vec<f32> {
    let scale: Vec<f32> = (0..dim).map(|c| 0.5 + (c % 7) as f32 * 0.25).collect();
    (0..rows * dim)
        .map(|i| {
            let u = (rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32;
            ((u * 3.0 - 1.0).max(0.0)) * scale[i % dim]
        })
        .collect()
}

fn logits(rng: &mut Mt64, rows: usize) -> Vec<f32> {
    (0..rows * LOGITS)
        .map(|_| ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 8.0 - 4.0) as f32)
        .collect()
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    println!("{what:<42} {:>9.2} s", start.elapsed().as_secs_f64());
    out
}

fn moments(rows: &[f32], dim: usize, threads: Option<usize>) -> Moments {
    let mut m = Moments::new(dim);
    match threads {
        Some(t) => m.add_rows_with_threads(rows, t),
        None => m.add_rows(rows),
    }
    .expect("feature rows");
    m
}

fn main() {
    let args = parse_args();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    println!(
        "metric step: {} samples, {} reference images, threads {threads} (available_parallelism {})",
        args.samples,
        args.reference,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let mut rng = Mt64::new(18);
    let (pool_s, pool_r) = (
        features(&mut rng, args.samples, POOL),
        features(&mut rng, args.reference, POOL),
    );
    let total = Instant::now();
    if !args.only_pr {
        other_parts(&args, &pool_s, &pool_r, &mut rng);
    }
    if args.pr {
        let estimator = ManifoldEstimator {
            threads: args.threads,
            ..ManifoldEstimator::adm()
        };
        let pr = timed("precision/recall (float16 distances)", || {
            estimator.precision_recall(&pool_r, &pool_s, POOL).unwrap()
        });
        println!("precision {:.4}, recall {:.4}", pr.precision, pr.recall);
    }
    println!(
        "{:<42} {:>9.2} s",
        "metric step in all",
        total.elapsed().as_secs_f64()
    );
}

/// Moments, FID, sFID and IS (the spatial features and logits drawn here).
fn other_parts(args: &Args, pool_s: &[f32], pool_r: &[f32], rng: &mut Mt64) {
    let (spatial_s, spatial_r) = (
        features(rng, args.samples, SPATIAL),
        features(rng, args.reference, SPATIAL),
    );
    let logits_s = logits(rng, args.samples);
    let (ms, mr, ss, sr) = timed("moments (pool + spatial, both sets)", || {
        (
            moments(pool_s, POOL, args.threads).statistics().unwrap(),
            moments(pool_r, POOL, args.threads).statistics().unwrap(),
            moments(&spatial_s, SPATIAL, args.threads)
                .statistics()
                .unwrap(),
            moments(&spatial_r, SPATIAL, args.threads)
                .statistics()
                .unwrap(),
        )
    });
    let fid = timed("FID (2048-dim Frechet distance)", || {
        frechet_distance(&ms, &mr).unwrap()
    });
    let sfid = timed("sFID (2023-dim Frechet distance)", || {
        frechet_distance(&ss, &sr).unwrap()
    });
    let is = timed("IS (softmax, splits of 5000)", || {
        let mut is = InceptionScore::new(IS_SPLIT_SIZE);
        logits_s.chunks_exact(LOGITS).for_each(|r| is.add(r));
        is.finish().unwrap()
    });
    println!("FID {fid:.4}, sFID {sfid:.4}, IS {is:.4}");
}
