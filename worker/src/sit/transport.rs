//! SiT's own samplers (`transport/` of willisma/SiT: `Sampler.sample_ode`, `Sampler.sample_sde`
//! on the Linear path with a velocity model), step for step. Time runs from 0 (noise) to 1
//! (data), `x_t = t x_1 + (1 - t) x_0`. Everything is float32, as SiT's code runs it: the time
//! grid is `torch.linspace` in float32 and the state is the float32 noise.
//!
//! - `sit-ode`: torchdiffeq's fixed-grid `euler` or `heun2` on `linspace(0, 1, N)`, so `N - 1`
//!   steps, each evaluated as torchdiffeq does (`dy = dt * f0`; Heun: the second stage at
//!   `t0 + dt` from `y0 + dt * k1`, `dy = dt * (k1 / 2 + k2 / 2)`; `y1 = y0 + dy`).
//! - `sit-sde`: `N` points on `linspace(0, 1 - last_step_size, N)`, `N - 1` Euler-Maruyama (or
//!   Heun) steps with drift `v + D(t) score(v)` and noise `sqrt(2 D(t)) sqrt(dt) w`, then the last
//!   step (`Mean`: `x + drift * size`, SiT's default).
//!
//! The field [`Field`] is the guided velocity (guidance is the engine's, SiT's
//! `forward_with_cfg`); SiT calls the model twice per SDE step (drift and score) on the same
//! input, which gives the same output, so it is called once here.
pub(crate) use crate::flow::OnStep;
use fidshard_core::flow::Solver;
use fidshard_core::sit_transport::{LastStep, SitSde};
use tch::{Kind, Tensor};

/// The guided velocity at latents `x` (float32) and time `t` (0 = noise, 1 = data).
pub(crate) type Field<'a> = dyn Fn(&Tensor, f64) -> Tensor + 'a;

/// The float32 values of `torch.linspace(start, end, n)` (SiT's default dtype).
fn grid(start: f64, end: f64, n: usize) -> Vec<f32> {
    let t = Tensor::linspace(start, end, n as i64, (Kind::Float, tch::Device::Cpu));
    Vec::<f32>::try_from(&t).expect("a float32 vector")
}

/// SiT's `sample_ode` with torchdiffeq's fixed-grid `euler` or `heun2`: `points` grid points
/// from 0 to 1, the state at the last one returned.
pub(crate) fn sit_ode(
    v: &Field,
    x: Tensor,
    points: usize,
    solver: Solver,
    on_step: &mut OnStep,
) -> Tensor {
    let ts = grid(0.0, 1.0, points);
    let mut y0 = x;
    for k in 0..points - 1 {
        let (t0, t1) = (ts[k], ts[k + 1]);
        let dt = t1 - t0;
        let f0 = v(&y0, f64::from(t0));
        let dy = match solver {
            Solver::Euler => &f0 * f64::from(dt),
            Solver::Heun => {
                // rk2_step_func with Heun's tableau [[1, 1], [1/2, 1/2]].
                let y_mid = &y0 + &f0 * f64::from(dt);
                let k2 = v(&y_mid, f64::from(t0 + dt));
                (&f0 * 0.5 + k2 * 0.5) * f64::from(dt)
            }
        };
        y0 = &y0 + dy;
        on_step(f64::from(t0), &f0, &y0);
    }
    y0
}

/// SiT's `get_score_from_velocity` on the Linear path (`alpha_t = t`, `sigma_t = 1 - t`):
/// `(t v - x) / ((1 - t)^2 + t (1 - t))`, the coefficients in float32 as SiT's tensors are.
fn score(v: &Tensor, x: &Tensor, t: f32) -> Tensor {
    // alpha_t / d_alpha_t = t, d_sigma_t = -1: var = sigma^2 - t * (-1) * sigma.
    let sigma = 1.0 - t;
    let var = sigma * sigma + t * sigma;
    (v * f64::from(t) - x) / f64::from(var)
}

/// SiT's `sample_sde`: the Euler-Maruyama (or Heun) steps on `points` grid points, step `k`
/// taking its noise from `noise[:, 1 + k]`, then the last step.
pub(crate) fn sit_sde(
    v: &Field,
    x: Tensor,
    noise: &Tensor,
    points: usize,
    solver: Solver,
    sde: &SitSde,
    on_step: &mut OnStep,
) -> Tensor {
    let ts = grid(0.0, sde.grid_end(), points);
    let dt = ts[1] - ts[0];
    let sqrt_dt = f64::from(dt.sqrt());
    let diffusion = |t: f32| sde.diffusion_form.at(f64::from(t), sde.diffusion_norm) as f32;
    // `sde_drift`: the velocity plus D(t) times the score; returns (drift, velocity).
    let drift = |x: &Tensor, t: f32| {
        let vel = v(x, f64::from(t));
        let d = &vel + score(&vel, x, t) * f64::from(diffusion(t));
        (d, vel)
    };
    let mut x = x;
    for (k, &t) in ts[..points - 1].iter().enumerate() {
        let w = noise.select(1, 1 + k as i64);
        let dw = w * sqrt_dt;
        let noise_scale = f64::from((2.0 * diffusion(t)).sqrt());
        let (next, out) = match solver {
            Solver::Euler => {
                let (d, vel) = drift(&x, t);
                let mean_x = &x + d * f64::from(dt);
                (mean_x + dw * noise_scale, vel)
            }
            Solver::Heun => {
                let xhat = &x + dw * noise_scale;
                let (k1, vel) = drift(&xhat, t);
                let xp = &xhat + &k1 * f64::from(dt);
                let (k2, _) = drift(&xp, t + dt);
                (&xhat + (k1 + k2) * (0.5 * f64::from(dt)), vel)
            }
        };
        x = next;
        on_step(f64::from(t), &out, &x);
    }
    last_step(&drift, v, x, sde, on_step)
}

/// SiT's `__get_last_step` at `t1 = 1 - last_step_size` (float32, as `th.ones(n) * t1`).
fn last_step(
    drift: &dyn Fn(&Tensor, f32) -> (Tensor, Tensor),
    v: &Field,
    x: Tensor,
    sde: &SitSde,
    on_step: &mut OnStep,
) -> Tensor {
    let t1 = sde.grid_end() as f32;
    let size = sde.last_step_size;
    let (out, x) = match sde.last_step {
        LastStep::None => return x,
        LastStep::Mean => {
            let (d, vel) = drift(&x, t1);
            let next = &x + d * size;
            (vel, next)
        }
        LastStep::Euler => {
            let vel = v(&x, f64::from(t1));
            let next = &x + &vel * size;
            (vel, next)
        }
        LastStep::Tweedie => {
            let vel = v(&x, f64::from(t1));
            let (alpha, sigma) = (t1, 1.0 - t1);
            let next =
                &x / f64::from(alpha) + score(&vel, &x, t1) * f64::from(sigma * sigma / alpha);
            (vel, next)
        }
    };
    on_step(f64::from(t1), &out, &x);
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use fidshard_core::sit_transport::DiffusionForm;

    fn none(_: f64, _: &Tensor, _: &Tensor) {}

    /// v = x: the exact flow from t = 0 to 1 multiplies by e.
    fn identity(x: &Tensor, _t: f64) -> Tensor {
        x.shallow_clone()
    }

    #[test]
    fn the_ode_grid_has_n_points_and_n_minus_one_steps() {
        let x = Tensor::from_slice(&[1.0f32]);
        let times = std::cell::RefCell::new(Vec::new());
        let field = |x: &Tensor, t: f64| {
            times.borrow_mut().push(t);
            x.shallow_clone()
        };
        let euler = sit_ode(&field, x.copy(), 5, Solver::Euler, &mut none);
        assert_eq!(*times.borrow(), vec![0.0, 0.25, 0.5, 0.75]);
        let want = 1.25f64.powi(4);
        assert!((euler.double_value(&[0]) - want).abs() < 1e-6);
        let heun = sit_ode(&identity, x, 200, Solver::Heun, &mut none);
        assert!((heun.double_value(&[0]) - std::f64::consts::E).abs() < 1e-4);
    }

    #[test]
    fn sde_steps_use_their_noise_rows_and_end_with_the_mean_step() {
        // A zero velocity: drift = D(t) * score = D(t) * (-x / (1 - t)).
        let zero = |x: &Tensor, _t: f64| x.zeros_like();
        let x = Tensor::from_slice(&[0.0f32]).view([1, 1, 1, 1]);
        // noise (1, 3, 1, 1, 1): rows 1 and 2 are the steps' noise.
        let noise = Tensor::from_slice(&[9.0f32, 1.0, -2.0]).view([1, 3, 1, 1, 1]);
        let sde = SitSde {
            diffusion_form: DiffusionForm::Constant,
            diffusion_norm: 0.5,
            ..SitSde::default()
        };
        let mut seen = Vec::new();
        let out = sit_sde(&zero, x, &noise, 3, Solver::Euler, &sde, &mut |t, _, x| {
            seen.push((t, x.double_value(&[0, 0, 0, 0])))
        });
        let (t1, dt) = (0.48f64, 0.48f64);
        // Step 0 at t = 0: x = 0 + sqrt(2 * 0.5) * sqrt(dt) * 1.
        let x1 = dt.sqrt();
        // Step 1 at t = 0.48: x += 0.5 * (-x / 0.52) * dt + sqrt(dt) * (-2).
        let x2 = x1 + 0.5 * (-x1 / (1.0 - t1)) * dt - 2.0 * dt.sqrt();
        // The mean step at 0.96: x += 0.5 * (-x / 0.04) * 0.04.
        let x3 = x2 + 0.5 * (-x2 / 0.04) * 0.04;
        assert_eq!(seen.len(), 3);
        for (got, want) in seen.iter().map(|s| s.1).zip([x1, x2, x3]) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        assert!((out.double_value(&[0, 0, 0, 0]) - x3).abs() < 1e-5);
    }
}
