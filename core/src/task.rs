//! One-shot tasks the coordinator hands to the worker binary for the commands that need
//! tensors (`sample`, `bench`, the model check of `validate` and `run`, `doctor`'s probe).
//! The user types `fidshard sample ...`; `fidshard` resolves and checks the job, then runs
//! `fidshard-worker task` with one JSON [`Task`] on its stdin, its stdout and stderr inherited,
//! and exits with the worker's exit code.
use crate::device::DeviceSpec;
use crate::settings::{Precision, SamplerSettings};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// Sample `range` into `out/{index}.png` in this one process.
    Sample {
        settings: Box<SamplerSettings>,
        out: PathBuf,
        range: (u64, u64),
        device: DeviceSpec,
        /// Also write `out/latents/{index}.safetensors`.
        save_latents: bool,
    },
    /// Time the sampling path.
    Bench(BenchTask),
    /// Build the DiT and the VAE from their files on the CPU, then drop them.
    Check { settings: Box<SamplerSettings> },
    /// Report libtorch, CUDA and the devices as one JSON [`Probe`] line on stdout.
    Probe,
    /// Inception features of ranges of an npz's images (crate::features), one file per range.
    Features(FeaturesTask),
}

/// `Task::Features`: the images `ranges` (half-open, in `arr_0`'s order) of `npz`, through the
/// Inception weights `inception`, into `out/{features::file_name(first, count)}`. A range whose
/// file already holds these images' features (same CRCs, same weights) is skipped, so a task
/// started again after a crash does only what is missing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeaturesTask {
    pub npz: PathBuf,
    pub ranges: Vec<(u64, u64)>,
    pub inception: PathBuf,
    /// The weights' SHA-256 (hex), recorded in every file.
    pub inception_sha256: String,
    pub out: PathBuf,
    pub device: DeviceSpec,
    /// Images per Inception forward pass.
    pub batch_size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchTask {
    pub model: BenchModel,
    pub precision: Precision,
    pub batch_size: crate::settings::BatchSize,
    pub images: usize,
    pub device: DeviceSpec,
    pub threads: Option<i32>,
    /// The card's dense peak in TFLOP/s for the precision used, to report MFU.
    #[serde(default)]
    pub peak_tflops: Option<f64>,
    /// A job to project the measured rate onto (its time on its devices, the device-hours).
    #[serde(default)]
    pub project: Option<Projection>,
}

/// `bench`'s projection of a job: `num_samples` at the measured images/s, on `workers` devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    pub job: String,
    pub num_samples: u64,
    /// The job's worker processes on this machine (one per GPU); at least 1.
    pub workers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchModel {
    /// A job's real weights.
    Job {
        settings: Box<SamplerSettings>,
        name: String,
    },
    /// A DiT preset with random weights and a VAE architecture (sd-vae-ft-ema's by default).
    Random {
        preset: String,
        vae_config: Option<PathBuf>,
        image_size: i64,
        steps: String,
        cfg_scale: f64,
    },
}

/// What the worker binary sees of libtorch and the GPUs (`fidshard doctor`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Probe {
    pub worker_version: String,
    /// Whether `libtorch_cuda.so` is mapped into the worker process.
    pub cuda_library_loaded: bool,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    pub cudnn_available: bool,
    /// The libraries the worker process has mapped whose names start with libtorch / libc10.
    pub torch_libraries: Vec<String>,
    /// `torch.__version__` of the torch install the worker links (from its `version.py`).
    pub torch_version: Option<String>,
    /// The CUDA version that torch was built with (`torch.version.cuda`), none for CPU builds.
    pub torch_cuda_version: Option<String>,
    /// The cuDNN of the pip package beside torch, if any.
    pub cudnn_version: Option<String>,
    /// The worker executable's path.
    pub executable: String,
}

/// The line a worker prints on stdout when a captured task (the model check) succeeded: the
/// coordinator requires it, so that a binary that exits 0 without doing the task (`/bin/true`,
/// an echo like `/bin/cat`, a wrapper script gone wrong) is never taken for a passed check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskAnswer {
    /// The task's name (`check`).
    pub answer: String,
    /// The worker's version (`CARGO_PKG_VERSION`).
    pub version: String,
}

impl TaskAnswer {
    /// The answer of a finished features task.
    pub fn features() -> TaskAnswer {
        TaskAnswer {
            answer: "features".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// The answer to a successful model check.
    pub fn check() -> TaskAnswer {
        TaskAnswer {
            answer: "check".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// Whether `stdout` holds the answer `name` (on a line of its own).
    pub fn answered(stdout: &str, name: &str) -> bool {
        stdout
            .lines()
            .any(|l| serde_json::from_str::<TaskAnswer>(l.trim()).is_ok_and(|a| a.answer == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echoed_task_is_no_answer() {
        let task = Task::Probe;
        let echoed = serde_json::to_string(&task).unwrap();
        assert!(!TaskAnswer::answered(&echoed, "check"));
        assert!(!TaskAnswer::answered("", "check"));
        let ok = serde_json::to_string(&TaskAnswer::check()).unwrap();
        assert!(TaskAnswer::answered(&format!("noise\n{ok}\n"), "check"));
        assert!(!TaskAnswer::answered(&ok, "sample"));
    }
}
