//! Scalable Interpolant Transformers (SiT, Ma et al. 2024) as REPA's `models/sit.py` and SiT's
//! `models.py` define them: the DiT architecture module by module (same state_dict names, timm
//! attention with optional `qk_norm`), fed continuous time t in [0, 1] instead of integer
//! timesteps, predicting a velocity. So the model is a [`DiT`] built from a SiT checkpoint:
//! - REPA's `projectors.*` (its representation-alignment heads, used only in training) are
//!   dropped, as REPA's `generate.py` ignores them;
//! - `learn_sigma` is read off the checkpoint's output layer (SiT's 8 channels, REPA's 4), and
//!   the sigma half of SiT's output is dropped ([`velocity`]).
pub(crate) mod transport;

use crate::dit::{DiT, DiTConfig, Forward};
use crate::error::Result;
use crate::params::StateDict;
use tch::Tensor;

const OUTPUT_BIAS: &str = "final_layer.linear.bias";

/// The SiT of a loaded checkpoint, with the architecture of `config` and `qk_norm`.
pub fn from_state_dict(config: &DiTConfig, qk_norm: bool, mut sd: StateDict) -> Result<DiT> {
    sd.drop_prefix("projectors");
    let mut config = config.clone();
    let p = config.patch_size;
    let sigma_rows = p * p * config.in_channels * 2;
    if let Some(bias) = sd.get(OUTPUT_BIAS) {
        // Anything but the two known sizes is left to the shape check, which names both shapes.
        config.learn_sigma = bias.size() == [sigma_rows];
    }
    DiT::from_state_dict_with(&config, qk_norm, sd)
}

/// The velocity `(N, C, H, W)` at latents `x`, float times `t` in [0, 1] and labels `y`: the
/// model's first `in_channels` output channels (SiT's learned sigma, if any, is never used by
/// its samplers).
pub fn velocity(model: &impl Forward, x: &Tensor, t: &Tensor, y: &Tensor) -> Tensor {
    let out = model.forward(x, t, y);
    out.narrow(1, 0, model.config().in_channels)
}
