//! Diffusion Transformer (Peebles & Xie, "Scalable Diffusion Models with Transformers", 2023),
//! reproducing `models.py` of facebookresearch/DiT module by module.
mod block;
mod layers;
mod model;

pub use fidshard_core::dit_config::{CfgChannels, DiTConfig, PRESETS};
pub(crate) use model::guide;

/// The width of the sinusoidal timestep features (`TimestepEmbedder.frequency_embedding_size`).
pub(crate) const FREQUENCY_EMBEDDING_SIZE: i64 = layers::TimestepEmbedder::FREQUENCY_EMBEDDING_SIZE;

/// A model the samplers call: `forward(x, t, y)` and the architecture's shape facts. The native
/// [`DiT`] and crate::backbone::Backbone (which may hold a TorchScript module) are ones.
pub trait Forward {
    fn forward(&self, x: &tch::Tensor, t: &tch::Tensor, y: &tch::Tensor) -> tch::Tensor;
    fn config(&self) -> &DiTConfig;
}

impl Forward for DiT {
    fn forward(&self, x: &tch::Tensor, t: &tch::Tensor, y: &tch::Tensor) -> tch::Tensor {
        DiT::forward(self, x, t, y)
    }
    fn config(&self) -> &DiTConfig {
        DiT::config(self)
    }
}
pub use model::DiT;
