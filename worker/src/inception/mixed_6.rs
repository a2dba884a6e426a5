//! torch-fidelity's `InceptionB` (`Mixed_6a`, TF's `mixed_3`: 35 -> 17) and `InceptionC`
//! (`Mixed_6b` .. `Mixed_6e`, TF's `mixed_4` .. `mixed_7`) (feature_extractor_inceptionv3.py).
//! `Mixed_6d` is TF's `mixed_6`: its `branch1x1` output is `mixed_6/conv:0`, the ADM
//! evaluator's spatial features (torch-fidelity's util_convert_inception_weights.py maps
//! `mixed_6/conv/*` to `Mixed_6d.branch1x1.*`).
use super::basic_conv::{BasicConv2d, Geometry};
use super::mixed_5::{avg_pool_3x3_same, max_pool_3x3_s2};
use crate::error::Result;
use crate::params::{join, ParamSource};
use tch::Tensor;

pub(crate) struct InceptionB {
    branch3x3: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    pub(crate) fn new(p: &mut dyn ParamSource, prefix: &str, in_ch: i64) -> Result<Self> {
        let conv = |p: &mut dyn ParamSource, name: &str, i, o, g| {
            BasicConv2d::new(p, &join(prefix, name), i, o, g)
        };
        let k = Geometry::square;
        Ok(InceptionB {
            branch3x3: conv(p, "branch3x3", in_ch, 384, k(3, 2, 0))?,
            branch3x3dbl_1: conv(p, "branch3x3dbl_1", in_ch, 64, k(1, 1, 0))?,
            branch3x3dbl_2: conv(p, "branch3x3dbl_2", 64, 96, k(3, 1, 1))?,
            branch3x3dbl_3: conv(p, "branch3x3dbl_3", 96, 96, k(3, 2, 0))?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let b3 = self.branch3x3.forward(x);
        let bd = self.branch3x3dbl_1.forward(x);
        let bd = self
            .branch3x3dbl_3
            .forward(&self.branch3x3dbl_2.forward(&bd));
        Tensor::cat(&[b3, bd, max_pool_3x3_s2(x)], 1)
    }
}

pub(crate) struct InceptionC {
    branch1x1: BasicConv2d,
    branch7x7: [BasicConv2d; 3],
    branch7x7dbl: [BasicConv2d; 5],
    branch_pool: BasicConv2d,
}

impl InceptionC {
    pub(crate) fn new(p: &mut dyn ParamSource, prefix: &str, in_ch: i64, c7: i64) -> Result<Self> {
        let conv = |p: &mut dyn ParamSource, name: &str, i, o, g| {
            BasicConv2d::new(p, &join(prefix, name), i, o, g)
        };
        let one = Geometry::square(1, 1, 0);
        let (row, col) = (Geometry::line(7, true), Geometry::line(7, false));
        Ok(InceptionC {
            branch1x1: conv(p, "branch1x1", in_ch, 192, one)?,
            branch7x7: [
                conv(p, "branch7x7_1", in_ch, c7, one)?,
                conv(p, "branch7x7_2", c7, c7, row)?,
                conv(p, "branch7x7_3", c7, 192, col)?,
            ],
            branch7x7dbl: [
                conv(p, "branch7x7dbl_1", in_ch, c7, one)?,
                conv(p, "branch7x7dbl_2", c7, c7, col)?,
                conv(p, "branch7x7dbl_3", c7, c7, row)?,
                conv(p, "branch7x7dbl_4", c7, c7, col)?,
                conv(p, "branch7x7dbl_5", c7, 192, row)?,
            ],
            branch_pool: conv(p, "branch_pool", in_ch, 192, one)?,
        })
    }

    /// The block's output and its `branch1x1` output (for `Mixed_6d`: TF's `mixed_6/conv`).
    pub(crate) fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let b1 = self.branch1x1.forward(x);
        let chain =
            |convs: &[BasicConv2d]| convs.iter().fold(x.shallow_clone(), |h, c| c.forward(&h));
        let b7 = chain(&self.branch7x7);
        let bd = chain(&self.branch7x7dbl);
        let bp = self.branch_pool.forward(&avg_pool_3x3_same(x));
        (Tensor::cat(&[&b1, &b7, &bd, &bp], 1), b1)
    }
}
