//! Checks of a written npz. [`check`] is the cheap one: the zip directory, both npy headers and
//! the entry sizes, and the labels (N x 8 bytes, CRC-checked by the zip reader); it never reads
//! the images, so it costs milliseconds at 39 GB. [`check_full`] also streams the images entry
//! through the zip reader, which checks its CRC-32 at the end (disk speed: about 1 s per GB),
//! and compares the labels with the recorded ones: what "complete" means for `run` and
//! `status --verify`.
use super::writer::{IMAGES, LABELS};
use super::AssembleError;
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
            return Err(invalid(format!(
                "{name}: header {info:?} and {size} bytes; expected descr {descr}, C order, shape \
                 {shape:?}, data at a multiple of 64 and {expected_size} bytes"
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
        [_, h, w, 3] => Ok((h as u32, w as u32)),
        _ => Err(invalid(format!("{IMAGES}: shape {:?}", info.shape))),
    }
}
