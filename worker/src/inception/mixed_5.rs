//! torch-fidelity's `InceptionA` (feature_extractor_inceptionv3.py): `Mixed_5b`, `Mixed_5c`,
//! `Mixed_5d` at 35 x 35 (TF's `mixed`, `mixed_1`, `mixed_2`).
use super::basic_conv::{BasicConv2d, Geometry};
use crate::error::Result;
use crate::params::{join, ParamSource};
use tch::Tensor;

pub(crate) struct InceptionA {
    branch1x1: BasicConv2d,
    branch5x5_1: BasicConv2d,
    branch5x5_2: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionA {
    pub(crate) fn new(
        p: &mut dyn ParamSource,
        prefix: &str,
        in_ch: i64,
        pool_features: i64,
    ) -> Result<Self> {
        let conv = |p: &mut dyn ParamSource, name: &str, i, o, g| {
            BasicConv2d::new(p, &join(prefix, name), i, o, g)
        };
        let k = Geometry::square;
        Ok(InceptionA {
            branch1x1: conv(p, "branch1x1", in_ch, 64, k(1, 1, 0))?,
            branch5x5_1: conv(p, "branch5x5_1", in_ch, 48, k(1, 1, 0))?,
            branch5x5_2: conv(p, "branch5x5_2", 48, 64, k(5, 1, 2))?,
            branch3x3dbl_1: conv(p, "branch3x3dbl_1", in_ch, 64, k(1, 1, 0))?,
            branch3x3dbl_2: conv(p, "branch3x3dbl_2", 64, 96, k(3, 1, 1))?,
            branch3x3dbl_3: conv(p, "branch3x3dbl_3", 96, 96, k(3, 1, 1))?,
            branch_pool: conv(p, "branch_pool", in_ch, pool_features, k(1, 1, 0))?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let b1 = self.branch1x1.forward(x);
        let b5 = self.branch5x5_2.forward(&self.branch5x5_1.forward(x));
        let b3 = self.branch3x3dbl_1.forward(x);
        let b3 = self
            .branch3x3dbl_3
            .forward(&self.branch3x3dbl_2.forward(&b3));
        let bp = self.branch_pool.forward(&avg_pool_3x3_same(x));
        Tensor::cat(&[b1, b5, b3, bp], 1)
    }
}

/// `F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)`: TF's average pool,
/// which leaves the padding out of the mean (torch-fidelity's "Patch" comment).
pub(crate) fn avg_pool_3x3_same(x: &Tensor) -> Tensor {
    x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>)
}

/// `F.max_pool2d(x, kernel_size=3, stride=2)` (also `nn.MaxPool2d(3, 2)`).
pub(crate) fn max_pool_3x3_s2(x: &Tensor) -> Tensor {
    x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)
}
