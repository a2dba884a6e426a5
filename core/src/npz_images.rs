//! The images of an npz in the ADM evaluator's layout (`arr_0`: uint8 `N x H x W x 3`), read a
//! range at a time: a stored (uncompressed) `arr_0.npy`, as numpy's `savez` and fidshard write
//! it, is read by seeking to the range; a compressed one is streamed up to it.
use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// `arr_0` of an npz: its shape and where its data starts.
#[derive(Debug, Clone)]
pub struct NpzImages {
    path: PathBuf,
    pub count: u64,
    pub height: u32,
    pub width: u32,
    /// Bytes of the `.npy` header before the pixels.
    header_len: u64,
}

const ENTRY: &str = "arr_0.npy";

impl NpzImages {
    /// Reads `arr_0`'s header; refuses anything but uint8 `N x H x W x 3` in C order.
    pub fn open(path: &Path) -> Result<NpzImages> {
        let mut zip = archive(path)?;
        let mut entry = zip.by_name(ENTRY).with_context(|| {
            format!(
                "{}: no arr_0 (not an ADM-style npz of images)",
                path.display()
            )
        })?;
        let (shape, header_len) =
            npy_header(&mut entry).with_context(|| format!("{}: arr_0.npy", path.display()))?;
        let [n, h, w, c] = shape[..] else {
            bail!(
                "{}: arr_0 has shape {shape:?}; expected N x H x W x 3",
                path.display()
            );
        };
        if c != 3 || h == 0 || w == 0 || h > 4096 || w > 4096 {
            bail!(
                "{}: arr_0 has shape {shape:?}; expected N x H x W x 3 images",
                path.display()
            );
        }
        Ok(NpzImages {
            path: path.to_path_buf(),
            count: n,
            height: h as u32,
            width: w as u32,
            header_len,
        })
    }

    pub fn image_bytes(&self) -> usize {
        self.height as usize * self.width as usize * 3
    }

    /// The CRC32 of each image of `pixels` (what a features file records of its images).
    pub fn crc_per_image(&self, pixels: &[u8]) -> Vec<u32> {
        pixels
            .chunks_exact(self.image_bytes())
            .map(crc32fast::hash)
            .collect()
    }

    /// The pixels of images `a..b`, `(b - a) x H x W x 3` bytes.
    pub fn read_range(&self, a: u64, b: u64) -> Result<Vec<u8>> {
        if a > b || b > self.count {
            bail!("{}: images {a}..{b} of {}", self.path.display(), self.count);
        }
        let size = self.image_bytes() as u64;
        let mut buf = vec![0u8; ((b - a) * size) as usize];
        let mut zip = archive(&self.path)?;
        let skip = self.header_len + a * size;
        let read = match zip.by_name_seek(ENTRY) {
            Ok(mut f) => f
                .seek(SeekFrom::Start(skip))
                .and_then(|_| f.read_exact(&mut buf)),
            Err(_) => {
                let mut f = zip.by_name(ENTRY)?;
                std::io::copy(&mut (&mut f).take(skip), &mut std::io::sink())
                    .and_then(|_| f.read_exact(&mut buf))
            }
        };
        read.with_context(|| format!("{}: reading images {a}..{b}", self.path.display()))?;
        Ok(buf)
    }
}

fn archive(path: &Path) -> Result<zip::ZipArchive<File>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    zip::ZipArchive::new(f).with_context(|| format!("{}: not an npz (zip) file", path.display()))
}

/// The shape of a uint8 C-order `.npy` and the length of its header.
fn npy_header(r: &mut impl Read) -> Result<(Vec<u64>, u64)> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre)?;
    if &pre[..6] != b"\x93NUMPY" {
        bail!("not a .npy array");
    }
    let (len, fixed) = if pre[6] == 1 {
        let mut l = [0u8; 2];
        r.read_exact(&mut l)?;
        (u64::from(u16::from_le_bytes(l)), 10)
    } else {
        let mut l = [0u8; 4];
        r.read_exact(&mut l)?;
        (u64::from(u32::from_le_bytes(l)), 12)
    };
    let mut text = vec![0u8; len as usize];
    r.read_exact(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    if !text.contains("'descr': '|u1'") || !text.contains("'fortran_order': False") {
        bail!("expected uint8 in C order, the header says {}", text.trim());
    }
    let shape = text
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| anyhow!("no shape in the header {}", text.trim()))?;
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("shape {shape}: {e}"))?;
    Ok((shape, fixed + len))
}
