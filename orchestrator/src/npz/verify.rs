//! Checks of a written npz. [`check`] is the cheap one: the zip directory, both npy headers and
//! the entry sizes, and the labels (N x 8 bytes, CRC-checked by the zip reader); it never reads
//! the images, so it costs milliseconds at 39 GB. [`check_against_pngs`] is what "complete"
//! means for `run` and `status --verify`: every PNG against its recorded CRC-32, decoded and
//! compared with its image in the npz, the labels against the records, and the images entry
//! read to its end (the zip reader checks its CRC-32 there). [`entry_crcs`] reads the CRC-32s
//! the zip directory records, for the record of a verification (outdir/verified.rs).
use super::{AssembleError, IMAGES, LABELS};
use std::io::{self, Read};
use std::path::Path;
use zip::CompressionMethod;

/// What an npy header says, plus where its data starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NpyInfo {
    pub version: (u8, u8),
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<u64>,
    /// Offset of the first data byte from the start of the `.npy`.
    pub data_offset: u64,
}

/// Reads the npy header at the start of `r`, leaving `r` at the first data byte.
pub(crate) fn read_npy_header(mut r: impl Read) -> io::Result<NpyInfo> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    // Everything read so far: npyz parses the dict (a Python literal) from the whole prefix.
    let mut head = vec![0u8; 10];
    r.read_exact(&mut head)?;
    if &head[..6] != b"\x93NUMPY" {
        return Err(bad("no npy magic string".into()));
    }
    let version = (head[6], head[7]);
    let len = match version {
        (1, 0) => u16::from_le_bytes([head[8], head[9]]) as usize,
        (2, 0) => {
            head.resize(12, 0);
            r.read_exact(&mut head[10..])?;
            u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize
        }
        v => {
            return Err(bad(format!(
                "npy format version {v:?}, expected (1, 0) or (2, 0)"
            )))
        }
    };
    let prefix = head.len();
    head.resize(prefix + len, 0);
    r.read_exact(&mut head[prefix..])?;
    let header = npyz::NpyHeader::from_reader(&head[..])?;
    Ok(NpyInfo {
        version,
        descr: header.dtype().descr().trim_matches('\'').to_string(),
        fortran_order: header.order() == npyz::Order::Fortran,
        shape: header.shape().to_vec(),
        data_offset: (prefix + len) as u64,
    })
}

/// Checks that `path` is the npz of `n` images of `height x width x 3` uint8 and `n` int64
/// labels, laid out as `np.savez(path, images, labels)` does; returns the labels.
pub(crate) fn check(
    path: &Path,
    n: u64,
    height: u32,
    width: u32,
) -> Result<Vec<i64>, AssembleError> {
    let invalid = |message: String| AssembleError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let mut zip = open_zip(path)?;
    let names: Vec<&str> = zip.file_names().collect();
    if zip.len() != 2
        || zip.index_for_name(IMAGES).is_none()
        || zip.index_for_name(LABELS).is_none()
    {
        return Err(invalid(format!(
            "entries {names:?}, expected [\"{IMAGES}\", \"{LABELS}\"]"
        )));
    }
    let image_shape = vec![n, height as u64, width as u64, 3];
    let mut labels = Vec::new();
    for (name, descr, shape, item) in [
        (IMAGES, "|u1", image_shape, 1u64),
        (LABELS, "<i8", vec![n], 8),
    ] {
        let mut entry = zip
            .by_name(name)
            .map_err(|e| invalid(format!("{name}: {e}")))?;
        if entry.compression() != CompressionMethod::Stored {
            return Err(invalid(format!(
                "{name} is compressed ({:?})",
                entry.compression()
            )));
        }
        let size = entry.size();
        let info = read_npy_header(&mut entry).map_err(|e| invalid(format!("{name}: {e}")))?;
        let expected_size = info.data_offset + shape.iter().product::<u64>() * item;
        if info.descr != descr
            || info.fortran_order
            || info.shape != shape
            || info.data_offset % 64 != 0
            || size != expected_size
        {
            let order = if info.fortran_order { "Fortran" } else { "C" };
            return Err(invalid(format!(
                "{name}: descr {}, {order} order, shape {}, data at byte {}, {size} bytes; \
                 expected descr {descr}, C order, shape {}, data at a multiple of 64 and \
                 {expected_size} bytes",
                info.descr,
                dims(&info.shape),
                info.data_offset,
                dims(&shape)
            )));
        }
        if name == LABELS {
            let mut raw = Vec::with_capacity(n as usize * 8);
            entry
                .read_to_end(&mut raw)
                .map_err(|e| invalid(format!("{name}: {e}")))?;
            labels = raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
        }
    }
    Ok(labels)
}

/// The npz at `path` opened as a zip, or the error naming it.
fn open_zip(path: &Path) -> Result<zip::ZipArchive<io::BufReader<std::fs::File>>, AssembleError> {
    let file = std::fs::File::open(path).map_err(|e| AssembleError::io("opening", path, e))?;
    zip::ZipArchive::new(io::BufReader::new(file)).map_err(|e| AssembleError::Invalid {
        path: path.to_path_buf(),
        message: format!("not a readable zip: {e}"),
    })
}

/// [`check`], then the images entry read in full (the zip reader verifies its CRC-32 at the end
/// of the entry) and the labels compared with `expected_labels` (the state's records).
#[cfg(test)]
pub(crate) fn check_full(
    path: &Path,
    n: u64,
    height: u32,
    width: u32,
    expected_labels: &[i64],
) -> Result<(), AssembleError> {
    let labels = check(path, n, height, width)?;
    let invalid = |message: String| AssembleError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    if labels != expected_labels {
        let first = labels
            .iter()
            .zip(expected_labels)
            .position(|(a, b)| a != b)
            .unwrap_or(labels.len().min(expected_labels.len()));
        return Err(invalid(format!(
            "{LABELS}: labels differ from the recorded ones (first at index {first})"
        )));
    }
    let mut zip = open_zip(path)?;
    let mut entry = zip
        .by_name(IMAGES)
        .map_err(|e| invalid(format!("{IMAGES}: {e}")))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(invalid(format!("{IMAGES}: {e}"))),
        }
    }
    Ok(())
}

/// The `(height, width)` that the images entry's npy header declares.
pub(crate) fn image_dims(path: &Path) -> Result<(u32, u32), AssembleError> {
    image_shape(path).map(|(_, h, w)| (h, w))
}

/// `arr_0`'s number of images, height and width (`N x H x W x 3`).
pub(crate) fn image_shape(path: &Path) -> Result<(u64, u32, u32), AssembleError> {
    let invalid = |message: String| AssembleError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let mut zip = open_zip(path)?;
    let mut entry = zip
        .by_name(IMAGES)
        .map_err(|e| invalid(format!("{IMAGES}: {e}")))?;
    let info = read_npy_header(&mut entry).map_err(|e| invalid(format!("{IMAGES}: {e}")))?;
    match info.shape[..] {
        [n, h, w, 3] => Ok((n, h as u32, w as u32)),
        _ => Err(invalid(format!(
            "{IMAGES}: shape {:?}, not N x H x W x 3",
            info.shape
        ))),
    }
}

/// What [`check_against_pngs`] found: the PNGs that are missing, unreadable or fail their
/// recorded CRC-32 (index and why, naming the file), and what is wrong with the npz, if
/// anything (naming the entry and the first index that differs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Findings {
    pub bad_pngs: Vec<(u64, String)>,
    pub npz: Option<String>,
}

impl Findings {
    pub(crate) fn is_clean(&self) -> bool {
        self.bad_pngs.is_empty() && self.npz.is_none()
    }
}

/// The full check of a complete job: every PNG in `samples_dir` read, its bytes checked against
/// the recorded CRC-32 (`crc[i]`) and decoded, and compared pixel for pixel with image `i` of
/// the npz; the npz's labels compared with the recorded ones, its structure checked, and its
/// images entry read to the end (the zip reader checks the entry's CRC-32 there). The chain
/// record -> PNG bytes -> pixels -> npz bytes holds end to end, so an npz of another job, or
/// one assembled from PNGs that were replaced since, is found even when it is internally
/// consistent. Errors are I/O errors opening the npz only; damage is in the [`Findings`].
pub(crate) fn check_against_pngs(
    path: &Path,
    samples_dir: &Path,
    side: u32,
    labels: &[i64],
    crc: &[u32],
) -> Findings {
    let n = labels.len() as u64;
    let mut found = Findings::default();
    let mut archive = match check(path, n, side, side) {
        Ok(got) if got != labels => {
            let first = got
                .iter()
                .zip(labels)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            found.npz = Some(format!(
                "{LABELS}: labels differ from the recorded ones (first at index {first})"
            ));
            None
        }
        Ok(_) => open_zip(path)
            .map_err(|e| found.npz = Some(e.to_string()))
            .ok(),
        Err(e) => {
            found.npz = Some(e.to_string());
            None
        }
    };
    // The images entry, positioned at its first pixel.
    let mut images = archive.as_mut().and_then(|zip| {
        let opened = zip.by_name(IMAGES).map_err(|e| e.to_string());
        let mut entry = opened
            .map_err(|e| found.npz = Some(format!("{IMAGES}: {e}")))
            .ok()?;
        read_npy_header(&mut entry)
            .map_err(|e| found.npz = Some(format!("{IMAGES}: {e}")))
            .ok()?;
        Some(entry)
    });
    let frame = side as usize * side as usize * 3;
    let mut in_npz = vec![0u8; frame];
    let name = |i: u64| samples_dir.join(fidshard_core::output::png_name(i, n));
    super::source::ordered_load(
        n,
        super::default_threads(),
        2 * super::default_threads() as u64 + 2,
        |i, buf| super::source::load_png(&name(i), side, Some(crc[i as usize]), buf),
        |i, loaded| {
            // Every frame is read, so that the npz stays in step with the index.
            let read = images
                .as_mut()
                .map(|r| r.read_exact(&mut in_npz).map_err(|e| e.to_string()));
            if let Some(Err(e)) = read {
                found.npz = Some(format!("{IMAGES}: reading image {i}: {e}"));
                images = None;
            }
            match loaded {
                Ok(pixels) if images.is_some() && pixels != in_npz && found.npz.is_none() => {
                    found.npz = Some(format!(
                        "{IMAGES}: image {i} differs from {} (the first such image)",
                        name(i).display()
                    ));
                }
                Ok(_) => {}
                Err(super::SampleError::Missing) => found
                    .bad_pngs
                    .push((i, format!("{}: missing", name(i).display()))),
                Err(super::SampleError::Bad(why)) => found.bad_pngs.push((i, why)),
                Err(super::SampleError::Panicked) => found.bad_pngs.push((
                    i,
                    format!("{}: the PNG decoder panicked", name(i).display()),
                )),
            }
            std::ops::ControlFlow::Continue(())
        },
    );
    if let Some(mut r) = images {
        // The zip reader checks the entry's CRC-32 when it reaches the end.
        let mut rest = Vec::new();
        match r.read_to_end(&mut rest) {
            Err(e) => found.npz = Some(format!("{IMAGES}: {e}")),
            Ok(extra) if extra > 0 => {
                found.npz = Some(format!("{IMAGES}: {extra} bytes after the last image"))
            }
            Ok(_) => {}
        }
    }
    found
}

/// The CRC-32 of the images and the labels entries as the zip's central directory records them
/// (reads the directory only, milliseconds at any size).
pub(crate) fn entry_crcs(path: &Path) -> Result<(u32, u32), AssembleError> {
    Ok((entry_crc(path, IMAGES)?, entry_crc(path, LABELS)?))
}

/// The CRC-32 of entry `name` (`arr_0.npy`: [`images_crc`]) from the zip's central directory.
fn entry_crc(path: &Path, name: &str) -> Result<u32, AssembleError> {
    let mut zip = open_zip(path)?;
    let mut crc_of = |name: &str| {
        zip.by_name(name)
            .map(|e| e.crc32())
            .map_err(|e| AssembleError::Invalid {
                path: path.to_path_buf(),
                message: format!("{name}: {e}"),
            })
    };
    crc_of(name)
}

/// The CRC-32 of an npz's images (`arr_0`), labels or not (any tool's npz).
pub(crate) fn images_crc(path: &Path) -> Result<u32, AssembleError> {
    entry_crc(path, IMAGES)
}

/// A shape as `50000 x 256 x 256 x 3`.
fn dims(shape: &[u64]) -> String {
    let d: Vec<String> = shape.iter().map(u64::to_string).collect();
    d.join(" x ")
}
