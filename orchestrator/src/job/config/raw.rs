//! The job file as written: serde structs, deserialized straight into the engine's enums
//! (`sampler`, `beta_schedule`, `precision`, `labels`) so that a misspelt value is refused by
//! serde with the accepted values listed. Nothing here checks ranges; resolve.rs does.
use fidshard_core::diffusion::{BetaSchedule, VarianceType};
use fidshard_core::{
    LabelMode, ModelFamily, ModelFormat, PathType, Pixels, Precision, SamplerKind, Solver,
};
use serde::{Deserialize, Deserializer};
use serde_yaml::Value;
use std::path::{Path, PathBuf};

use super::Devices;
use crate::job::hub::Wanted;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModelSection {
    /// `dit` (default) or `sit` (SiT / REPA: a velocity model sampled with `ode` / `sde`).
    #[serde(default)]
    pub family: ModelFamily,
    /// One of the 12 presets (`DiT-XL/2`, ...).
    pub preset: Option<String>,
    /// A JSON of the DiT constructor arguments, for a custom architecture.
    pub config: Option<PathBuf>,
    /// `.pt` (torch.save or DiT train.py) or `.safetensors`, or a diffusers DiT folder
    /// (`transformer/` of facebook/DiT-XL-2-256).
    pub checkpoint: Option<PathBuf>,
    /// A TorchScript module (`torch.jit.save`), run as exported, instead of `checkpoint`
    /// (docs/models.md).
    pub torchscript: Option<PathBuf>,
    /// The model file's expected SHA-256, checked where it is fetched (fetch/).
    pub sha256: Option<String>,
}

impl ModelSection {
    /// What a hub or URL reference of the model names: for `checkpoint`, a checkpoint file or a
    /// diffusers DiT folder; for `torchscript`, one file.
    pub fn wanted(&self) -> Wanted {
        match self.torchscript {
            Some(_) => Wanted::CheckpointFile,
            None => Wanted::Model,
        }
    }

    /// The model file and its key: exactly one of `checkpoint` and `torchscript`. `Err` is
    /// `(key, message)`.
    pub fn file(&self) -> Result<(&'static str, &Path, ModelFormat), (&'static str, String)> {
        match (&self.checkpoint, &self.torchscript) {
            (Some(c), None) => Ok(("model.checkpoint", c, ModelFormat::Native)),
            (None, Some(t)) => Ok(("model.torchscript", t, ModelFormat::Torchscript)),
            (Some(_), Some(_)) => Err((
                "model.torchscript",
                "is given with `model.checkpoint`; keep one: `checkpoint` for a state_dict \
                 (.pt, .safetensors), `torchscript` for a torch.jit.save module"
                    .into(),
            )),
            (None, None) => Err((
                "model.checkpoint",
                "is required: give `checkpoint: FILE` (a .pt or .safetensors state_dict) or \
                 `torchscript: FILE` (a torch.jit.save module)"
                    .into(),
            )),
        }
    }
}

/// `vae`: a diffusers AutoencoderKL folder (a path, hub or URL reference), or
/// `{torchscript: FILE, downsample: N, latent_channels: C}` (docs/models.md).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum VaeSpec {
    Folder(PathBuf),
    Script {
        file: PathBuf,
        downsample: u64,
        latent_channels: u64,
    },
}

impl VaeSpec {
    /// The folder or the TorchScript file, as written.
    pub fn path(&self) -> &Path {
        match self {
            VaeSpec::Folder(p) | VaeSpec::Script { file: p, .. } => p,
        }
    }

    /// What a hub or URL reference names: a diffusers folder, or one TorchScript file (looked
    /// up as a checkpoint file is).
    pub fn wanted(&self) -> Wanted {
        match self {
            VaeSpec::Folder(_) => Wanted::VaeFolder,
            VaeSpec::Script { .. } => Wanted::CheckpointFile,
        }
    }

    /// The key that names the path in messages.
    pub fn key(&self) -> &'static str {
        match self {
            VaeSpec::Folder(_) => "vae",
            VaeSpec::Script { .. } => "vae.torchscript",
        }
    }
}

const VAE_EXPECTED: &str = "expected a diffusers AutoencoderKL folder, or {torchscript: FILE, downsample: N, latent_channels: C}";

impl<'de> Deserialize<'de> for VaeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        via_value(d, |v| match &v {
            Value::String(s) => Ok(VaeSpec::Folder(PathBuf::from(s))),
            Value::Mapping(m) => script_vae(m),
            other => Err(format!("{} is not a VAE; {VAE_EXPECTED}", describe(other))),
        })
    }
}

/// `vae: {torchscript, downsample, latent_channels}`: all three, nothing else.
fn script_vae(m: &serde_yaml::Mapping) -> Result<VaeSpec, String> {
    const KEYS: [&str; 3] = ["torchscript", "downsample", "latent_channels"];
    if let Some(k) = m
        .keys()
        .find(|k| !k.as_str().is_some_and(|k| KEYS.contains(&k)))
    {
        return Err(format!(
            "unknown key {}; the keys are {}",
            describe(k),
            KEYS.join(", ")
        ));
    }
    let missing = |k: &str| format!("`vae.{k}` is required; {VAE_EXPECTED}");
    let count = |k: &str| match m.get(k) {
        None => Err(missing(k)),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("`vae.{k}`: {} is not a positive whole number", describe(v))),
    };
    let file = match m.get("torchscript") {
        None => return Err(missing("torchscript")),
        Some(Value::String(s)) => PathBuf::from(s),
        Some(v) => {
            return Err(format!(
                "`vae.torchscript`: {} is not a path to a torch.jit.save file",
                describe(v)
            ))
        }
    };
    Ok(VaeSpec::Script {
        file,
        downsample: count("downsample")?,
        latent_channels: count("latent_channels")?,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub model: ModelSection,
    pub vae: VaeSpec,
    pub num_classes: Option<i64>,
    pub image_size: Option<i64>,
    pub num_samples: u64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub labels: LabelMode,
    #[serde(default = "default_cfg_scale")]
    pub cfg_scale: f64,
    #[serde(default)]
    pub cfg_channels: Option<CfgChannelsSpec>,
    /// `ddpm` for the DiT family, `ode` for SiT when absent.
    pub sampler: Option<SamplerKind>,
    #[serde(default)]
    pub steps: Option<StepsSpec>,
    #[serde(default)]
    pub eta: f64,
    /// `linear` when absent (DiT family only).
    pub beta_schedule: Option<BetaSchedule>,
    #[serde(default)]
    pub variance: VarianceChoice,
    #[serde(default = "default_precision")]
    pub precision: Precision,
    /// `ode`, `sit-ode`, `sit-sde`: `euler` (default) or `heun`.
    pub solver: Option<Solver>,
    /// `sampler: sde` only: `linear` (default) or `cosine`.
    pub path_type: Option<PathType>,
    /// Flow samplers only: `[low, high]`, guidance where `low <= t <= high` (default [0, 1]).
    pub guidance_interval: Option<[f64; 2]>,
    /// `sampler: sit-sde` only: SiT's `--diffusion-form` (default `sigma`; `SBDM` is refused).
    pub diffusion_form: Option<String>,
    /// `sampler: sit-sde` only: SiT's `--diffusion-norm` (default 1).
    pub diffusion_norm: Option<f64>,
    /// `sampler: sit-sde` only: `mean` (default), `tweedie`, `euler` or `none`.
    pub last_step: Option<String>,
    /// `sampler: sit-sde` only: default 0.04.
    pub last_step_size: Option<f64>,
    /// `dit` or `repa`; the default follows the sampler (`repa` for ode / sde).
    pub pixels: Option<Pixels>,
    /// The decoder gets `(z - latent_bias) / latent_scale`: a number or one per channel.
    pub latent_scale: Option<PerChannel>,
    pub latent_bias: Option<PerChannel>,
    #[serde(default = "default_batch")]
    pub batch_size: BatchSpec,
    pub vae_batch_size: Option<BatchSpec>,
    pub out_dir: Option<PathBuf>,
    #[serde(default)]
    pub devices: Devices,
    #[serde(default = "default_shard_size")]
    pub shard_size: u64,
    #[serde(default)]
    pub retry: RawRetry,
    /// Seconds.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: f64,
    /// Seconds between progress lines when stderr is not a terminal.
    #[serde(default = "default_progress_interval")]
    pub progress_interval: f64,
    /// `slurm` or `k8s/N`: `run` takes its partition from the scheduler (opt-in).
    pub partitions: Option<String>,
    /// Score the finished samples (the ADM evaluator's metrics).
    pub evaluate: Option<RawEvaluate>,
    /// What to run, or where to POST, when `run` ends.
    pub notify: Option<RawNotify>,
}

/// `notify:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub command: Option<String>,
    pub webhook: Option<String>,
    pub on: Option<Vec<crate::job::notify::Event>>,
}

/// `evaluate:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvaluate {
    /// A path, a Hub reference or a URL (like `model.checkpoint`).
    pub reference: PathBuf,
    pub reference_sha256: Option<String>,
    pub inception: Option<PathBuf>,
    pub inception_sha256: Option<String>,
    pub metrics: Option<Vec<crate::job::evaluation::Metric>>,
}

/// `variance`: `auto` picks from the model's `learn_sigma`; the others are the engine's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum VarianceChoice {
    #[default]
    Auto,
    LearnedRange,
    FixedLarge,
    FixedSmall,
}

impl VarianceChoice {
    pub fn fixed(self) -> Option<VarianceType> {
        match self {
            VarianceChoice::Auto => None,
            VarianceChoice::LearnedRange => Some(VarianceType::LearnedRange),
            VarianceChoice::FixedLarge => Some(VarianceType::FixedLarge),
            VarianceChoice::FixedSmall => Some(VarianceType::FixedSmall),
        }
    }
}

/// `retry:` in seconds, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRetry {
    pub attempts: u32,
    pub backoff: f64,
    pub backoff_max: f64,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            attempts: 3,
            backoff: 2.0,
            backoff_max: 60.0,
        }
    }
}

/// `steps`: a respacing spec, written as a string (`"250"`, `"ddim50"`, `"10,20,30"`) or a
/// plain non-negative integer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StepsSpec(pub String);

const STEPS_EXPECTED: &str =
    "expected a step count such as 250 or \"250\", section counts such as \"10,20,30\", or \"ddimN\"";

impl<'de> Deserialize<'de> for StepsSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        via_value(d, |v| match &v {
            Value::String(s) => Ok(StepsSpec(s.trim().to_string())),
            Value::Number(n) if n.as_u64().is_some() => Ok(StepsSpec(n.to_string())),
            other => Err(format!(
                "{} is not a step count; {STEPS_EXPECTED}",
                describe(other)
            )),
        })
    }
}

/// `batch_size` / `vae_batch_size`: a number of images, or `auto` (the worker picks the
/// largest that fits its device).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BatchSpec {
    Count(u64),
    Auto,
}

impl<'de> Deserialize<'de> for BatchSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        via_value(d, |v| match &v {
            Value::String(s) if s.trim() == "auto" => Ok(BatchSpec::Auto),
            Value::Number(n) if n.as_u64().is_some() => {
                Ok(BatchSpec::Count(n.as_u64().unwrap_or(0)))
            }
            other => Err(format!(
                "{} is not a batch size; expected a positive number of images or `auto`",
                describe(other)
            )),
        })
    }
}

/// `latent_scale` / `latent_bias`: one number, or a list of one per latent channel.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PerChannel(pub Vec<f64>);

impl<'de> Deserialize<'de> for PerChannel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        via_value(d, |v| {
            let expected = "expected a number or a list of one number per latent channel";
            let num = |x: &Value| {
                x.as_f64()
                    .ok_or_else(|| format!("{} is not a number; {expected}", describe(x)))
            };
            match &v {
                Value::Sequence(xs) if !xs.is_empty() => xs
                    .iter()
                    .map(num)
                    .collect::<Result<Vec<_>, _>>()
                    .map(PerChannel),
                Value::Number(_) => num(&v).map(|x| PerChannel(vec![x])),
                other => Err(format!("{} is not a number; {expected}", describe(other))),
            }
        })
    }
}

/// `cfg_channels`: a positive integer or `all`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum CfgChannelsSpec {
    First(u64),
    All,
}

impl<'de> Deserialize<'de> for CfgChannelsSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        via_value(d, |v| {
            match &v {
            Value::String(s) if s.trim() == "all" => Ok(CfgChannelsSpec::All),
            Value::Number(n) if n.as_u64().is_some() => {
                Ok(CfgChannelsSpec::First(n.as_u64().unwrap_or(0)))
            }
            other => Err(format!(
                "{} is not a channel count; expected 3 (the paper's behaviour), another count of latent channels, or `all`",
                describe(other)
            )),
        }
        })
    }
}

impl<'de> Deserialize<'de> for Devices {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        via_value(d, devices_from_value)
    }
}

fn devices_from_value(v: Value) -> Result<Devices, String> {
    let bad = |v: &Value| {
        format!(
            "{} is not a device list; expected `auto`, a list of GPU ids such as [0, 1], or {{cpu: N}}",
            describe(v)
        )
    };
    match &v {
        Value::String(s) if s == "auto" => Ok(Devices::Auto),
        Value::Sequence(ids) => ids
            .iter()
            .map(|id| {
                id.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        format!(
                            "{} is not a GPU id; expected a list of GPU ids such as [0, 1]",
                            describe(id)
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Devices::Gpus),
        Value::Mapping(m) if m.len() == 1 => m
            .get("cpu")
            .and_then(Value::as_u64)
            .map(|n| Devices::Cpu(u32::try_from(n).unwrap_or(u32::MAX)))
            .ok_or_else(|| bad(&v)),
        _ => Err(bad(&v)),
    }
}

/// Deserializes any YAML value and converts it with `f` *inside* serde_yaml's visit, so that an
/// error of `f` gets the key path and line like serde's own errors do.
fn via_value<'de, D, T>(d: D, f: impl FnOnce(Value) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    use serde::de::{value::MapAccessDeserializer, value::SeqAccessDeserializer, Error, Visitor};
    struct V<F>(F);
    impl<'de, T, F: FnOnce(Value) -> Result<T, String>> Visitor<'de> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a value")
        }
        fn visit_bool<E: Error>(self, b: bool) -> Result<T, E> {
            (self.0)(Value::Bool(b)).map_err(E::custom)
        }
        fn visit_i64<E: Error>(self, n: i64) -> Result<T, E> {
            (self.0)(Value::Number(n.into())).map_err(E::custom)
        }
        fn visit_u64<E: Error>(self, n: u64) -> Result<T, E> {
            (self.0)(Value::Number(n.into())).map_err(E::custom)
        }
        fn visit_f64<E: Error>(self, n: f64) -> Result<T, E> {
            (self.0)(Value::Number(n.into())).map_err(E::custom)
        }
        fn visit_str<E: Error>(self, s: &str) -> Result<T, E> {
            (self.0)(Value::String(s.to_string())).map_err(E::custom)
        }
        fn visit_unit<E: Error>(self) -> Result<T, E> {
            (self.0)(Value::Null).map_err(E::custom)
        }
        fn visit_none<E: Error>(self) -> Result<T, E> {
            (self.0)(Value::Null).map_err(E::custom)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
            let v = Value::deserialize(SeqAccessDeserializer::new(seq))?;
            (self.0)(v).map_err(A::Error::custom)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let v = Value::deserialize(MapAccessDeserializer::new(map))?;
            (self.0)(v).map_err(A::Error::custom)
        }
    }
    d.deserialize_any(V(f))
}

/// A short rendering of a YAML value for messages (`-3`, `"abc"`, `a list`).
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut s: String = s.chars().take(40).collect();
            s = format!("{s:?}");
            s
        }
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

fn default_cfg_scale() -> f64 {
    1.5
}
fn default_precision() -> Precision {
    Precision::Fp32
}
fn default_batch() -> BatchSpec {
    BatchSpec::Count(default_batch_count())
}

fn default_batch_count() -> u64 {
    32
}
fn default_shard_size() -> u64 {
    1000
}
fn default_progress_interval() -> f64 {
    60.0
}

fn default_stall_timeout() -> f64 {
    600.0
}
