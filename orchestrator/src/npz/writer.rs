//! `NpzWriter`: streams images into `arr_0.npy` of a zip64 `.npz`, without compression, as
//! `np.savez` lays it out, under a temporary name that is renamed only once the file is complete,
//! fsynced and checked.
use super::{verify, AssembleError, IMAGES, LABELS};
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// Bytes of zip bookkeeping (local + central headers with zip64 extras, zip64 end records) plus
/// the two npy headers stay far below this; used for the free-space check only.
const ZIP_OVERHEAD: u64 = 64 * 1024;

/// The `.npy` header (magic, version, length, dict, padding) of a C-order array of `T` with this
/// shape. npyz writes it (format 1.0, padded to 64 bytes, numpy's rule) as soon as a writer with a
/// known shape begins; we keep only those bytes and copy the data ourselves, because npyz's
/// `push`/`extend` serialise element by element (one call per byte for `u8`), which would be the
/// bottleneck at 39 GB.
pub(crate) fn npy_header<T: npyz::AutoSerialize>(shape: &[u64]) -> io::Result<Vec<u8>> {
    use npyz::WriterBuilder;
    let mut buf = Vec::new();
    let writer = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut buf)
        .begin_nd()?;
    // Dropping the writer runs its `finish`, which only reports (and on drop ignores) that no
    // element was written; it writes nothing more.
    drop(writer);
    debug_assert_eq!(buf.len() % 64, 0);
    Ok(buf)
}

/// Exact size of the finished npz but for the zip bookkeeping, plus a margin for it.
pub(crate) fn estimated_size(n: u64, height: u32, width: u32) -> u64 {
    n * height as u64 * width as u64 * 3 + n * 8 + ZIP_OVERHEAD
}

/// The temporary file under the zip writer. Once `abandoned` is set (by the first I/O error, or
/// when the writer is dropped unfinished), writes and seeks only move a virtual position:
/// `ZipWriter`'s `Drop` always finalises the archive, and this lets it do so quietly, without
/// retrying a full disk for a file about to be removed and without printing "ZipWriter drop
/// failed" on stderr.
struct Sink {
    file: BufWriter<File>,
    abandoned: Arc<AtomicBool>,
    pos: u64,
    len: u64,
}

impl Sink {
    fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }
    fn fail<T>(&self, e: io::Error) -> io::Result<T> {
        self.abandoned.store(true, Ordering::Relaxed);
        Err(e)
    }
    fn moved_to(&mut self, pos: u64) -> u64 {
        self.pos = pos;
        self.len = self.len.max(pos);
        pos
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.is_abandoned() {
            self.moved_to(self.pos + buf.len() as u64);
            return Ok(buf.len());
        }
        match self.file.write(buf) {
            Ok(n) => {
                self.moved_to(self.pos + n as u64);
                Ok(n)
            }
            Err(e) => self.fail(e),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.is_abandoned() {
            return Ok(());
        }
        self.file.flush().or_else(|e| self.fail(e))
    }
}

impl Seek for Sink {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        if self.is_abandoned() {
            let pos = match to {
                SeekFrom::Start(p) => p,
                SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
                SeekFrom::End(d) => self.len.saturating_add_signed(d),
            };
            return Ok(self.moved_to(pos));
        }
        match self.file.seek(to) {
            Ok(p) => Ok(self.moved_to(p)),
            Err(e) => self.fail(e),
        }
    }
}

/// Writes `(N, H, W, 3)` uint8 images one at a time, then the `(N,)` int64 labels.
///
/// Dropping it before [`NpzWriter::finish`] succeeds removes the temporary file and leaves any
/// existing file at the final path untouched.
pub(crate) struct NpzWriter {
    out: PathBuf,
    tmp: PathBuf,
    zip: Option<ZipWriter<Sink>>,
    abandoned: Arc<AtomicBool>,
    n: u64,
    height: u32,
    width: u32,
    pushed: u64,
}

fn entry_options() -> SimpleFileOptions {
    // large_file: zip64 sizes and offsets from the start, since arr_0 passes 4 GiB at 50k x
    // 256^2 (and arr_1 then starts past 4 GiB). Python's zipfile reads zip64 either way.
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .large_file(true)
}

/// Refuses an npz target that exists and is not a regular file (a FIFO, a device, a directory,
/// or a symlink to one): it is not ours to replace, and reading it to verify it would block.
pub(crate) fn check_target(out: &Path) -> Result<(), AssembleError> {
    match std::fs::metadata(out) {
        Ok(m) => fidshard_core::output::ensure_regular(&m.file_type()).map_err(|e| {
            AssembleError::Invalid {
                path: out.to_path_buf(),
                message: e.to_string(),
            }
        }),
        Err(_) => Ok(()),
    }
}

impl NpzWriter {
    /// Creates `.{name}.tmp.{pid}` beside `out` and writes the `arr_0.npy` header.
    pub(crate) fn create(
        out: &Path,
        n: u64,
        height: u32,
        width: u32,
    ) -> Result<NpzWriter, AssembleError> {
        check_target(out)?;
        let tmp = fidshard_core::output::temp_name(out);
        let file = File::create(&tmp).map_err(|e| AssembleError::io("creating", &tmp, e))?;
        let abandoned = Arc::new(AtomicBool::new(false));
        let sink = Sink {
            file: BufWriter::with_capacity(1 << 20, file),
            abandoned: abandoned.clone(),
            pos: 0,
            len: 0,
        };
        let mut w = NpzWriter {
            out: out.to_path_buf(),
            tmp,
            zip: Some(ZipWriter::new(sink)),
            abandoned,
            n,
            height,
            width,
            pushed: 0,
        };
        let header =
            npy_header::<u8>(&[n, height as u64, width as u64, 3]).map_err(|e| w.write_error(e))?;
        let zip = w.zip.as_mut().expect("open until finish");
        let res = zip
            .start_file(IMAGES, entry_options())
            .map_err(io::Error::from)
            .and_then(|()| zip.write_all(&header));
        res.map_err(|e| w.write_error(e))?;
        Ok(w)
    }

    pub(crate) fn image_bytes(&self) -> usize {
        self.height as usize * self.width as usize * 3
    }

    /// Appends one `H x W x 3` image (row-major RGB bytes).
    pub(crate) fn push_image(&mut self, pixels: &[u8]) -> Result<(), AssembleError> {
        fidshard_core::faults::maybe_slow_assembly();
        if pixels.len() != self.image_bytes() || self.pushed >= self.n {
            return Err(AssembleError::Input(format!(
                "image {} of {} has {} bytes, expected {} ({}x{}x3)",
                self.pushed,
                self.n,
                pixels.len(),
                self.image_bytes(),
                self.height,
                self.width
            )));
        }
        let zip = self.zip.as_mut().expect("open until finish");
        zip.write_all(pixels).map_err(|e| self.write_error(e))?;
        self.pushed += 1;
        Ok(())
    }

    /// Writes `arr_1.npy`, closes the zip, fsyncs, checks the headers and entry sizes of the
    /// result, renames it to its final name and fsyncs the folder. Returns the file's size.
    pub(crate) fn finish(mut self, labels: &[i64]) -> Result<u64, AssembleError> {
        if self.pushed != self.n || labels.len() as u64 != self.n {
            return Err(AssembleError::Input(format!(
                "{}: {} images and {} labels for an array of {}",
                self.out.display(),
                self.pushed,
                labels.len(),
                self.n
            )));
        }
        let header = npy_header::<i64>(&[self.n]).map_err(|e| self.write_error(e))?;
        let mut data = Vec::with_capacity(header.len() + labels.len() * 8);
        data.extend_from_slice(&header);
        data.extend(labels.iter().flat_map(|l| l.to_le_bytes()));
        let zip = self.zip.as_mut().expect("open until finish");
        let res = zip
            .start_file(LABELS, entry_options())
            .map_err(io::Error::from)
            .and_then(|()| zip.write_all(&data));
        let zip = self.zip.take().expect("open until finish");
        // The first failing write marks the sink abandoned, so that dropping the zip writer on
        // the way out (here or in `Drop`) does not write to the file again.
        let res = res
            .and_then(|()| zip.finish().map_err(io::Error::from))
            .and_then(|sink| sink.file.into_inner().map_err(|e| e.into_error()))
            .and_then(|file| file.sync_all());
        if let Err(e) = res {
            return Err(self.write_error(e));
        }
        let got = verify::check(&self.tmp, self.n, self.height, self.width)?;
        if got != labels {
            return Err(AssembleError::Invalid {
                path: self.tmp.clone(),
                message: "arr_1 reads back different labels than were written".into(),
            });
        }
        std::fs::rename(&self.tmp, &self.out)
            .map_err(|e| AssembleError::io("renaming the temporary file to", &self.out, e))?;
        // From here on the file is final: Drop must not remove anything.
        self.tmp = PathBuf::new();
        let dir = match self.out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // Makes the rename itself durable.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| AssembleError::io("syncing the folder of", &self.out, e))?;
        std::fs::metadata(&self.out)
            .map(|m| m.len())
            .map_err(|e| AssembleError::io("reading", &self.out, e))
    }

    /// An error while writing: names the final file and its temporary.
    fn write_error(&self, e: io::Error) -> AssembleError {
        AssembleError::Io {
            action: "writing",
            path: self.out.clone(),
            detail: format!(" (temporary file {})", self.tmp.display()),
            error: e,
        }
    }
}

impl Drop for NpzWriter {
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Relaxed);
        // Closes the file (the zip finalises into the void, see `Sink`) before removing it.
        self.zip = None;
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
