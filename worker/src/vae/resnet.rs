//! diffusers' `ResnetBlock2D` as the VAE decoder builds it: no time embedding, dropout 0,
//! `time_embedding_norm="default"`, `output_scale_factor=1`, SiLU, GroupNorm eps 1e-6.
use super::GROUP_NORM_EPS;
use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm};
use crate::params::{join, ParamSource};
use tch::Tensor;

pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    /// 1x1 conv on the skip path, present exactly when `in_channels != out_channels`
    /// (`use_in_shortcut` in diffusers).
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    pub fn new(
        p: &mut dyn ParamSource,
        prefix: &str,
        in_channels: i64,
        out_channels: i64,
        groups: i64,
    ) -> Result<Self> {
        let conv_shortcut = if in_channels != out_channels {
            Some(Conv2d::new(
                p,
                &join(prefix, "conv_shortcut"),
                in_channels,
                out_channels,
                1,
                1,
                0,
            )?)
        } else {
            None
        };
        Ok(ResnetBlock2D {
            norm1: GroupNorm::new(
                p,
                &join(prefix, "norm1"),
                groups,
                in_channels,
                GROUP_NORM_EPS,
            )?,
            conv1: Conv2d::new(
                p,
                &join(prefix, "conv1"),
                in_channels,
                out_channels,
                3,
                1,
                1,
            )?,
            norm2: GroupNorm::new(
                p,
                &join(prefix, "norm2"),
                groups,
                out_channels,
                GROUP_NORM_EPS,
            )?,
            conv2: Conv2d::new(
                p,
                &join(prefix, "conv2"),
                out_channels,
                out_channels,
                3,
                1,
                1,
            )?,
            conv_shortcut,
        })
    }

    /// `norm1 -> silu -> conv1 -> norm2 -> silu -> (dropout) -> conv2`, then
    /// `(shortcut(x) + h) / output_scale_factor`; the division by 1.0 is exact and omitted.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.conv1.forward(&self.norm1.forward(x).silu());
        let h = self.conv2.forward(&self.norm2.forward(&h).silu());
        match &self.conv_shortcut {
            Some(c) => c.forward(x) + h,
            None => x + h,
        }
    }
}
