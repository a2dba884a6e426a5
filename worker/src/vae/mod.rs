//! The decode half of diffusers' `AutoencoderKL` (the Stable Diffusion VAE, e.g.
//! stabilityai/sd-vae-ft-ema), with diffusers' module tree and state_dict names:
//! `post_quant_conv` (1x1) -> `decoder.conv_in` (3x3) -> `decoder.mid_block` (resnet, single-head
//! attention, resnet) -> `decoder.up_blocks.*` (reversed channels, `layers_per_block + 1` resnets,
//! nearest x2 upsample + conv on all but the last) -> `decoder.conv_norm_out` -> SiLU ->
//! `decoder.conv_out`. GroupNorm eps is 1e-6 everywhere, as in diffusers' `Decoder`.
//!
//! [`AutoencoderKlDecoder::decode`] is `vae.decode(z).sample`: no latent scaling is applied; the
//! caller divides by [`AutoencoderKlDecoder::scaling_factor`] first.
mod attention;
mod blocks;
mod decoder;
mod resnet;
mod weights;

pub use attention::{current_attention_key, LEGACY_ATTENTION_NAMES};
pub use fidshard_core::vae_config::{VaeConfig, DEFAULT_SCALING_FACTOR, UP_DECODER_BLOCK};
pub use weights::{
    find_config, find_weights, is_encoder_key, load_decoder_state_dict, prepare_decoder_state_dict,
    CONFIG_FILE, WEIGHT_FILES,
};

use crate::error::Result;
use crate::nn::Conv2d;
use crate::params::ParamSource;
use decoder::Decoder;
use std::path::Path;
use tch::{Device, Tensor};

/// GroupNorm epsilon of every norm in diffusers' VAE `Decoder` (resnets, attention, output).
pub(crate) const GROUP_NORM_EPS: f64 = 1e-6;

pub struct AutoencoderKlDecoder {
    cfg: VaeConfig,
    /// `Conv2d(latent, latent, 1)` when `use_post_quant_conv` (diffusers' default).
    post_quant_conv: Option<Conv2d>,
    decoder: Decoder,
}

impl AutoencoderKlDecoder {
    /// Loads a diffusers `AutoencoderKL` folder: `config.json` and
    /// `diffusion_pytorch_model.safetensors` (else `.bin`). Encoder-side keys are skipped; any
    /// other key the decoder does not use is an error.
    pub fn load(folder: &Path, device: Device) -> Result<Self> {
        let config = find_config(folder)?;
        let cfg = VaeConfig::from_file(&config)?;
        let weights = find_weights(folder)?;
        let mut sd = load_decoder_state_dict(&weights, device)?;
        let model = Self::build(&cfg, &mut sd)?;
        sd.finish()?;
        Ok(model)
    }

    /// Builds the decoder from decoder-side parameters (`post_quant_conv.*`, `decoder.*`) under
    /// their current diffusers names.
    pub fn build(cfg: &VaeConfig, p: &mut dyn ParamSource) -> Result<Self> {
        cfg.validate(Path::new("<VaeConfig>"))?;
        let post_quant_conv = if cfg.use_post_quant_conv {
            let c = cfg.latent_channels;
            Some(Conv2d::new(p, "post_quant_conv", c, c, 1, 1, 0)?)
        } else {
            None
        };
        let decoder = Decoder::new(p, "decoder", cfg)?;
        Ok(AutoencoderKlDecoder {
            cfg: cfg.clone(),
            post_quant_conv,
            decoder,
        })
    }

    /// `vae.decode(z).sample` (`AutoencoderKL._decode`: `post_quant_conv`, then the decoder) for
    /// latents `[B, latent_channels, h, w]` on the model's device; returns
    /// `[B, out_channels, h * f, w * f]` with `f = upsample_factor()`. Runs without autograd.
    pub fn decode(&self, z: &Tensor) -> Tensor {
        let size = z.size();
        assert!(
            size.len() == 4 && size[1] == self.cfg.latent_channels,
            "VAE decode expects latents [B, {}, H, W], got {size:?}",
            self.cfg.latent_channels
        );
        if size[0] == 0 {
            let f = self.upsample_factor();
            return Tensor::zeros(
                [0, self.cfg.out_channels, size[2] * f, size[3] * f],
                (z.kind(), z.device()),
            );
        }
        tch::no_grad(|| {
            let z = match &self.post_quant_conv {
                Some(c) => c.forward(z),
                None => z.shallow_clone(),
            };
            self.decoder.forward(&z)
        })
    }

    /// [`decode`](Self::decode) on chunks of at most `micro_batch` samples along dim 0,
    /// concatenated; `micro_batch <= 0` decodes the whole batch at once. Every op of the decoder
    /// is per-sample, so the result equals the full-batch decode.
    pub fn decode_micro_batched(&self, z: &Tensor, micro_batch: i64) -> Tensor {
        let n = z.size().first().copied().unwrap_or(0);
        if micro_batch <= 0 || n <= micro_batch {
            return self.decode(z);
        }
        let parts: Vec<Tensor> = z
            .split(micro_batch, 0)
            .iter()
            .map(|chunk| self.decode(chunk))
            .collect();
        Tensor::cat(&parts, 0)
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// `config.scaling_factor` (0.18215 for the SD VAEs): decode `latents / scaling_factor`.
    pub fn scaling_factor(&self) -> f64 {
        self.cfg.scaling_factor
    }

    /// `2^(len(block_out_channels) - 1)`: image side / latent side.
    pub fn upsample_factor(&self) -> i64 {
        self.cfg.upsample_factor()
    }

    /// The largest channel count of the decoder (an upper bound of its widest feature map).
    pub fn widest_channels(&self) -> i64 {
        self.cfg
            .block_out_channels
            .iter()
            .copied()
            .max()
            .unwrap_or(1)
    }

    pub fn latent_channels(&self) -> i64 {
        self.cfg.latent_channels
    }

    pub fn out_channels(&self) -> i64 {
        self.cfg.out_channels
    }

    /// The device the parameters live on (latents must be there too).
    pub fn device(&self) -> Device {
        self.decoder.device()
    }
}
