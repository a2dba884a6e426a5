//! The Gaussian diffusion of the DiT reference code (`diffusion/` of facebookresearch/DiT, itself
//! OpenAI's guided-diffusion): beta schedules, timestep respacing, the float64 coefficient tables
//! and one DDPM or DDIM sampling step in float32, reproducing the reference's arithmetic.
//!
//! - [`schedule`]: `get_named_beta_schedule` (`linear`, `squaredcos_cap_v2`).
//! - [`respace`]: `space_timesteps` and the respaced betas of `SpacedDiffusion`.
//! - [`gaussian`]: the tables of `GaussianDiffusion.__init__`.
//! - [`sampler`]: `SpacedDiffusion::p_sample` / `ddim_sample` given the model output.
pub mod gaussian;
pub mod sampler;

pub use fidshard_core::diffusion::{respace, schedule, variance, VarianceType};
pub use gaussian::DiffusionTables;
pub use respace::{respace_betas, space_timesteps, RespaceError};
pub use sampler::SpacedDiffusion;
pub use schedule::{get_named_beta_schedule, BetaSchedule, DIFFUSION_STEPS};
