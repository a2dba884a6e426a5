//! The float64 coefficient tables of `GaussianDiffusion.__init__` (reference
//! `gaussian_diffusion.py`), computed element by element in the same order of operations as the
//! numpy expressions there. The sampler casts single entries to float32, as the reference's
//! `_extract_into_tensor` does.
//!
//! Every `sqrt` and `ln` here takes a value that is non-negative (positive for `ln`) in IEEE
//! float64 itself, not only in exact arithmetic, given betas in (0, 1]: `1 / ab >= 1` because
//! rounding is monotonic, so `1 / ab - 1 >= 0`; `1 - x >= 0` for every `x <= 1`; the posterior
//! variance is a product and quotient of such terms, positive from step 1 on. Rust evaluates
//! float64 without contraction into FMA, so the tables are the same on every CPU. The float32
//! differences that can round below zero are the sampler's (`sampler.rs`, clamped there).

/// Per-step tables of a (possibly respaced) diffusion chain of `betas.len()` steps.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionTables {
    pub betas: Vec<f64>,
    /// `np.cumprod(1 - betas)`.
    pub alphas_cumprod: Vec<f64>,
    /// `np.append(1.0, alphas_cumprod[:-1])`.
    pub alphas_cumprod_prev: Vec<f64>,
    /// `np.sqrt(1.0 / alphas_cumprod)`.
    pub sqrt_recip_alphas_cumprod: Vec<f64>,
    /// `np.sqrt(1.0 / alphas_cumprod - 1)`.
    pub sqrt_recipm1_alphas_cumprod: Vec<f64>,
    /// `betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)`.
    pub posterior_variance: Vec<f64>,
    /// `np.log(np.append(posterior_variance[1], posterior_variance[1:]))`: the variance at step 0
    /// (which is 0) replaced by the one at step 1.
    pub posterior_log_variance_clipped: Vec<f64>,
    /// `betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)`.
    pub posterior_mean_coef1: Vec<f64>,
    /// `(1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod)`.
    pub posterior_mean_coef2: Vec<f64>,
    /// `np.log(betas)`: the upper end of the learned variance range.
    pub log_betas: Vec<f64>,
    /// FIXED_LARGE's variance, `np.append(posterior_variance[1], betas[1:])`.
    pub fixed_large_variance: Vec<f64>,
    /// `np.log(fixed_large_variance)`.
    pub fixed_large_log_variance: Vec<f64>,
}

impl DiffusionTables {
    /// `GaussianDiffusion.__init__(betas=...)`.
    ///
    /// One-step chains: the reference builds an empty `posterior_log_variance_clipped` and
    /// indexes `posterior_variance[1]` for FIXED_LARGE, so it cannot sample with a single step at
    /// all. Here the missing `posterior_variance[1]` is replaced by `betas[0]` (the FIXED_LARGE
    /// value), which keeps every table finite; at that single step (t = 0) the sampler multiplies
    /// the variance by the zero noise mask, so the sample is the posterior mean (DDPM) or
    /// `pred_xstart` (DDIM), which is what the reference's formulas give when they do not fail.
    ///
    /// Panics unless every beta is in (0, 1] (the reference asserts the same).
    pub fn new(betas: Vec<f64>) -> Self {
        assert!(
            betas.iter().all(|&b| b > 0.0 && b <= 1.0),
            "betas must lie in (0, 1]"
        );
        let n = betas.len();
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1.0f64;
        for a in &alphas {
            acc *= a;
            alphas_cumprod.push(acc);
        }
        let alphas_cumprod_prev: Vec<f64> = std::iter::once(1.0)
            .chain(alphas_cumprod.iter().copied().take(n.saturating_sub(1)))
            .take(n)
            .collect();

        let sqrt_recip_alphas_cumprod = alphas_cumprod.iter().map(|a| (1.0 / a).sqrt()).collect();
        let sqrt_recipm1_alphas_cumprod = alphas_cumprod
            .iter()
            .map(|a| (1.0 / a - 1.0).sqrt())
            .collect();

        let posterior_variance: Vec<f64> = (0..n)
            .map(|i| betas[i] * (1.0 - alphas_cumprod_prev[i]) / (1.0 - alphas_cumprod[i]))
            .collect();
        // posterior_variance[1], or betas[0] for a one-step chain (see above).
        let variance_at_0 = if n > 1 {
            posterior_variance[1]
        } else {
            betas.first().copied().unwrap_or(1.0)
        };
        let posterior_log_variance_clipped = (0..n)
            .map(|i| {
                if i == 0 {
                    variance_at_0
                } else {
                    posterior_variance[i]
                }
                .ln()
            })
            .collect();
        let posterior_mean_coef1 = (0..n)
            .map(|i| betas[i] * alphas_cumprod_prev[i].sqrt() / (1.0 - alphas_cumprod[i]))
            .collect();
        let posterior_mean_coef2 = (0..n)
            .map(|i| (1.0 - alphas_cumprod_prev[i]) * alphas[i].sqrt() / (1.0 - alphas_cumprod[i]))
            .collect();
        let log_betas = betas.iter().map(|b| b.ln()).collect();
        let fixed_large_variance: Vec<f64> = (0..n)
            .map(|i| if i == 0 { variance_at_0 } else { betas[i] })
            .collect();
        let fixed_large_log_variance = fixed_large_variance.iter().map(|v| v.ln()).collect();

        DiffusionTables {
            betas,
            alphas_cumprod,
            alphas_cumprod_prev,
            sqrt_recip_alphas_cumprod,
            sqrt_recipm1_alphas_cumprod,
            posterior_variance,
            posterior_log_variance_clipped,
            posterior_mean_coef1,
            posterior_mean_coef2,
            log_betas,
            fixed_large_variance,
            fixed_large_log_variance,
        }
    }

    /// The number of steps of the chain.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }
}
