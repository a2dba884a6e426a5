//! fidshard's sampling engine: class-conditional latent diffusion transformers (DiT) with
//! classifier-free guidance, the Gaussian diffusion sampler of the DiT/ADM code base with
//! timestep respacing, and the Stable Diffusion VAE decoder, in libtorch through tch.
//!
//! The definition of correct is the PyTorch reference: `tests/fixtures/golden` holds its outputs.
pub mod checkpoint;
pub mod diffusion;
pub mod dit;
pub mod engine;
pub mod error;
pub mod nn;
pub mod output;
pub mod params;
pub mod precision;
pub mod rng;
pub mod settings;
pub mod vae;

pub use engine::{Engine, Sample, Timings};
pub use error::{EngineError, Result};
pub use rng::LabelMode;
pub use settings::{Precision, SamplerKind, SamplerSettings};
