//! The libtorch-free half of the reference's Gaussian diffusion (`diffusion/` of
//! facebookresearch/DiT): beta schedules, timestep respacing and the variance types. The float32
//! sampling step itself is the worker's (`worker/src/diffusion/`).
pub mod respace;
pub mod schedule;
pub mod variance;

pub use respace::{respace_betas, space_timesteps, RespaceError};
pub use schedule::{get_named_beta_schedule, BetaSchedule, DIFFUSION_STEPS};
pub use variance::VarianceType;
