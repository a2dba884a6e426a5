//! Inception features of a run of images, one file per shard (or per range of an npz): what the
//! metrics are computed from, written where the images were made so that no image is read
//! twice. Per image, float32: `pool_3` (2048 values), the spatial features (`mixed_6/conv`, its
//! first 7 channels, 17 x 17 x 7 = 2023 values) and the 1008 logits (`softmax/logits/MatMul`, no bias; the metrics take their softmax).
//!
//! The file is self-checking and tied to its images: a text header (magic line, then one JSON
//! line: first index, count, the CRC32 of each image's source — the PNG file of a shard, the raw
//! pixels of an npz image — and the SHA-256 of the Inception weights), the three float32
//! little-endian blocks, and a CRC32 of everything before it. Hand-written because it is 40
//! lines: npy/npz would need three files or a zip for one record, and carry no checksum.
use crate::error::{CoreError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `pool_3:0`.
pub const POOL: usize = 2048;
/// `mixed_6/conv:0[..., :7]` flattened (17 x 17 x 7).
pub const SPATIAL: usize = 2023;
/// The classes of the logits (`softmax/logits/MatMul`).
pub const CLASSES: usize = 1008;

const MAGIC: &[u8] = b"FIDSHARD-FEATURES-1\n";

/// What the header line says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureHeader {
    /// Index of the first image (in the job or the npz).
    pub first: u64,
    /// CRC32 of each image's source, in index order.
    pub crc32: Vec<u32>,
    /// SHA-256 (hex) of the Inception weights the features come from.
    pub inception: String,
}

/// The features of `header.crc32.len()` consecutive images.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub header: FeatureHeader,
    /// `count x POOL`, row-major.
    pub pool: Vec<f32>,
    /// `count x SPATIAL`.
    pub spatial: Vec<f32>,
    /// `count x CLASSES`.
    pub logits: Vec<f32>,
}

impl Features {
    pub fn count(&self) -> usize {
        self.header.crc32.len()
    }

    /// Checks that the blocks have `count` rows each.
    pub fn check_shape(&self) -> std::result::Result<(), String> {
        let n = self.count();
        for (name, v, d) in [
            ("pool_3", &self.pool, POOL),
            ("spatial", &self.spatial, SPATIAL),
            ("logits", &self.logits, CLASSES),
        ] {
            if v.len() != n * d {
                return Err(format!("{name} holds {} values, not {n} x {d}", v.len()));
            }
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_string(&self.header).expect("a header serializes");
        let floats = self.pool.len() + self.spatial.len() + self.logits.len();
        let mut out = Vec::with_capacity(MAGIC.len() + header.len() + 1 + 4 * floats + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(header.as_bytes());
        out.push(b'\n');
        for v in [&self.pool, &self.spatial, &self.logits] {
            for x in v.iter() {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses and checks a file's bytes: magic, checksum, header, sizes.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Features, String> {
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or("not a fidshard features file (no magic line)")?;
        if bytes.len() < MAGIC.len() + 4 {
            return Err("truncated".into());
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let want = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        if crc32fast::hash(body) != want {
            return Err("its checksum does not match (damaged or truncated)".into());
        }
        let rest = &rest[..rest.len() - 4];
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no header line")?;
        let header: FeatureHeader =
            serde_json::from_slice(&rest[..nl]).map_err(|e| format!("header: {e}"))?;
        let data = &rest[nl + 1..];
        let n = header.crc32.len();
        if data.len() != 4 * n * (POOL + SPATIAL + CLASSES) {
            return Err(format!("{} bytes of features for {n} images", data.len()));
        }
        let floats: Vec<f32> = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let (pool, rest) = floats.split_at(n * POOL);
        let (spatial, logits) = rest.split_at(n * SPATIAL);
        Ok(Features {
            header,
            pool: pool.to_vec(),
            spatial: spatial.to_vec(),
            logits: logits.to_vec(),
        })
    }

    /// Writes the file atomically (temporary, fsync, rename, folder fsync).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::output::write_atomic(path, &self.to_bytes())
    }

    /// Reads and checks a file; a damaged one is an error naming it.
    pub fn read(path: &Path) -> Result<Features> {
        Features::read_with_crc(path).map(|(f, _)| f)
    }

    /// [`Features::read`], and the CRC32 of the file's bytes (what a shard's record holds).
    pub fn read_with_crc(path: &Path) -> Result<(Features, u32)> {
        let bytes = std::fs::read(path).map_err(|e| CoreError::io(path, e))?;
        let f = Features::from_bytes(&bytes).map_err(|msg| {
            CoreError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
            )
        })?;
        Ok((f, crc32fast::hash(&bytes)))
    }

    /// Writes the file atomically; returns the CRC32 of its bytes.
    pub fn write_with_crc(&self, path: &Path) -> Result<u32> {
        let bytes = self.to_bytes();
        crate::output::write_atomic(path, &bytes)?;
        Ok(crc32fast::hash(&bytes))
    }
}

/// The file name of the features of images `first..first + count`.
pub fn file_name(first: u64, count: u64) -> String {
    format!("{first:010}-{count}.features")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Features {
        let f = |d: usize, k: f32| (0..n * d).map(|i| i as f32 * k).collect();
        Features {
            header: FeatureHeader {
                first: 40,
                crc32: (0..n as u32).collect(),
                inception: "ab".repeat(32),
            },
            pool: f(POOL, 0.5),
            spatial: f(SPATIAL, -1.0),
            logits: f(CLASSES, 1e-3),
        }
    }

    #[test]
    fn a_features_file_round_trips_and_catches_damage() {
        let feats = sample(3);
        feats.check_shape().unwrap();
        let mut bytes = feats.to_bytes();
        assert_eq!(Features::from_bytes(&bytes).unwrap(), feats);
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        let e = Features::from_bytes(&bytes).unwrap_err();
        assert!(e.contains("checksum"), "{e}");
        assert!(Features::from_bytes(b"hello").is_err());
        let short = feats.to_bytes();
        assert!(Features::from_bytes(&short[..short.len() - 9]).is_err());
        assert_eq!(file_name(40, 3), "0000000040-3.features");
    }
}
