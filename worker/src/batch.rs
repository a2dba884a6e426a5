//! The one sampling path every caller uses (the worker's shards, `sample`, `bench`):
//! per-sample noise -> DiT + guidance through the diffusion steps -> VAE -> uint8 samples.
use crate::engine::{to_samples, Engine, Sample, Timings};
use crate::error::Result;
use tch::Tensor;

/// What one batch produced: the samples and their final latents (before the VAE).
pub struct Batch {
    pub samples: Vec<Sample>,
    pub latents: Tensor,
}

impl Engine {
    /// Samples and decodes `indices` as one batch.
    pub fn sample_batch(&self, indices: &[u64], t: &mut Timings) -> Result<Batch> {
        let (labels, latents) = self.sample_latents(indices, t);
        let images = self.decode(&latents, t);
        let samples = to_samples(indices, &labels, &images)?;
        Ok(Batch { samples, latents })
    }

    /// [`Engine::sample_batch`] with libtorch's errors caught: tch's infallible API reports them
    /// as panics. The error is the first line of libtorch's message.
    pub fn try_sample_batch(
        &self,
        indices: &[u64],
        t: &mut Timings,
    ) -> std::result::Result<Batch, String> {
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.sample_batch(indices, t).map_err(|e| e.to_string())
        }));
        let msg = match res {
            Ok(Ok(batch)) => return Ok(batch),
            Ok(Err(msg)) => msg,
            Err(panic) => fidshard_core::error::panic_message(panic.as_ref()),
        };
        Err(msg.lines().next().unwrap_or_default().to_string())
    }
}

/// True when libtorch's message is an out-of-memory error (CUDA's or the CPU allocator's).
pub fn is_oom(msg: &str) -> bool {
    msg.contains("out of memory") || msg.contains("OutOfMemoryError")
}
