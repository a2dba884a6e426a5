//! The sample plan: `ceil(num_samples / shard_size)` shards of consecutive indices covering
//! exactly `[0, num_samples)`, the last one shorter. Unlike the reference `sample_ddp.py`, which
//! pads the job to a multiple of the global batch, no sample is wasted.

pub(crate) use fidshard_core::shard::Shard;

pub(crate) fn plan(num_samples: u64, shard_size: u64) -> Vec<Shard> {
    assert!(shard_size > 0, "shard_size is validated to be positive");
    let count = num_samples.div_ceil(shard_size);
    (0..count)
        .map(|id| shard(num_samples, shard_size, id))
        .collect()
}

/// Shard `id` of the plan, without building the plan.
pub(crate) fn shard(num_samples: u64, shard_size: u64, id: u64) -> Shard {
    Shard {
        id,
        start: (id * shard_size).min(num_samples),
        end: ((id + 1) * shard_size).min(num_samples),
    }
}

/// Merges sorted, possibly adjacent index ranges (for "missing ranges" in status).
pub(crate) fn merge_ranges(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_exactly_with_a_short_last_shard() {
        let p = plan(2500, 1000);
        assert_eq!(p.len(), 3);
        assert_eq!((p[2].start, p[2].end), (2000, 2500));
        assert_eq!(p.iter().map(Shard::len).sum::<u64>(), 2500);
        for w in p.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert_eq!(plan(3000, 1000).len(), 3);
        assert_eq!(
            plan(1, 1000),
            vec![Shard {
                id: 0,
                start: 0,
                end: 1
            }]
        );
        assert_eq!(plan(50_000, 7).len(), 7143);
    }

    #[test]
    fn merges_ranges() {
        assert_eq!(
            merge_ranges(vec![(5, 7), (0, 2), (2, 3), (9, 10)]),
            vec![(0, 3), (5, 7), (9, 10)]
        );
    }
}
