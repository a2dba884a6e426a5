//! Fully resolved sampling settings: everything that decides the pixels of image `i`.
//! The orchestrator builds this from the YAML job (paths made absolute, defaults filled in) and
//! hands it to each worker; the engine never reads YAML itself.
use crate::diffusion::{BetaSchedule, VarianceType};
use crate::dit_config::{CfgChannels, DiTConfig};
use crate::flow::{FlowSettings, ModelFamily, Pixels};
use crate::labels::LabelMode;
use crate::torchscript::{ModelFormat, ScriptVae};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    /// Ancestral sampling (`p_sample_loop`), the reference's FID setting.
    Ddpm,
    /// DDIM (`ddim_sample_loop`) with the job's `eta`.
    Ddim,
    /// REPA's `euler_sampler`: the probability-flow ODE from t = 1 to 0 (Euler or Heun).
    Ode,
    /// REPA's `euler_maruyama_sampler`: the SDE with diffusion `2t`, then a final mean step.
    Sde,
    /// SiT's `sample_ode` with a fixed-grid torchdiffeq solver: time 0 (noise) to 1 (data).
    #[serde(rename = "sit-ode")]
    SitOde,
    /// SiT's `sample_sde`: Euler-Maruyama (or Heun) from 0 to `1 - last_step_size`, then the
    /// last step.
    #[serde(rename = "sit-sde")]
    SitSde,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Strict float32 (the only mode on CPU).
    Fp32,
    /// float32 tensors, TF32 matmuls on Ampere+ GPUs (the reference `sample.py` enables it).
    Tf32,
    /// bfloat16 autocast of the DiT and VAE forward passes on GPU; sampler math stays float32.
    Bf16,
    /// float16 autocast, as Bf16.
    Fp16,
}

impl SamplerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
            SamplerKind::Ode => "ode",
            SamplerKind::Sde => "sde",
            SamplerKind::SitOde => "sit-ode",
            SamplerKind::SitSde => "sit-sde",
        }
    }

    /// Whether this is a flow sampler (of the SiT family) rather than a Gaussian diffusion one.
    pub fn is_flow(self) -> bool {
        !matches!(self, SamplerKind::Ddpm | SamplerKind::Ddim)
    }

    /// The step count of a flow sampler's `steps` (`"N"`): REPA's samplers take N steps, SiT's
    /// take N grid points (N - 1 steps), so they need N >= 2.
    pub fn flow_steps(self, spec: &str) -> Result<usize, String> {
        let n = crate::flow::flow_steps(spec)?;
        if self.is_sit_transport() && n < 2 {
            return Err(format!(
                "{spec:?} is too few for `{}`: SiT's samplers take N grid points from start to end, so N - 1 steps; use at least \"2\" (SiT's FID setting is \"250\")",
                self.as_str()
            ));
        }
        Ok(n)
    }

    /// Whether this is one of SiT's own samplers (time 0 = noise), rather than REPA's.
    pub fn is_sit_transport(self) -> bool {
        matches!(self, SamplerKind::SitOde | SamplerKind::SitSde)
    }
}

impl Precision {
    pub const NAMES: &'static str = "fp32, tf32, bf16, fp16";

    /// The mode named `s` (`fp32`, `tf32`, `bf16`, `fp16`).
    pub fn parse(s: &str) -> Option<Precision> {
        Some(match s {
            "fp32" => Precision::Fp32,
            "tf32" => Precision::Tf32,
            "bf16" => Precision::Bf16,
            "fp16" => Precision::Fp16,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }
}

/// A batch size: a number, or `auto` (the worker picks the largest that fits its device on its
/// first batch; see worker/src/batching.rs). Images never depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Auto,
    Fixed(usize),
}

impl BatchSize {
    /// The fixed size, if it is one.
    pub fn fixed(self) -> Option<usize> {
        match self {
            BatchSize::Fixed(n) => Some(n),
            BatchSize::Auto => None,
        }
    }
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchSize::Auto => f.write_str("auto"),
            BatchSize::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for BatchSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BatchSize::Auto => s.serialize_str("auto"),
            BatchSize::Fixed(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for BatchSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) if n >= 1 => Ok(BatchSize::Fixed(n as usize)),
            Raw::S(s) if s == "auto" => Ok(BatchSize::Auto),
            _ => Err(serde::de::Error::custom(
                "expected a positive number of images or `auto`",
            )),
        }
    }
}

/// Serializable: the coordinator sends it to each worker, so a YAML edited mid-run can never
/// make two workers of one job sample differently.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplerSettings {
    pub dit: DiTConfig,
    /// The model file: a checkpoint, or a TorchScript module (`model_format`).
    pub checkpoint: PathBuf,
    /// The diffusers VAE folder, or a TorchScript decoder file (`vae_script`).
    pub vae: PathBuf,
    pub num_samples: u64,
    pub seed: u64,
    pub labels: LabelMode,
    pub cfg_scale: f64,
    pub cfg_channels: CfgChannels,
    pub sampler: SamplerKind,
    /// Respacing spec (`"250"`, `"ddim50"`, `"10,20,30"`).
    pub steps: String,
    pub eta: f64,
    pub beta_schedule: BetaSchedule,
    pub variance: VarianceType,
    pub precision: Precision,
    /// Images per DiT forward pass (classifier-free guidance doubles it inside).
    pub batch_size: BatchSize,
    /// Images per VAE decode call.
    pub vae_batch_size: BatchSize,
    /// `dit` (the default; absent in the settings of older coordinators) or `sit`.
    #[serde(default)]
    pub family: ModelFamily,
    /// The flow samplers' settings (`sampler: ode | sde`).
    #[serde(default)]
    pub flow: FlowSettings,
    /// How decoded images become uint8.
    #[serde(default)]
    pub pixels: Pixels,
    /// The decoder gets `(z - latent_bias) / latent_scale`: one number, or one per latent
    /// channel. `None`: the VAE's `scaling_factor` and no bias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_scale: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_bias: Option<Vec<f64>>,
    /// `native` (a state_dict; absent in older settings) or `torchscript` (`model.torchscript`).
    #[serde(default)]
    pub model_format: ModelFormat,
    /// `vae: {torchscript: ...}`: the decoder's shape facts; `None` for a diffusers folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae_script: Option<ScriptVae>,
}

impl SamplerSettings {
    /// Classifier-free guidance runs (and doubles the batch) only for scale > 1 with class
    /// labels, as in the reference's `sample.py` (`using_cfg = cfg_scale > 1.0`).
    pub fn uses_cfg(&self) -> bool {
        self.cfg_scale > 1.0 && self.labels != LabelMode::Unconditional
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_size_round_trips() {
        for (text, want) in [("\"auto\"", BatchSize::Auto), ("8", BatchSize::Fixed(8))] {
            let b: BatchSize = serde_json::from_str(text).unwrap();
            assert_eq!(b, want);
            assert_eq!(serde_json::to_string(&b).unwrap(), text);
        }
        assert!(serde_json::from_str::<BatchSize>("0").is_err());
        assert!(serde_json::from_str::<BatchSize>("\"big\"").is_err());
    }
}
