//! Image files: PNG encoding and the write-to-temporary-then-rename rule, so that no partial
//! file ever carries a final name.
use crate::error::{CoreError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// File name of sample `index` in a job of `num_samples`: zero-padded to at least 6 digits,
/// wider when the job needs it, so that names sort in index order.
pub fn png_name(index: u64, num_samples: u64) -> String {
    let width = num_samples.saturating_sub(1).to_string().len().max(6);
    format!("{index:0width$}.png")
}

/// Encodes `H x W x 3` RGB pixels as PNG bytes.
pub fn encode_png(pixels: &[u8], side: u32) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(pixels.len() / 2);
    let enc = image::codecs::png::PngEncoder::new_with_quality(
        &mut buf,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Adaptive,
    );
    image::ImageEncoder::write_image(enc, pixels, side, side, image::ExtendedColorType::Rgb8)
        .map_err(|e| CoreError::Png(e.to_string()))?;
    Ok(buf)
}

/// Writes `bytes` to `path` so that no reader and no crash ever sees a partial file: a
/// temporary file beside it (`.{name}.tmp.{pid}.{n}`, unique per process and per call, so two
/// threads never share one), fsync, rename over `path`, then fsync of the folder so that the
/// rename itself survives a power loss. The one atomic writer of both binaries; the temporary
/// name matches what `remove_stale_temps` cleans up after a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_renamed(path, bytes)?;
    sync_parent(path).map_err(|e| CoreError::io(path, e))
}

/// [`write_atomic`] without the folder's fsync, for many files into one folder (a shard's
/// PNGs): the caller syncs the folder once ([`sync_parent`]) before it reports them written.
pub fn write_renamed(path: &Path, bytes: &[u8]) -> Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut tmp = temp_name(path).into_os_string();
    tmp.push(format!(".{}", SEQ.fetch_add(1, Ordering::Relaxed)));
    let tmp = PathBuf::from(tmp);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CoreError::io(path, e)
    })
}

/// fsyncs the folder that holds `path`, which makes a rename into it durable. A file system
/// that cannot sync a folder (EINVAL) offers nothing better, so that is no error.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        res => res,
    }
}

/// The temporary name of `path` for this process (`.{name}.tmp.{pid}` beside it): the npz
/// writer's, which one process writes once, so that the name can be found again to clean up.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Reads a file that must be a regular file (a sample PNG, an npz): a FIFO, a device or a
/// symlink to one is refused with an `InvalidData` error saying what it is, instead of blocking
/// on it (the open is non-blocking, the type is checked on the open file).
pub fn read_regular(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    buf.clear();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    ensure_regular(&f.metadata()?.file_type())?;
    f.read_to_end(buf)?;
    Ok(())
}

/// An `InvalidData` error unless `t` is a regular file's type.
pub fn ensure_regular(t: &std::fs::FileType) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let what = if t.is_file() {
        return Ok(());
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{what}, not a regular file; remove it"),
    ))
}

/// Whether `bytes` decode completely to a `side x side` 8-bit RGB PNG (what the npz assembly
/// needs): the check of a sample file written earlier, by the coordinator rebuilding its
/// records and by a worker reusing an interrupted shard's files. A decoder panic on a hostile
/// file counts as bad. The error says what is wrong, without the path.
pub fn check_png(bytes: &[u8], side: u32) -> std::result::Result<(), String> {
    decode_png(bytes, side).map(drop)
}

/// The `side x side x 3` pixels of a PNG written by [`encode_png`] (or refused as
/// [`check_png`] says).
pub fn decode_png(bytes: &[u8], side: u32) -> std::result::Result<Vec<u8>, String> {
    use image::ImageDecoder;
    let decoded = std::panic::catch_unwind(|| -> std::result::Result<Vec<u8>, String> {
        let decoder = image::codecs::png::PngDecoder::new(std::io::Cursor::new(bytes))
            .map_err(|e| format!("not a readable PNG: {e}"))?;
        let (w, h) = decoder.dimensions();
        let color = decoder.color_type();
        if (w, h) != (side, side) || color != image::ColorType::Rgb8 {
            return Err(format!(
                "image is {w}x{h} {color:?}, expected {side}x{side} Rgb8"
            ));
        }
        let mut pixels = vec![0u8; decoder.total_bytes() as usize];
        decoder
            .read_image(&mut pixels)
            .map_err(|e| format!("not a readable PNG: {e}"))?;
        Ok(pixels)
    });
    decoded.unwrap_or_else(|_| Err("the PNG decoder panicked".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("status.json")]);
    }

    #[test]
    fn threads_writing_one_file_never_share_a_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(path, &[i; 64]).unwrap();
                    }
                });
            }
        });
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 64);
        assert!(
            bytes.iter().all(|&b| b == bytes[0]),
            "a torn file: {bytes:?}"
        );
    }

    #[test]
    fn a_failed_write_names_the_file_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("x.json");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert!(
            err.to_string().starts_with(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
