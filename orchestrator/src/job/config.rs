//! The YAML job file (docs/configuration.md). Paths are relative to the YAML file's folder;
//! unknown keys are errors naming the key. `JobConfig::load` resolves it into the engine's
//! `SamplerSettings`, checking everything that can be checked without loading weights.
use anyhow::{anyhow, bail, Context, Result};
use fidshard_core::diffusion::{space_timesteps, BetaSchedule, VarianceType, DIFFUSION_STEPS};
use fidshard_core::dit_config::{CfgChannels, DiTConfig, PRESETS};
use fidshard_core::vae_config::VaeConfig;
use fidshard_core::{LabelMode, Precision, SamplerKind, SamplerSettings};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelSection {
    /// One of the 12 presets (`DiT-XL/2`, ...).
    pub preset: Option<String>,
    /// A JSON of the DiT constructor arguments, for a custom architecture.
    pub config: Option<PathBuf>,
    /// `.pt` (torch.save or DiT train.py) or `.safetensors`.
    pub checkpoint: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum IntOrString {
    Int(u64),
    Str(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobConfig {
    pub model: ModelSection,
    pub vae: PathBuf,
    pub num_classes: Option<i64>,
    pub image_size: Option<i64>,
    pub num_samples: u64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub labels: LabelMode,
    #[serde(default = "default_cfg_scale")]
    pub cfg_scale: f64,
    pub cfg_channels: Option<IntOrString>,
    #[serde(default = "default_sampler")]
    pub sampler: String,
    pub steps: Option<IntOrString>,
    #[serde(default)]
    pub eta: f64,
    #[serde(default = "default_schedule")]
    pub beta_schedule: String,
    #[serde(default = "default_variance")]
    pub variance: String,
    #[serde(default = "default_precision")]
    pub precision: String,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    pub vae_batch_size: Option<usize>,
    pub out_dir: Option<PathBuf>,
    /// `auto`, a list of GPU ids, or `{cpu: N}`.
    #[serde(default)]
    pub devices: Devices,
    /// Consecutive indices per shard (the unit of work, retry and resume).
    #[serde(default = "default_shard_size")]
    pub shard_size: u64,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Seconds without progress from a busy worker before it is declared hung.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: f64,
}

/// Which devices get a worker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Devices {
    /// `auto`: every GPU visible through CUDA_VISIBLE_DEVICES / the driver; without a GPU, one
    /// CPU worker per core (at most 8).
    #[default]
    Auto,
    /// `[0, 2, 3]`: these GPU ids (as CUDA numbers the visible devices).
    Gpus(Vec<u32>),
    /// `{cpu: N}`: N CPU workers.
    Cpu(u32),
}

impl<'de> Deserialize<'de> for Devices {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde_yaml::Value;
        let v = Value::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(
                "`devices` must be `auto`, a list of GPU ids such as [0, 1], or {cpu: N}",
            )
        };
        match &v {
            Value::String(s) if s == "auto" => Ok(Devices::Auto),
            Value::Sequence(ids) => ids
                .iter()
                .map(|id| {
                    id.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(bad)
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Devices::Gpus),
            Value::Mapping(m) if m.len() == 1 => m
                .get("cpu")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .map(Devices::Cpu)
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

/// What happens when a shard's worker crashes, hangs or reports a failure.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RetryPolicy {
    /// Attempts per shard before it is marked failed.
    pub attempts: u32,
    /// Seconds before the first retry of a shard; doubles each attempt, capped by `backoff_max`.
    pub backoff: f64,
    pub backoff_max: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff: 2.0,
            backoff_max: 60.0,
        }
    }
}

fn default_shard_size() -> u64 {
    1000
}
fn default_stall_timeout() -> f64 {
    600.0
}

fn default_cfg_scale() -> f64 {
    1.5
}
fn default_sampler() -> String {
    "ddpm".into()
}
fn default_schedule() -> String {
    "linear".into()
}
fn default_variance() -> String {
    "auto".into()
}
fn default_precision() -> String {
    "fp32".into()
}
fn default_batch() -> usize {
    32
}

/// A loaded job: the raw YAML, where it came from, and the resolved settings.
pub(crate) struct Job {
    pub raw: JobConfig,
    pub settings: SamplerSettings,
    pub image_size: i64,
    pub out_dir: PathBuf,
}

impl Job {
    /// Reads and checks a job file; every failure is an input error (exit code 2).
    pub fn load(path: &Path) -> Result<Job> {
        Self::load_inner(path).map_err(|e| crate::sys::exit::Fatal::input(e).into())
    }

    fn load_inner(path: &Path) -> Result<Job> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the job config", path.display()))?;
        let raw: JobConfig = serde_yaml::from_str(&text).map_err(|e| {
            let msg = e.to_string().replace("unknown field", "unknown key");
            anyhow!(
                "{}: {msg}; see docs/configuration.md for the keys",
                path.display()
            )
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Resolver { path, base: &base }.resolve(raw)
    }
}

struct Resolver<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl Resolver<'_> {
    fn err(&self, key: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}: `{key}`: {msg}", self.path.display())
    }
    fn rel(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            normalize(&self.base.join(p))
        }
    }

    /// A weights path of the YAML: relative to its folder, or, when that does not exist and the
    /// value is spelled `org/name`, the Hugging Face cache's copy of that repo (see hub.rs).
    fn weights(&self, key: &str, value: &Path, wanted: crate::job::hub::Wanted) -> Result<PathBuf> {
        let local = self.rel(value);
        if local.exists() {
            return Ok(local);
        }
        match crate::job::hub::repo_id(value) {
            Some(id) => crate::job::hub::resolve(&crate::job::hub::CacheRoot::from_env(), id, wanted, &local)
                .map_err(|msg| self.err(key, msg)),
            None => Ok(local),
        }
    }

    // `!(x >= y)` on purpose: it also rejects NaN, which YAML accepts as `.nan`.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn resolve(&self, raw: JobConfig) -> Result<Job> {
        let vae_dir = self.weights("vae", &raw.vae, crate::job::hub::Wanted::VaeFolder)?;
        let vae_cfg_path = vae_dir.join("config.json");
        if !vae_cfg_path.is_file() {
            bail!(self.err(
                "vae",
                format!(
                    "{} has no config.json; expected a diffusers AutoencoderKL folder (e.g. stabilityai/sd-vae-ft-ema)",
                    vae_dir.display()
                )
            ));
        }
        let vae_cfg = VaeConfig::from_file(&vae_cfg_path)?;
        let factor = vae_cfg.upsample_factor();

        let dit = self.dit_config(&raw, factor)?;
        let image_size = dit.input_size * factor;

        let checkpoint = self.weights(
            "model.checkpoint",
            &raw.model.checkpoint,
            crate::job::hub::Wanted::CheckpointFile,
        )?;
        if !checkpoint.is_file() {
            bail!(self.err(
                "model.checkpoint",
                format!("{} does not exist", checkpoint.display())
            ));
        }
        if raw.num_samples == 0 {
            bail!(self.err("num_samples", "must be at least 1"));
        }
        if raw.batch_size == 0 {
            bail!(self.err("batch_size", "must be at least 1"));
        }
        if !(raw.cfg_scale >= 1.0) {
            bail!(self.err(
                "cfg_scale",
                format!("{} is below 1.0; use 1.0 for no guidance", raw.cfg_scale)
            ));
        }
        let cfg_channels = match &raw.cfg_channels {
            None => CfgChannels::default(),
            Some(IntOrString::Int(n)) if *n >= 1 && (*n as i64) <= dit.in_channels => {
                CfgChannels::First(*n as i64)
            }
            Some(IntOrString::Str(s)) if s == "all" => CfgChannels::All,
            Some(_) => bail!(self.err(
                "cfg_channels",
                format!(
                    "expected 3 (the paper's behaviour) or `all`, or 1..={}",
                    dit.in_channels
                )
            )),
        };
        let sampler = match raw.sampler.as_str() {
            "ddpm" => SamplerKind::Ddpm,
            "ddim" => SamplerKind::Ddim,
            other => bail!(self.err("sampler", format!("`{other}` is not one of ddpm, ddim"))),
        };
        if sampler == SamplerKind::Ddpm && raw.eta != 0.0 {
            bail!(self.err(
                "eta",
                "applies to `sampler: ddim` only; remove it or set sampler: ddim"
            ));
        }
        if !(0.0..=1.0).contains(&raw.eta) {
            bail!(self.err("eta", format!("{} is outside [0, 1]", raw.eta)));
        }
        let steps = match &raw.steps {
            None => "250".to_string(),
            Some(IntOrString::Int(n)) => n.to_string(),
            Some(IntOrString::Str(s)) => s.trim().to_string(),
        };
        let beta_schedule = match raw.beta_schedule.as_str() {
            "linear" => BetaSchedule::Linear,
            "squaredcos_cap_v2" => BetaSchedule::SquaredCosCapV2,
            other => bail!(self.err(
                "beta_schedule",
                format!("`{other}` is not one of linear, squaredcos_cap_v2")
            )),
        };
        space_timesteps(DIFFUSION_STEPS, &steps).map_err(|e| self.err("steps", e))?;
        let variance = match (raw.variance.as_str(), dit.learn_sigma) {
            ("auto", true) | ("learned_range", true) => VarianceType::LearnedRange,
            ("auto", false) | ("fixed_large", false) => VarianceType::FixedLarge,
            ("fixed_small", false) => VarianceType::FixedSmall,
            ("learned_range", false) => bail!(self.err(
                "variance",
                "learned_range needs a model with learn_sigma: true"
            )),
            ("fixed_large" | "fixed_small", true) => bail!(self.err(
                "variance",
                "the model predicts its variance (learn_sigma: true); use auto or learned_range"
            )),
            (other, _) => bail!(self.err(
                "variance",
                format!("`{other}` is not one of auto, learned_range, fixed_large, fixed_small")
            )),
        };
        let precision = Precision::parse(&raw.precision).ok_or_else(|| {
            self.err(
                "precision",
                format!("`{}` is not one of {}", raw.precision, Precision::NAMES),
            )
        })?;
        if raw.shard_size == 0 {
            bail!(self.err("shard_size", "must be at least 1"));
        }
        if raw.retry.attempts == 0 {
            bail!(self.err("retry.attempts", "must be at least 1"));
        }
        if !(raw.retry.backoff >= 0.0 && raw.retry.backoff_max >= raw.retry.backoff) {
            bail!(self.err(
                "retry.backoff",
                "needs 0 <= backoff <= backoff_max (seconds)"
            ));
        }
        if !(raw.stall_timeout > 0.0) {
            bail!(self.err("stall_timeout", "must be a positive number of seconds"));
        }
        if raw.devices == Devices::Cpu(0) || raw.devices == Devices::Gpus(vec![]) {
            bail!(self.err(
                "devices",
                "names no device; use `auto`, [0, 1, ...] or {cpu: N} with N >= 1"
            ));
        }
        let vae_batch_size = raw.vae_batch_size.unwrap_or(raw.batch_size);
        if vae_batch_size == 0 {
            bail!(self.err("vae_batch_size", "must be at least 1"));
        }
        let out_dir = match &raw.out_dir {
            Some(p) => self.rel(p),
            None => {
                let stem = self.path.file_stem().unwrap_or_default().to_string_lossy();
                normalize(&self.base.join("runs").join(stem.as_ref()))
            }
        };
        let settings = SamplerSettings {
            dit,
            checkpoint,
            vae: vae_dir,
            num_samples: raw.num_samples,
            seed: raw.seed,
            labels: raw.labels,
            cfg_scale: raw.cfg_scale,
            cfg_channels,
            sampler,
            steps,
            eta: raw.eta,
            beta_schedule,
            variance,
            precision,
            batch_size: raw.batch_size,
            vae_batch_size,
        };
        Ok(Job {
            raw,
            settings,
            image_size,
            out_dir,
        })
    }

    fn dit_config(&self, raw: &JobConfig, factor: i64) -> Result<DiTConfig> {
        let m = &raw.model;
        match (&m.preset, &m.config) {
            (Some(_), Some(_)) => {
                bail!(self.err("model", "give either `preset` or `config`, not both"))
            }
            (None, None) => bail!(self.err(
                "model",
                format!(
                    "give `preset` (one of {}) or `config: path/to/dit-config.json`",
                    PRESETS.join(", ")
                )
            )),
            (Some(name), None) => {
                let image_size = raw.image_size.ok_or_else(|| {
                    self.err(
                        "image_size",
                        "required with `model.preset` (e.g. 256 or 512)",
                    )
                })?;
                if image_size <= 0 || image_size % factor != 0 {
                    bail!(self.err(
                        "image_size",
                        format!(
                            "{image_size} is not a positive multiple of the VAE's factor {factor}"
                        )
                    ));
                }
                let num_classes = raw.num_classes.unwrap_or(1000);
                let cfg =
                    DiTConfig::preset(name, image_size / factor, num_classes).ok_or_else(|| {
                        self.err(
                            "model.preset",
                            format!("`{name}` is not one of {}", PRESETS.join(", ")),
                        )
                    })?;
                cfg.validate(self.path)?;
                Ok(cfg)
            }
            (None, Some(path)) => {
                let mut cfg = DiTConfig::from_json_file(&self.rel(path))?;
                if let Some(n) = raw.num_classes {
                    if n != cfg.num_classes {
                        bail!(self.err(
                            "num_classes",
                            format!(
                                "{n} disagrees with num_classes {} in {}",
                                cfg.num_classes,
                                path.display()
                            )
                        ));
                    }
                    cfg.num_classes = n;
                }
                if let Some(size) = raw.image_size {
                    if size != cfg.input_size * factor {
                        bail!(self.err(
                            "image_size",
                            format!(
                                "{size} disagrees with input_size {} x VAE factor {factor} = {}",
                                cfg.input_size,
                                cfg.input_size * factor
                            )
                        ));
                    }
                }
                Ok(cfg)
            }
        }
    }
}

/// Removes `.` and `a/..` pairs without touching the filesystem, so logs show
/// `runs/demo` rather than `configs/../runs/demo` (a leading `..` is kept).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            c => out.push(c),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}
