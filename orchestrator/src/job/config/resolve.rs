//! From the raw YAML to a [`Job`]: paths made absolute (or found in the Hugging Face cache),
//! defaults filled in, every value checked against the model it applies to and against the
//! bounds of checks.rs. The first problem ends the load with one line naming the key.
use super::checks::{limits, out_dir_usable, seconds, short};
use super::raw::{CfgChannelsSpec, RawEvaluate, RawJob, VaeSpec};
use super::{normalize, Devices, FileSpec, Job, RetryPolicy, RunSettings};
use anyhow::{anyhow, bail, Result};
use fidshard_core::diffusion::{space_timesteps, VarianceType, DIFFUSION_STEPS};
use fidshard_core::dit_config::{CfgChannels, DiTConfig, PRESETS};
use fidshard_core::flow::{
    sit_config_from_json_file, sit_preset, ModelFamily, Pixels, SIT_PRESETS,
};
use fidshard_core::torchscript::script_config_from_json_file;
use fidshard_core::vae_config::VaeConfig;
use fidshard_core::{SamplerKind, SamplerSettings};
use std::path::{Path, PathBuf};

pub(super) struct Resolver<'a> {
    pub path: &'a Path,
    pub base: &'a Path,
    /// For `plan`, `status`, `config`, `grid`: weights that are not local yet (not downloaded,
    /// not copied) are no error; the VAE's upsampling factor is then assumed (see
    /// [`Job::weights_missing`]).
    pub lenient: bool,
}

impl Resolver<'_> {
    pub(super) fn err(&self, key: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}: `{key}`: {msg}", self.path.display())
    }

    fn rel(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            normalize(&self.base.join(p))
        }
    }

    /// Workers receive paths as UTF-8 text (JSON), so every path must be one.
    pub(super) fn utf8(&self, key: &str, p: &Path) -> Result<()> {
        if p.to_str().is_none() {
            bail!(self.err(
                key,
                format!(
                    "{} is not valid UTF-8; rename it (paths are passed to the workers as UTF-8 text)",
                    p.display()
                )
            ));
        }
        Ok(())
    }

    /// A weights path of the YAML: relative to its folder, or the local copy of a hub repo or
    /// URL (downloaded by `fetch/` before the job is loaded; see hub.rs).
    pub(super) fn weights(
        &self,
        key: &str,
        value: &Path,
        wanted: crate::job::hub::Wanted,
    ) -> Result<PathBuf> {
        use crate::job::hub;
        let local = self.rel(value);
        match hub::remote(value, &local).map_err(|msg| self.err(key, msg))? {
            Some(remote) => hub::locate(&remote, wanted, &local).map_err(|msg| self.err(key, msg)),
            None => {
                self.utf8(key, &local)?;
                Ok(local)
            }
        }
    }

    /// `out_dir`, or `runs/<yaml name>` beside the job file.
    pub fn out_dir(&self, raw: &RawJob) -> PathBuf {
        match &raw.out_dir {
            Some(p) => self.rel(p),
            // `runs/<config name>` under the current directory, where the user runs fidshard
            // (not under the configs folder).
            None => {
                let stem = self.path.file_stem().unwrap_or_default().to_string_lossy();
                normalize(&Path::new("runs").join(stem.as_ref()))
            }
        }
    }

    /// What of the weights is not on this machine yet, if anything.
    fn missing_weights(&self, raw: &RawJob) -> Option<String> {
        let (key, model, _) = raw.model.file().ok()?;
        let vae = self.weights(raw.vae.key(), raw.vae.path(), raw.vae.wanted());
        let vae_ok = vae.as_ref().is_ok_and(|d| match raw.vae {
            VaeSpec::Folder(_) => d.join("config.json").is_file(),
            VaeSpec::Script { .. } => d.is_file(),
        });
        let ckpt = self.weights(key, model, raw.model.wanted());
        // A file, or a diffusers DiT folder.
        let ckpt_ok = ckpt.as_ref().is_ok_and(|p| p.exists());
        match (vae_ok, ckpt_ok) {
            (true, true) => None,
            (false, _) => Some(format!(
                "the VAE ({}) is not local yet: the image size assumes the SD VAE's upsampling x8",
                raw.vae.path().display()
            )),
            (true, false) => Some(format!(
                "the model file ({}) is not local yet",
                model.display()
            )),
        }
    }

    /// The job before its weights are local: everything the plan, the status and the resolved
    /// config need, with the VAE factor taken from its config when it is local, else 8.
    fn resolve_without_weights(&self, mut raw: RawJob, mut missing: String) -> Result<Job> {
        let local =
            |key: &str, v: &Path, w| self.weights(key, v, w).unwrap_or_else(|_| self.rel(v));
        let vae_dir = local(raw.vae.key(), raw.vae.path(), raw.vae.wanted());
        let factor = match &raw.vae {
            VaeSpec::Folder(_) => VaeConfig::from_file(vae_dir.join("config.json"))
                .map(|c| c.upsample_factor())
                .unwrap_or(8),
            VaeSpec::Script { .. } => self.script_vae(&raw.vae)?.map_or(8, |v| v.downsample),
        };
        let (key, model, _) = raw.model.file().map_err(|(k, m)| self.err(k, m))?;
        let checkpoint = local(key, model, raw.model.wanted());
        if raw.model.preset.is_none()
            && raw.model.config.is_none()
            && !checkpoint.exists()
            && fidshard_core::diffusers_dit::find(&checkpoint)
                .ok()
                .flatten()
                .is_none()
        {
            // A diffusers DiT not downloaded yet: its architecture is in its config.json.
            let image_size = *raw.image_size.get_or_insert(256);
            raw.model.preset = Some(PRESETS[0].to_string());
            missing.push_str(&format!(
                "; the architecture is read from the model's config.json once it is local \
                 ({} at {image_size}x{image_size} assumed until then)",
                PRESETS[0]
            ));
        }
        let mut job = self.resolve_parts(raw, vae_dir, factor, checkpoint)?;
        job.weights_missing = Some(missing);
        Ok(job)
    }

    /// A weights value of the job file resolved beside it (what a local path would mean).
    pub fn local(&self, value: &Path) -> PathBuf {
        self.rel(value)
    }

    pub fn resolve(&self, raw: RawJob) -> Result<Job> {
        if self.lenient {
            if let Some(missing) = self.missing_weights(&raw) {
                return self.resolve_without_weights(raw, missing);
            }
        }
        let (vae_dir, factor) = self.vae(&raw)?;

        if let Some(sha) = &raw.model.sha256 {
            crate::job::hub::parse_sha256(sha).map_err(|msg| self.err("model.sha256", msg))?;
        }
        let (key, model, _) = raw.model.file().map_err(|(k, m)| self.err(k, m))?;
        let checkpoint = self.weights(key, model, raw.model.wanted())?;
        self.utf8(key, &checkpoint)?;
        let diffusers_folder = key == "model.checkpoint"
            && checkpoint
                .join(fidshard_core::vae_config::CONFIG_FILE)
                .is_file();
        if checkpoint.is_dir() && !diffusers_folder {
            bail!(self.err(
                key,
                format!(
                    "{} is a folder; name the model file in it ({})",
                    checkpoint.display(),
                    if key == "model.checkpoint" {
                        ".pt or .safetensors), or give a diffusers DiT folder (config.json + \
                         diffusion_pytorch_model.safetensors"
                    } else {
                        "the torch.jit.save file"
                    }
                )
            ));
        }
        if !checkpoint.is_file() && !diffusers_folder {
            bail!(self.err(key, format!("{} does not exist", checkpoint.display())));
        }
        self.resolve_parts(raw, vae_dir, factor, checkpoint)
    }

    /// Everything but the weights' lookup: the DiT config, the sampler settings, the run.
    fn resolve_parts(
        &self,
        raw: RawJob,
        vae_dir: PathBuf,
        factor: i64,
        checkpoint: PathBuf,
    ) -> Result<Job> {
        let (dit, qk_norm) = self.dit_config(&raw, factor, &checkpoint)?;
        let image_size = dit.input_size.saturating_mul(factor);
        if image_size > limits::MAX_IMAGE_SIZE {
            bail!(self.err(
                "image_size",
                format!(
                    "{image_size} pixels (input_size {} x VAE factor {factor}) is more than {}",
                    dit.input_size,
                    limits::MAX_IMAGE_SIZE
                )
            ));
        }

        if raw.num_samples == 0 || raw.num_samples > limits::MAX_SAMPLES {
            bail!(self.err(
                "num_samples",
                format!(
                    "{} is not in 1..={} (10^9)",
                    raw.num_samples,
                    limits::MAX_SAMPLES
                )
            ));
        }
        let batch_size = self.batch("batch_size", raw.batch_size)?;
        let vae_batch_size = self.batch(
            "vae_batch_size",
            raw.vae_batch_size.unwrap_or(raw.batch_size),
        )?;
        self.cfg_scale(raw.cfg_scale)?;
        let sampler = self.sampler(&raw)?;
        let flow = self.flow_settings(&raw, sampler, qk_norm)?;
        let cfg_channels = match &raw.cfg_channels {
            // SiT's forward_with_cfg guides 3 channels, REPA's samplers all of them.
            None if sampler.is_flow() && !sampler.is_sit_transport() => CfgChannels::All,
            None => CfgChannels::default(),
            Some(CfgChannelsSpec::All) => CfgChannels::All,
            Some(CfgChannelsSpec::First(n)) if *n >= 1 && *n <= dit.in_channels as u64 => {
                CfgChannels::First(*n as i64)
            }
            Some(CfgChannelsSpec::First(n)) => bail!(self.err(
                "cfg_channels",
                format!(
                    "{n}: expected 3 (the paper's behaviour) or `all`, or 1..={} (the model's in_channels)",
                    dit.in_channels
                )
            )),
        };
        if !raw.eta.is_finite() {
            bail!(self.err(
                "eta",
                format!("{} is not a number in [0, 1]", short(raw.eta))
            ));
        }
        if sampler != SamplerKind::Ddim && raw.eta != 0.0 {
            bail!(self.err(
                "eta",
                "applies to `sampler: ddim` only; remove it or set sampler: ddim"
            ));
        }
        if !(0.0..=1.0).contains(&raw.eta) {
            bail!(self.err(
                "eta",
                format!(
                    "{} is outside [0, 1] (0: deterministic DDIM, 1: DDPM-like noise; above 1 the DDIM update takes the square root of a negative number)",
                    short(raw.eta)
                )
            ));
        }
        let steps = raw.steps.as_ref().map(|s| s.0.clone()).unwrap_or_else(|| {
            // REPA's generate.py samples 50 steps by default; DiT's and SiT's sample.py 250.
            match sampler {
                SamplerKind::Ode | SamplerKind::Sde => "50",
                _ => "250",
            }
            .to_string()
        });
        if sampler.is_flow() {
            sampler
                .flow_steps(&steps)
                .map_err(|e| self.err("steps", e))?;
        } else {
            space_timesteps(DIFFUSION_STEPS, &steps).map_err(|e| self.err("steps", e))?;
        }
        let variance = match (raw.variance.fixed(), dit.learn_sigma) {
            (None, true) | (Some(VarianceType::LearnedRange), true) => VarianceType::LearnedRange,
            (None, false) => VarianceType::FixedLarge,
            (Some(v @ (VarianceType::FixedLarge | VarianceType::FixedSmall)), false) => v,
            (Some(VarianceType::LearnedRange), false) => bail!(self.err(
                "variance",
                "learned_range needs a model with learn_sigma: true; use auto, fixed_large or fixed_small"
            )),
            (Some(_), true) => bail!(self.err(
                "variance",
                "the model predicts its variance (learn_sigma: true); use auto or learned_range"
            )),
        };
        let latent_scale = self.per_channel("latent_scale", &raw.latent_scale, dit.in_channels)?;
        let vae_script = self.script_vae(&raw.vae)?;
        self.script_vae_fits(vae_script, &dit, latent_scale.is_some())?;
        let model_format = raw.model.file().map_err(|(k, m)| self.err(k, m))?.2;
        let latent_bias = self.per_channel("latent_bias", &raw.latent_bias, dit.in_channels)?;
        let run = self.run_settings(&raw)?;
        let model_spec = self.model_spec(&raw);
        let out_dir = self.out_dir(&raw);
        self.utf8("out_dir", &out_dir)?;
        out_dir_usable(&out_dir).map_err(|msg| self.err("out_dir", msg))?;
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
            beta_schedule: raw.beta_schedule.unwrap_or_default(),
            variance,
            precision: raw.precision,
            batch_size,
            vae_batch_size,
            family: raw.model.family,
            flow,
            pixels: raw
                .pixels
                .unwrap_or(if sampler.is_flow() && !sampler.is_sit_transport() {
                    Pixels::Repa
                } else {
                    Pixels::Dit
                }),
            latent_scale,
            latent_bias,
            model_format,
            vae_script,
        };
        Ok(Job {
            settings,
            image_size,
            out_dir,
            run,
            source: self.path.to_path_buf(),
            partition: crate::job::partition::Partition::WHOLE,
            weights_missing: None,
            model_spec,
            partitions_from: self.partitions(&raw)?,
            evaluate: self.evaluation(&raw)?,
            notify: self.notify(&raw)?,
        })
    }

    /// The files of `evaluate:`: the reference batch, then the Inception weights (without
    /// `evaluate.inception`: a copy placed by hand in fidshard's cache if there is one, else
    /// torch-fidelity's release with its published sha256 pinned). Sha256s checked here.
    pub(super) fn evaluation_files(&self, e: &RawEvaluate) -> Result<Vec<FileSpec>> {
        use crate::job::evaluation::{hand_placed_inception, INCEPTION_SHA256, INCEPTION_URL};
        const JOB_FILE: &str = "the job file";
        let sha = |key: &'static str, s: &Option<String>| -> Result<Option<String>> {
            s.as_deref()
                .map(|s| crate::job::hub::parse_sha256(s).map_err(|m| self.err(key, m)))
                .transpose()
        };
        let reference = FileSpec {
            key: "evaluate.reference",
            value: e.reference.clone(),
            local: self.rel(&e.reference),
            sha256_key: "evaluate.reference_sha256",
            sha256: sha("evaluate.reference_sha256", &e.reference_sha256)?,
            sha256_from: JOB_FILE,
            is_default: false,
        };
        let sha256 = sha("evaluate.inception_sha256", &e.inception_sha256)?;
        let inception = match &e.inception {
            Some(p) => FileSpec {
                key: "evaluate.inception",
                value: p.clone(),
                local: self.rel(p),
                sha256_key: "evaluate.inception_sha256",
                sha256,
                sha256_from: JOB_FILE,
                is_default: false,
            },
            None => {
                let by_hand = hand_placed_inception();
                let (value, sha256, sha256_from) = match sha256 {
                    _ if by_hand.is_file() => (by_hand, sha256, JOB_FILE),
                    Some(s) => (PathBuf::from(INCEPTION_URL), Some(s), JOB_FILE),
                    None => (
                        PathBuf::from(INCEPTION_URL),
                        Some(INCEPTION_SHA256.to_string()),
                        "torch-fidelity's published sha256 (the default `evaluate.inception`)",
                    ),
                };
                FileSpec {
                    key: "evaluate.inception",
                    local: value.clone(),
                    value,
                    sha256_key: "evaluate.inception_sha256",
                    sha256,
                    sha256_from,
                    is_default: true,
                }
            }
        };
        Ok(vec![reference, inception])
    }

    /// `evaluate:`: the reference batch and the Inception weights (local files must exist;
    /// hub references and URLs are found in the caches, where `fetch/` put them before the job
    /// is loaded), the metrics (default all five, no repeats).
    fn evaluation(&self, raw: &RawJob) -> Result<Option<crate::job::evaluation::Evaluation>> {
        use crate::job::evaluation::{Evaluation, EvaluationSpec, Metric};
        let Some(e) = &raw.evaluate else {
            return Ok(None);
        };
        let mut not_local = Vec::new();
        let mut found = Vec::new();
        for f in self.evaluation_files(e)? {
            found.push(self.evaluation_file(&f, &mut not_local)?);
        }
        let [(reference, reference_spec), (inception, inception_spec)] =
            <[(PathBuf, PathBuf); 2]>::try_from(found).expect("two files");
        let metrics = e.metrics.clone().unwrap_or_else(|| Metric::ALL.to_vec());
        let mut seen = std::collections::BTreeSet::new();
        if metrics.is_empty() || metrics.iter().any(|m| !seen.insert(m.as_str())) {
            bail!(self.err(
                "evaluate.metrics",
                "expected a list of distinct metrics among fid, sfid, is, precision, recall (or no key: all five)"
            ));
        }
        let sha = |s: &Option<String>| s.as_deref().map(|s| s.trim().to_string());
        Ok(Some(Evaluation {
            reference,
            inception,
            metrics,
            spec: EvaluationSpec {
                reference: reference_spec,
                reference_sha256: sha(&e.reference_sha256),
                inception: e.inception.as_ref().map(|_| inception_spec),
                inception_sha256: sha(&e.inception_sha256),
            },
            not_local,
        }))
    }

    /// Where a file of `evaluate:` is, and how `config` writes it (a local path absolute, a
    /// remote one as written). A remote file not downloaded yet is an error unless the job is
    /// loaded without weights or it is the default Inception (only `run` reads it, after its
    /// fetch); it is then where the download will put it, and listed in `not_local`.
    fn evaluation_file(
        &self,
        f: &FileSpec,
        not_local: &mut Vec<String>,
    ) -> Result<(PathBuf, PathBuf)> {
        use crate::job::hub::{self, CacheRoot, Remote, Wanted};
        let remote = hub::remote(&f.value, &f.local).map_err(|m| self.err(f.key, m))?;
        let Some(remote) = remote else {
            if !f.local.is_file() {
                bail!(self.err(
                    f.key,
                    match f.key {
                        "evaluate.reference" => format!(
                            "{}: no such file; give the reference batch npz, a local path, a Hugging Face reference or a URL (e.g. guided-diffusion's VIRTUAL_imagenet256_labeled.npz, docs/evaluation.md)",
                            f.local.display()
                        ),
                        _ => format!(
                            "{}: no such file; give torch-fidelity's weights ({}) or remove the key to have fidshard download them",
                            f.local.display(),
                            crate::job::evaluation::INCEPTION_URL
                        ),
                    }
                ));
            }
            self.utf8(f.key, &f.local)?;
            return Ok((f.local.clone(), f.local.clone()));
        };
        match hub::locate(&remote, Wanted::CheckpointFile, &f.local) {
            Ok(p) => {
                self.utf8(f.key, &p)?;
                Ok((p, f.value.clone()))
            }
            Err(_) if self.lenient || f.is_default => {
                not_local.push(format!(
                    "`{}` ({}) is not local yet",
                    f.key,
                    f.value.display()
                ));
                let at = match &remote {
                    Remote::Url(u) => u.cached_path(&CacheRoot::fidshard()),
                    Remote::Repo(_) => f.local.clone(),
                };
                Ok((at, f.value.clone()))
            }
            Err(msg) => Err(self.err(f.key, msg)),
        }
    }

    /// `notify:`: at least one hook, a URL with a host, a non-empty `on` (default all three).
    fn notify(&self, raw: &RawJob) -> Result<Option<crate::job::notify::Notify>> {
        let Some(n) = &raw.notify else {
            return Ok(None);
        };
        crate::job::notify::Notify::new(n.command.clone(), n.webhook.clone(), n.on.clone())
            .map(Some)
            .map_err(|(key, msg)| self.err(key, msg))
    }

    /// `partitions`: absent (the whole job unless `run --partition`), `slurm` or `k8s/N`.
    fn partitions(&self, raw: &RawJob) -> Result<Option<crate::job::partition::Scheduler>> {
        raw.partitions
            .as_deref()
            .map(crate::job::partition::Scheduler::parse)
            .transpose()
            .map_err(|e| self.err("partitions", e))
    }

    /// The model keys as written, local paths absolute (see [`super::ModelSpec`]).
    fn model_spec(&self, raw: &RawJob) -> super::ModelSpec {
        let spec = |v: &Path| {
            let local = self.rel(v);
            match crate::job::hub::remote(v, &local) {
                Ok(Some(_)) => v.to_path_buf(),
                _ => std::path::absolute(&local).unwrap_or(local),
            }
        };
        super::ModelSpec {
            preset: raw.model.preset.clone(),
            config: raw.model.config.as_deref().map(spec),
            checkpoint: raw.model.file().map(|f| spec(f.1)).unwrap_or_default(),
            sha256: raw.model.sha256.clone(),
            vae: spec(raw.vae.path()),
        }
    }

    fn batch(&self, key: &str, spec: super::raw::BatchSpec) -> Result<fidshard_core::BatchSize> {
        let n = match spec {
            super::raw::BatchSpec::Auto => return Ok(fidshard_core::BatchSize::Auto),
            super::raw::BatchSpec::Count(n) => n,
        };
        if n == 0 || n > limits::MAX_BATCH {
            bail!(self.err(
                key,
                format!(
                    "{n} is not in 1..={} (images per forward pass), or `auto`",
                    limits::MAX_BATCH
                )
            ));
        }
        Ok(fidshard_core::BatchSize::Fixed(n as usize))
    }

    fn cfg_scale(&self, s: f64) -> Result<()> {
        if !s.is_finite() {
            bail!(self.err(
                "cfg_scale",
                format!("{} is not a finite number; use 1.0 for no guidance, 1.5 for the paper's FID setting", short(s))
            ));
        }
        if s < 1.0 {
            bail!(self.err(
                "cfg_scale",
                format!("{s} is below 1.0; use 1.0 for no guidance")
            ));
        }
        if s > limits::MAX_CFG_SCALE {
            bail!(self.err(
                "cfg_scale",
                format!(
                    "{} is above {}: guidance `uncond + scale * (cond - uncond)` would blow float32 rounding noise up into inf/NaN latents; the paper uses 1.5 to 4",
                    short(s),
                    limits::MAX_CFG_SCALE
                )
            ));
        }
        Ok(())
    }

    /// `devices`, `shard_size`, `retry`, `stall_timeout`: how the job is run.
    fn run_settings(&self, raw: &RawJob) -> Result<RunSettings> {
        let n = raw.num_samples;
        if raw.shard_size == 0 || raw.shard_size > limits::MAX_SHARD_SIZE {
            bail!(self.err(
                "shard_size",
                format!(
                    "{} is not in 1..={}",
                    raw.shard_size,
                    limits::MAX_SHARD_SIZE
                )
            ));
        }
        let shards = n.div_ceil(raw.shard_size);
        if shards > limits::MAX_SHARDS {
            bail!(self.err(
                "shard_size",
                format!(
                    "{n} samples in shards of {} make {shards} shards, more than {} (10^7); use shard_size: {} or more",
                    raw.shard_size,
                    limits::MAX_SHARDS,
                    n.div_ceil(limits::MAX_SHARDS)
                )
            ));
        }
        let r = &raw.retry;
        if r.attempts == 0 || r.attempts > limits::MAX_ATTEMPTS {
            bail!(self.err(
                "retry.attempts",
                format!("{} is not in 1..={}", r.attempts, limits::MAX_ATTEMPTS)
            ));
        }
        let err = |k: &str, m: String| self.err(k, m);
        let backoff = seconds(
            &err,
            "retry.backoff",
            r.backoff,
            true,
            limits::MAX_BACKOFF_SECONDS,
        )?;
        let backoff_max = seconds(
            &err,
            "retry.backoff_max",
            r.backoff_max,
            true,
            limits::MAX_BACKOFF_SECONDS,
        )?;
        if backoff_max < backoff {
            bail!(self.err(
                "retry.backoff_max",
                format!(
                    "{} is below retry.backoff {}; needs 0 <= backoff <= backoff_max (seconds)",
                    r.backoff_max, r.backoff
                )
            ));
        }
        let stall_timeout = seconds(
            &err,
            "stall_timeout",
            raw.stall_timeout,
            false,
            limits::MAX_STALL_SECONDS,
        )?;
        let progress_interval = seconds(
            &err,
            "progress_interval",
            raw.progress_interval,
            false,
            limits::MAX_STALL_SECONDS,
        )?;
        if raw.devices == Devices::Cpu(0) || raw.devices == Devices::Gpus(vec![]) {
            bail!(self.err(
                "devices",
                "names no device; use `auto`, [0, 1, ...] or {cpu: N} with N >= 1"
            ));
        }
        match &raw.devices {
            Devices::Cpu(w) if u64::from(*w) > limits::MAX_WORKERS => bail!(self.err(
                "devices",
                format!("{{cpu: {w}}} is more than {} workers", limits::MAX_WORKERS)
            )),
            Devices::Gpus(ids) if ids.len() as u64 > limits::MAX_WORKERS => bail!(self.err(
                "devices",
                format!(
                    "lists {} GPUs, more than {} workers",
                    ids.len(),
                    limits::MAX_WORKERS
                )
            )),
            _ => {}
        }
        Ok(RunSettings {
            devices: raw.devices.clone(),
            shard_size: raw.shard_size,
            retry: RetryPolicy {
                attempts: r.attempts,
                backoff,
                backoff_max,
            },
            stall_timeout,
            progress_interval,
        })
    }

    /// The architecture and SiT's `qk_norm` (false for DiT): a preset, a config JSON, or the
    /// config.json of a diffusers DiT `checkpoint`.
    fn dit_config(
        &self,
        raw: &RawJob,
        factor: i64,
        checkpoint: &Path,
    ) -> Result<(DiTConfig, bool)> {
        let m = &raw.model;
        let sit = m.family == ModelFamily::Sit;
        let presets = if sit { SIT_PRESETS } else { PRESETS };
        let diffusers = match m.torchscript {
            Some(_) => None,
            None => fidshard_core::diffusers_dit::find(checkpoint)
                .map_err(|e| self.err("model.checkpoint", e))?,
        };
        if let Some(d) = diffusers {
            let given = match (&m.preset, &m.config, sit) {
                (Some(_), _, _) => Some("model.preset"),
                (_, Some(_), _) => Some("model.config"),
                (_, _, true) => Some("model.family"),
                _ => None,
            };
            if let Some(key) = given {
                bail!(self.err(
                    key,
                    format!(
                        "the model is a diffusers DiT, whose architecture is its {}; remove `{key}`",
                        d.config.display()
                    )
                ));
            }
            let cfg = fidshard_core::diffusers_dit::config_from_file(&d.config)?;
            return self.agrees(raw, cfg, &d.config, factor).map(|c| (c, false));
        }
        match (&m.preset, &m.config) {
            (Some(_), Some(_)) => {
                bail!(self.err("model", "give either `preset` or `config`, not both"))
            }
            (None, None) => bail!(self.err(
                "model",
                format!(
                    "give `preset` (one of {}) or `config: path/to/{}-config.json`",
                    presets.join(", "),
                    m.family.as_str()
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
                if image_size > limits::MAX_IMAGE_SIZE {
                    bail!(self.err(
                        "image_size",
                        format!(
                            "{image_size} is more than {} pixels",
                            limits::MAX_IMAGE_SIZE
                        )
                    ));
                }
                let num_classes = raw.num_classes.unwrap_or(1000);
                let cfg = if sit {
                    sit_preset(name, image_size / factor, num_classes)
                } else {
                    DiTConfig::preset(name, image_size / factor, num_classes)
                };
                let cfg = cfg.ok_or_else(|| {
                    self.err(
                        "model.preset",
                        format!(
                            "`{name}` is not one of {} (model.family: {})",
                            presets.join(", "),
                            m.family.as_str()
                        ),
                    )
                })?;
                cfg.validate(self.path)?;
                Ok((cfg, false))
            }
            (None, Some(path)) => {
                let json = self.rel(path);
                self.utf8("model.config", &json)?;
                if !json.is_file() {
                    bail!(self.err(
                        "model.config",
                        format!(
                            "{} does not exist; expected a JSON of the DiT constructor arguments",
                            json.display()
                        )
                    ));
                }
                let (cfg, qk_norm) = if m.torchscript.is_some() {
                    (script_config_from_json_file(&json, m.family)?, false)
                } else if sit {
                    sit_config_from_json_file(&json)?
                } else {
                    (DiTConfig::from_json_file(&json)?, false)
                };
                Ok((self.agrees(raw, cfg, path, factor)?, qk_norm))
            }
        }
    }

    /// `cfg` read from `source`, checked against the job's `num_classes` and `image_size`.
    fn agrees(
        &self,
        raw: &RawJob,
        mut cfg: DiTConfig,
        source: &Path,
        factor: i64,
    ) -> Result<DiTConfig> {
        if let Some(n) = raw.num_classes {
            if n != cfg.num_classes {
                bail!(self.err(
                    "num_classes",
                    format!(
                        "{n} disagrees with num_classes {} in {}",
                        cfg.num_classes,
                        source.display()
                    )
                ));
            }
            cfg.num_classes = n;
        }
        if let Some(size) = raw.image_size {
            let want = cfg.input_size.saturating_mul(factor);
            if size != want {
                bail!(self.err(
                    "image_size",
                    format!(
                        "{size} disagrees with input_size {} x VAE factor {factor} = {want}",
                        cfg.input_size,
                    )
                ));
            }
        }
        Ok(cfg)
    }
}
