//! torch-fidelity's `BasicConv2d` (feature_extractor_inceptionv3.py): a bias-free convolution,
//! `BatchNorm2d(eps=0.001)` with its running statistics (TF's `batchnorm` of each `conv`
//! scope in `classify_image_graph_def.pb`), ReLU. The ReLU's output is what TF names the scope
//! itself (`mixed_6/conv:0` for `Mixed_6d.branch1x1`).
use crate::error::Result;
use crate::params::{join, ParamSource};
use tch::Tensor;

/// Convolution geometry: kernel `(h, w)`, stride, padding `(h, w)`.
#[derive(Clone, Copy)]
pub(crate) struct Geometry {
    pub kernel: (i64, i64),
    pub stride: i64,
    pub padding: (i64, i64),
}

impl Geometry {
    /// A square kernel with the given stride and padding.
    pub(crate) fn square(k: i64, stride: i64, padding: i64) -> Geometry {
        Geometry {
            kernel: (k, k),
            stride,
            padding: (padding, padding),
        }
    }
    /// `(1, 7)` with padding `(0, 3)` and the like: a row (`horizontal`) or column kernel of
    /// length `k`, padded to keep the size.
    pub(crate) fn line(k: i64, horizontal: bool) -> Geometry {
        let (kernel, padding) = if horizontal {
            ((1, k), (0, k / 2))
        } else {
            ((k, 1), (k / 2, 0))
        };
        Geometry {
            kernel,
            stride: 1,
            padding,
        }
    }
}

pub(crate) struct BasicConv2d {
    weight: Tensor,
    bn_weight: Tensor,
    bn_bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    geometry: Geometry,
}

/// `BatchNorm2d(out_channels, eps=0.001)`.
const BN_EPS: f64 = 0.001;

impl BasicConv2d {
    /// `BasicConv2d(in, out, kernel_size, stride, padding)` under `prefix` (`prefix.conv.weight`,
    /// `prefix.bn.{weight,bias,running_mean,running_var}`).
    pub(crate) fn new(
        p: &mut dyn ParamSource,
        prefix: &str,
        in_ch: i64,
        out_ch: i64,
        geometry: Geometry,
    ) -> Result<BasicConv2d> {
        let (kh, kw) = geometry.kernel;
        let bn = |p: &mut dyn ParamSource, name: &str| {
            p.take(&join(prefix, &format!("bn.{name}")), &[out_ch])
        };
        Ok(BasicConv2d {
            weight: p.take(&join(prefix, "conv.weight"), &[out_ch, in_ch, kh, kw])?,
            bn_weight: bn(p, "weight")?,
            bn_bias: bn(p, "bias")?,
            running_mean: bn(p, "running_mean")?,
            running_var: bn(p, "running_var")?,
            geometry,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let g = self.geometry;
        let x = x.conv2d(
            &self.weight,
            None::<&Tensor>,
            [g.stride, g.stride],
            [g.padding.0, g.padding.1],
            [1, 1],
            1,
        );
        // F.batch_norm(training=False): the same aten op as nn.BatchNorm2d in eval mode.
        x.batch_norm(
            Some(&self.bn_weight),
            Some(&self.bn_bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            false,
            0.1,
            BN_EPS,
            true,
        )
        .relu()
    }
}
