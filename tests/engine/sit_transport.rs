//! SiT's own samplers (`sit-ode`, `sit-sde`) against golden jobs made with willisma/SiT's
//! `transport/` package and torchdiffeq, run unchanged on the digits SiT
//! (`fixtures/sit-transport/make_fixtures.py`): the ODE with torchdiffeq's fixed-grid Euler and
//! Heun, the SDE with the diffusion forms and last steps SiT's own code runs (sigma + Mean,
//! decreasing + Tweedie, linear + Heun steps + Euler, no last step), with and without guidance on
//! 3 channels. Final latents within 1e-4 relative L2, images within the golden tolerances, and
//! the same bytes in batches of other sizes.
use crate::sit::{assert_images_close, npy_bytes, sample, settings};
use crate::support::{fixture, rel_l2};
use fidshard_core::sit_transport::{DiffusionForm, LastStep, SitSde};
use fidshard_core::{CfgChannels, Pixels, SamplerKind, Solver};
use fidshard_worker::Engine;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn job(name: &str) -> Value {
    let path = fixture(&format!("sit-transport/jobs/{name}/job.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The settings `fidshard` resolves for SiT golden job `name` (SiT's defaults: 3 channels
/// guided, DiT's pixels).
fn sit_settings(name: &str) -> fidshard_core::SamplerSettings {
    let j = job(name);
    // The model, VAE and float32 precision of the REPA golden jobs.
    let mut s = settings("ode-euler-cfg1-steps12");
    s.num_samples = j["num_samples"].as_u64().unwrap();
    s.seed = j["seed"].as_u64().unwrap();
    s.cfg_scale = j["cfg"].as_f64().unwrap();
    s.cfg_channels = CfgChannels::First(3);
    s.steps = j["steps"].to_string();
    s.pixels = Pixels::Dit;
    let method = j["method"].as_str().unwrap();
    s.flow.solver = if method.to_lowercase().starts_with("heun") {
        Solver::Heun
    } else {
        Solver::Euler
    };
    if j["mode"] == "ODE" {
        s.sampler = SamplerKind::SitOde;
    } else {
        s.sampler = SamplerKind::SitSde;
        let last = match j["last_step"].as_str() {
            Some(l) => LastStep::parse(l).unwrap(),
            None => LastStep::None,
        };
        s.flow.sit_sde = SitSde {
            diffusion_form: DiffusionForm::parse(j["diffusion_form"].as_str().unwrap()).unwrap(),
            diffusion_norm: j["diffusion_norm"].as_f64().unwrap(),
            last_step: last,
            last_step_size: if last == LastStep::None {
                0.0
            } else {
                j["last_step_size"].as_f64().unwrap()
            },
        };
    }
    s
}

fn check_job(name: &str) {
    let _rng = crate::support::global_rng();
    let s = sit_settings(name);
    let n = s.num_samples;
    let engine = Engine::load(s, Device::Cpu).unwrap();
    let (pixels, latents) = sample(&engine, n, &[12]);
    assert_eq!(latents.kind(), Kind::Float, "SiT's samplers run in float32");
    let dir = fixture(&format!("sit-transport/jobs/{name}"));
    let want = npyz::NpyFile::new(&npy_bytes(&dir.join("expected-latents.npy"), None)[..])
        .unwrap()
        .into_vec::<f32>()
        .unwrap();
    let want = Tensor::from_slice(&want).view(latents.size().as_slice());
    let err = rel_l2(&latents, &want);
    assert!(
        err < 1e-4,
        "{name}: final latents off by {err:e} relative L2"
    );
    let want = npyz::NpyFile::new(&npy_bytes(&dir.join("expected.npz"), Some("arr_0.npy"))[..])
        .unwrap()
        .into_vec::<u8>()
        .unwrap();
    assert_images_close(name, &pixels, &want);
    let (again, _) = sample(&engine, n, &[5, 2]);
    assert!(
        again == pixels,
        "{name}: batches of 5 and 2 changed the bytes"
    );
}

#[test]
fn sit_ode_euler_without_guidance_matches_sit() {
    check_job("ode-euler-cfg1-steps13");
}

#[test]
fn sit_ode_heun2_with_guidance_on_three_channels_matches_sit() {
    check_job("ode-heun2-cfg4");
}

#[test]
fn sit_sde_with_sits_defaults_matches_sit() {
    check_job("sde-sigma-cfg4");
}

#[test]
fn sit_sde_decreasing_diffusion_and_tweedie_last_step_match_sit() {
    check_job("sde-decreasing-tweedie-cfg1.5");
}

#[test]
fn sit_sde_heun_steps_and_an_euler_last_step_match_sit() {
    check_job("sde-heun-linear-euler-last-cfg1");
}

#[test]
fn sit_sde_without_a_last_step_matches_sit() {
    check_job("sde-sigma-no-last-step-cfg2");
}

/// A NaN or infinite SiT run names the step and time where it first appeared, and where: a
/// diffusion norm beyond float32 makes the first SDE update infinite from a finite velocity.
#[test]
fn a_non_finite_sit_run_names_its_first_step_and_time() {
    let _rng = crate::support::global_rng();
    let mut s = sit_settings("sde-sigma-cfg4");
    s.num_samples = 2;
    s.flow.sit_sde.diffusion_norm = 1e300;
    let engine = Engine::load(s, Device::Cpu).unwrap();
    let err = engine
        .try_sample_batch(&[0, 1], &mut fidshard_worker::Timings::default())
        .err()
        .expect("an overflowing SDE")
        .to_string();
    assert!(
        err.contains("first at sampling step 1 of 25 (t = 0) in the sampler's update, from a finite velocity; likely causes: an SDE coefficient"),
        "{err}"
    );
}

/// `guidance_interval` in SiT's time: outside it the velocity is unguided, so an interval no
/// step falls in samples what `cfg_scale: 1` samples, and one that covers [0, 1] what no
/// interval does.
#[test]
fn sits_guidance_interval_turns_guidance_off_outside_it() {
    let _rng = crate::support::global_rng();
    let run = |cfg: f64, interval: [f64; 2]| {
        let mut s = sit_settings("ode-heun2-cfg4");
        s.num_samples = 3;
        s.cfg_scale = cfg;
        s.flow.guidance_interval = interval;
        let engine = Engine::load(s, Device::Cpu).unwrap();
        sample(&engine, 3, &[3]).0
    };
    let guided = run(4.0, [0.0, 1.0]);
    assert!(run(4.0, [1.5, 2.0]) == run(1.0, [0.0, 1.0]));
    assert!(run(4.0, [0.5, 1.0]) != guided);
    let want = npyz::NpyFile::new(
        &npy_bytes(
            &fixture("sit-transport/jobs/ode-heun2-cfg4/expected.npz"),
            Some("arr_0.npy"),
        )[..],
    )
    .unwrap()
    .into_vec::<u8>()
    .unwrap();
    assert_images_close("interval [0, 1]", &guided, &want[..guided.len()]);
}
