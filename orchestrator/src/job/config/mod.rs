//! The YAML job file (docs/configuration.md). Paths are relative to the YAML file's folder;
//! unknown keys are errors naming the key. [`Job::load`] reads the file (read.rs: size, BOM,
//! nesting depth, then serde_yaml into the raw structs of raw.rs) and resolves it (resolve.rs)
//! into the engine's `SamplerSettings` plus the coordinator's [`RunSettings`], checking
//! everything that can be checked without loading weights (the bounds are in checks.rs). Every
//! failure is an input error (exit code 2) on one line that names the file and the key.
pub(crate) mod checks;
pub(crate) mod overrides;
mod raw;
mod read;
mod resolve;
mod sampler_keys;
mod script_keys;
#[cfg(test)]
mod tests;

use crate::job::plan::Shard;
use anyhow::Result;
use fidshard_core::SamplerSettings;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `devices:` is read here; what it names lives with the device inventory.
pub(crate) use crate::job::devices::Devices;
pub(crate) use checks::limits;

/// What happens when a shard's worker crashes, hangs or reports a failure.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Attempts per shard before it is marked failed.
    pub attempts: u32,
    /// Wait before the first retry of a shard; doubles each attempt, capped by `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// How the coordinator runs the job; none of it changes an image (so none of it is in the
/// fingerprint, except `shard_size`, which lays out the records).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunSettings {
    /// `auto`, a list of GPU ids, or `{cpu: N}`.
    pub devices: Devices,
    /// Consecutive indices per shard (the unit of work, retry and resume).
    pub shard_size: u64,
    pub retry: RetryPolicy,
    /// Time without progress from a busy worker before it is declared hung.
    pub stall_timeout: Duration,
    /// Time between progress lines when stderr is not a terminal.
    pub progress_interval: Duration,
}

/// See [`Job::weights_spec`]. Each weights value is `(as written, resolved beside the file)`.
#[derive(Debug, Clone)]
pub(crate) struct WeightsSpec {
    /// The model file: `model.checkpoint` or `model.torchscript` (`checkpoint_key`).
    pub checkpoint: (PathBuf, PathBuf),
    pub checkpoint_key: &'static str,
    /// What a hub reference of the model names (a diffusers DiT folder is one for `checkpoint`).
    pub checkpoint_wanted: crate::job::hub::Wanted,
    pub checkpoint_sha256: Option<String>,
    /// The VAE folder, or the TorchScript decoder file (`vae_key` is then `vae.torchscript`).
    pub vae: (PathBuf, PathBuf),
    pub vae_key: &'static str,
    pub vae_wanted: crate::job::hub::Wanted,
    pub out_dir: PathBuf,
    /// `partitions: slurm` or `k8s/N` (checked by `load`; an invalid value is `None` here).
    pub partitions_from: Option<crate::job::partition::Scheduler>,
    /// The files of `evaluate:` (none without it): the reference batch, the Inception weights.
    pub evaluate: Vec<FileSpec>,
}

/// A file of `evaluate:`, as the fetch plan needs it.
#[derive(Debug, Clone)]
pub(crate) struct FileSpec {
    /// `evaluate.reference` or `evaluate.inception`.
    pub key: &'static str,
    /// As written (the default Inception weights: their URL, or the copy placed by hand).
    pub value: PathBuf,
    /// What a local path would be.
    pub local: PathBuf,
    /// `evaluate.reference_sha256` or `evaluate.inception_sha256`.
    pub sha256_key: &'static str,
    /// Parsed (lower-case hex).
    pub sha256: Option<String>,
    /// Who says `sha256`: the job file, or torch-fidelity for the default Inception weights.
    pub sha256_from: &'static str,
    /// The default Inception weights (no `evaluate.inception`).
    pub is_default: bool,
}

/// A loaded, checked job.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// Everything that decides the pixels, as the workers receive it.
    pub settings: SamplerSettings,
    /// Image side in pixels (the DiT's input_size x the VAE's factor).
    pub image_size: i64,
    pub out_dir: PathBuf,
    pub run: RunSettings,
    /// The YAML file it was loaded from.
    pub source: PathBuf,
    /// The part of the plan this coordinator owns (the whole job unless `run --partition` or
    /// the scheduler's environment says otherwise; see job/partition.rs).
    pub partition: crate::job::partition::Partition,
    /// Loaded with [`Job::load_without_weights`] while some weights are not local yet: what
    /// is missing (the image size may then be assumed).
    pub weights_missing: Option<String>,
    /// The model and weights keys as a job file names them (for `config`).
    pub model_spec: ModelSpec,
    /// `partitions: slurm` or `k8s/N`: take the partition from the scheduler's environment
    /// (job/partition.rs).
    pub partitions_from: Option<crate::job::partition::Scheduler>,
    /// `evaluate:`: the metrics to compute once the samples are complete.
    pub evaluate: Option<crate::job::evaluation::Evaluation>,
    /// `notify:`: the hooks `run` fires when it ends.
    pub notify: Option<crate::job::notify::Notify>,
}

/// The `model` section and `vae` of a job file with local paths made absolute and hub or URL
/// references kept as written: what `config` prints, so that its output runs the same job
/// from any folder.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelSpec {
    pub preset: Option<String>,
    pub config: Option<PathBuf>,
    /// `model.checkpoint`, or `model.torchscript` (`settings.model_format` says which).
    pub checkpoint: PathBuf,
    pub sha256: Option<String>,
    /// The VAE folder, or `vae.torchscript` (`settings.vae_script` says which).
    pub vae: PathBuf,
}

impl Job {
    /// Reads and checks a job file; every failure is an input error (exit code 2).
    pub fn load(path: &Path) -> Result<Job> {
        Self::load_inner(path, false).map_err(|e| fidshard_core::Fatal::input(e).into())
    }

    /// [`Job::load`] for the commands that need no weights (`plan`, `status`, `config`, `grid`):
    /// a checkpoint or VAE not downloaded or copied yet is no error.
    pub fn load_without_weights(path: &Path) -> Result<Job> {
        Self::load_inner(path, true).map_err(|e| fidshard_core::Fatal::input(e).into())
    }

    fn load_inner(path: &Path, lenient: bool) -> Result<Job> {
        let text = read::read_job_text(path)?;
        let raw = read::parse(path, &text)?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        resolve::Resolver {
            path,
            base: &base,
            lenient,
        }
        .resolve(raw)
    }

    /// The weights the file names, as written, and its out dir: what `fetch/` needs before the
    /// weights are local (when `load` cannot resolve the job yet). The file is read and parsed
    /// as `load` does, with the same errors (exit code 2).
    pub fn weights_spec(path: &Path) -> Result<WeightsSpec> {
        let inner = || -> Result<WeightsSpec> {
            let raw = read::parse(path, &read::read_job_text(path)?)?;
            let base = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            let r = resolve::Resolver {
                path,
                base: &base,
                lenient: false,
            };
            let (checkpoint_key, model, _) =
                raw.model.file().map_err(|(key, msg)| r.err(key, msg))?;
            let vae = raw.vae.path();
            Ok(WeightsSpec {
                checkpoint: (model.to_path_buf(), r.local(model)),
                checkpoint_key,
                checkpoint_wanted: raw.model.wanted(),
                checkpoint_sha256: raw.model.sha256.clone(),
                vae: (vae.to_path_buf(), r.local(vae)),
                vae_key: raw.vae.key(),
                vae_wanted: raw.vae.wanted(),
                out_dir: r.out_dir(&raw),
                partitions_from: raw
                    .partitions
                    .as_deref()
                    .and_then(|s| crate::job::partition::Scheduler::parse(s).ok()),
                evaluate: match &raw.evaluate {
                    Some(e) => r.evaluation_files(e)?,
                    None => Vec::new(),
                },
            })
        };
        inner().map_err(|e| fidshard_core::Fatal::input(e).into())
    }

    /// The shards of the job: `ceil(num_samples / shard_size)` of them (at most
    /// [`limits::MAX_SHARDS`], checked at load).
    /// Only the shards this coordinator's partition owns (all of them for the whole job).
    pub fn plan(&self) -> Vec<Shard> {
        let (n, s) = (self.settings.num_samples, self.run.shard_size);
        self.partition
            .shards(self.total_shard_count())
            .map(|id| crate::job::plan::shard(n, s, id))
            .collect()
    }

    /// How many shards [`Job::plan`] has (this partition's), without building it.
    pub fn shard_count(&self) -> u64 {
        let r = self.partition.shards(self.total_shard_count());
        r.end - r.start
    }

    /// How many samples this partition's shards hold (all of them for the whole job).
    pub fn samples_owned(&self) -> u64 {
        let (a, b) = self.sample_range();
        b - a
    }

    /// The sample indices `[a, b)` this partition owns.
    pub fn sample_range(&self) -> (u64, u64) {
        self.partition
            .samples(self.settings.num_samples, self.run.shard_size)
    }

    /// How many shards the whole job has.
    pub fn total_shard_count(&self) -> u64 {
        self.settings.num_samples.div_ceil(self.run.shard_size)
    }

    /// Where this coordinator keeps its state (DB, lock, status.json): the out dir for the
    /// whole job, `OUT/partitions/K-of-N` for a partition.
    pub fn state_dir(&self) -> PathBuf {
        self.partition.state_dir(&self.out_dir)
    }

    /// The workers `devices` names, on this machine (checked against its GPUs and CPU cores
    /// here, not at load, so that `status` works on a smaller login node). Errors name the file.
    pub fn workers(&self) -> Result<Vec<crate::job::devices::WorkerDevice>> {
        crate::job::devices::resolve_devices(&self.run.devices)
            .map_err(|e| e.context(self.source.display().to_string()))
    }

    /// The shard that holds sample `index`.
    pub fn shard_of(&self, index: u64) -> u64 {
        index / self.run.shard_size
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
