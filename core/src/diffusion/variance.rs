//! The reference's `ModelVarType` (minus LEARNED, which DiT never uses): how the model output's
//! variance channels are read (`diffusion/gaussian_diffusion.py`).
use std::fmt;
use std::str::FromStr;

/// The reference's `ModelVarType` (minus LEARNED, which DiT never uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarianceType {
    /// LEARNED_RANGE: the model outputs 2C channels; the second half `v` in [-1, 1] interpolates
    /// the log-variance between the clipped posterior variance and beta. DiT (`learn_sigma=True`).
    LearnedRange,
    /// FIXED_LARGE: variance beta_t (posterior variance at t = 0). `learn_sigma=False`.
    FixedLarge,
    /// FIXED_SMALL: the posterior variance. `learn_sigma=False, sigma_small=True`.
    FixedSmall,
}

impl VarianceType {
    /// `create_diffusion`'s choice of `model_var_type`.
    pub fn from_flags(learn_sigma: bool, sigma_small: bool) -> Self {
        match (learn_sigma, sigma_small) {
            (true, _) => VarianceType::LearnedRange,
            (false, false) => VarianceType::FixedLarge,
            (false, true) => VarianceType::FixedSmall,
        }
    }

    /// How many channels the model output has for `c` latent channels.
    pub fn output_channels(self, c: i64) -> i64 {
        match self {
            VarianceType::LearnedRange => 2 * c,
            VarianceType::FixedLarge | VarianceType::FixedSmall => c,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            VarianceType::LearnedRange => "learned_range",
            VarianceType::FixedLarge => "fixed_large",
            VarianceType::FixedSmall => "fixed_small",
        }
    }
}

impl fmt::Display for VarianceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for VarianceType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "learned_range" => Ok(VarianceType::LearnedRange),
            "fixed_large" => Ok(VarianceType::FixedLarge),
            "fixed_small" => Ok(VarianceType::FixedSmall),
            other => Err(format!(
                "unknown variance type {other:?}; expected \"learned_range\", \"fixed_large\" or \"fixed_small\""
            )),
        }
    }
}
