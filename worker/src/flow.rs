//! REPA's published samplers (`samplers.py` of sihyun-yu/REPA), step for step: `euler_sampler`
//! (the probability-flow ODE, Euler or Heun) and `euler_maruyama_sampler` (the SDE with
//! diffusion `2t` on `linspace(1, 0.04, N)`, then a final mean step to t = 0). Time runs from
//! 1 (noise) to 0 (data). The state is float64 as in REPA; the model is called by the engine in
//! the job's precision.
//!
//! Classifier-free guidance applies only where `low <= t_cur <= high` (REPA's guidance
//! interval); outside it the batch is not doubled. Guided calls put the conditional half first
//! and the null labels second, and mix `uncond + scale * (cond - uncond)` on every channel.
use fidshard_core::flow::{PathType, Solver};
use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// The velocity model as the samplers see it: float64 latents `(N, C, H, W)`, the time `t` of
/// every row, labels `(N,)` -> float64 velocity `(N, C, H, W)`.
pub(crate) type Velocity<'a> = dyn Fn(&Tensor, f64, &Tensor) -> Tensor + 'a;

/// Called after every step with `(t, the model output, the new state)`, so that the engine can
/// name the step where values first stop being finite.
pub(crate) type OnStep<'a> = dyn FnMut(f64, &Tensor, &Tensor) + 'a;

/// Labels and guidance of one batch.
pub(crate) struct Guide<'a> {
    pub y: &'a Tensor,
    /// The null labels (`num_classes`), one per row.
    pub y_null: &'a Tensor,
    /// `cfg_scale` when guidance is on at all (scale > 1 with class labels), else `None`.
    pub scale: Option<f64>,
    pub interval: [f64; 2],
}

impl Guide<'_> {
    fn active(&self, t_cur: f64) -> Option<f64> {
        self.scale
            .filter(|_| t_cur <= self.interval[1] && t_cur >= self.interval[0])
    }

    /// The model's input and labels at `x`: doubled (`[x, x]`, `[y, null]`) when guided.
    fn input(&self, x: &Tensor, guided: bool) -> (Tensor, Tensor) {
        if guided {
            (
                Tensor::cat(&[x, x], 0),
                Tensor::cat(&[self.y, self.y_null], 0),
            )
        } else {
            (x.shallow_clone(), self.y.shallow_clone())
        }
    }
}

/// `d_uncond + scale * (d_cond - d_uncond)` of a doubled batch.
fn mix(d: &Tensor, scale: f64) -> Tensor {
    let halves = d.chunk(2, 0);
    let (cond, uncond) = (&halves[0], &halves[1]);
    uncond + (cond - uncond) * scale
}

/// The values of `torch.linspace(start, end, n, dtype=float64)` (libtorch's own kernel, so the
/// bits are REPA's).
fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    let t = Tensor::linspace(start, end, n as i64, (Kind::Double, tch::Device::Cpu));
    Vec::<f64>::try_from(&t).expect("a float64 vector")
}

/// REPA's `euler_sampler`: `steps` steps on `linspace(1, 0, steps + 1)`; with Heun, a
/// corrector at `t_next` on every step but the last (guided by `t_cur`'s interval test).
pub(crate) fn euler_sampler(
    model: &Velocity,
    x: Tensor,
    steps: usize,
    solver: Solver,
    guide: &Guide,
    on_step: &mut OnStep,
) -> Tensor {
    let ts = linspace(1.0, 0.0, steps + 1);
    let drift = |x: &Tensor, t: f64, scale: Option<f64>| {
        let (input, y) = guide.input(x, scale.is_some());
        let d = model(&input, t, &y);
        match scale {
            Some(s) => mix(&d, s),
            None => d,
        }
    };
    let mut x_next = x;
    for i in 0..steps {
        let (t_cur, t_next) = (ts[i], ts[i + 1]);
        let x_cur = x_next;
        let scale = guide.active(t_cur);
        let d_cur = drift(&x_cur, t_cur, scale);
        x_next = &x_cur + &d_cur * (t_next - t_cur);
        if solver == Solver::Heun && i < steps - 1 {
            let d_prime = drift(&x_next, t_next, scale);
            x_next = &x_cur + (&d_cur * 0.5 + d_prime * 0.5) * (t_next - t_cur);
        }
        on_step(t_cur, &d_cur, &x_next);
    }
    x_next
}

/// REPA's `get_score_from_velocity` at a time `t` shared by all rows.
fn score_from_velocity(v: &Tensor, x: &Tensor, t: f64, path: PathType) -> Tensor {
    let (alpha, d_alpha, sigma, d_sigma) = match path {
        PathType::Linear => (1.0 - t, -1.0, t, 1.0),
        PathType::Cosine => {
            let a = t * PI / 2.0;
            (a.cos(), -PI / 2.0 * a.sin(), a.sin(), PI / 2.0 * a.cos())
        }
    };
    let ratio = alpha / d_alpha;
    let var = sigma * sigma - ratio * d_sigma * sigma;
    (v * ratio - x) / var
}

/// REPA's `euler_maruyama_sampler`: Euler-Maruyama steps on `linspace(1, 0.04, steps)` with
/// diffusion `2 t`, step `k` taking its noise from `noise[:, 1 + k]` (float32, converted to
/// float64), then the mean step from 0.04 to 0 (no noise).
pub(crate) fn euler_maruyama_sampler(
    model: &Velocity,
    x: Tensor,
    noise: &Tensor,
    steps: usize,
    path: PathType,
    guide: &Guide,
    on_step: &mut OnStep,
) -> Tensor {
    let mut ts = linspace(1.0, 0.04, steps);
    ts.push(0.0);
    let drift = |x: &Tensor, t: f64| {
        let scale = guide.active(t);
        let (input, y) = guide.input(x, scale.is_some());
        let v = model(&input, t, &y);
        let s = score_from_velocity(&v, &input, t, path);
        let d = &v - s * (0.5 * (2.0 * t));
        match scale {
            Some(sc) => mix(&d, sc),
            None => d,
        }
    };
    let mut x_next = x;
    for k in 0..steps - 1 {
        let (t_cur, t_next) = (ts[k], ts[k + 1]);
        let dt = t_next - t_cur;
        let x_cur = x_next;
        let diffusion = 2.0 * t_cur;
        let eps = noise.select(1, 1 + k as i64).to_kind(Kind::Double);
        let deps = eps * dt.abs().sqrt();
        let d_cur = drift(&x_cur, t_cur);
        x_next = &x_cur + &d_cur * dt + deps * diffusion.sqrt();
        on_step(t_cur, &d_cur, &x_next);
    }
    let (t_cur, t_next) = (ts[steps - 1], ts[steps]);
    let d_cur = drift(&x_next, t_cur);
    let x = &x_next + &d_cur * (t_next - t_cur);
    on_step(t_cur, &d_cur, &x);
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: f64, _: &Tensor, _: &Tensor) {}

    /// A velocity field whose exact flow is known: v = x (so x(t) = x(1) e^(t - 1)).
    fn identity(x: &Tensor, _t: f64, _y: &Tensor) -> Tensor {
        x.shallow_clone()
    }

    fn guide<'a>(y: &'a Tensor, n: &'a Tensor) -> Guide<'a> {
        Guide {
            y,
            y_null: n,
            scale: None,
            interval: [0.0, 1.0],
        }
    }

    #[test]
    fn euler_and_heun_follow_a_linear_field() {
        let y = Tensor::from_slice(&[0i64]);
        let x = Tensor::from_slice(&[1.0f64]).view([1, 1, 1, 1]);
        let g = guide(&y, &y);
        let euler = euler_sampler(&identity, x.copy(), 4, Solver::Euler, &g, &mut none);
        // Each Euler step multiplies by 1 - 1/4.
        let want = 0.75f64.powi(4);
        assert!((euler.double_value(&[0, 0, 0, 0]) - want).abs() < 1e-15);
        let heun = euler_sampler(&identity, x, 1000, Solver::Heun, &g, &mut none);
        let exact = (-1.0f64).exp();
        assert!((heun.double_value(&[0, 0, 0, 0]) - exact).abs() < 1e-5);
    }

    #[test]
    fn guidance_only_inside_the_interval_and_with_the_conditional_half_first() {
        let y = Tensor::from_slice(&[3i64]);
        let null = Tensor::from_slice(&[10i64]);
        // v = label / 10 for every row: cond 0.3, uncond 1.0.
        let seen = std::cell::RefCell::new(Vec::new());
        let model = |x: &Tensor, t: f64, y: &Tensor| {
            seen.borrow_mut().push((t, y.size()[0]));
            (y.to_kind(Kind::Double) / 10.0).view([-1, 1, 1, 1]) + x * 0.0
        };
        let x = Tensor::zeros([1, 1, 1, 1], (Kind::Double, tch::Device::Cpu));
        let g = Guide {
            y: &y,
            y_null: &null,
            scale: Some(2.0),
            interval: [0.0, 0.5],
        };
        let out = euler_sampler(&model, x, 2, Solver::Euler, &g, &mut none);
        // t = 1: unguided, v = 0.3, step -0.5; t = 0.5: guided, 1 + 2 (0.3 - 1) = -0.4.
        let want = -0.5 * 0.3 + -0.5 * -0.4;
        assert!((out.double_value(&[0, 0, 0, 0]) - want).abs() < 1e-12);
        assert_eq!(*seen.borrow(), vec![(1.0, 1), (0.5, 2)]);
    }

    #[test]
    fn the_sde_score_of_the_linear_path() {
        // x_t = (1 - t) x0 + t eps with v = eps - x0: score = -eps / t.
        let (x0, eps, t) = (0.5f64, -1.5f64, 0.3f64);
        let xt = Tensor::from_slice(&[(1.0 - t) * x0 + t * eps]);
        let v = Tensor::from_slice(&[eps - x0]);
        let s = score_from_velocity(&v, &xt, t, PathType::Linear).double_value(&[0]);
        assert!((s - (-eps / t)).abs() < 1e-12, "{s}");
        // The cosine path: alpha = cos(pi t / 2), sigma = sin(pi t / 2), v = alpha' x0 + sigma' eps;
        // the score of x_t given x0 is -eps / sigma.
        let a = t * PI / 2.0;
        let xt = Tensor::from_slice(&[a.cos() * x0 + a.sin() * eps]);
        let v = Tensor::from_slice(&[-PI / 2.0 * a.sin() * x0 + PI / 2.0 * a.cos() * eps]);
        let s = score_from_velocity(&v, &xt, t, PathType::Cosine).double_value(&[0]);
        assert!((s - (-eps / a.sin())).abs() < 1e-9, "{s}");
    }
}
