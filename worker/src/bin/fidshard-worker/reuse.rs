//! PNGs of a shard that an earlier attempt already wrote (the run was preempted, or the worker
//! died mid-shard). A file under its final name is complete by construction (temp + fsync +
//! rename), so one that decodes to a `side x side` RGB image is reused as it is: its CRC32 comes
//! from its bytes and its label from the random-number contract (`labels::label_of`), without
//! sampling it again. Anything else (missing, unreadable, another size) is sampled.
use crate::writer::Reused;
use fidshard_core::labels::{label_of, LabelMode};
use fidshard_core::output::png_name;
use fidshard_core::shard::Shard;
use std::path::{Path, PathBuf};

/// What the job's labels depend on.
#[derive(Clone, Copy)]
pub(crate) struct LabelSpec {
    pub seed: u64,
    pub labels: LabelMode,
    pub num_classes: i64,
}

/// The shard's indices split into PNGs to reuse and indices to sample.
pub(crate) struct Scan {
    pub reused: Vec<Reused>,
    pub missing: Vec<u64>,
    /// Final-named files that are not a usable PNG (each is sampled and written again).
    pub bad: Vec<(PathBuf, String)>,
}

pub(crate) fn scan(
    dir: &Path,
    shard: &Shard,
    num_samples: u64,
    side: u32,
    spec: LabelSpec,
) -> Scan {
    let mut out = Scan {
        reused: Vec::new(),
        missing: Vec::new(),
        bad: Vec::new(),
    };
    for index in shard.indices() {
        let path = dir.join(png_name(index, num_samples));
        let mut bytes = Vec::new();
        match fidshard_core::output::read_regular(&path, &mut bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                out.missing.push(index);
                continue;
            }
            Err(e) => {
                out.bad.push((path, format!("cannot read: {e}")));
                out.missing.push(index);
                continue;
            }
        };
        match fidshard_core::output::check_png(&bytes, side) {
            Ok(()) => out.reused.push(Reused {
                index,
                crc32: crc32fast::hash(&bytes),
                label: label_of(spec.seed, index, spec.labels, spec.num_classes),
            }),
            Err(msg) => {
                out.bad.push((path, msg));
                out.missing.push(index);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LabelSpec {
        LabelSpec {
            seed: 7,
            labels: LabelMode::Random,
            num_classes: 10,
        }
    }

    #[test]
    fn good_pngs_are_reused_and_the_rest_sampled() {
        let dir = tempfile::tempdir().unwrap();
        let n = 100;
        let side = 4;
        let png = fidshard_core::output::encode_png(&[9u8; 4 * 4 * 3], side).unwrap();
        let wrong_size = fidshard_core::output::encode_png(&[9u8; 2 * 2 * 3], 2).unwrap();
        std::fs::write(dir.path().join(png_name(10, n)), &png).unwrap();
        std::fs::write(dir.path().join(png_name(12, n)), &png[..png.len() / 2]).unwrap();
        std::fs::write(dir.path().join(png_name(13, n)), &wrong_size).unwrap();
        std::fs::write(dir.path().join(png_name(14, n)), &png).unwrap();
        let shard = Shard {
            id: 2,
            start: 10,
            end: 15,
        };
        let s = scan(dir.path(), &shard, n, side, spec());
        let label = |i| label_of(7, i, LabelMode::Random, 10);
        let crc = crc32fast::hash(&png);
        assert_eq!(
            s.reused,
            [
                Reused {
                    index: 10,
                    crc32: crc,
                    label: label(10)
                },
                Reused {
                    index: 14,
                    crc32: crc,
                    label: label(14)
                }
            ]
        );
        assert_eq!(s.missing, [11, 12, 13]);
        assert_eq!(s.bad.len(), 2);
        assert!(s.bad[1].1.contains("2x2"), "{:?}", s.bad);
    }
}
