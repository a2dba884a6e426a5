//! The few layer types the DiT and the VAE decoder are made of, as plain structs of tensors.
//! Each reproduces the PyTorch module of the same name with its default arguments, and takes its
//! parameters under the same state_dict names (`weight`, `bias`).
use crate::error::Result;
use crate::params::{join, ParamSource};
use tch::Tensor;

/// `torch.nn.Linear(in, out, bias=True)`.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(p: &mut dyn ParamSource, prefix: &str, in_dim: i64, out_dim: i64) -> Result<Self> {
        Ok(Linear {
            weight: p.take(&join(prefix, "weight"), &[out_dim, in_dim])?,
            bias: Some(p.take(&join(prefix, "bias"), &[out_dim])?),
        })
    }
    /// `x @ W^T + b` over the last dimension.
    ///
    /// Batch invariance: libtorch's CPU GEMM (MKL) takes a different code path for fewer than
    /// 16 rows (GEMV-like kernels with another summation order), so the same row gives other
    /// float bits when the batch is small; from 16 rows on, a row's result does not depend on
    /// how many rows there are or where it sits. Inputs with fewer rows are zero-padded to
    /// [`MIN_GEMM_ROWS`] so that image `i` never depends on the batch it was sampled in.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let k = *size
            .last()
            .expect("linear input has at least one dimension");
        let rows: i64 = size[..size.len() - 1].iter().product();
        if rows >= MIN_GEMM_ROWS {
            return x.linear(&self.weight, self.bias.as_ref());
        }
        let flat = x.reshape([rows, k]);
        let padded = flat.constant_pad_nd([0, 0, 0, MIN_GEMM_ROWS - rows]);
        let out = padded
            .linear(&self.weight, self.bias.as_ref())
            .narrow(0, 0, rows);
        let mut out_size = size[..size.len() - 1].to_vec();
        out_size.push(self.weight.size()[0]);
        out.reshape(out_size)
    }
}

/// Row count from which a CPU GEMM row's result is independent of the batch (see
/// [`Linear::forward`]; measured on MKL sgemm with AVX2/AVX-512, tests/engine/dit.rs checks it).
pub(crate) const MIN_GEMM_ROWS: i64 = 16;

/// `torch.nn.Conv2d(in, out, k, stride, padding, bias=True)`.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    pub fn new(
        p: &mut dyn ParamSource,
        prefix: &str,
        in_ch: i64,
        out_ch: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
    ) -> Result<Self> {
        Ok(Conv2d {
            weight: p.take(&join(prefix, "weight"), &[out_ch, in_ch, kernel, kernel])?,
            bias: p.take(&join(prefix, "bias"), &[out_ch])?,
            stride,
            padding,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(
            &self.weight,
            Some(&self.bias),
            [self.stride],
            [self.padding],
            [1],
            1,
        )
    }
}

/// `torch.nn.GroupNorm(groups, channels, eps, affine=True)`.
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    groups: i64,
    eps: f64,
}

impl GroupNorm {
    pub fn new(
        p: &mut dyn ParamSource,
        prefix: &str,
        groups: i64,
        channels: i64,
        eps: f64,
    ) -> Result<Self> {
        Ok(GroupNorm {
            weight: p.take(&join(prefix, "weight"), &[channels])?,
            bias: p.take(&join(prefix, "bias"), &[channels])?,
            groups,
            eps,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.group_norm(
            self.groups,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

/// `torch.nn.LayerNorm(dim, elementwise_affine=False, eps)`: the DiT's only kind of LayerNorm.
pub struct LayerNormNoAffine {
    dim: i64,
    eps: f64,
}

impl LayerNormNoAffine {
    pub fn new(dim: i64, eps: f64) -> Self {
        LayerNormNoAffine { dim, eps }
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm([self.dim], None::<&Tensor>, None::<&Tensor>, self.eps, true)
    }
}
