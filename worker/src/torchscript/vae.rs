//! A VAE decoder as a TorchScript module: `forward(z)` with `z` = `(latents - latent_bias) /
//! latent_scale` `(N, C, h, w)` float32, returning images `(N, 3, h f, w f)` in [-1, 1] (`f` =
//! `vae.downsample`). What `vae.decode(z).sample` is for a diffusers VAE.
use super::{first_line, forward, load_module};
use crate::error::{EngineError, Result};
use fidshard_core::ScriptVae;
use std::path::{Path, PathBuf};
use tch::{CModule, Device, Kind, Tensor};

/// The widest feature map assumed for `vae_batch_size: auto` (the module's own is unknown):
/// the SD VAE decoder's 512 channels.
const ASSUMED_WIDEST_CHANNELS: i64 = 512;

pub struct ScriptDecoder {
    module: CModule,
    path: PathBuf,
    shape: ScriptVae,
}

impl ScriptDecoder {
    /// Loads the module and checks, on one latent of side `latent_side`, that it returns an
    /// image of side `latent_side * downsample` with 3 channels.
    pub fn load(path: &Path, shape: ScriptVae, latent_side: i64, device: Device) -> Result<Self> {
        let dec = ScriptDecoder {
            module: load_module(path, "vae.torchscript", device)?,
            path: path.to_path_buf(),
            shape,
        };
        let z = Tensor::zeros(
            [1, shape.latent_channels, latent_side, latent_side],
            (Kind::Float, device),
        );
        let out = dec.module.forward_ts(&[&z]).map_err(|e| {
            dec.bad(format!(
                "forward(z) failed on z {:?} float32: {}",
                z.size(),
                first_line(&e.to_string())
            ))
        })?;
        let side = latent_side * shape.downsample;
        if out.size() != [1, 3, side, side] {
            return Err(dec.bad(format!(
                "returned {:?} for latents {:?}; expected (N, 3, {side}, {side}) (vae.downsample {} x latent side {latent_side})",
                out.size(),
                z.size(),
                shape.downsample
            )));
        }
        Ok(dec)
    }

    pub fn latent_channels(&self) -> i64 {
        self.shape.latent_channels
    }

    pub fn upsample_factor(&self) -> i64 {
        self.shape.downsample
    }

    /// See [`ASSUMED_WIDEST_CHANNELS`].
    pub fn widest_channels(&self) -> i64 {
        ASSUMED_WIDEST_CHANNELS
    }

    /// `forward(z)` on chunks of at most `micro_batch` samples (all at once when `<= 0`).
    pub fn decode_micro_batched(&self, z: &Tensor, micro_batch: i64) -> Tensor {
        let n = z.size().first().copied().unwrap_or(0);
        if micro_batch <= 0 || n <= micro_batch {
            return forward(&self.module, &self.path, &[z]);
        }
        let parts: Vec<Tensor> = z
            .split(micro_batch, 0)
            .iter()
            .map(|chunk| forward(&self.module, &self.path, &[chunk]))
            .collect();
        Tensor::cat(&parts, 0)
    }

    fn bad(&self, msg: String) -> EngineError {
        EngineError::checkpoint(&self.path, format!("`vae.torchscript`: {msg}"))
    }
}
