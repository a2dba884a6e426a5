//! Typed errors of the engine. Each message names the file, the key and, where there is one,
//! the fix, because it is what a user sees on one line before a non-zero exit.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },

    #[error("{path}: missing key `{key}` (the model expects shape {expected:?}); is this the right checkpoint for this architecture?")]
    MissingKey {
        path: PathBuf,
        key: String,
        expected: Vec<i64>,
    },

    #[error("{path}: unexpected key(s) {} not used by the model; the checkpoint is for another architecture or config", fmt_keys(.keys))]
    UnexpectedKeys { path: PathBuf, keys: Vec<String> },

    #[error("{path}: key `{key}` has shape {found:?} but the model expects {expected:?}{hint}")]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<i64>,
        found: Vec<i64>,
        hint: String,
    },

    /// Config and file errors of the tch-free layer.
    #[error(transparent)]
    Core(#[from] fidshard_core::CoreError),

    /// Sampling produced NaN or infinite values: never written as (black) images. `first` is the
    /// sampling step where they first appeared (for the latents), when known.
    #[error("{count} of {total} values of {stage} are NaN or infinite{}; likely causes: {}", fmt_first(.first), likely_causes(.first))]
    NonFinite {
        stage: &'static str,
        count: i64,
        total: i64,
        first: Option<StepFault>,
    },

    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// The sampling step where non-finite values first appeared in a batch's latents.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFault {
    /// 1 for the first step, up to `steps`.
    pub step: usize,
    /// The number of sampling steps of the chain.
    pub steps: usize,
    /// Where on the chain that step is.
    pub at: StepAt,
    /// True when the model's output (after guidance) was already non-finite; false when it was
    /// finite and the sampler's update made the latents non-finite.
    pub in_model_output: bool,
}

/// The position of a sampling step on its chain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepAt {
    /// The Gaussian diffusion: the respaced index `i` (`steps - step`) and the base-chain
    /// timestep the DiT was given.
    Diffusion { index: usize, timestep: i64 },
    /// A flow sampler: the time `t` the model was given (REPA: 1 = noise; SiT: 0 = noise).
    Flow { t: f64 },
}

fn fmt_first(first: &Option<StepFault>) -> String {
    let Some(f) = first else {
        return String::new();
    };
    let (at, model, update) = match f.at {
        StepAt::Diffusion { index, timestep } => (
            format!("respaced index {index}, model timestep {timestep}"),
            "the DiT output",
            "the diffusion update, from a finite DiT output",
        ),
        StepAt::Flow { t } => (
            format!("t = {}", t as f32),
            "the model's velocity",
            "the sampler's update, from a finite velocity",
        ),
    };
    format!(
        ", first at sampling step {} of {} ({at}) in {}",
        f.step,
        f.steps,
        if f.in_model_output { model } else { update }
    )
}

fn likely_causes(first: &Option<StepFault>) -> &'static str {
    match first {
        Some(StepFault {
            in_model_output: false,
            at: StepAt::Diffusion { .. },
            ..
        }) => "a noise schedule whose terms underflow or overflow float32 at that step (check beta_schedule and steps), or a DiT output so large that the update overflows float32 (lower cfg_scale)",
        Some(StepFault {
            in_model_output: false,
            at: StepAt::Flow { .. },
            ..
        }) => "an SDE coefficient that is infinite or huge at that time (check diffusion_form, diffusion_norm, last_step_size), or a velocity so large that the update overflows (lower cfg_scale)",
        _ => "NaN or infinite weights in the checkpoint, a cfg_scale so large that guidance overflows float32, or fp16 overflow (try bf16 or fp32)",
    }
}

fn fmt_keys(keys: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    s
}

impl EngineError {
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        EngineError::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn config(
        file: impl Into<PathBuf>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        EngineError::Core(fidshard_core::CoreError::config(file, key, msg))
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Core(fidshard_core::CoreError::io(path, source))
    }
    /// The documented exit code: the user's input (config, checkpoint, VAE folder) is
    /// `InvalidInput`, the machine (libtorch, I/O) is `Failure`.
    pub fn exit(&self) -> fidshard_core::Exit {
        match self {
            EngineError::Core(e) => e.exit(),
            EngineError::Torch(_) | EngineError::NonFinite { .. } => fidshard_core::Exit::Failure,
            EngineError::Checkpoint { .. }
            | EngineError::MissingKey { .. }
            | EngineError::UnexpectedKeys { .. }
            | EngineError::ShapeMismatch { .. } => fidshard_core::Exit::InvalidInput,
        }
    }
    /// True for errors caused by the user's input (config, checkpoint, VAE folder) rather than
    /// by the machine; the CLI maps them to the "invalid input" exit code.
    pub fn is_input_error(&self) -> bool {
        self.exit() == fidshard_core::Exit::InvalidInput
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
