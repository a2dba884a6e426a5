//! SiT + REPA's samplers against the golden jobs of `fixtures/demo-digits-sit` (made with REPA's
//! published `samplers.py` and `generate.py`; see its README): ODE Euler without guidance, ODE
//! Heun with a guidance interval, SDE on the linear and on the cosine path. Final latents within
//! 1e-4 relative L2, images within the golden tolerances; each job sampled in two batches of
//! other sizes too, which must give the same bytes (batch invariance on the CPU).
use crate::support::{fixture, rel_l2};
use fidshard_core::diffusion::{BetaSchedule, VarianceType};
use fidshard_core::flow::{sit_config_from_json_file, FlowSettings, ModelFamily, PathType, Pixels};
use fidshard_core::{BatchSize, CfgChannels, LabelMode, SamplerKind, SamplerSettings, Solver};
use fidshard_worker::{Engine, Timings};
use serde_json::Value;
use std::io::Read;
use tch::{Device, Kind, Tensor};

const JOBS: [&str; 4] = [
    "ode-euler-cfg1-steps12",
    "ode-heun-cfg4-interval",
    "sde-linear-cfg1.8-interval",
    "sde-cosine-cfg3-bigseed",
];

fn job(name: &str) -> Value {
    let path = fixture(&format!("demo-digits-sit/jobs/{name}/job.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The settings `fidshard` resolves for golden job `name` (REPA's defaults: all channels
/// guided, REPA's pixels).
pub(crate) fn settings(name: &str) -> SamplerSettings {
    let j = job(name);
    let f = |k: &str, d: f64| j.get(k).and_then(Value::as_f64).unwrap_or(d);
    let (dit, qk_norm) =
        sit_config_from_json_file(&fixture("demo-digits-sit/sit/config.json")).unwrap();
    let sde = j["sampler"] == "sde";
    SamplerSettings {
        dit,
        checkpoint: fixture("demo-digits-sit/sit/model.safetensors"),
        vae: fixture("demo-digits/vae"),
        num_samples: j["num_samples"].as_u64().unwrap(),
        seed: j["seed"].as_u64().unwrap(),
        labels: LabelMode::Balanced,
        cfg_scale: f("cfg_scale", 1.0),
        cfg_channels: CfgChannels::All,
        sampler: if sde {
            SamplerKind::Sde
        } else {
            SamplerKind::Ode
        },
        steps: j["steps"].to_string(),
        eta: 0.0,
        beta_schedule: BetaSchedule::Linear,
        variance: VarianceType::FixedLarge,
        precision: fidshard_core::Precision::Fp32,
        batch_size: BatchSize::Fixed(16),
        vae_batch_size: BatchSize::Fixed(16),
        family: ModelFamily::Sit,
        flow: FlowSettings {
            solver: if j["heun"] == true {
                Solver::Heun
            } else {
                Solver::Euler
            },
            path_type: if j["path_type"] == "cosine" {
                PathType::Cosine
            } else {
                PathType::Linear
            },
            guidance_interval: [f("guidance_low", 0.0), f("guidance_high", 1.0)],
            qk_norm,
            sit_sde: Default::default(),
        },
        pixels: Pixels::Repa,
        latent_scale: None,
        latent_bias: None,
        model_format: Default::default(),
        vae_script: None,
    }
}

pub(crate) fn npy_bytes(path: &std::path::Path, entry: Option<&str>) -> Vec<u8> {
    let mut bytes = Vec::new();
    match entry {
        Some(name) => {
            let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
            zip.by_name(name).unwrap().read_to_end(&mut bytes).unwrap();
        }
        None => bytes = std::fs::read(path).unwrap(),
    }
    bytes
}

/// The golden README's image tolerance: no value off by more than 2, >= 99.5% identical.
pub(crate) fn assert_images_close(name: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{name}: pixel count");
    let mut same = 0usize;
    for (a, b) in got.iter().zip(want) {
        let d = (i32::from(*a) - i32::from(*b)).abs();
        assert!(d <= 2, "{name}: a pixel differs by {d}");
        same += usize::from(d == 0);
    }
    let frac = same as f64 / got.len() as f64;
    assert!(frac >= 0.995, "{name}: only {:.4}% identical", frac * 100.0);
}

/// Samples `0..n` in batches of `sizes` (cycled); pixels and float64 final latents.
pub(crate) fn sample(engine: &Engine, n: u64, sizes: &[u64]) -> (Vec<u8>, Tensor) {
    let (mut pixels, mut latents) = (Vec::new(), Vec::new());
    let mut t = Timings::default();
    let mut start = 0;
    for &size in sizes.iter().cycle() {
        if start >= n {
            break;
        }
        let end = (start + size).min(n);
        let indices: Vec<u64> = (start..end).collect();
        let batch = engine.try_sample_batch(&indices, &mut t).unwrap();
        for s in &batch.samples {
            pixels.extend_from_slice(&s.pixels);
        }
        latents.push(batch.latents.to_device(Device::Cpu));
        start = end;
    }
    (pixels, Tensor::cat(&latents, 0))
}

fn check_job(name: &str) {
    let _rng = crate::support::global_rng();
    let s = settings(name);
    let n = s.num_samples;
    let engine = Engine::load(s, Device::Cpu).unwrap();
    let (pixels, latents) = sample(&engine, n, &[16]);
    assert_eq!(latents.kind(), Kind::Double, "the flow state is float64");
    let dir = fixture(&format!("demo-digits-sit/jobs/{name}"));
    let want_latents = npyz::NpyFile::new(&npy_bytes(&dir.join("expected-latents.npy"), None)[..])
        .unwrap()
        .into_vec::<f64>()
        .unwrap();
    let want_latents = Tensor::from_slice(&want_latents).view(latents.size().as_slice());
    let err = rel_l2(&latents, &want_latents);
    assert!(
        err < 1e-4,
        "{name}: final latents off by {err:e} relative L2"
    );
    let want = npyz::NpyFile::new(&npy_bytes(&dir.join("expected.npz"), Some("arr_0.npy"))[..])
        .unwrap()
        .into_vec::<u8>()
        .unwrap();
    assert_images_close(name, &pixels, &want);
    let (again, _) = sample(&engine, n, &[5, 3]);
    assert!(
        again == pixels,
        "{name}: batches of 5 and 3 changed the bytes"
    );
}

#[test]
fn ode_euler_without_guidance_matches_repa() {
    check_job(JOBS[0]);
}

#[test]
fn ode_heun_with_a_guidance_interval_matches_repa() {
    check_job(JOBS[1]);
}

#[test]
fn sde_linear_path_matches_repa() {
    check_job(JOBS[2]);
}

#[test]
fn sde_cosine_path_with_a_big_seed_matches_repa() {
    check_job(JOBS[3]);
}

/// `latent_scale` / `latent_bias`: the decoder gets `(z - bias) / scale`, per channel or not.
#[test]
fn latent_scale_and_bias_reach_the_decoder() {
    let name = JOBS[0];
    let dir = fixture(&format!("demo-digits-sit/jobs/{name}"));
    let z = npyz::NpyFile::new(&npy_bytes(&dir.join("expected-latents.npy"), None)[..])
        .unwrap()
        .into_vec::<f64>()
        .unwrap();
    let z = Tensor::from_slice(&z).view([16, 4, 8, 8]);
    let decode = |scale: Option<Vec<f64>>, bias: Option<Vec<f64>>, z: &Tensor| {
        let mut s = settings(name);
        (s.latent_scale, s.latent_bias) = (scale, bias);
        let engine = Engine::load(s, Device::Cpu).unwrap();
        let img = engine.decode(z, &mut Timings::default()).unwrap();
        Vec::<u8>::try_from(img.view([-1])).unwrap()
    };
    let reference = decode(None, None, &z);
    let want = npyz::NpyFile::new(&npy_bytes(&dir.join("expected.npz"), Some("arr_0.npy"))[..])
        .unwrap()
        .into_vec::<u8>()
        .unwrap();
    assert_images_close("default scaling", &reference, &want);
    let s = 1.2424200773239136; // the demo VAE's scaling_factor
    assert!(
        decode(Some(vec![s]), None, &z) == reference,
        "one number is the default"
    );
    let per_channel = decode(Some(vec![s; 4]), Some(vec![0.0; 4]), &z);
    assert_images_close("per channel", &per_channel, &reference);
    // (2 z + 1 - 1) / (2 s): the bias is taken off before the scale divides.
    let shifted = &z * 2.0 + 1.0;
    let scaled = decode(
        Some(vec![2.0 * s]),
        Some(vec![1.0, 1.0, 1.0, 1.0]),
        &shifted,
    );
    assert_images_close("scaled and shifted", &scaled, &reference);
    assert!(decode(Some(vec![2.0 * s]), None, &z) != reference);
}

/// SiT's own checkpoints (willisma/SiT, `learn_sigma=True`) have 8 output channels: the
/// checkpoint decides, and the velocity is the first half, whatever the sigma half holds.
#[test]
fn a_learned_sigma_half_is_read_off_the_checkpoint_and_dropped() {
    let _rng = crate::support::global_rng();
    let s = settings(JOBS[0]);
    let load = || fidshard_worker::checkpoint::load_state_dict(&s.checkpoint).unwrap();
    let four = fidshard_worker::sit::from_state_dict(&s.dit, false, load()).unwrap();
    let mut tensors = load().into_inner();
    let p2 = s.dit.patch_size * s.dit.patch_size;
    for (key, extra) in [("weight", vec![s.dit.hidden_size]), ("bias", vec![])] {
        let name = format!("final_layer.linear.{key}");
        let t = &tensors[&name];
        let mut shape = vec![p2, 4];
        shape.extend(&extra);
        let halves = [
            t.view(shape.as_slice()),
            t.view(shape.as_slice()).randn_like() * 3.0,
        ];
        let mut doubled = vec![p2 * 8];
        doubled.extend(&extra);
        let eight = Tensor::cat(&halves, 1).reshape(doubled.as_slice());
        tensors.insert(name, eight);
    }
    let sd = fidshard_worker::params::StateDict::new(&s.checkpoint, tensors);
    let eight = fidshard_worker::sit::from_state_dict(&s.dit, false, sd).unwrap();
    assert!(eight.config().learn_sigma && !four.config().learn_sigma);
    let x = Tensor::randn([2, 4, 8, 8], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0.3f32, 0.9]);
    let y = Tensor::from_slice(&[1i64, 10]);
    let _g = tch::no_grad_guard();
    let v4 = fidshard_worker::sit::velocity(&four, &x, &t, &y);
    let v8 = fidshard_worker::sit::velocity(&eight, &x, &t, &y);
    assert_eq!(v8.size(), vec![2, 4, 8, 8]);
    let err = rel_l2(&v8, &v4);
    assert!(err < 1e-6, "the velocity half changed by {err:e}");
}

#[test]
fn projectors_are_ignored_and_qk_norm_weights_are_required() {
    let s = settings(JOBS[0]);
    let sd = fidshard_worker::checkpoint::load_state_dict(&s.checkpoint).unwrap();
    assert!(sd.keys().any(|k| k.starts_with("projectors.")));
    let err = fidshard_worker::sit::from_state_dict(&s.dit, true, sd)
        .err()
        .expect("a checkpoint without q_norm weights")
        .to_string();
    assert!(err.contains("attn.q_norm.weight"), "{err}");
}
