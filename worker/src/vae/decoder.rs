//! diffusers' `Decoder` (`autoencoders/vae.py`) with `norm_type="group"`: `conv_in`, `mid_block`,
//! `up_blocks`, `conv_norm_out`, SiLU, `conv_out`.
use super::blocks::{MidBlock, UpDecoderBlock};
use super::VaeConfig;
use super::GROUP_NORM_EPS;
use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm};
use crate::params::{join, ParamSource};
use tch::Tensor;

pub struct Decoder {
    conv_in: Conv2d,
    mid_block: MidBlock,
    up_blocks: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    /// Builds `prefix.*` (the VAE uses `decoder`). `cfg` must be validated.
    pub fn new(p: &mut dyn ParamSource, prefix: &str, cfg: &VaeConfig) -> Result<Self> {
        let groups = cfg.norm_num_groups;
        let channels = &cfg.block_out_channels;
        let top = *channels
            .last()
            .expect("validated: block_out_channels is non-empty");
        let conv_in = Conv2d::new(
            p,
            &join(prefix, "conv_in"),
            cfg.latent_channels,
            top,
            3,
            1,
            1,
        )?;
        let mid_block = MidBlock::new(
            p,
            &join(prefix, "mid_block"),
            top,
            groups,
            cfg.mid_block_add_attention,
        )?;
        // `reversed_block_out_channels`; block i maps prev_output_channel -> reversed[i] with
        // `layers_per_block + 1` resnets and upsamples unless it is the final block.
        let reversed: Vec<i64> = channels.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(reversed.len());
        let mut output_channel = reversed[0];
        for (i, &out) in reversed.iter().enumerate() {
            let prev_output_channel = output_channel;
            output_channel = out;
            let is_final_block = i == reversed.len() - 1;
            up_blocks.push(UpDecoderBlock::new(
                p,
                &join(prefix, &format!("up_blocks.{i}")),
                cfg.layers_per_block + 1,
                prev_output_channel,
                output_channel,
                groups,
                !is_final_block,
            )?);
        }
        let conv_norm_out = GroupNorm::new(
            p,
            &join(prefix, "conv_norm_out"),
            groups,
            channels[0],
            GROUP_NORM_EPS,
        )?;
        let conv_out = Conv2d::new(
            p,
            &join(prefix, "conv_out"),
            channels[0],
            cfg.out_channels,
            3,
            1,
            1,
        )?;
        Ok(Decoder {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
        })
    }

    /// `Decoder.forward(z)` without `latent_embeds` (the float32 path: the `upscale_dtype` casts
    /// are no-ops).
    pub fn forward(&self, z: &Tensor) -> Tensor {
        let mut h = self.mid_block.forward(&self.conv_in.forward(z));
        for block in &self.up_blocks {
            h = block.forward(&h);
        }
        self.conv_out
            .forward(&self.conv_norm_out.forward(&h).silu())
    }

    /// The device the parameters live on.
    pub fn device(&self) -> tch::Device {
        self.conv_in.weight.device()
    }
}
