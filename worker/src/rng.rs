//! The per-sample random-number contract (tests/fixtures/golden/README.md).
//!
//! For sample index `i` and job seed `S`: the libtorch CPU generator is seeded with
//! `S + i` (u64, wrapping); `random` labels draw `randint(0, num_classes, [1])` first; then one
//! `randn([steps + 1, C, H, W])` whose row 0 is the initial latent and row `1 + k` the noise of
//! the k-th sampling step. Image `i` therefore depends only on the model, the sampler settings,
//! `S` and `i`: never on batch size, shard layout, worker count, retries or device.
//!
//! libtorch's mt19937 keeps only the low 32 bits of a seed: seeds that differ by a multiple of
//! 2^32 give the same draws.
use tch::{Device, Kind, Tensor};

pub use fidshard_core::labels::{label_of, sample_seed, LabelMode};

/// The draws of one sample.
pub(crate) struct SampleDraws {
    pub label: i64,
    /// `(steps + 1, C, H, W)` float32 on the CPU.
    pub noise: Tensor,
}

/// Draws sample `index`'s label and noise. Uses libtorch's global CPU generator, so callers
/// must not draw from it concurrently (the engine draws on one thread).
pub(crate) fn draw_sample(
    job_seed: u64,
    index: u64,
    labels: LabelMode,
    num_classes: i64,
    steps: usize,
    latent_shape: [i64; 3],
) -> SampleDraws {
    tch::manual_seed(sample_seed(job_seed, index) as i64);
    let label = match labels {
        LabelMode::Random => {
            Tensor::randint(num_classes, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0])
        }
        LabelMode::Balanced => (index % num_classes as u64) as i64,
        LabelMode::Unconditional => num_classes,
    };
    let [c, h, w] = latent_shape;
    let noise = Tensor::randn([steps as i64 + 1, c, h, w], (Kind::Float, Device::Cpu));
    SampleDraws { label, noise }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `label_of` (pure Rust, in fidshard-core) must agree with the label libtorch's generator
    /// gives the sampler, for every mode, or a state rebuilt from the PNGs by the coordinator
    /// would write other labels into samples.npz.
    #[test]
    fn label_of_matches_draw_sample() {
        let modes = [
            LabelMode::Random,
            LabelMode::Balanced,
            LabelMode::Unconditional,
        ];
        for mode in modes {
            for (seed, num_classes) in [(0u64, 1000i64), (77, 10), (u64::MAX - 5, 7)] {
                for index in (0..200u64).chain([4_999, 49_999, 1 << 33]) {
                    let want = draw_sample(seed, index, mode, num_classes, 2, [4, 2, 2]).label;
                    // Draw something else in between: label_of must not depend on the
                    // generator's previous state.
                    let _ = Tensor::randn([3], (Kind::Float, Device::Cpu));
                    let got = label_of(seed, index, mode, num_classes);
                    assert_eq!(got, want, "{mode:?} seed {seed} index {index}");
                    assert!((0..=num_classes).contains(&got));
                }
            }
        }
    }
}
