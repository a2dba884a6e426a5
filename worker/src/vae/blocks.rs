//! The decoder's blocks: diffusers' `UNetMidBlock2D` (resnet, attention, resnet),
//! `UpDecoderBlock2D` (resnets, then an optional `Upsample2D`) and `Upsample2D` itself.
use super::attention::VaeAttention;
use super::resnet::ResnetBlock2D;
use crate::error::Result;
use crate::nn::Conv2d;
use crate::params::{join, ParamSource};
use tch::Tensor;

/// `UNetMidBlock2D(num_layers=1, temb_channels=None, attention_head_dim=C)`: `resnets.0`,
/// `attentions.0` (absent when `mid_block_add_attention` is false), `resnets.1`.
pub struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Option<VaeAttention>,
}

impl MidBlock {
    pub fn new(
        p: &mut dyn ParamSource,
        prefix: &str,
        channels: i64,
        groups: i64,
        add_attention: bool,
    ) -> Result<Self> {
        let first = ResnetBlock2D::new(p, &join(prefix, "resnets.0"), channels, channels, groups)?;
        // The decoder passes resnet_time_scale_shift="default", so attn_groups = resnet_groups.
        let attention = if add_attention {
            Some(VaeAttention::new(
                p,
                &join(prefix, "attentions.0"),
                channels,
                groups,
            )?)
        } else {
            None
        };
        let second = ResnetBlock2D::new(p, &join(prefix, "resnets.1"), channels, channels, groups)?;
        Ok(MidBlock {
            resnets: [first, second],
            attention,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.resnets[0].forward(x);
        let h = match &self.attention {
            Some(a) => a.forward(&h),
            None => h,
        };
        self.resnets[1].forward(&h)
    }
}

/// `Upsample2D(channels, use_conv=True)`: `F.interpolate(scale_factor=2.0, mode="nearest")`
/// then a 3x3 conv (`conv`, padding 1).
pub(crate) struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(p: &mut dyn ParamSource, prefix: &str, channels: i64) -> Result<Self> {
        Ok(Upsample2D {
            conv: Conv2d::new(p, &join(prefix, "conv"), channels, channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (_, _, h, w) = x.size4().expect("Upsample2D expects [B, C, H, W]");
        self.conv
            .forward(&x.upsample_nearest2d([2 * h, 2 * w], 2.0, 2.0))
    }
}

/// `UpDecoderBlock2D(num_layers, in_channels, out_channels, add_upsample)`: the first resnet maps
/// `in -> out`, the others `out -> out`; then `upsamplers.0` when `add_upsample`.
pub struct UpDecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

impl UpDecoderBlock {
    pub fn new(
        p: &mut dyn ParamSource,
        prefix: &str,
        num_layers: i64,
        in_channels: i64,
        out_channels: i64,
        groups: i64,
        add_upsample: bool,
    ) -> Result<Self> {
        let resnets = (0..num_layers)
            .map(|i| {
                let cin = if i == 0 { in_channels } else { out_channels };
                ResnetBlock2D::new(
                    p,
                    &join(prefix, &format!("resnets.{i}")),
                    cin,
                    out_channels,
                    groups,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let upsampler = if add_upsample {
            Some(Upsample2D::new(
                p,
                &join(prefix, "upsamplers.0"),
                out_channels,
            )?)
        } else {
            None
        };
        Ok(UpDecoderBlock { resnets, upsampler })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for r in &self.resnets {
            h = r.forward(&h);
        }
        match &self.upsampler {
            Some(u) => u.forward(&h),
            None => h,
        }
    }
}
