//! fidshard's sampling engine: class-conditional latent diffusion transformers (DiT) with
//! classifier-free guidance, the Gaussian diffusion sampler of the DiT/ADM code base with
//! timestep respacing, and the Stable Diffusion VAE decoder, in libtorch through tch.
//!
//! The definition of correct is the PyTorch reference: `tests/fixtures/golden` holds its outputs.
pub mod backbone;
pub mod batch;
pub mod batching;
pub mod checkpoint;
pub mod diffusion;
pub mod dit;
pub mod engine;
pub mod error;
pub mod features;
pub mod flops;
pub mod flow;
pub mod inception;
pub mod nn;
pub mod noise;
pub mod params;
pub mod precision;
pub mod rng;
pub mod sit;
pub mod torchscript;
pub mod vae;

pub use batch::{Batch, BatchError};
pub use engine::{Engine, Sample, Timings};
pub use error::{EngineError, Result};
/// The tch-free layer the coordinator shares: settings, configs, respacing, PNG files.
pub use fidshard_core::{output, settings};
pub use fidshard_core::{LabelMode, Precision, SamplerKind, SamplerSettings};
