//! The settings of SiT's own samplers (`transport/` of willisma/SiT, Linear path, velocity
//! model): the SDE's diffusion coefficient and its last step. Time runs from 0 (noise) to 1
//! (data), the other way round from REPA's samplers.
use serde::{Deserialize, Serialize};

/// `diffusion_form` of SiT's `sample_sde` (`ICPlan.compute_diffusion`), times `diffusion_norm`.
/// SiT's command line default is `sigma`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffusionForm {
    /// `norm * sigma_t = norm * (1 - t)`.
    #[default]
    Sigma,
    /// `norm * (1 - t)` (the same numbers as `sigma` on the Linear path).
    Linear,
    /// `norm`.
    Constant,
    /// `0.25 * (norm * cos(pi t) + 1)^2`.
    Decreasing,
    /// `norm * sin(pi t)^2`.
    IncreasingDecreasing,
}

impl DiffusionForm {
    pub fn as_str(self) -> &'static str {
        match self {
            DiffusionForm::Sigma => "sigma",
            DiffusionForm::Linear => "linear",
            DiffusionForm::Constant => "constant",
            DiffusionForm::Decreasing => "decreasing",
            DiffusionForm::IncreasingDecreasing => "increasing-decreasing",
        }
    }

    /// The form named `s` as SiT's `--diffusion-form` spells it (any case). `SBDM` is refused:
    /// its coefficient `(1 - t)^2 / t + (1 - t)` is infinite at SiT's start time t = 0 for a
    /// velocity model, and SiT's own sampler returns NaN images with it.
    pub fn parse(s: &str) -> Result<DiffusionForm, String> {
        let all = [
            DiffusionForm::Sigma,
            DiffusionForm::Linear,
            DiffusionForm::Constant,
            DiffusionForm::Decreasing,
            DiffusionForm::IncreasingDecreasing,
        ];
        let lower = s.trim().to_ascii_lowercase();
        if lower == "sbdm" {
            return Err(
                "SBDM's diffusion (1 - t)^2 / t + (1 - t) is infinite at t = 0, where SiT's SDE starts for a velocity model (SiT's own sample_sde gives NaN images with it); use sigma (SiT's default), linear, constant, decreasing or increasing-decreasing"
                    .to_string(),
            );
        }
        all.into_iter().find(|f| f.as_str() == lower).ok_or_else(|| {
            format!(
                "{s:?} is not a diffusion form; expected sigma (SiT's default), linear, constant, decreasing or increasing-decreasing"
            )
        })
    }

    /// The coefficient at time `t` (SiT's `compute_diffusion` on its Linear path).
    pub fn at(self, t: f64, norm: f64) -> f64 {
        use std::f64::consts::PI;
        match self {
            DiffusionForm::Sigma | DiffusionForm::Linear => norm * (1.0 - t),
            DiffusionForm::Constant => norm,
            DiffusionForm::Decreasing => 0.25 * (norm * (PI * t).cos() + 1.0).powi(2),
            DiffusionForm::IncreasingDecreasing => norm * (PI * t).sin().powi(2),
        }
    }
}

/// `last_step` of SiT's `sample_sde`: what happens between `1 - last_step_size` and 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LastStep {
    /// `x + sde_drift(x, t) * size` (SiT's default).
    #[default]
    Mean,
    /// `x / alpha_t + sigma_t^2 / alpha_t * score(x, t)`.
    Tweedie,
    /// `x + velocity(x, t) * size`.
    Euler,
    /// No last step: the Euler-Maruyama grid runs to t = 1.
    None,
}

impl LastStep {
    pub fn as_str(self) -> &'static str {
        match self {
            LastStep::Mean => "mean",
            LastStep::Tweedie => "tweedie",
            LastStep::Euler => "euler",
            LastStep::None => "none",
        }
    }

    /// The last step named `s` (any case, as SiT's `--last-step`).
    pub fn parse(s: &str) -> Result<LastStep, String> {
        let all = [
            LastStep::Mean,
            LastStep::Tweedie,
            LastStep::Euler,
            LastStep::None,
        ];
        let lower = s.trim().to_ascii_lowercase();
        all.into_iter().find(|f| f.as_str() == lower).ok_or_else(|| {
            format!("{s:?} is not a last step; expected mean (SiT's default), tweedie, euler or none")
        })
    }
}

/// SiT's SDE settings (`sampler: sit-sde`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SitSde {
    pub diffusion_form: DiffusionForm,
    pub diffusion_norm: f64,
    pub last_step: LastStep,
    /// SiT's default 0.04 (the stride of 250 steps over [0, 1]); 0 with `last_step: none`.
    pub last_step_size: f64,
}

impl Default for SitSde {
    fn default() -> Self {
        SitSde {
            diffusion_form: DiffusionForm::Sigma,
            diffusion_norm: 1.0,
            last_step: LastStep::Mean,
            last_step_size: 0.04,
        }
    }
}

impl SitSde {
    /// Where the Euler-Maruyama grid ends: `1 - last_step_size` (SiT's `check_interval`), or 1
    /// without a last step.
    pub fn grid_end(&self) -> f64 {
        match self.last_step {
            LastStep::None => 1.0,
            _ => 1.0 - self.last_step_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffusion_forms_parse_as_sit_spells_them() {
        assert_eq!(DiffusionForm::parse("sigma"), Ok(DiffusionForm::Sigma));
        assert_eq!(
            DiffusionForm::parse("increasing-decreasing"),
            Ok(DiffusionForm::IncreasingDecreasing)
        );
        assert_eq!(DiffusionForm::parse("Linear"), Ok(DiffusionForm::Linear));
        let e = DiffusionForm::parse("SBDM").unwrap_err();
        assert!(
            e.contains("infinite at t = 0") && e.contains("sigma"),
            "{e}"
        );
        assert!(DiffusionForm::parse("cosine").is_err());
        assert_eq!(LastStep::parse("Tweedie"), Ok(LastStep::Tweedie));
        assert!(LastStep::parse("last").is_err());
    }

    #[test]
    fn diffusion_coefficients_follow_sit() {
        let f = |form: DiffusionForm, t| form.at(t, 2.0);
        assert_eq!(f(DiffusionForm::Sigma, 0.25), 1.5);
        assert_eq!(f(DiffusionForm::Linear, 0.25), 1.5);
        assert_eq!(f(DiffusionForm::Constant, 0.9), 2.0);
        assert!((f(DiffusionForm::Decreasing, 0.0) - 2.25).abs() < 1e-15);
        assert!((f(DiffusionForm::Decreasing, 1.0) - 0.25).abs() < 1e-15);
        assert!((f(DiffusionForm::IncreasingDecreasing, 0.5) - 2.0).abs() < 1e-15);
        let sde = SitSde::default();
        assert_eq!((sde.grid_end(), sde.last_step_size), (0.96, 0.04));
        let none = SitSde {
            last_step: LastStep::None,
            ..sde
        };
        assert_eq!(none.grid_end(), 1.0);
    }
}
