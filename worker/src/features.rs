//! Inception features of uint8 images for the metrics (fidshard-core's features.rs and
//! metrics/): `pool_3`, the spatial features and the logits of the ADM evaluator's Inception
//! graph (crate::inception), computed batch by batch.
use crate::error::Result;
use tch::{Device, Kind, Tensor};

/// The features of some images, row-major, float32.
#[derive(Debug, Default)]
pub struct FeatureRows {
    pub pool: Vec<f32>,
    pub spatial: Vec<f32>,
    pub logits: Vec<f32>,
}

impl FeatureRows {
    /// The rows of `n` images, one `FeatureRows` each.
    pub fn into_images(self, n: usize) -> Vec<FeatureRows> {
        use fidshard_core::features::{CLASSES, POOL, SPATIAL};
        (0..n)
            .map(|i| FeatureRows {
                pool: self.pool[i * POOL..(i + 1) * POOL].to_vec(),
                spatial: self.spatial[i * SPATIAL..(i + 1) * SPATIAL].to_vec(),
                logits: self.logits[i * CLASSES..(i + 1) * CLASSES].to_vec(),
            })
            .collect()
    }

    /// Appends `other`'s rows after these.
    pub fn extend(&mut self, other: &FeatureRows) {
        self.pool.extend_from_slice(&other.pool);
        self.spatial.extend_from_slice(&other.spatial);
        self.logits.extend_from_slice(&other.logits);
    }
}

/// The Inception network on a device.
pub struct FeatureExtractor {
    net: crate::inception::InceptionV3,
    device: Device,
}

impl FeatureExtractor {
    /// Loads torch-fidelity's converted weights (`weights-inception-2015-12-05-6726825d.pth`).
    /// On the CPU one thread, as a sampling worker has (engine.rs): libtorch picks its float32
    /// kernels by the thread count, and the features of a job's images must be the same bits
    /// whether a sampling worker or a `features` task computed them.
    pub fn load(weights: &std::path::Path, device: Device) -> Result<FeatureExtractor> {
        if !device.is_cuda() {
            tch::set_num_threads(1);
        }
        let net = crate::inception::InceptionV3::load(weights, device)?;
        Ok(FeatureExtractor { net, device })
    }

    /// The features of `pixels` (`n x h x w x 3` uint8), `batch` images per forward pass.
    pub fn features_batched(
        &self,
        pixels: &[u8],
        h: i64,
        w: i64,
        batch: usize,
    ) -> Result<FeatureRows> {
        let _g = tch::no_grad_guard();
        let per = (h * w * 3) as usize;
        let mut rows = FeatureRows::default();
        for chunk in pixels.chunks(per * batch) {
            let n = (chunk.len() / per) as i64;
            let x = Tensor::from_slice(chunk)
                .view([n, h, w, 3])
                .to_device(self.device);
            // On the CPU one image per pass: features never depend on the batch (see
            // InceptionV3::features).
            let micro = if self.device.is_cuda() { 0 } else { 1 };
            let out = self.net.features(&x, micro)?;
            let take = |t: &Tensor| -> Result<Vec<f32>> {
                let t = t
                    .to_device(Device::Cpu)
                    .to_kind(Kind::Float)
                    .contiguous()
                    .view([-1]);
                Ok(Vec::<f32>::try_from(&t)?)
            };
            rows.pool.extend(take(&out.pool_3)?);
            rows.spatial.extend(take(&out.spatial)?);
            rows.logits.extend(take(&out.logits_unbiased)?);
        }
        Ok(rows)
    }
}
