//! The golden data as the tests use it: job files equivalent to the golden jobs, tensors and
//! images read without libtorch (the coordinator's tests never link it), the golden README's
//! error measures.
use super::fixture;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The golden jobs (`tests/fixtures/golden/jobs/<name>/job.json`).
pub const JOBS: [&str; 4] = [
    "cfg4-steps10-random",
    "nocfg-steps10-balanced",
    "cfg1.5-ddim25-eta0",
    "cfg3-allchannels-steps10",
];

/// A job YAML in `dir` equivalent to golden `jobs/<name>/job.json`, with `extra` lines.
pub fn job_yaml(dir: &Path, name: &str, checkpoint: &str, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(fixture(&format!("golden/jobs/{name}/job.json"))).unwrap();
    let job: serde_json::Value = serde_json::from_str(&text).unwrap();
    let g = |k: &str| job.get(k).cloned();
    let mut y = format!(
        "model:\n  config: {}\n  checkpoint: {}\nvae: {}\nnum_classes: 10\n",
        fixture("golden/dit/config.json").display(),
        fixture(checkpoint).display(),
        fixture("golden/vae").display(),
    );
    y += &format!(
        "num_samples: {}\nseed: {}\n",
        g("num_samples").unwrap(),
        g("seed").unwrap()
    );
    y += &format!(
        "cfg_scale: {}\nsteps: {}\n",
        g("cfg_scale").unwrap(),
        g("steps").unwrap()
    );
    y += &format!("labels: {}\n", g("labels").unwrap().as_str().unwrap());
    if let Some(s) = g("sampler") {
        y += &format!("sampler: {}\n", s.as_str().unwrap());
    }
    if let Some(e) = g("eta") {
        y += &format!("eta: {e}\n");
    }
    if let Some(c) = g("cfg_channels") {
        y += &format!("cfg_channels: {c}\n");
    }
    // No GPU here: `devices: auto` would refuse to start (no silent CPU fallback).
    if !extra.contains("devices:") {
        y += "devices: {cpu: 1}\n";
    }
    y += extra;
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, y).unwrap();
    path
}

/// A job YAML for `run`: golden job `name` with `out_dir: out` and `extra` lines.
pub fn run_yaml(dir: &Path, name: &str, extra: &str) -> PathBuf {
    job_yaml(
        dir,
        name,
        "golden/dit/model.pt",
        &format!("out_dir: out\n{extra}"),
    )
}

/// A `run` job from golden job `name` whose keys are overridden by the YAML lines `lines`
/// (every top-level key set there replaces the golden one).
pub fn job_with(dir: &Path, name: &str, lines: &str) -> PathBuf {
    let cfg = run_yaml(dir, name, "");
    let keys: Vec<&str> = lines
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim()))
        .filter(|k| !k.is_empty() && !k.starts_with(' '))
        .collect();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .filter(|l| !keys.iter().any(|k| l.starts_with(&format!("{k}:"))))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&cfg, format!("{text}\n{lines}")).unwrap();
    cfg
}

/// 96 samples, 250 steps, two CPU workers: long enough (several seconds) to interrupt.
pub const LONG_JOB: &str =
    "num_samples: 96\nsteps: \"250\"\ndevices: {cpu: 2}\nshard_size: 4\nbatch_size: 4\n";

/// Golden job `JOBS[1]` as [`LONG_JOB`], for the tests that kill a run and resume or repair it.
pub fn long_job(dir: &Path) -> PathBuf {
    job_with(dir, JOBS[1], LONG_JOB)
}

/// A tensor read without libtorch (the coordinator's tests never link it): shape and values.
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

/// All tensors of a safetensors file (F32 and I64), as f64.
pub fn read_safetensors(path: &Path) -> BTreeMap<String, HostTensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let values: Vec<f64> = match view.dtype() {
                safetensors::Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                safetensors::Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                d => panic!("{name}: unsupported dtype {d:?}"),
            };
            (
                name,
                HostTensor {
                    shape: view.shape().to_vec(),
                    values,
                },
            )
        })
        .collect()
}

/// Relative L2 error ||out - ref|| / ||ref||.
pub fn rel_l2(out: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "size mismatch");
    let num: f64 = out
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let den: f64 = reference.iter().map(|b| b * b).sum();
    (num / den).sqrt()
}

/// The golden DiT weights (`golden/dit/model.safetensors`) with `change(name, shape, bytes)`
/// applied to each tensor, written to `dst` (wrong shapes, NaN weights, ...).
pub fn rewrite_golden_safetensors(
    dst: &Path,
    mut change: impl FnMut(&str, &mut Vec<usize>, &mut Vec<u8>),
) {
    let bytes = std::fs::read(fixture("golden/dit/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut shape = view.shape().to_vec();
        let mut data = view.data().to_vec();
        change(&name, &mut shape, &mut data);
        owned.push((name, view.dtype(), shape, data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, dst).unwrap();
}

/// `arr_0` of an npz as (shape, bytes).
pub fn read_npz_u8(path: &Path) -> (Vec<u64>, Vec<u8>) {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut bytes = Vec::new();
    zip.by_name("arr_0.npy")
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<u8>().unwrap())
}

pub fn read_pngs(dir: &Path, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            image::open(dir.join(format!("{i:06}.png")))
                .unwrap()
                .to_rgb8()
                .into_raw()
        })
        .collect()
}

pub fn png_bytes(dir: &Path, n: usize) -> BTreeMap<usize, Vec<u8>> {
    (0..n)
        .map(|i| (i, std::fs::read(dir.join(format!("{i:06}.png"))).unwrap()))
        .collect()
}

/// The golden README's image tolerance: no value off by more than 2, >= 99.5% identical.
pub fn assert_images_close(name: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{name}: pixel count");
    let mut same = 0usize;
    for (a, b) in got.iter().zip(want) {
        let d = (*a as i32 - *b as i32).abs();
        assert!(d <= 2, "{name}: a pixel differs by {d}");
        same += usize::from(d == 0);
    }
    let frac = same as f64 / got.len() as f64;
    assert!(frac >= 0.995, "{name}: only {:.4}% identical", frac * 100.0);
}
