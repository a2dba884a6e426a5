//! Diffusion Transformer (Peebles & Xie, "Scalable Diffusion Models with Transformers", 2023),
//! reproducing `models.py` of facebookresearch/DiT module by module.
mod block;
mod layers;
mod model;

pub use fidshard_core::dit_config::{CfgChannels, DiTConfig, PRESETS};
pub(crate) use model::guide;
pub use model::DiT;
