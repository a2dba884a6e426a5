//! The Inception-v3 of the FID literature: TF's `classify_image_graph_def.pb` (2015-12-05) as
//! torch-fidelity's `FeatureExtractorInceptionV3` (feature_extractor_inceptionv3.py) rebuilds
//! it in PyTorch, with that module's state_dict keys (its converted weights are
//! `weights-inception-2015-12-05-6726825d.pth`). The ADM evaluator's features come from here:
//!
//! - input: uint8 images `(N, H, W, 3)`, RGB, the layout of `samples.npz`'s `arr_0` and of the
//!   engine's decoded batches (the ADM evaluator feeds NHWC at `ExpandDims:0`; torch-fidelity
//!   takes NCHW, so they are permuted here);
//! - resized to 299 x 299 by TF 1.x's bilinear resize ([`resize`]), scaled `(x - 128) / 128`;
//! - `pool_3` `(N, 2048)`: TF's `pool_3:0`, torch-fidelity's feature `"2048"`;
//! - `logits_unbiased` `(N, 1008)`: `pool_3 @ fc.weight^T`, no bias, TF's
//!   `softmax/logits/MatMul` that the evaluator's Inception Score takes the softmax of;
//! - `spatial` `(N, 2023)`: TF's `mixed_6/conv:0` (`Mixed_6d.branch1x1`'s output after its
//!   ReLU, 17 x 17 x 192) cut to its first 7 channels and flattened in NHWC order, index
//!   `(h * 17 + w) * 7 + c`, as the evaluator's `spatial[..., :7]` then `reshape([N, -1])`.
mod basic_conv;
mod mixed_5;
mod mixed_6;
mod mixed_7;
pub mod random;
mod resize;

use crate::checkpoint::load_state_dict;
use crate::error::{EngineError, Result};
use crate::nn::MIN_GEMM_ROWS;
use crate::params::{ParamSource, StateDict};
use basic_conv::{BasicConv2d, Geometry};
use mixed_5::{max_pool_3x3_s2, InceptionA};
use mixed_6::{InceptionB, InceptionC};
use mixed_7::{InceptionD, InceptionE, Pool};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The resolution the network sees (torch-fidelity's `INPUT_IMAGE_SIZE`).
pub const INPUT_SIZE: i64 = 299;
/// Channels of `mixed_6/conv:0` the ADM evaluator keeps.
pub const SPATIAL_CHANNELS: i64 = 7;

/// The three outputs, float32, one row per image.
pub struct InceptionFeatures {
    pub pool_3: Tensor,
    pub logits_unbiased: Tensor,
    pub spatial: Tensor,
}

pub struct InceptionV3 {
    stem: [BasicConv2d; 5],
    mixed_5: [InceptionA; 3],
    mixed_6a: InceptionB,
    mixed_6: [InceptionC; 4],
    mixed_7a: InceptionD,
    mixed_7: [InceptionE; 2],
    fc_weight: Tensor,
    device: Device,
}

impl InceptionV3 {
    /// Loads torch-fidelity's state_dict (`.pth` or safetensors) onto `device`.
    pub fn load(path: &Path, device: Device) -> Result<InceptionV3> {
        InceptionV3::from_state_dict(load_state_dict(path)?.with_device(device), device)
    }

    /// Builds the network from all of `sd`; BatchNorm's `num_batches_tracked` (training
    /// bookkeeping) and `fc.bias` (logits here are unbiased) are accepted and unused.
    pub fn from_state_dict(sd: StateDict, device: Device) -> Result<InceptionV3> {
        let origin = sd.origin().to_path_buf();
        let tensors = sd
            .into_inner()
            .into_iter()
            .filter(|(k, _)| !k.ends_with(".num_batches_tracked") && k != "fc.bias")
            .collect();
        let mut sd = StateDict::new(origin, tensors).with_device(device);
        let net = InceptionV3::new(&mut sd, device)?;
        sd.finish()?;
        Ok(net)
    }

    /// Takes every parameter under torch-fidelity's names (`Conv2d_1a_3x3.conv.weight`, ...).
    pub fn new(p: &mut dyn ParamSource, device: Device) -> Result<InceptionV3> {
        let k = Geometry::square;
        Ok(InceptionV3 {
            stem: [
                BasicConv2d::new(p, "Conv2d_1a_3x3", 3, 32, k(3, 2, 0))?,
                BasicConv2d::new(p, "Conv2d_2a_3x3", 32, 32, k(3, 1, 0))?,
                BasicConv2d::new(p, "Conv2d_2b_3x3", 32, 64, k(3, 1, 1))?,
                BasicConv2d::new(p, "Conv2d_3b_1x1", 64, 80, k(1, 1, 0))?,
                BasicConv2d::new(p, "Conv2d_4a_3x3", 80, 192, k(3, 1, 0))?,
            ],
            mixed_5: [
                InceptionA::new(p, "Mixed_5b", 192, 32)?,
                InceptionA::new(p, "Mixed_5c", 256, 64)?,
                InceptionA::new(p, "Mixed_5d", 288, 64)?,
            ],
            mixed_6a: InceptionB::new(p, "Mixed_6a", 288)?,
            mixed_6: [
                InceptionC::new(p, "Mixed_6b", 768, 128)?,
                InceptionC::new(p, "Mixed_6c", 768, 160)?,
                InceptionC::new(p, "Mixed_6d", 768, 160)?,
                InceptionC::new(p, "Mixed_6e", 768, 192)?,
            ],
            mixed_7a: InceptionD::new(p, "Mixed_7a", 768)?,
            mixed_7: [
                InceptionE::new(p, "Mixed_7b", 1280, Pool::Average)?,
                InceptionE::new(p, "Mixed_7c", 2048, Pool::Max)?,
            ],
            fc_weight: p.take("fc.weight", &[1008, 2048])?,
            device,
        })
    }

    /// The features of uint8 `(N, H, W, 3)` images in `micro_batch`-image passes (the whole
    /// batch when `micro_batch <= 0` or `>= N`).
    ///
    /// Batch invariance: oneDNN picks convolution algorithms by batch size, so on the CPU an
    /// image's result can depend on how many images share its pass (the VAE decoder's
    /// convolutions do, see `Engine::vae_micro_batch`; for this network
    /// tests/engine/inception.rs measured no difference between a batch of 2 and single images,
    /// which holds for that machine and those sizes only). CPU callers pass 1 so that an
    /// image's features never depend on the batch it came in; `logits_unbiased` is padded to
    /// [`MIN_GEMM_ROWS`] rows for the same reason.
    pub fn features(&self, images: &Tensor, micro_batch: i64) -> Result<InceptionFeatures> {
        let n = images.size()[0];
        if micro_batch <= 0 || micro_batch >= n {
            return self.forward(images);
        }
        let mut parts = Vec::new();
        for start in (0..n).step_by(micro_batch as usize) {
            parts.push(self.forward(&images.narrow(0, start, micro_batch.min(n - start)))?);
        }
        let cat = |f: fn(&InceptionFeatures) -> &Tensor| {
            Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0)
        };
        Ok(InceptionFeatures {
            pool_3: cat(|p| &p.pool_3),
            logits_unbiased: cat(|p| &p.logits_unbiased),
            spatial: cat(|p| &p.spatial),
        })
    }

    /// `FeatureExtractorInceptionV3.forward` on uint8 `(N, H, W, 3)` images, in one pass.
    pub fn forward(&self, images: &Tensor) -> Result<InceptionFeatures> {
        let size = images.size();
        if images.kind() != Kind::Uint8
            || size.len() != 4
            || size[3] != 3
            || size[1] < 1
            || size[2] < 1
        {
            // The caller's fault (the engine's own batches, an npz's checked arr_0), not the user's.
            return Err(EngineError::Torch(tch::TchError::Shape(format!(
                "Inception input must be uint8 (N, H, W, 3) images, got {:?} {size:?}",
                images.kind()
            ))));
        }
        let _guard = tch::no_grad_guard();
        let x = images
            .to_device(self.device)
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float);
        let x = resize::resize_bilinear_tf1(&x, INPUT_SIZE);
        let x = (x - 128.0) / 128.0;
        let (pooled, mixed_6_conv) = self.trunk(&x);
        let pool_3 = pooled.flatten(1, -1);
        let n = pool_3.size()[0];
        Ok(InceptionFeatures {
            logits_unbiased: self.logits_unbiased(&pool_3),
            pool_3,
            spatial: mixed_6_conv
                .narrow(1, 0, SPATIAL_CHANNELS)
                .permute([0, 2, 3, 1])
                .reshape([n, -1]),
        })
    }

    /// From the scaled 299 x 299 input to `AvgPool`'s output `(N, 2048, 1, 1)` and
    /// `Mixed_6d.branch1x1`'s output `(N, 192, 17, 17)`.
    fn trunk(&self, x: &Tensor) -> (Tensor, Tensor) {
        let [c1a, c2a, c2b, c3b, c4a] = &self.stem;
        let x = max_pool_3x3_s2(&c2b.forward(&c2a.forward(&c1a.forward(x))));
        let mut x = max_pool_3x3_s2(&c4a.forward(&c3b.forward(&x)));
        for block in &self.mixed_5 {
            x = block.forward(&x);
        }
        x = self.mixed_6a.forward(&x);
        let mut mixed_6_conv = None;
        for (i, block) in self.mixed_6.iter().enumerate() {
            let (out, branch1x1) = block.forward(&x);
            if i == 2 {
                mixed_6_conv = Some(branch1x1); // Mixed_6d = TF's mixed_6
            }
            x = out;
        }
        x = self.mixed_7a.forward(&x);
        for block in &self.mixed_7 {
            x = block.forward(&x);
        }
        let pooled = x.adaptive_avg_pool2d([1, 1]);
        (pooled, mixed_6_conv.expect("four Mixed_6 blocks"))
    }

    /// `x.mm(fc.weight.T)`. Fewer than [`MIN_GEMM_ROWS`] rows are zero-padded to that many, so
    /// that a row's result does not depend on the batch (MKL's small-row kernels sum in another
    /// order; see `nn::Linear::forward`).
    fn logits_unbiased(&self, pool_3: &Tensor) -> Tensor {
        let n = pool_3.size()[0];
        let w = self.fc_weight.tr();
        if n >= MIN_GEMM_ROWS || self.device.is_cuda() {
            return pool_3.mm(&w);
        }
        pool_3
            .constant_pad_nd([0, 0, 0, MIN_GEMM_ROWS - n])
            .mm(&w)
            .narrow(0, 0, n)
    }
}
