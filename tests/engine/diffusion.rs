//! Parity tests: the Gaussian diffusion (beta schedules, respacing, coefficient tables, one DDPM /
//! DDIM step) against the reference.
//!
//! - `fixtures/golden/respacing.json` was produced by the reference code itself.
//! - `fixtures/diffusion/diffusion.json` is written by `fixtures/diffusion/make_fixtures.py`, an
//!   independent numpy/torch float32 transcription of the reference formulas (it checks itself
//!   against `respacing.json` first). Its step cases are tiny random tensors with their inputs.
//!   It was written on one CPU and must hold on every x86 CPU: values within 1e-6 of the largest
//!   reference magnitude, plus, only at DDIM steps whose clamped `1 - abar_prev - sigma^2` is
//!   rounding noise, the bound of [`ddim_clamp_allowance`] times |eps|.
use std::collections::{BTreeMap, BTreeSet};

use fidshard_worker::diffusion::{
    get_named_beta_schedule, space_timesteps, BetaSchedule, RespaceError, SpacedDiffusion,
    VarianceType,
};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn read_json(rel: &str) -> Value {
    let path = crate::support::fixture(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn i64s(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("integer"))
        .collect()
}

/// A float32 tensor of `shape` from JSON numbers (which are float32 values written as doubles).
fn tensor(v: &Value, shape: &[i64], device: Device) -> Tensor {
    let data: Vec<f32> = f64s(v).into_iter().map(|x| x as f32).collect();
    Tensor::from_slice(&data).view(shape).to_device(device)
}

fn schedule(v: &Value) -> BetaSchedule {
    v.as_str().expect("schedule name").parse().unwrap()
}

/// Largest relative difference |a - b| / |b| over the entries (b = reference; |b| = 0 needs a = 0).
fn max_rel_diff(out: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "length mismatch");
    out.iter()
        .zip(reference)
        .map(|(a, b)| if a == b { 0.0 } else { (a - b).abs() / b.abs() })
        .fold(0.0, f64::max)
}

/// Asserts that `out` matches the float32 reference to 1e-6 relative: relative L2 error, and every
/// entry within 1e-6 of the largest reference magnitude, plus `allowance` (absolute, per entry;
/// 0 except near DDIM's clamp, see [`ddim_clamp_allowance`]). Returns how many entries differ at
/// all.
fn assert_close_f32(what: &str, out: &Tensor, reference: &Tensor, allowance: f64) -> usize {
    let out = out.to_device(Device::Cpu);
    assert_eq!(out.kind(), Kind::Float, "{what}: result must be float32");
    let diff = (&out - reference).to_kind(Kind::Double);
    let l2 = diff.square().sum(Kind::Double).sqrt().double_value(&[]);
    let ref_l2 = reference
        .to_kind(Kind::Double)
        .square()
        .sum(Kind::Double)
        .sqrt()
        .double_value(&[]);
    let scale = reference.abs().max().double_value(&[]).max(1e-30);
    let max_abs = diff.abs().max().double_value(&[]);
    let n = reference.numel() as f64;
    assert!(
        l2 <= 1e-6 * ref_l2 + allowance * n.sqrt() && max_abs <= 1e-6 * scale + allowance,
        "{what}: relative L2 error {:e}, max abs diff {max_abs:e} (reference scale {scale:e}, \
         clamp allowance {allowance:e})",
        l2 / ref_l2.max(1e-30)
    );
    out.ne_tensor(reference).sum(Kind::Int64).int64_value(&[]) as usize
}

/// The float32 rounding error of DDIM's `c = 1 - abar_prev - sigma^2`: 4 float32 ulps
/// (2^-23 relative) of `1 - abar_prev`, the larger of its two terms (`sigma^2 <= 1 - abar_prev`).
fn ddim_rounding(abar_prev: f64) -> f64 {
    4.0 * f64::from(f32::EPSILON) * (1.0 - abar_prev)
}

/// How far, per unit of |eps|, a correct DDIM step may be from the reference at respaced index `i`
/// because of the clamp in `sqrt(max(c, 0))`.
///
/// Both the sampler and the fixture generator compute `c` in float32 and clamp it at 0. Where the
/// exact `c` (from the float32 table values, in float64) is within the rounding error `delta` of
/// 0, the sign of the float32 value depends on the CPU's kernels (the fixture's CPU and this one
/// may disagree), so each side's `sqrt(max(c, 0))` is somewhere in [0, sqrt(c+ + delta)]: they
/// differ by at most `sqrt(max(c, 0) + delta) <= sqrt(2 delta)`, about 5e-4 for `1 - abar_prev`
/// near 1, times |eps|. Elsewhere the sign cannot flip, the clamp changes nothing and the
/// allowance is 0: the strict tolerance applies.
fn ddim_clamp_allowance(d: &SpacedDiffusion, i: usize, eta: f64) -> f64 {
    let tb = d.tables();
    let f = |v: f64| f64::from(v as f32);
    let (ab, abp, eta) = (
        f(tb.alphas_cumprod[i]),
        f(tb.alphas_cumprod_prev[i]),
        f(eta),
    );
    let sigma2 = eta * eta * (1.0 - abp) / (1.0 - ab) * (1.0 - ab / abp);
    let c = 1.0 - abp - sigma2;
    let delta = ddim_rounding(abp);
    if c.abs() <= delta {
        (c.max(0.0) + delta).sqrt()
    } else {
        0.0
    }
}

/// The allowance of a step case in absolute terms: [`ddim_clamp_allowance`] times the largest
/// |eps| (the model output's first C channels; the sampler's eps is recomputed from it, so 1%
/// is added for its rounding).
fn step_allowance(
    d: &SpacedDiffusion,
    case: &Value,
    i: usize,
    model_output: &Tensor,
    c: i64,
) -> f64 {
    if case["sampler"].as_str() != Some("ddim") {
        return 0.0;
    }
    let per_eps = ddim_clamp_allowance(d, i, case["eta"].as_f64().unwrap());
    if per_eps == 0.0 {
        return 0.0;
    }
    let eps_max = model_output.narrow(1, 0, c).abs().max().double_value(&[]);
    per_eps * eps_max * 1.01
}

// ------------------------------------------------------------------------------- respacing

#[test]
fn golden_respacing_matches_reference() {
    let golden = read_json("golden/respacing.json");
    let golden = golden.as_object().expect("object of specs");
    assert!(
        golden.len() >= 10,
        "golden respacing lists {} specs",
        golden.len()
    );
    for (spec, expected) in golden {
        let d = SpacedDiffusion::new(BetaSchedule::Linear, spec)
            .unwrap_or_else(|e| panic!("spec {spec:?}: {e}"));
        let tmap = i64s(&expected["timestep_map"]);
        assert_eq!(
            d.timestep_map(),
            tmap.as_slice(),
            "spec {spec:?}: timestep_map"
        );
        assert_eq!(d.num_steps(), tmap.len(), "spec {spec:?}: num_steps");
        let betas = f64s(&expected["betas"]);
        let rel = max_rel_diff(d.betas(), &betas);
        assert!(
            rel <= 1e-12,
            "spec {spec:?}: betas differ by {rel:e} relative"
        );

        let set = space_timesteps(1000, spec).unwrap();
        let from_map: BTreeSet<usize> = tmap.iter().map(|&t| t as usize).collect();
        assert_eq!(set, from_map, "spec {spec:?}: space_timesteps");
    }
}

#[test]
fn ddim_specs_use_the_first_fitting_stride() {
    for (spec, stride, count) in [
        ("ddim50", 20, 50),
        ("ddim25", 40, 25),
        ("ddim100", 10, 100),
        ("ddim1000", 1, 1000),
        // ceil(1000 / 143) = 7: "ddim7" is achievable, with stride 143 (0, 143, ..., 858).
        ("ddim7", 143, 7),
        // ceil(1000 / 3) = 334.
        ("ddim334", 3, 334),
    ] {
        let got = space_timesteps(1000, spec).unwrap_or_else(|e| panic!("{e}"));
        let want: BTreeSet<usize> = (0..1000).step_by(stride).collect();
        assert_eq!(got.len(), count, "{spec}");
        assert_eq!(got, want, "{spec}");
    }
    let d = SpacedDiffusion::new(BetaSchedule::Linear, "ddim7").unwrap();
    assert_eq!(d.timestep_map(), &[0, 143, 286, 429, 572, 715, 858]);
}

#[test]
fn section_specs_round_half_to_even() {
    // 10 steps into 3: stride 4.5, round(4.5) = 4 (Python's round ties to even), round(9.0) = 9.
    assert_eq!(space_timesteps(10, "3").unwrap(), BTreeSet::from([0, 4, 9]));
    // stride 2.25: 0, 2.25, 4.5, 6.75, 9 -> 0, 2, 4, 7, 9.
    assert_eq!(
        space_timesteps(10, "5").unwrap(),
        BTreeSet::from([0, 2, 4, 7, 9])
    );
    // 300 steps as in the reference's docstring: sections of 100 strided to 10, 15 and 20.
    let s = space_timesteps(300, "10,15,20").unwrap();
    assert_eq!(s.len(), 45);
    assert_eq!(s.iter().filter(|&&t| t < 100).count(), 10);
    assert_eq!(s.iter().filter(|&&t| (100..200).contains(&t)).count(), 15);
    assert!(s.contains(&0) && s.contains(&99) && s.contains(&100) && s.contains(&299));
    // Uneven split: 1000 = 334 + 333 + 333; a count of 1 takes the section's first step.
    assert_eq!(
        space_timesteps(1000, "1,1,1").unwrap(),
        BTreeSet::from([0, 334, 667])
    );
    // Whitespace around counts is accepted, as Python's int() does.
    assert_eq!(
        space_timesteps(1000, " 10, 20 ,30 ").unwrap(),
        space_timesteps(1000, "10,20,30").unwrap()
    );
    // A single step keeps the first base step.
    let d = SpacedDiffusion::new(BetaSchedule::Linear, "1").unwrap();
    assert_eq!(d.timestep_map(), &[0]);
    // 1 - alphas_cumprod[0] / 1, with alphas_cumprod[0] = 1 - 1e-4 rounded: not exactly 1e-4.
    assert_eq!(d.betas(), &[1.0 - (1.0 - 0.0001)]);
}

#[test]
fn bad_specs_are_typed_errors_naming_the_spec() {
    let cases: &[(&str, &str)] = &[
        (
            "1001",
            r#"steps "1001": section of 1000 steps cannot be split into 1001"#,
        ),
        (
            "2000",
            r#"steps "2000": section of 1000 steps cannot be split into 2000"#,
        ),
        (
            "10,600",
            r#"steps "10,600": section of 500 steps cannot be split into 600"#,
        ),
        ("0", r#"steps "0": 0 sampling steps"#),
        ("0,0", r#"steps "0,0": 0 sampling steps"#),
        ("ddim0", r#"steps "ddim0": 0 sampling steps"#),
        ("abc", r#"steps "abc": "abc" is not a non-negative integer"#),
        ("-5", r#"steps "-5": "-5" is not a non-negative integer"#),
        ("2.5", r#"steps "2.5": "2.5" is not a non-negative integer"#),
        (
            "10,,20",
            r#"steps "10,,20": "" is not a non-negative integer"#,
        ),
        ("ddim", r#"steps "ddim": "" is not a non-negative integer"#),
        (
            "ddimx",
            r#"steps "ddimx": "x" is not a non-negative integer"#,
        ),
        ("", r#"steps "": empty"#),
        ("  ", r#"steps "  ": empty"#),
        // No stride in 1..1000 gives 600 timesteps (stride 1 gives 1000, stride 2 gives 500).
        (
            "ddim600",
            r#"steps "ddim600": no stride of 1000 steps gives exactly 600 timesteps"#,
        ),
        // Strides stop at 999 (ceil(1000 / 999) = 2), so one step is unreachable with DDIM striding.
        (
            "ddim1",
            r#"steps "ddim1": no stride of 1000 steps gives exactly 1 timesteps"#,
        ),
        (
            "ddim1001",
            r#"steps "ddim1001": no stride of 1000 steps gives exactly 1001"#,
        ),
    ];
    for (spec, want) in cases {
        let err = space_timesteps(1000, spec).expect_err(spec);
        let msg = err.to_string();
        assert!(
            msg.starts_with(want),
            "spec {spec:?}: message {msg:?}, want {want:?}..."
        );
        let err2 = SpacedDiffusion::new(BetaSchedule::Linear, spec).expect_err(spec);
        assert_eq!(err, err2);
    }
    let err = space_timesteps(1000, "ddim600").unwrap_err();
    assert!(
        matches!(&err, RespaceError::NoDdimStride { nearest, .. } if nearest == &[500, 1000]),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .ends_with(r#"nearest that work: "ddim500", "ddim1000""#),
        "{err}"
    );
}

// ------------------------------------------------------------------------------- schedules and tables

#[test]
fn base_betas_match_numpy() {
    let fx = read_json("diffusion/diffusion.json");
    for name in ["linear", "squaredcos_cap_v2"] {
        let want = f64s(&fx["base_betas"][name]);
        let got = get_named_beta_schedule(name.parse().unwrap(), 1000);
        assert_eq!(got.len(), 1000);
        let rel = max_rel_diff(&got, &want);
        assert!(rel <= 1e-12, "{name}: betas differ by {rel:e} relative");
    }
    // A few squaredcos_cap_v2 values by hand, from the formula with alpha_bar(t) =
    // cos((t + 0.008) / 1.008 * pi / 2)^2 (also in the fixture, computed by numpy):
    let b = get_named_beta_schedule(BetaSchedule::SquaredCosCapV2, 1000);
    let ab = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    for i in [0usize, 1, 500, 998] {
        let t1 = i as f64 / 1000.0;
        let t2 = (i + 1) as f64 / 1000.0;
        assert!(
            (b[i] - (1.0 - ab(t2) / ab(t1))).abs() <= 1e-15 * b[i],
            "beta[{i}]"
        );
    }
    // The last step is capped at max_beta = 0.999 (alpha_bar(1) is ~0).
    assert_eq!(b[999], 0.999);
    assert!(b.iter().all(|&x| x > 0.0 && x <= 0.999));
}

#[test]
fn coefficient_tables_match_numpy() {
    let fx = read_json("diffusion/diffusion.json");
    for case in fx["spaced"].as_array().unwrap() {
        let spec = case["spec"].as_str().unwrap();
        let sched = schedule(&case["schedule"]);
        let d = SpacedDiffusion::new(sched, spec).unwrap();
        assert_eq!(
            d.timestep_map(),
            i64s(&case["timestep_map"]).as_slice(),
            "{sched}/{spec}"
        );
        let tb = d.tables();
        let ours: BTreeMap<&str, &Vec<f64>> = BTreeMap::from([
            ("betas", &tb.betas),
            ("alphas_cumprod", &tb.alphas_cumprod),
            ("alphas_cumprod_prev", &tb.alphas_cumprod_prev),
            ("sqrt_recip_alphas_cumprod", &tb.sqrt_recip_alphas_cumprod),
            (
                "sqrt_recipm1_alphas_cumprod",
                &tb.sqrt_recipm1_alphas_cumprod,
            ),
            ("posterior_variance", &tb.posterior_variance),
            (
                "posterior_log_variance_clipped",
                &tb.posterior_log_variance_clipped,
            ),
            ("posterior_mean_coef1", &tb.posterior_mean_coef1),
            ("posterior_mean_coef2", &tb.posterior_mean_coef2),
            ("log_betas", &tb.log_betas),
            ("fixed_large_variance", &tb.fixed_large_variance),
            ("fixed_large_log_variance", &tb.fixed_large_log_variance),
        ]);
        let theirs = case["tables"].as_object().unwrap();
        assert_eq!(theirs.len(), ours.len(), "{sched}/{spec}: table names");
        for (name, want) in theirs {
            let got = ours
                .get(name.as_str())
                .unwrap_or_else(|| panic!("no table {name}"));
            let rel = max_rel_diff(got, &f64s(want));
            assert!(
                rel <= 1e-12,
                "{sched}/{spec}: {name} differs by {rel:e} relative"
            );
        }
    }
}

// ------------------------------------------------------------------------------- sampling steps

fn variance(v: &Value) -> VarianceType {
    v.as_str().unwrap().parse().unwrap()
}

fn run_step(
    d: &SpacedDiffusion,
    case: &Value,
    x: &Tensor,
    i: usize,
    model_output: &Tensor,
    noise: &Tensor,
) -> Tensor {
    let var = variance(&case["variance"]);
    match case["sampler"].as_str().unwrap() {
        "ddpm" => d.p_sample(x, i, model_output, noise, var),
        "ddim" => d.ddim_sample(
            x,
            i,
            model_output,
            noise,
            var,
            case["eta"].as_f64().unwrap(),
        ),
        other => panic!("unknown sampler {other}"),
    }
}

fn check_steps_on(device: Device) {
    let fx = read_json("diffusion/diffusion.json");
    let mut cache: BTreeMap<(String, String), SpacedDiffusion> = BTreeMap::new();
    let (mut entries, mut differing, mut near_clamp) = (0usize, 0usize, 0usize);
    let steps = fx["steps"].as_array().unwrap();
    assert!(steps.len() >= 48);
    for case in steps {
        let key = (
            case["schedule"].as_str().unwrap().to_string(),
            case["spec"].as_str().unwrap().to_string(),
        );
        let d = cache
            .entry(key.clone())
            .or_insert_with(|| SpacedDiffusion::new(key.0.parse().unwrap(), &key.1).unwrap());
        let shape = i64s(&case["shape"]);
        let var = variance(&case["variance"]);
        let mut mo_shape = shape.clone();
        mo_shape[1] = var.output_channels(shape[1]);
        let i = case["i"].as_u64().unwrap() as usize;
        let x = tensor(&case["x"], &shape, device);
        let mo = tensor(&case["model_output"], &mo_shape, device);
        let noise = tensor(&case["noise"], &shape, device);
        let want = tensor(&case["out"], &shape, Device::Cpu);
        let got = run_step(d, case, &x, i, &mo, &noise);
        assert_eq!(got.device(), device);
        let what = format!(
            "{}/{} {} eta={} {} i={i}",
            key.0, key.1, case["sampler"], case["eta"], var
        );
        let allowance = step_allowance(d, case, i, &mo, shape[1]);
        near_clamp += usize::from(allowance > 0.0);
        differing += assert_close_f32(&what, &got, &want, allowance);
        entries += want.numel();
    }
    eprintln!(
        "{device:?}: {entries} step outputs, {differing} not bit-identical to the reference; \
         {near_clamp} step(s) near DDIM's clamp"
    );
}

/// Runs every fixture chain from its x_T and compares each step. A step near DDIM's clamp is
/// compared with [`step_allowance`], and the chain then goes on from the reference's sample, so
/// the steps after it are held to the strict tolerance again (otherwise the allowed difference
/// would be carried through the rest of the chain). Returns how many steps were near the clamp.
fn check_chains_on(device: Device) -> usize {
    let fx = read_json("diffusion/diffusion.json");
    let mut near_clamp = 0;
    for case in fx["chains"].as_array().unwrap() {
        let spec = case["spec"].as_str().unwrap();
        let d = SpacedDiffusion::new(schedule(&case["schedule"]), spec).unwrap();
        assert_eq!(d.timestep_map(), i64s(&case["timestep_map"]).as_slice());
        let shape = i64s(&case["shape"]);
        let var = variance(&case["variance"]);
        let mut mo_shape = shape.clone();
        mo_shape[1] = var.output_channels(shape[1]);
        let mos = case["model_outputs"].as_array().unwrap();
        let noises = case["noises"].as_array().unwrap();
        let samples = case["samples"].as_array().unwrap();
        assert_eq!(mos.len(), d.num_steps());
        let mut x = tensor(&case["x_T"], &shape, device);
        // Sampling order of the reference: i = S-1 down to 0, k-th step uses the k-th draws.
        for (k, i) in (0..d.num_steps()).rev().enumerate() {
            let mo = tensor(&mos[k], &mo_shape, device);
            let noise = tensor(&noises[k], &shape, device);
            x = run_step(&d, case, &x, i, &mo, &noise);
            let want = tensor(&samples[k], &shape, Device::Cpu);
            let what = format!(
                "chain {}/{spec} {} step {k} (i={i})",
                case["schedule"], case["sampler"]
            );
            let allowance = step_allowance(&d, case, i, &mo, shape[1]);
            assert_close_f32(&what, &x, &want, allowance);
            if allowance > 0.0 {
                near_clamp += 1;
                x = want.to_device(device);
            }
        }
    }
    near_clamp
}

#[test]
fn single_steps_match_reference_cpu() {
    check_steps_on(Device::Cpu);
}

#[test]
fn chains_match_reference_cpu() {
    // The squaredcos_cap_v2 "8" DDIM eta = 1 chain starts at such a step (c ~ 4.5e-8); if no
    // step were near the clamp, the allowance above would be untested.
    assert_eq!(check_chains_on(Device::Cpu), 1, "steps near DDIM's clamp");
}

/// The allowance applies exactly where the clamped quantity is rounding noise: at the last step
/// of the cosine schedule with eta = 1, not with eta = 0 or 0.3, nor at any step of the linear
/// schedule (whose last abar, 4e-5, keeps `c` far from 0).
#[test]
fn clamp_allowance_only_near_zero() {
    let cos = SpacedDiffusion::new(BetaSchedule::SquaredCosCapV2, "8").unwrap();
    let a = ddim_clamp_allowance(&cos, 7, 1.0);
    assert!(a > 0.0 && a <= (2.0 * ddim_rounding(0.0)).sqrt(), "{a}");
    assert!(a < 1e-3, "about sqrt(a few float32 ulps of 1): {a}");
    assert_eq!(ddim_clamp_allowance(&cos, 7, 0.0), 0.0);
    assert_eq!(ddim_clamp_allowance(&cos, 7, 0.3), 0.0);
    for i in 0..7 {
        assert_eq!(ddim_clamp_allowance(&cos, i, 1.0), 0.0, "i = {i}");
    }
    let lin = SpacedDiffusion::new(BetaSchedule::Linear, "250").unwrap();
    for i in 0..250 {
        assert_eq!(ddim_clamp_allowance(&lin, i, 1.0), 0.0, "i = {i}");
    }
}

/// The same cases on the GPU where there is one (skipped otherwise).
#[test]
fn steps_and_chains_match_reference_cuda() {
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: skipped");
        return;
    }
    check_steps_on(Device::Cuda(0));
    assert_eq!(check_chains_on(Device::Cuda(0)), 1);
}

#[test]
fn last_step_ignores_noise_but_takes_it() {
    let d = SpacedDiffusion::new(BetaSchedule::Linear, "50").unwrap();
    let _rng = crate::support::global_rng();
    tch::manual_seed(7);
    let x = Tensor::randn([2, 4, 3, 3], (Kind::Float, Device::Cpu));
    let mo = Tensor::randn([2, 8, 3, 3], (Kind::Float, Device::Cpu)) * 0.5;
    let n1 = Tensor::randn([2, 4, 3, 3], (Kind::Float, Device::Cpu));
    let n2 = Tensor::randn([2, 4, 3, 3], (Kind::Float, Device::Cpu));
    for var in [
        VarianceType::LearnedRange,
        VarianceType::FixedLarge,
        VarianceType::FixedSmall,
    ] {
        let mo = mo.narrow(1, 0, var.output_channels(4));
        let a = d.p_sample(&x, 0, &mo, &n1, var);
        let b = d.p_sample(&x, 0, &mo, &n2, var);
        assert!(a.equal(&b), "{var}: noise must not matter at i = 0");
        let a = d.p_sample(&x, 1, &mo, &n1, var);
        let b = d.p_sample(&x, 1, &mo, &n2, var);
        assert!(!a.equal(&b), "{var}: noise must matter at i = 1");
        for eta in [0.0, 1.0] {
            let a = d.ddim_sample(&x, 0, &mo, &n1, var, eta);
            let b = d.ddim_sample(&x, 0, &mo, &n2, var, eta);
            assert!(
                a.equal(&b),
                "{var} ddim eta={eta}: noise must not matter at i = 0"
            );
        }
        // eta = 0 is deterministic at every step.
        let a = d.ddim_sample(&x, 30, &mo, &n1, var, 0.0);
        let b = d.ddim_sample(&x, 30, &mo, &n2, var, 0.0);
        assert!(
            a.equal(&b),
            "{var}: DDIM with eta = 0 must not use the noise"
        );
    }
}

#[test]
fn one_step_chain_samples_the_denoised_estimate() {
    // The reference cannot sample a 1-step chain (its tables index posterior_variance[1]); here
    // the single step (t = 0, no noise) returns the posterior mean, i.e. ~pred_xstart.
    let d = SpacedDiffusion::new(BetaSchedule::Linear, "1").unwrap();
    assert_eq!(d.num_steps(), 1);
    let _rng = crate::support::global_rng();
    tch::manual_seed(3);
    let x = Tensor::randn([1, 4, 2, 2], (Kind::Float, Device::Cpu));
    let mo = Tensor::randn([1, 8, 2, 2], (Kind::Float, Device::Cpu));
    let noise = Tensor::randn([1, 4, 2, 2], (Kind::Float, Device::Cpu));
    let tb = d.tables();
    let eps = mo.narrow(1, 0, 4);
    let x0 = &x * (tb.sqrt_recip_alphas_cumprod[0] as f32 as f64)
        - &eps * (tb.sqrt_recipm1_alphas_cumprod[0] as f32 as f64);
    for var in [
        VarianceType::LearnedRange,
        VarianceType::FixedLarge,
        VarianceType::FixedSmall,
    ] {
        let mo = mo.narrow(1, 0, var.output_channels(4));
        let a = d.p_sample(&x, 0, &mo, &noise, var);
        assert!(bool::try_from(a.isfinite().all()).unwrap(), "{var}");
        assert!(
            crate::support::rel_l2(&a, &x0) < 1e-6,
            "{var}: {}",
            crate::support::rel_l2(&a, &x0)
        );
        let b = d.ddim_sample(&x, 0, &mo, &noise, var, 1.0);
        assert!(
            crate::support::rel_l2(&b, &x0) < 1e-6,
            "{var}: {}",
            crate::support::rel_l2(&b, &x0)
        );
    }
}

#[test]
#[should_panic(expected = "model output has shape [2, 4, 3, 3] but variance type learned_range")]
fn learned_range_needs_twice_the_channels() {
    let d = SpacedDiffusion::new(BetaSchedule::Linear, "10").unwrap();
    let x = Tensor::zeros([2, 4, 3, 3], (Kind::Float, Device::Cpu));
    let _ = d.p_sample(&x, 5, &x, &x, VarianceType::LearnedRange);
}

#[test]
#[should_panic(expected = "model output has shape [2, 8, 3, 3] but variance type fixed_small")]
fn fixed_variance_needs_exactly_the_channels() {
    let d = SpacedDiffusion::new(BetaSchedule::Linear, "10").unwrap();
    let x = Tensor::zeros([2, 4, 3, 3], (Kind::Float, Device::Cpu));
    let mo = Tensor::zeros([2, 8, 3, 3], (Kind::Float, Device::Cpu));
    let _ = d.ddim_sample(&x, 5, &mo, &x, VarianceType::FixedSmall, 0.0);
}

#[test]
#[should_panic(expected = "diffusion step index 10 out of range")]
fn step_index_must_be_in_the_respaced_chain() {
    let d = SpacedDiffusion::new(BetaSchedule::Linear, "10").unwrap();
    let x = Tensor::zeros([1, 4, 2, 2], (Kind::Float, Device::Cpu));
    let _ = d.p_sample(&x, 10, &x, &x, VarianceType::FixedLarge);
}

#[test]
fn names_parse() {
    assert_eq!(
        "linear".parse::<BetaSchedule>().unwrap(),
        BetaSchedule::Linear
    );
    assert_eq!(
        "squaredcos_cap_v2".parse::<BetaSchedule>().unwrap(),
        BetaSchedule::SquaredCosCapV2
    );
    assert!("cosine".parse::<BetaSchedule>().is_err());
    let s: BetaSchedule = serde_json::from_str("\"squaredcos_cap_v2\"").unwrap();
    assert_eq!(s, BetaSchedule::SquaredCosCapV2);
    assert_eq!(
        VarianceType::from_flags(true, false),
        VarianceType::LearnedRange
    );
    assert_eq!(
        VarianceType::from_flags(false, false),
        VarianceType::FixedLarge
    );
    assert_eq!(
        VarianceType::from_flags(false, true),
        VarianceType::FixedSmall
    );
    let v: VarianceType = serde_json::from_str("\"fixed_small\"").unwrap();
    assert_eq!(v, VarianceType::FixedSmall);
}
