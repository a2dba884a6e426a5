//! What the engine samples and decodes with: fidshard's own DiT / SiT and diffusers VAE
//! decoder built from their weights, or TorchScript modules run as exported (crate::torchscript,
//! docs/models.md). Both kinds answer the same calls, so the samplers never ask which.
use crate::checkpoint::load_state_dict;
use crate::dit::{CfgChannels, DiT, DiTConfig, Forward};
use crate::error::Result;
use crate::torchscript::{ScriptDecoder, ScriptModel};
use crate::vae::AutoencoderKlDecoder;
use fidshard_core::{ModelFamily, ModelFormat, SamplerSettings};
use tch::{Device, Tensor};

/// The diffusion model: `forward(x, t, y)` as DiT's `models.py` (t as the family takes it).
pub enum Backbone {
    Native(DiT),
    Script(ScriptModel),
}

impl From<DiT> for Backbone {
    fn from(m: DiT) -> Self {
        Backbone::Native(m)
    }
}

impl Backbone {
    /// The model `settings` name: a checkpoint built into a DiT (a SiT for `model.family: sit`),
    /// or a TorchScript module checked against the config's shapes.
    pub fn load(settings: &SamplerSettings, device: Device) -> Result<Self> {
        let s = settings;
        if s.model_format == ModelFormat::Torchscript {
            return ScriptModel::load(&s.checkpoint, &s.dit, s.family, device)
                .map(Backbone::Script);
        }
        // A diffusers DiT folder is mapped onto the published layout (checkpoint/diffusers_dit.rs).
        let sd = match crate::checkpoint::diffusers_dit::load(&s.checkpoint, &s.dit)? {
            Some(sd) => sd,
            None => load_state_dict(&s.checkpoint)?,
        }
        .with_device(device);
        let model = match s.family {
            ModelFamily::Dit => DiT::from_state_dict(&s.dit, sd)?,
            ModelFamily::Sit => crate::sit::from_state_dict(&s.dit, s.flow.qk_norm, sd)?,
        };
        Ok(Backbone::Native(model))
    }

    pub fn config(&self) -> &DiTConfig {
        match self {
            Backbone::Native(m) => m.config(),
            Backbone::Script(m) => m.config(),
        }
    }

    /// `(N, C, H, W)` latents, `(N,)` times, `(N,)` int64 labels -> `(N, out_channels, H, W)`.
    pub fn forward(&self, x: &Tensor, t: &Tensor, y: &Tensor) -> Tensor {
        match self {
            Backbone::Native(m) => m.forward(x, t, y),
            Backbone::Script(m) => m.forward(x, t, y),
        }
    }

    /// The reference's `forward_with_cfg` (see [`DiT::forward_with_cfg`]): the first half of
    /// `x` run with the conditional and the null labels, guided on the first `channels`.
    pub fn forward_with_cfg(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: &Tensor,
        cfg_scale: f64,
        channels: CfgChannels,
    ) -> Tensor {
        match self {
            Backbone::Native(m) => m.forward_with_cfg(x, t, y, cfg_scale, channels),
            Backbone::Script(m) => {
                let n = x.size()[0];
                let half = x.narrow(0, 0, n / 2);
                let out = m.forward(&Tensor::cat(&[&half, &half], 0), t, y);
                crate::dit::guide(&out, m.config().in_channels, cfg_scale, channels)
            }
        }
    }
}

impl Forward for Backbone {
    fn forward(&self, x: &Tensor, t: &Tensor, y: &Tensor) -> Tensor {
        Backbone::forward(self, x, t, y)
    }
    fn config(&self) -> &DiTConfig {
        Backbone::config(self)
    }
}

/// The VAE decoder: latents already divided by the scale (Engine::unscale) to images in
/// [-1, 1].
pub enum LatentDecoder {
    /// Boxed: the decoder's module tree is large beside a TorchScript handle.
    Native(Box<AutoencoderKlDecoder>),
    Script(ScriptDecoder),
}

impl From<AutoencoderKlDecoder> for LatentDecoder {
    fn from(v: AutoencoderKlDecoder) -> Self {
        LatentDecoder::Native(Box::new(v))
    }
}

impl LatentDecoder {
    /// The diffusers folder, or the TorchScript decoder with `vae_script`'s shapes.
    pub fn load(settings: &SamplerSettings, device: Device) -> Result<Self> {
        let Some(shape) = settings.vae_script else {
            return AutoencoderKlDecoder::load(&settings.vae, device).map(LatentDecoder::from);
        };
        let side = settings.dit.input_size;
        ScriptDecoder::load(&settings.vae, shape, side, device).map(LatentDecoder::Script)
    }

    pub fn latent_channels(&self) -> i64 {
        match self {
            LatentDecoder::Native(v) => v.latent_channels(),
            LatentDecoder::Script(v) => v.latent_channels(),
        }
    }

    pub fn upsample_factor(&self) -> i64 {
        match self {
            LatentDecoder::Native(v) => v.upsample_factor(),
            LatentDecoder::Script(v) => v.upsample_factor(),
        }
    }

    /// The diffusers config's `scaling_factor`; `None` for a TorchScript decoder (the job's
    /// `latent_scale` then applies, required by `Engine::from_parts`).
    pub fn scaling_factor(&self) -> Option<f64> {
        match self {
            LatentDecoder::Native(v) => Some(v.scaling_factor()),
            LatentDecoder::Script(_) => None,
        }
    }

    pub fn widest_channels(&self) -> i64 {
        match self {
            LatentDecoder::Native(v) => v.widest_channels(),
            LatentDecoder::Script(v) => v.widest_channels(),
        }
    }

    pub fn decode_micro_batched(&self, z: &Tensor, micro_batch: i64) -> Tensor {
        match self {
            LatentDecoder::Native(v) => v.decode_micro_batched(z, micro_batch),
            LatentDecoder::Script(v) => v.decode_micro_batched(z, micro_batch),
        }
    }
}
