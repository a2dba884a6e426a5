//! Beta schedules: `get_named_beta_schedule` of the reference's `gaussian_diffusion.py`
//! (OpenAI guided-diffusion, as vendored by DiT), in float64 and in the reference's order of
//! operations so that the values agree with numpy to the last bit or so.
use std::fmt;
use std::str::FromStr;

/// The number of diffusion steps DiT is trained with (`create_diffusion(diffusion_steps=1000)`).
pub const DIFFUSION_STEPS: usize = 1000;

/// The named noise schedules of the reference (`noise_schedule` of `create_diffusion`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum BetaSchedule {
    /// `"linear"`: Ho et al.'s schedule, 1e-4 .. 0.02 scaled by 1000 / T. DiT's default.
    #[default]
    #[serde(rename = "linear")]
    Linear,
    /// `"squaredcos_cap_v2"`: the cosine schedule of Nichol & Dhariwal, betas capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredCosCapV2,
}

impl BetaSchedule {
    /// The reference's name of the schedule.
    pub fn name(self) -> &'static str {
        match self {
            BetaSchedule::Linear => "linear",
            BetaSchedule::SquaredCosCapV2 => "squaredcos_cap_v2",
        }
    }
}

impl fmt::Display for BetaSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BetaSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linear" => Ok(BetaSchedule::Linear),
            "squaredcos_cap_v2" => Ok(BetaSchedule::SquaredCosCapV2),
            other => Err(format!(
                "unknown beta schedule {other:?}; expected \"linear\" or \"squaredcos_cap_v2\""
            )),
        }
    }
}

/// `get_named_beta_schedule(name, num_diffusion_timesteps)`: the float64 betas of the schedule.
pub fn get_named_beta_schedule(schedule: BetaSchedule, num_timesteps: usize) -> Vec<f64> {
    match schedule {
        BetaSchedule::Linear => {
            // Reference: `scale = 1000 / num_diffusion_timesteps` (true division), then
            // `np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps)`.
            let scale = 1000.0 / num_timesteps as f64;
            linspace(scale * 0.0001, scale * 0.02, num_timesteps)
        }
        BetaSchedule::SquaredCosCapV2 => {
            betas_for_alpha_bar(num_timesteps, cosine_alpha_bar, 0.999)
        }
    }
}

/// `alpha_bar(t) = math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2`, evaluated left to right as
/// Python does (`x ** 2` on a float is the correctly rounded square, i.e. `x * x`).
fn cosine_alpha_bar(t: f64) -> f64 {
    let c = ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos();
    c * c
}

/// `betas_for_alpha_bar(T, alpha_bar, max_beta)`: `beta_i = min(1 - alpha_bar((i + 1) / T) /
/// alpha_bar(i / T), max_beta)`.
pub fn betas_for_alpha_bar(
    num_timesteps: usize,
    alpha_bar: impl Fn(f64) -> f64,
    max_beta: f64,
) -> Vec<f64> {
    let n = num_timesteps as f64;
    (0..num_timesteps)
        .map(|i| {
            let t1 = i as f64 / n;
            let t2 = (i + 1) as f64 / n;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta)
        })
        .collect()
}

/// `np.linspace(start, stop, num)` (endpoint included), computed as numpy does:
/// `y[i] = i * ((stop - start) / (num - 1)) + start`, and the last element set to `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            y[num - 1] = stop;
            y
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [BetaSchedule::Linear, BetaSchedule::SquaredCosCapV2] {
            assert_eq!(s.name().parse::<BetaSchedule>().unwrap(), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
            assert_eq!(serde_json::from_str::<BetaSchedule>(&json).unwrap(), s);
        }
        let err = "cosine".parse::<BetaSchedule>().unwrap_err();
        assert!(
            err.contains("\"cosine\"") && err.contains("squaredcos_cap_v2"),
            "{err}"
        );
    }

    #[test]
    fn linear_endpoints() {
        let b = get_named_beta_schedule(BetaSchedule::Linear, 1000);
        assert_eq!(b.len(), 1000);
        assert_eq!(b[0], 0.0001);
        assert_eq!(b[999], 0.02);
    }
}
