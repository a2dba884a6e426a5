//! One reverse-diffusion step of the reference (`GaussianDiffusion.p_sample` and `.ddim_sample`
//! with `model_mean_type=EPSILON`, `clip_denoised=False`, no `denoised_fn`/`cond_fn`), given the
//! model output, on a respaced chain (`SpacedDiffusion`).
//!
//! Float32 semantics. The reference's `_extract_into_tensor` indexes a float64 numpy table, casts
//! the value to float32 and broadcasts it to `x.shape`; every later operation is float32 tensor
//! arithmetic. Here the whole batch shares one step, so each table value becomes a 0-dim float32
//! tensor (`value as f32`) on `x`'s device, and the operations are done in the reference's order.
//! Elementwise `+ - * /`, `sqrt` and `exp` then give bit-identical results to the broadcast
//! tensors of the reference. The 0-dim tensors are created on the device on purpose: a CPU
//! scalar would make CUDA divide by multiplying with the reciprocal, which is not bit-identical.
use std::collections::BTreeSet;

use tch::{Device, Kind, Tensor};

use super::gaussian::DiffusionTables;
use super::respace::{respace_betas, space_timesteps, RespaceError};
use super::schedule::{get_named_beta_schedule, BetaSchedule, DIFFUSION_STEPS};
use super::VarianceType;

/// Python's `1 - t` on a tensor (`torch.rsub(t, 1)`).
fn one_minus(t: &Tensor) -> Tensor {
    t.rsub_scalar(1.0)
}

/// `sqrt(max(t, 0))`: the square root of a difference that is non-negative in exact arithmetic
/// but can round below zero in float32. The reference takes `sqrt` directly and gets NaN there;
/// where its argument is non-negative the clamp changes no bit (NaN inputs stay NaN).
fn sqrt_nonneg(t: &Tensor) -> Tensor {
    t.clamp_min(0.0).sqrt()
}

/// The reference's `SpacedDiffusion`: a chain of `num_steps()` steps taken from the
/// `DIFFUSION_STEPS`-step base schedule, with its own betas and coefficient tables.
///
/// Indexing: sampling runs `i = num_steps() - 1` down to `0`. The model is fed
/// `timestep_map()[i]` (the reference's `_WrappedModel`), while [`p_sample`](Self::p_sample) and
/// [`ddim_sample`](Self::ddim_sample) take the respaced index `i` itself.
#[derive(Debug, Clone)]
pub struct SpacedDiffusion {
    schedule: BetaSchedule,
    use_timesteps: BTreeSet<usize>,
    timestep_map: Vec<i64>,
    tables: DiffusionTables,
}

/// `p_mean_variance`'s outputs that the samplers use.
struct MeanVariance {
    mean: Tensor,
    /// `None` where the caller asked not to compute it (DDIM does not use it).
    log_variance: Option<Tensor>,
    pred_xstart: Tensor,
}

impl SpacedDiffusion {
    /// `create_diffusion(timestep_respacing=spec, noise_schedule=schedule)` with the reference's
    /// 1000 base steps.
    pub fn new(schedule: BetaSchedule, spec: &str) -> Result<Self, RespaceError> {
        Self::with_base_steps(schedule, DIFFUSION_STEPS, spec)
    }

    /// As [`new`](Self::new) with another number of base steps.
    pub(crate) fn with_base_steps(
        schedule: BetaSchedule,
        base_steps: usize,
        spec: &str,
    ) -> Result<Self, RespaceError> {
        let use_timesteps = space_timesteps(base_steps, spec)?;
        let base_betas = get_named_beta_schedule(schedule, base_steps);
        let (betas, timestep_map) = respace_betas(&base_betas, &use_timesteps);
        Ok(SpacedDiffusion {
            schedule,
            use_timesteps,
            timestep_map,
            tables: DiffusionTables::new(betas),
        })
    }

    /// The number of sampling steps S (the length of the respaced chain).
    pub fn num_steps(&self) -> usize {
        self.timestep_map.len()
    }

    /// For respaced index `i`, the base-chain timestep that the model is given.
    pub fn timestep_map(&self) -> &[i64] {
        &self.timestep_map
    }

    /// The respaced betas (float64).
    pub fn betas(&self) -> &[f64] {
        &self.tables.betas
    }

    /// All float64 coefficient tables of the respaced chain.
    pub fn tables(&self) -> &DiffusionTables {
        &self.tables
    }

    pub fn schedule(&self) -> BetaSchedule {
        self.schedule
    }

    /// The kept base timesteps (`space_timesteps`' result).
    pub fn use_timesteps(&self) -> &BTreeSet<usize> {
        &self.use_timesteps
    }

    /// `_extract_into_tensor(table, t, x.shape)` for a batch that shares step `i`: the float64
    /// value cast to float32, as a 0-dim tensor on `device`.
    fn extract(table: &[f64], i: usize, device: Device) -> Tensor {
        Tensor::scalar_tensor(table[i] as f32 as f64, (Kind::Float, device))
    }

    /// The reference's `nonzero_mask = (t != 0).float()`: 1 except at the last step.
    fn nonzero_mask(i: usize, device: Device) -> Tensor {
        Tensor::scalar_tensor(if i != 0 { 1.0 } else { 0.0 }, (Kind::Float, device))
    }

    /// Shape checks shared by both samplers; panics with the offending shapes.
    fn check_shapes(
        &self,
        x: &Tensor,
        i: usize,
        model_output: &Tensor,
        noise: &Tensor,
        var: VarianceType,
    ) {
        assert!(
            i < self.num_steps(),
            "diffusion step index {i} out of range: the respaced chain has {} steps",
            self.num_steps()
        );
        let xs = x.size();
        assert!(xs.len() >= 2, "x must be (B, C, ...), got shape {xs:?}");
        let mut expected = xs.clone();
        expected[1] = var.output_channels(xs[1]);
        let ms = model_output.size();
        assert!(
            ms == expected,
            "model output has shape {ms:?} but variance type {var} with x of shape {xs:?} needs {expected:?} \
             ({} the latent channels{})",
            if var == VarianceType::LearnedRange { "twice" } else { "exactly" },
            if var == VarianceType::LearnedRange {
                ": epsilon then variance values; is the model built with learn_sigma=false?"
            } else {
                ": epsilon only; is the model built with learn_sigma=true?"
            }
        );
        assert!(
            noise.size() == xs,
            "noise has shape {:?} but x has shape {xs:?}",
            noise.size()
        );
    }

    /// `p_mean_variance` (EPSILON, clip_denoised=False) given the model output.
    fn p_mean_variance(
        &self,
        x: &Tensor,
        i: usize,
        model_output: &Tensor,
        var: VarianceType,
        want_variance: bool,
    ) -> MeanVariance {
        let tb = &self.tables;
        let dev = x.device();
        let c = x.size()[1];

        let (eps, var_values) = match var {
            VarianceType::LearnedRange => {
                // th.split(model_output, C, dim=1)
                let mut parts = model_output.split(c, 1);
                let v = parts.pop().expect("split gives two halves");
                let e = parts.pop().expect("split gives two halves");
                (e, Some(v))
            }
            VarianceType::FixedLarge | VarianceType::FixedSmall => {
                (model_output.shallow_clone(), None)
            }
        };

        let log_variance = want_variance.then(|| match var {
            VarianceType::LearnedRange => {
                let min_log = Self::extract(&tb.posterior_log_variance_clipped, i, dev);
                let max_log = Self::extract(&tb.log_betas, i, dev);
                // frac = (model_var_values + 1) / 2
                let frac = (var_values
                    .as_ref()
                    .expect("learned range has variance values")
                    + 1.0)
                    / 2.0;
                // model_log_variance = frac * max_log + (1 - frac) * min_log
                &frac * &max_log + one_minus(&frac) * &min_log
            }
            VarianceType::FixedLarge => Self::extract(&tb.fixed_large_log_variance, i, dev),
            VarianceType::FixedSmall => Self::extract(&tb.posterior_log_variance_clipped, i, dev),
        });

        // _predict_xstart_from_eps: sqrt_recip_acp[t] * x_t - sqrt_recipm1_acp[t] * eps
        let pred_xstart = Self::extract(&tb.sqrt_recip_alphas_cumprod, i, dev) * x
            - Self::extract(&tb.sqrt_recipm1_alphas_cumprod, i, dev) * &eps;
        // q_posterior_mean_variance: coef1[t] * x_start + coef2[t] * x_t
        let mean = Self::extract(&tb.posterior_mean_coef1, i, dev) * &pred_xstart
            + Self::extract(&tb.posterior_mean_coef2, i, dev) * x;
        MeanVariance {
            mean,
            log_variance,
            pred_xstart,
        }
    }

    /// `p_sample` (DDPM ancestral step) at respaced index `i`:
    /// `mean + nonzero_mask * exp(0.5 * log_variance) * noise`.
    ///
    /// `x`: (B, C, H, W) float32; `model_output`: (B, 2C, H, W) for
    /// [`VarianceType::LearnedRange`], else (B, C, H, W); `noise`: like `x`, used at every step
    /// (multiplied by 0 at `i == 0`, as in the reference). Panics on mismatched shapes.
    pub fn p_sample(
        &self,
        x: &Tensor,
        i: usize,
        model_output: &Tensor,
        noise: &Tensor,
        var: VarianceType,
    ) -> Tensor {
        self.check_shapes(x, i, model_output, noise, var);
        let out = self.p_mean_variance(x, i, model_output, var, true);
        let log_variance = out.log_variance.expect("variance computed");
        let mask = Self::nonzero_mask(i, x.device());
        // sample = out["mean"] + nonzero_mask * th.exp(0.5 * out["log_variance"]) * noise
        out.mean + mask * (log_variance * 0.5).exp() * noise
    }

    /// `ddim_sample` with `eta` at respaced index `i`:
    /// `eps = _predict_eps_from_xstart(x, t, pred_xstart)`,
    /// `sigma = eta * sqrt((1 - abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev)`,
    /// `sample = pred_xstart * sqrt(abar_prev) + sqrt(1 - abar_prev - sigma^2) * eps
    ///           + nonzero_mask * sigma * noise`.
    ///
    /// Shapes as for [`p_sample`](Self::p_sample); the variance half of a learned-range output is
    /// not used by DDIM but must be there. Panics on mismatched shapes.
    pub fn ddim_sample(
        &self,
        x: &Tensor,
        i: usize,
        model_output: &Tensor,
        noise: &Tensor,
        var: VarianceType,
        eta: f64,
    ) -> Tensor {
        self.check_shapes(x, i, model_output, noise, var);
        let tb = &self.tables;
        let dev = x.device();
        let out = self.p_mean_variance(x, i, model_output, var, false);
        let pred_xstart = out.pred_xstart;

        // _predict_eps_from_xstart: (sqrt_recip_acp[t] * x_t - pred_xstart) / sqrt_recipm1_acp[t]
        let eps = (Self::extract(&tb.sqrt_recip_alphas_cumprod, i, dev) * x - &pred_xstart)
            / Self::extract(&tb.sqrt_recipm1_alphas_cumprod, i, dev);

        let alpha_bar = Self::extract(&tb.alphas_cumprod, i, dev);
        let alpha_bar_prev = Self::extract(&tb.alphas_cumprod_prev, i, dev);
        // eta (a Python float) times a float32 tensor: computed in float32 with eta rounded to
        // float32, exactly like a float32 0-dim tensor.
        let eta = Tensor::scalar_tensor(eta as f32 as f64, (Kind::Float, dev));
        let (sigma, eps_coef) = ddim_coefficients(&alpha_bar, &alpha_bar_prev, &eta);
        // Equation 12 of the DDIM paper.
        let mean_pred = &pred_xstart * alpha_bar_prev.sqrt() + eps_coef * eps;
        let mask = Self::nonzero_mask(i, dev);
        mean_pred + mask * sigma * noise
    }
}

/// DDIM's `sigma = eta * sqrt((1 - abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev)` and the
/// coefficient of eps, `sqrt(1 - abar_prev - sigma ** 2)` (`sigma ** 2` is `sigma * sigma` in
/// PyTorch), in the reference's float32 order of operations, with both square roots of
/// differences clamped at 0 ([`sqrt_nonneg`]).
///
/// Why: `1 - abar_prev - sigma^2 = (1 - abar_prev)^2 abar / ((1 - abar) abar_prev)` is tiny when
/// `abar` is (the last, noisiest step of a cosine schedule with eta = 1: ~4.5e-8), below the
/// float32 rounding of the two terms, so its computed sign depends on the CPU's kernels (FMA,
/// vector width): a tiny positive value on one machine, a tiny negative one and NaN on another.
/// Clamped, both are finite and differ by at most `sqrt(delta) * |eps|`, where `delta` is the
/// rounding error of the difference (a few float32 ulps of `1 - abar_prev`; ~5e-4 * |eps| at
/// most). `1 - abar / abar_prev` cannot round below 0 for the schedules here (each beta is far
/// above an ulp), but is clamped the same way for any table.
fn ddim_coefficients(
    alpha_bar: &Tensor,
    alpha_bar_prev: &Tensor,
    eta: &Tensor,
) -> (Tensor, Tensor) {
    let sigma = eta
        * (one_minus(alpha_bar_prev) / one_minus(alpha_bar)).sqrt()
        * sqrt_nonneg(&one_minus(&(alpha_bar / alpha_bar_prev)));
    let eps_coef = sqrt_nonneg(&(one_minus(alpha_bar_prev) - &sigma * &sigma));
    (sigma, eps_coef)
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
