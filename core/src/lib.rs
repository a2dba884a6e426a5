//! fidshard's shared layer, free of libtorch: what both binaries must agree on.
//!
//! - the coordinator (`fidshard`, orchestrator/) reads the job, resolves it into
//!   [`SamplerSettings`] and checks everything that can be checked without weights;
//! - the worker (`fidshard-worker`, worker/) receives those settings over the
//!   [`protocol`] and samples.
//!
//! Nothing here links libtorch, so `fidshard status` and `plan` start in milliseconds on a login
//! node without a torch install (docs/architecture.md).
pub mod device;
pub mod diffusers_dit;
pub mod diffusion;
pub mod dit_config;
pub mod error;
pub mod error_line;
pub mod exit;
pub mod faults;
pub mod features;
pub mod flow;
pub mod identity;
pub mod labels;
pub mod metrics;
pub mod npz_images;
pub mod output;
pub mod protocol;
pub mod settings;
pub mod shard;
pub mod sit_transport;
pub mod task;
pub mod torchscript;
pub mod vae_config;

pub use device::DeviceSpec;
pub use dit_config::{CfgChannels, DiTConfig, PRESETS};
pub use error::CoreError;
pub use exit::{Exit, Fatal};
pub use flow::{FlowSettings, ModelFamily, PathType, Pixels, Solver};
pub use labels::LabelMode;
pub use settings::{BatchSize, Precision, SamplerKind, SamplerSettings};
pub use shard::Shard;
pub use sit_transport::{DiffusionForm, LastStep, SitSde};
pub use torchscript::{ModelFormat, ScriptVae};
pub use vae_config::VaeConfig;
