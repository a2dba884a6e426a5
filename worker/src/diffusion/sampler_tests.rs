//! The clamped square roots of DDIM (`ddim_coefficients`): the quantity
//! `c = 1 - abar_prev - sigma^2` that rounds to either sign at the last step of a cosine schedule
//! with eta = 1, on inputs where this CPU's float32 gives a tiny positive value (as the Intel CPUs
//! that wrote the fixture did) and a tiny negative one (as AMD EPYC does).
use super::*;

/// A float32 0-dim CPU tensor.
fn scalar(v: f32) -> Tensor {
    Tensor::scalar_tensor(f64::from(v), (Kind::Float, Device::Cpu))
}

fn value(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// The reference's unclamped float32 `1 - abp - sigma ** 2` (gaussian_diffusion.py).
fn unclamped(ab: f32, abp: f32, eta: f32) -> f64 {
    let (ab, abp, eta) = (scalar(ab), scalar(abp), scalar(eta));
    let sigma = eta * (one_minus(&abp) / one_minus(&ab)).sqrt() * one_minus(&(&ab / &abp)).sqrt();
    value(&(one_minus(&abp) - &sigma * &sigma))
}

/// The rounding error of the float32 `c`: 4 float32 ulps (2^-23 relative) of `1 - abp`, the
/// larger of its two terms (`sigma^2 <= 1 - abp`).
fn rounding(abp: f64) -> f64 {
    4.0 * f64::from(f32::EPSILON) * (1.0 - abp)
}

/// The exact `c` for eta = 1: `(1 - abp)^2 ab / ((1 - ab) abp)`.
fn exact_c(ab: f64, abp: f64) -> f64 {
    (1.0 - abp) * (1.0 - abp) * ab / ((1.0 - ab) * abp)
}

/// The last step of squaredcos_cap_v2 "8": abar = 2.43e-9, abar_prev = 0.0488; then float32
/// neighbours of abar_prev (one ulp apart) until this CPU has given `c` both signs.
fn both_signs() -> (f32, f32, f32) {
    let d = SpacedDiffusion::new(BetaSchedule::SquaredCosCapV2, "8").unwrap();
    let ab = d.tables.alphas_cumprod[7] as f32;
    let abp0 = d.tables.alphas_cumprod_prev[7] as f32;
    let (mut pos, mut neg) = (None, None);
    for k in 0..8192u32 {
        let abp = f32::from_bits(abp0.to_bits() + k);
        let c = unclamped(ab, abp, 1.0);
        assert!(
            c.abs() <= rounding(f64::from(abp)),
            "abp {abp}: c = {c:e} is not rounding noise"
        );
        if c > 0.0 {
            pos.get_or_insert(abp);
        } else if c < 0.0 {
            neg.get_or_insert(abp);
        }
        if let (Some(p), Some(n)) = (pos, neg) {
            return (ab, p, n);
        }
    }
    panic!("no abar_prev near {abp0} gives c both signs: pos {pos:?}, neg {neg:?}");
}

#[test]
fn sqrt_nonneg_is_sqrt_where_defined_and_keeps_nan() {
    let v = Tensor::from_slice(&[0.0f32, 1e-30, 5.9604645e-8, 0.25, 2.0, f32::INFINITY]);
    assert!(sqrt_nonneg(&v).equal(&v.sqrt()), "no bit may change");
    let neg = Tensor::from_slice(&[-5.9604645e-8f32, -1.0]);
    assert!(sqrt_nonneg(&neg).equal(&Tensor::zeros([2], (Kind::Float, Device::Cpu))));
    let nan = sqrt_nonneg(&Tensor::from_slice(&[f32::NAN]));
    assert!(
        value(&nan).is_nan(),
        "a NaN input must stay NaN, not become 0"
    );
}

#[test]
fn ddim_coefficients_are_finite_and_agree_for_either_sign() {
    let (ab, abp_pos, abp_neg) = both_signs();
    let eta = scalar(1.0);
    let mut coefs = Vec::new();
    for (name, abp) in [
        ("Intel-like (c > 0)", abp_pos),
        ("AMD-like (c < 0)", abp_neg),
    ] {
        let c = unclamped(ab, abp, 1.0);
        if c < 0.0 {
            assert!(c.sqrt().is_nan(), "the reference's sqrt gives NaN here");
        }
        let (sigma, coef) = ddim_coefficients(&scalar(ab), &scalar(abp), &eta);
        let (sigma, coef) = (value(&sigma), value(&coef));
        assert!(
            sigma.is_finite() && coef.is_finite(),
            "{name}: {sigma} {coef}"
        );
        // Against float64: sigma to float32 rounding, the eps coefficient to sqrt(rounding).
        let (ab64, abp64) = (f64::from(ab), f64::from(abp));
        let sigma64 = ((1.0 - abp64) / (1.0 - ab64)).sqrt() * (1.0 - ab64 / abp64).sqrt();
        assert!(
            (sigma - sigma64).abs() <= 1e-6 * sigma64,
            "{name}: sigma {sigma} vs {sigma64}"
        );
        let bound = rounding(abp64).sqrt();
        let want = exact_c(ab64, abp64).sqrt();
        assert!(
            (coef - want).abs() <= bound,
            "{name}: eps coefficient {coef:e}, exact {want:e}, bound {bound:e}"
        );
        coefs.push((sigma, coef, sigma64));
    }
    // Each other: sigma as far apart as the float64 values of the two inputs (a few ulps apart)
    // plus rounding; the eps coefficients within sqrt(rounding).
    let ((s1, c1, w1), (s2, c2, w2)) = (coefs[0], coefs[1]);
    assert!(
        (s1 - s2).abs() <= (w1 - w2).abs() + 2e-6 * w1,
        "sigma {s1} vs {s2}"
    );
    assert!(
        (c1 - c2).abs() <= rounding(f64::from(abp_pos)).sqrt(),
        "{c1:e} vs {c2:e}"
    );
}

/// Whole DDIM steps (eta = 1) on the real chain with `abar_prev` of its last step set to either
/// value: finite, within tolerance of a float64 evaluation of the step and of each other.
#[test]
fn ddim_step_near_the_clamp_is_finite_for_either_sign() {
    let (_, abp_pos, abp_neg) = both_signs();
    tch::manual_seed(11);
    let shape = [2, 4, 3, 3];
    let x = Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let eps = Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let noise = Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let mut outs = Vec::new();
    for abp in [abp_pos, abp_neg] {
        let mut d = SpacedDiffusion::new(BetaSchedule::SquaredCosCapV2, "8").unwrap();
        d.tables.alphas_cumprod_prev[7] = f64::from(abp);
        let out = d.ddim_sample(&x, 7, &eps, &noise, VarianceType::FixedSmall, 1.0);
        assert!(bool::try_from(out.isfinite().all()).unwrap(), "abp {abp}");

        // float64: x0 = sra x - srm1 eps; x0 sqrt(abp) + sqrt(c) eps + sigma noise.
        let tb = &d.tables;
        let f = |v: f64| f64::from(v as f32);
        let (ab, abp64) = (f(tb.alphas_cumprod[7]), f64::from(abp));
        let k = Kind::Double;
        let x0 = x.to_kind(k) * f(tb.sqrt_recip_alphas_cumprod[7])
            - eps.to_kind(k) * f(tb.sqrt_recipm1_alphas_cumprod[7]);
        let sigma = ((1.0 - abp64) / (1.0 - ab)).sqrt() * (1.0 - ab / abp64).sqrt();
        let want = x0 * abp64.sqrt()
            + eps.to_kind(k) * exact_c(ab, abp64).sqrt()
            + noise.to_kind(k) * sigma;
        let scale = value(&want.abs().max());
        let allowed = eps.to_kind(k).abs() * rounding(abp64).sqrt() + 1e-6 * scale;
        let over = (out.to_kind(k) - &want).abs() - &allowed;
        assert!(value(&over.max()) <= 0.0, "abp {abp}: off the float64 step");
        outs.push((out.to_kind(k), want, allowed));
    }
    // Each other: the two outputs differ by what their inputs' difference (abar_prev, a few
    // float32 ulps apart) explains, within the two tolerances.
    let ((o1, w1, a1), (o2, w2, a2)) = (&outs[0], &outs[1]);
    let unexplained = ((o1 - o2) - (w1 - w2)).abs() - a1 - a2;
    assert!(value(&unexplained.max()) <= 0.0, "the two signs disagree");
}
