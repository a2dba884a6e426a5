//! Class labels of the per-sample random-number contract (tests/fixtures/golden/README.md),
//! computable without libtorch.
//!
//! Sample `i` of a job seeded `S` seeds libtorch's CPU generator (an mt19937 that keeps the low
//! 32 bits of the seed) with `S + i`; a `random` label is its first draw, `randint(0, n, [1])`,
//! which libtorch computes as `mt19937() % n` for ranges below 2^32 (ATen's
//! `random_from_to` CPU kernel). [`label_of`] reproduces that with the `rand_mt` crate so that the
//! coordinator (which never links libtorch) can rebuild label records from PNGs; the worker's
//! `rng` tests check it against libtorch itself.
use serde::{Deserialize, Serialize};

/// How class labels are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LabelMode {
    /// Uniform over the classes, drawn from the sample's own generator (the reference's default).
    #[default]
    Random,
    /// `i mod num_classes`: every class equally often (num_samples a multiple of num_classes).
    Balanced,
    /// The null label `num_classes` for every sample (no guidance).
    Unconditional,
}

impl LabelMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LabelMode::Random => "random",
            LabelMode::Balanced => "balanced",
            LabelMode::Unconditional => "unconditional",
        }
    }
}

/// The seed of sample `index` in a job seeded with `job_seed`.
pub fn sample_seed(job_seed: u64, index: u64) -> u64 {
    job_seed.wrapping_add(index)
}

/// Sample `index`'s class label, without drawing its noise: the label the sampler gives it.
pub fn label_of(job_seed: u64, index: u64, labels: LabelMode, num_classes: i64) -> i64 {
    match labels {
        LabelMode::Random => {
            let mut mt = rand_mt::Mt::new(sample_seed(job_seed, index) as u32);
            let n = num_classes as u64;
            debug_assert!(n > 0 && n < (1 << 32));
            (u64::from(mt.next_u32()) % n) as i64
        }
        LabelMode::Balanced => (index % num_classes as u64) as i64,
        LabelMode::Unconditional => num_classes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference mt19937 check value: the 10000th output for the default seed 5489
    /// (C++ `std::mt19937`), i.e. the generator is the standard one.
    #[test]
    fn mt19937_is_the_standard_generator() {
        let mut mt = rand_mt::Mt::new(5489);
        let mut v = 0;
        for _ in 0..10_000 {
            v = mt.next_u32();
        }
        assert_eq!(v, 4_123_659_995);
    }

    #[test]
    fn modes() {
        assert_eq!(label_of(0, 13, LabelMode::Balanced, 10), 3);
        assert_eq!(label_of(0, 13, LabelMode::Unconditional, 10), 10);
        for i in 0..1000 {
            assert!((0..10).contains(&label_of(7, i, LabelMode::Random, 10)));
        }
    }
}
