//! The end-to-end quality check that parity on random weights cannot give: `run` the demo job
//! (a DiT trained on handwritten digits, tests/fixtures/demo-digits) and score `samples.npz`
//! with the linear digit classifier of its README. A sampler that is wrong in any way that
//! matters (guidance, noise schedule, VAE scaling, labels) drops below the threshold; chance is
//! 0.10.
use crate::support::*;
use std::io::Read;
use std::path::{Path, PathBuf};

/// configs/demo.yaml with absolute fixture paths and the out dir in `dir`.
fn demo_job(dir: &Path, extra: &str) -> PathBuf {
    config_job(dir, "demo", extra)
}

/// configs/`name`.yaml with absolute fixture paths and the out dir in `dir`.
fn config_job(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../configs/{name}.yaml")),
    )
    .unwrap()
    .replace("../tests/fixtures", &fixture("").display().to_string())
    .replace(&format!("out_dir: ../runs/{name}"), "out_dir: out");
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, format!("{text}{extra}")).unwrap();
    path
}

fn read_labels(npz: &Path) -> Vec<i64> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(npz).unwrap()).unwrap();
    let mut bytes = Vec::new();
    zip.by_name("arr_1.npy")
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    npyz::NpyFile::new(&bytes[..])
        .unwrap()
        .into_vec::<i64>()
        .unwrap()
}

/// The README's recipe: mean over RGB, /255, 2x2 average pool to 8x8, x16, then
/// argmax(weights @ x + bias).
fn classify(pixels: &[u8], side: usize, weights: &[Vec<f64>], bias: &[f64]) -> usize {
    assert_eq!(side, 16);
    let gray = |y: usize, x: usize| {
        let p = &pixels[(y * side + x) * 3..(y * side + x) * 3 + 3];
        (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0 / 255.0
    };
    let mut x = [0.0f64; 64];
    for r in 0..8 {
        for c in 0..8 {
            let s = gray(2 * r, 2 * c)
                + gray(2 * r + 1, 2 * c)
                + gray(2 * r, 2 * c + 1)
                + gray(2 * r + 1, 2 * c + 1);
            x[r * 8 + c] = s / 4.0 * 16.0;
        }
    }
    let scores: Vec<f64> = weights
        .iter()
        .zip(bias)
        .map(|(w, b)| w.iter().zip(&x).map(|(a, v)| a * v).sum::<f64>() + b)
        .collect();
    (0..scores.len())
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
        .unwrap()
}

#[test]
fn the_demo_draws_digits_a_classifier_recognises() {
    demo_scores_at_least_its_threshold("demo", "demo-digits/threshold");
}

/// The SiT demo (configs/demo-sit.yaml, REPA's SDE sampler) against its README's threshold.
#[test]
fn the_sit_demo_draws_digits_a_classifier_recognises() {
    demo_scores_at_least_its_threshold("demo-sit", "demo-digits-sit/threshold");
}

fn demo_scores_at_least_its_threshold(config: &str, threshold_file: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_job(tmp.path(), config, "");
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let npz = tmp.path().join("out/samples.npz");
    let (shape, pixels) = read_npz_u8(&npz);
    assert_eq!(shape, vec![100, 16, 16, 3]);
    let labels = read_labels(&npz);
    assert_eq!(labels, (0..100).map(|i| i % 10).collect::<Vec<i64>>());

    let c: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("demo-digits/classifier.json")).unwrap(),
    )
    .unwrap();
    let weights: Vec<Vec<f64>> = serde_json::from_value(c["weights"].clone()).unwrap();
    let bias: Vec<f64> = serde_json::from_value(c["bias"].clone()).unwrap();
    let threshold: f64 = std::fs::read_to_string(fixture(threshold_file))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let per = 16 * 16 * 3;
    let correct = (0..100)
        .filter(|&i| {
            classify(&pixels[i * per..(i + 1) * per], 16, &weights, &bias) == labels[i] as usize
        })
        .count();
    let accuracy = correct as f64 / 100.0;
    eprintln!("{config} accuracy {accuracy:.2} (threshold {threshold})");
    assert!(
        accuracy >= threshold,
        "accuracy {accuracy} below the README's threshold {threshold}"
    );
}

#[test]
fn grid_shows_the_requested_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = demo_job(tmp.path(), "");
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = tmp.path().join("g.png");
    let o = fidshard(&[
        "grid",
        cfg.to_str().unwrap(),
        "--classes",
        "3,7",
        "--n",
        "6",
        "--cols",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let grid = image::open(&out).unwrap().to_rgb8();
    // 16 px samples scaled x4 into 64 px cells, 2 px padding, two 8 px label lines: 3 x 2 cells.
    assert_eq!((grid.width(), grid.height()), (3 * 68, 2 * 86));
    // Row 0 is class 3 (samples 3, 13, 23), row 1 class 7 (7, 17, 27): compare one pixel of
    // each cell with the sample's PNG.
    for (k, index) in [3u32, 13, 23, 7, 17, 27].into_iter().enumerate() {
        let png = image::open(tmp.path().join(format!("out/samples/{index:06}.png")))
            .unwrap()
            .to_rgb8();
        let (cx, cy) = ((k as u32 % 3) * 68 + 2, (k as u32 / 3) * 86 + 2);
        for (x, y) in [(0u32, 0u32), (5, 9), (15, 15)] {
            assert_eq!(
                grid.get_pixel(cx + 4 * x + 1, cy + 4 * y + 2),
                png.get_pixel(x, y),
                "sample {index} pixel ({x},{y})"
            );
        }
    }
    // The out dir works as target too, from the saved fingerprint.
    let o = fidshard(&["grid", tmp.path().join("out").to_str().unwrap(), "--n", "4"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(tmp.path().join("out/grid.png").is_file());
}
