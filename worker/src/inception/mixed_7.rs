//! torch-fidelity's `InceptionD` (`Mixed_7a`, TF's `mixed_8`: 17 -> 8) and `InceptionE_1` /
//! `InceptionE_2` (`Mixed_7b`, `Mixed_7c`, TF's `mixed_9`, `mixed_10`), which differ only in
//! the pool of `branch_pool`: average for the first, max for the second (the TF graph's; see
//! torch-fidelity's "Patch" comment) (feature_extractor_inceptionv3.py).
use super::basic_conv::{BasicConv2d, Geometry};
use super::mixed_5::{avg_pool_3x3_same, max_pool_3x3_s2};
use crate::error::Result;
use crate::params::{join, ParamSource};
use tch::Tensor;

pub(crate) struct InceptionD {
    branch3x3: [BasicConv2d; 2],
    branch7x7x3: [BasicConv2d; 4],
}

impl InceptionD {
    pub(crate) fn new(p: &mut dyn ParamSource, prefix: &str, in_ch: i64) -> Result<Self> {
        let conv = |p: &mut dyn ParamSource, name: &str, i, o, g| {
            BasicConv2d::new(p, &join(prefix, name), i, o, g)
        };
        let k = Geometry::square;
        Ok(InceptionD {
            branch3x3: [
                conv(p, "branch3x3_1", in_ch, 192, k(1, 1, 0))?,
                conv(p, "branch3x3_2", 192, 320, k(3, 2, 0))?,
            ],
            branch7x7x3: [
                conv(p, "branch7x7x3_1", in_ch, 192, k(1, 1, 0))?,
                conv(p, "branch7x7x3_2", 192, 192, Geometry::line(7, true))?,
                conv(p, "branch7x7x3_3", 192, 192, Geometry::line(7, false))?,
                conv(p, "branch7x7x3_4", 192, 192, k(3, 2, 0))?,
            ],
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let chain =
            |convs: &[BasicConv2d]| convs.iter().fold(x.shallow_clone(), |h, c| c.forward(&h));
        Tensor::cat(
            &[
                chain(&self.branch3x3),
                chain(&self.branch7x7x3),
                max_pool_3x3_s2(x),
            ],
            1,
        )
    }
}

/// The pool before `branch_pool`.
#[derive(Clone, Copy)]
pub(crate) enum Pool {
    /// `InceptionE_1`: `F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)`.
    Average,
    /// `InceptionE_2`: `F.max_pool2d(x, 3, stride=1, padding=1)`.
    Max,
}

pub(crate) struct InceptionE {
    branch1x1: BasicConv2d,
    branch3x3_1: BasicConv2d,
    branch3x3_2a: BasicConv2d,
    branch3x3_2b: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3a: BasicConv2d,
    branch3x3dbl_3b: BasicConv2d,
    branch_pool: BasicConv2d,
    pool: Pool,
}

impl InceptionE {
    pub(crate) fn new(
        p: &mut dyn ParamSource,
        prefix: &str,
        in_ch: i64,
        pool: Pool,
    ) -> Result<Self> {
        let conv = |p: &mut dyn ParamSource, name: &str, i, o, g| {
            BasicConv2d::new(p, &join(prefix, name), i, o, g)
        };
        let one = Geometry::square(1, 1, 0);
        let (row, col) = (Geometry::line(3, true), Geometry::line(3, false));
        Ok(InceptionE {
            branch1x1: conv(p, "branch1x1", in_ch, 320, one)?,
            branch3x3_1: conv(p, "branch3x3_1", in_ch, 384, one)?,
            branch3x3_2a: conv(p, "branch3x3_2a", 384, 384, row)?,
            branch3x3_2b: conv(p, "branch3x3_2b", 384, 384, col)?,
            branch3x3dbl_1: conv(p, "branch3x3dbl_1", in_ch, 448, one)?,
            branch3x3dbl_2: conv(p, "branch3x3dbl_2", 448, 384, Geometry::square(3, 1, 1))?,
            branch3x3dbl_3a: conv(p, "branch3x3dbl_3a", 384, 384, row)?,
            branch3x3dbl_3b: conv(p, "branch3x3dbl_3b", 384, 384, col)?,
            branch_pool: conv(p, "branch_pool", in_ch, 192, one)?,
            pool,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let b1 = self.branch1x1.forward(x);
        let b3 = self.branch3x3_1.forward(x);
        let b3 = Tensor::cat(
            &[
                self.branch3x3_2a.forward(&b3),
                self.branch3x3_2b.forward(&b3),
            ],
            1,
        );
        let bd = self.branch3x3dbl_2.forward(&self.branch3x3dbl_1.forward(x));
        let bd = Tensor::cat(
            &[
                self.branch3x3dbl_3a.forward(&bd),
                self.branch3x3dbl_3b.forward(&bd),
            ],
            1,
        );
        let pooled = match self.pool {
            Pool::Average => avg_pool_3x3_same(x),
            Pool::Max => x.max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false),
        };
        let bp = self.branch_pool.forward(&pooled);
        Tensor::cat(&[b1, b3, bd, bp], 1)
    }
}
