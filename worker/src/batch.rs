//! The one sampling path every caller uses (the worker's shards, `sample`, `bench`):
//! per-sample noise -> DiT + guidance through the diffusion steps -> VAE -> uint8 samples.
use crate::engine::{to_samples, Engine, Sample, Timings};
use crate::error::{EngineError, Result};
use crate::noise::Draws;
use tch::Tensor;

/// What one batch produced: the samples and their final latents (before the VAE).
pub struct Batch {
    pub samples: Vec<Sample>,
    pub latents: Tensor,
}

impl Engine {
    /// Samples and decodes the batch of `draws` (made beforehand, by a noise producer or
    /// [`crate::noise::DrawSpec::draw`]).
    fn sample_batch_from(&self, draws: Draws, t: &mut Timings) -> Result<Batch> {
        let indices = draws.indices.clone();
        let indices = &indices[..];
        let trajectory = self.sample_latents_from(draws, t);
        let latents = trajectory.latents;
        crate::engine::check_finite(&latents, "the final latents", || {
            trajectory.checks.first_non_finite()
        })?;
        let images = self.decode(&latents, t)?;
        let samples = to_samples(indices, &trajectory.labels, &images)?;
        Ok(Batch { samples, latents })
    }

    /// Samples and decodes `indices` as one batch, with libtorch's errors caught (tch's
    /// infallible API reports them as panics) and classified. Messages are one line.
    pub fn try_sample_batch(&self, indices: &[u64], t: &mut Timings) -> Result<Batch, BatchError> {
        self.try_sample_batch_from(self.draw_spec().draw(indices), t)
    }

    /// [`Engine::try_sample_batch`] from draws made beforehand (by a noise producer).
    pub fn try_sample_batch_from(
        &self,
        draws: Draws,
        t: &mut Timings,
    ) -> Result<Batch, BatchError> {
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.sample_batch_from(draws, t)
        }));
        let msg = match res {
            Ok(Ok(batch)) => return Ok(batch),
            Ok(Err(e @ EngineError::NonFinite { .. })) => {
                return Err(BatchError::NonFinite(e.to_string()))
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => fidshard_core::error::panic_message(panic.as_ref()),
        };
        let line = msg.lines().next().unwrap_or_default().to_string();
        Err(if is_oom(&msg) {
            BatchError::OutOfMemory(line)
        } else {
            BatchError::Failed(line)
        })
    }
}

/// Why a batch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The device ran out of memory (CUDA's or the CPU allocator's message).
    #[error("{0}")]
    OutOfMemory(String),
    /// NaN or infinite values: nothing of the batch may be written.
    #[error("{0}")]
    NonFinite(String),
    #[error("{0}")]
    Failed(String),
}

/// True when libtorch's message is an out-of-memory error (CUDA's or the CPU allocator's).
fn is_oom(msg: &str) -> bool {
    msg.contains("out of memory") || msg.contains("OutOfMemoryError")
}
