//! Diffusion Transformer (Peebles & Xie, "Scalable Diffusion Models with Transformers", 2023),
//! reproducing `models.py` of facebookresearch/DiT module by module.
mod block;
mod config;
mod layers;
mod model;

pub use config::{DiTConfig, PRESETS};
pub use model::{CfgChannels, DiT};
