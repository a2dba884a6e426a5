//! `vae`: a diffusers folder or a TorchScript decoder (`vae: {torchscript, downsample,
//! latent_channels}`), resolved to its local path and upsampling factor, and the keys a
//! TorchScript decoder needs from the job (`latent_scale`; docs/models.md).
use super::raw::{RawJob, VaeSpec};
use super::resolve::Resolver;
use anyhow::{bail, Result};
use fidshard_core::torchscript::{ScriptVae, MAX_DOWNSAMPLE};
use fidshard_core::vae_config::{VaeConfig, MAX_CHANNELS};
use fidshard_core::DiTConfig;
use std::path::PathBuf;

impl Resolver<'_> {
    /// The VAE's local path (a folder with config.json, or the TorchScript file) and its
    /// upsampling factor.
    pub(super) fn vae(&self, raw: &RawJob) -> Result<(PathBuf, i64)> {
        let key = raw.vae.key();
        let path = self.weights(key, raw.vae.path(), raw.vae.wanted())?;
        self.utf8(key, &path)?;
        if let Some(script) = self.script_vae(&raw.vae)? {
            if !path.is_file() {
                bail!(self.err(
                    key,
                    format!(
                        "{} is not a file; name the decoder saved with torch.jit.save",
                        path.display()
                    )
                ));
            }
            return Ok((path, script.downsample));
        }
        let cfg_path = path.join("config.json");
        if !cfg_path.is_file() {
            bail!(self.err(
                "vae",
                format!(
                    "{} has no config.json; expected a diffusers AutoencoderKL folder (e.g. stabilityai/sd-vae-ft-ema), or {{torchscript: FILE, downsample: N, latent_channels: C}}",
                    path.display()
                )
            ));
        }
        let factor = VaeConfig::from_file(&cfg_path)?.upsample_factor();
        Ok((path, factor))
    }

    /// `vae: {torchscript, downsample, latent_channels}` checked: `downsample` a power of two
    /// in 1..=64, `latent_channels` in 1..=65536. `None` for a diffusers folder.
    pub(super) fn script_vae(&self, vae: &VaeSpec) -> Result<Option<ScriptVae>> {
        let VaeSpec::Script {
            downsample,
            latent_channels,
            ..
        } = *vae
        else {
            return Ok(None);
        };
        if !downsample.is_power_of_two() || downsample > MAX_DOWNSAMPLE as u64 {
            bail!(self.err(
                "vae.downsample",
                format!(
                    "{downsample} is not a power of two in 1..={MAX_DOWNSAMPLE}: the image side over the latent side (8 for the SD VAE, 16 for VA-VAE f16d32)"
                )
            ));
        }
        if latent_channels == 0 || latent_channels > MAX_CHANNELS as u64 {
            bail!(self.err(
                "vae.latent_channels",
                format!("{latent_channels} is not in 1..={MAX_CHANNELS}")
            ));
        }
        Ok(Some(ScriptVae {
            downsample: downsample as i64,
            latent_channels: latent_channels as i64,
        }))
    }

    /// A TorchScript decoder's latent channels are the model's, and it has no
    /// `scaling_factor`: the job says what the decoder gets (`latent_scale`).
    pub(super) fn script_vae_fits(
        &self,
        vae: Option<ScriptVae>,
        dit: &DiTConfig,
        has_scale: bool,
    ) -> Result<()> {
        let Some(vae) = vae else { return Ok(()) };
        if vae.latent_channels != dit.in_channels {
            bail!(self.err(
                "vae.latent_channels",
                format!(
                    "{} differs from the model's in_channels {}; the decoder takes the model's latents",
                    vae.latent_channels, dit.in_channels
                )
            ));
        }
        if !has_scale {
            bail!(self.err(
                "latent_scale",
                "is required with `vae: {torchscript: ...}` (a TorchScript decoder has no scaling_factor): the decoder gets (z - latent_bias) / latent_scale; write the VAE's scaling factor, e.g. latent_scale: 0.18215 for the SD VAE"
            ));
        }
        Ok(())
    }
}
