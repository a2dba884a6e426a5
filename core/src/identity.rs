//! The identity of a weights file: its name, size and CRC32 of its whole content, never its
//! path or mtime (a checkpoint copied to another cluster keeps its identity; one retrained in
//! place under the same name does not). The coordinator records it in the job fingerprint; each
//! worker checks, before and after loading, that the files it loads still have it (a checkpoint
//! replaced during a run must not mix two models into one npz).
use crate::error::CoreError;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// Read size for hashing: large enough that a 2.7 GB checkpoint takes ~330 reads.
const CHUNK: usize = 8 << 20;

/// `name.pt, 2700000000 bytes, crc32 1a2b3c4d`.
pub fn file_identity(path: &Path) -> Result<String, CoreError> {
    let (size, crc) = hash_file(path).map_err(|e| CoreError::io(path, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(format!("{name}, {size} bytes, crc32 {crc:08x}"))
}

/// Size and CRC32 of the whole file. crc32fast runs at many GB/s (SIMD), so reading dominates.
fn hash_file(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hasher.finalize()))
}

/// The checkpoint file's identity; a diffusers DiT's weights and its config.json (the
/// architecture is read from it), as the VAE folder's.
fn checkpoint_identity(checkpoint: &Path) -> Result<String, CoreError> {
    match crate::diffusers_dit::find(checkpoint)? {
        Some(d) => Ok(format!(
            "{}; config.json {}",
            file_identity(&d.weights)?,
            file_identity(&d.config)?
        )),
        None => file_identity(checkpoint),
    }
}

/// The identities of a job's weights, as the fingerprint records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsIdentity {
    /// `file_identity` of the DiT checkpoint.
    pub checkpoint: String,
    /// `file_identity` of the VAE's weights file, `; config.json `, and of its config.json (of
    /// the file alone for a TorchScript decoder).
    pub vae: String,
}

impl WeightsIdentity {
    /// Hashes the checkpoint and the VAE folder's files.
    /// A VAE given as one file (a TorchScript decoder) is identified by that file alone.
    pub fn compute(checkpoint: &Path, vae_folder: &Path) -> Result<WeightsIdentity, CoreError> {
        let checkpoint = checkpoint_identity(checkpoint)?;
        if vae_folder.is_file() {
            return Ok(WeightsIdentity {
                checkpoint,
                vae: file_identity(vae_folder)?,
            });
        }
        let vae_config = vae_folder.join(crate::vae_config::CONFIG_FILE);
        let vae_weights = crate::vae_config::find_weights(vae_folder)?;
        Ok(WeightsIdentity {
            checkpoint,
            vae: format!(
                "{}; config.json {}",
                file_identity(&vae_weights)?,
                file_identity(&vae_config)?
            ),
        })
    }

    /// What differs from `expected`, naming the file: `None` when nothing does.
    pub fn mismatch(
        &self,
        expected: &WeightsIdentity,
        checkpoint: &Path,
        vae: &Path,
    ) -> Option<String> {
        if self.checkpoint != expected.checkpoint {
            return Some(format!(
                "{}: the checkpoint changed during the run (the job recorded `{}`, the file is now `{}`); every shard of a job must come from one model: restore the file, or start over with --restart",
                checkpoint.display(),
                expected.checkpoint,
                self.checkpoint
            ));
        }
        if self.vae != expected.vae {
            return Some(format!(
                "{}: the VAE changed during the run (the job recorded `{}`, the folder now has `{}`); restore it, or start over with --restart",
                vae.display(),
                expected.vae,
                self.vae
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_content_and_name_not_path() {
        let dir = tempfile::tempdir().unwrap();
        // Larger than one chunk, so the chunked loop is exercised.
        let data: Vec<u8> = (0..CHUNK + 12_345).map(|i| (i * 31 % 251) as u8).collect();
        let a = dir.path().join("a").join("model.pt");
        let b = dir.path().join("b").join("model.pt");
        for p in [&a, &b] {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, &data).unwrap();
        }
        let id = file_identity(&a).unwrap();
        assert_eq!(
            id,
            file_identity(&b).unwrap(),
            "a copy elsewhere is the same"
        );
        assert_eq!(
            id,
            format!(
                "model.pt, {} bytes, crc32 {:08x}",
                data.len(),
                crc32fast::hash(&data)
            )
        );
        let mut changed = data.clone();
        *changed.last_mut().unwrap() ^= 1;
        std::fs::write(&b, &changed).unwrap();
        assert_ne!(
            id,
            file_identity(&b).unwrap(),
            "one flipped bit is a new checkpoint"
        );
    }

    #[test]
    fn a_vae_file_is_identified_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (ckpt, vae) = (dir.path().join("m.ts"), dir.path().join("decoder.ts"));
        std::fs::write(&ckpt, b"model").unwrap();
        std::fs::write(&vae, b"decoder").unwrap();
        let id = WeightsIdentity::compute(&ckpt, &vae).unwrap();
        assert_eq!(id.vae, file_identity(&vae).unwrap());
        assert_eq!(id.checkpoint, file_identity(&ckpt).unwrap());
    }
}
