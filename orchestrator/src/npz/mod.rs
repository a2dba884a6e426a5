//! `samples.npz`: the finished job's PNGs in the layout of guided-diffusion's sample script and
//! the ADM evaluator (`np.savez(path, images, labels)`): a zip, stored without compression,
//! holding `arr_0.npy` (uint8, `(N, H, W, 3)`, C order) and `arr_1.npy` (int64 labels, `(N,)`).
//!
//! At 50k x 512^2 the images are 39 GB, so nothing holds them all: each PNG is read once
//! (CRC-checked against the coordinator's record when given, then decoded from the same bytes)
//! and its pixels are copied straight into the zip entry, in index order, by a few decoder
//! threads with a bounded look-ahead (`source`). The file is written as `.samples.npz.tmp.<pid>`,
//! fsynced, checked (`verify`) and only then renamed, so a `samples.npz` is always complete and
//! an error leaves the previous one untouched. Any missing or bad sample is reported with all
//! such indices at once, so that the coordinator redoes their shards in one go.
mod progress;
mod source;
#[cfg(test)]
mod tests;
mod verify;
mod writer;
pub(crate) use writer::check_target;

pub(crate) use source::SampleError;
pub(crate) use verify::{check_against_pngs, entry_crcs, images_crc};
pub(crate) use writer::NpzWriter;

use fidshard_core::output::png_name;
use progress::Progress;
use source::{load_png, ordered_load};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The zip entries of `samples.npz`, named as `np.savez` names its positional arrays: the
/// images, then the labels. The writer writes them and the verifier looks for them.
pub(crate) const IMAGES: &str = "arr_0.npy";
pub(crate) const LABELS: &str = "arr_1.npy";

/// What to assemble.
pub(crate) struct AssembleInput<'a> {
    /// Folder of `{index:06}.png` (see `fidshard_core::output::png_name`).
    pub samples_dir: &'a Path,
    pub num_samples: u64,
    /// Every image must be `image_size x image_size` 8-bit RGB.
    pub image_size: u32,
    /// One class label per sample (`num_samples` of them), written as `arr_1`.
    pub labels: &'a [i64],
    /// CRC32 (crc32fast) of each PNG file's bytes as recorded when it was written; a file whose
    /// bytes no longer match is reported as corrupt.
    pub expected_crc: Option<&'a [u32]>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AssembleReport {
    /// Size of the written npz.
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AssembleError {
    /// Samples without a PNG: the job is not finished. Nothing was written.
    #[error("{} of {num_samples} samples have no PNG in {}: {}; their shards must be redone", .indices.len(), .dir.display(), fmt_files(.indices, *.num_samples))]
    Missing {
        dir: PathBuf,
        num_samples: u64,
        indices: Vec<u64>,
    },
    /// PNGs that cannot be used (unreadable, truncated, wrong size, CRC mismatch). Nothing was
    /// written. `first` is the first file's problem, naming it.
    #[error("{} of {num_samples} sample PNGs in {} are unreadable or corrupt: {}; their shards must be redone; first: {first}", .indices.len(), .dir.display(), fmt_files(.indices, *.num_samples))]
    Corrupt {
        dir: PathBuf,
        num_samples: u64,
        indices: Vec<u64>,
        first: String,
    },
    /// An I/O error (disk full, permissions) on `path`; the message is one line naming it.
    #[error("{action} {}{detail}: {error}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        /// Extra context, e.g. the temporary file's name.
        detail: String,
        error: std::io::Error,
    },
    /// Checked before writing anything: the npz would not fit.
    #[error("not enough disk space for {}: it needs {needed} bytes, {available} are free", .path.display())]
    NoSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    /// The written (or given) file is not the expected npz.
    #[error("{}: not a valid samples npz: {message}", .path.display())]
    Invalid { path: PathBuf, message: String },
    /// Inconsistent arguments (a bug in the caller).
    #[error("{0}")]
    Input(String),
}

impl AssembleError {
    pub(crate) fn io(action: &'static str, path: &Path, error: std::io::Error) -> Self {
        AssembleError::Io {
            action,
            path: path.to_path_buf(),
            detail: String::new(),
            error,
        }
    }

    /// The sample indices whose shards must be redone, for `Missing` and `Corrupt`.
    pub(crate) fn bad_indices(&self) -> Option<&[u64]> {
        match self {
            AssembleError::Missing { indices, .. } | AssembleError::Corrupt { indices, .. } => {
                Some(indices)
            }
            _ => None,
        }
    }
}

/// `000012.png, 000047.png and 3 more`.
fn fmt_files(indices: &[u64], num_samples: u64) -> String {
    const SHOWN: usize = 8;
    let mut s = indices
        .iter()
        .take(SHOWN)
        .map(|&i| png_name(i, num_samples))
        .collect::<Vec<_>>()
        .join(", ");
    if indices.len() > SHOWN {
        s.push_str(&format!(" and {} more", indices.len() - SHOWN));
    }
    s
}

/// Decoder threads: the machine's cores, at most 8 (beyond that the copy into the zip, about
/// 1-2 GB/s, is the limit anyway).
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}

/// Writes `out` (normally `OUT/samples.npz`) from the PNGs of `input`. See the module docs.
pub(crate) fn assemble(input: &AssembleInput, out: &Path) -> Result<AssembleReport, AssembleError> {
    assemble_with_threads(input, out, default_threads())
}

pub(crate) fn assemble_with_threads(
    input: &AssembleInput,
    out: &Path,
    threads: usize,
) -> Result<AssembleReport, AssembleError> {
    let started = Instant::now();
    let n = input.num_samples;
    let side = input.image_size;
    if side == 0
        || input.labels.len() as u64 != n
        || input.expected_crc.is_some_and(|c| c.len() as u64 != n)
    {
        return Err(AssembleError::Input(format!(
            "assemble: {n} samples of size {side} with {} labels and {} CRCs",
            input.labels.len(),
            input
                .expected_crc
                .map_or("no".to_string(), |c| c.len().to_string())
        )));
    }
    let path_of = |i: u64| input.samples_dir.join(png_name(i, n));
    // Missing files mean an unfinished job: say so in a second, before decoding anything.
    let absent = |i: &u64| {
        std::fs::metadata(path_of(*i)).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    };
    let missing: Vec<u64> = (0..n).filter(absent).collect();
    if !missing.is_empty() {
        return Err(missing_error(input, missing));
    }
    check_free_space(out, writer::estimated_size(n, side, side))?;
    tracing::info!(
        "assembling {n} samples of {side}x{side} from {} into {} ({threads} decoder threads)",
        input.samples_dir.display(),
        out.display()
    );

    let mut npz = Some(NpzWriter::create(out, n, side, side)?);
    let mut missing = Vec::new();
    let mut corrupt: Vec<u64> = Vec::new();
    let mut first = String::new();
    let mut write_error = None;
    let mut progress = Progress::new(n, started);
    ordered_load(
        n,
        threads,
        2 * threads as u64 + 2,
        |i, buf| {
            load_png(
                &path_of(i),
                side,
                input.expected_crc.map(|c| c[i as usize]),
                buf,
            )
        },
        |i, loaded| {
            match loaded {
                Ok(pixels) => {
                    if let Some(w) = npz.as_mut() {
                        if let Err(e) = w.push_image(&pixels) {
                            write_error = Some(e);
                            return ControlFlow::Break(());
                        }
                    }
                }
                // After the first bad sample the npz is dropped (removing its temporary file)
                // but the others are still checked, to report every bad index at once.
                Err(e) => {
                    npz = None;
                    match e {
                        SampleError::Missing => missing.push(i),
                        SampleError::Bad(msg) => {
                            if corrupt.is_empty() {
                                first = msg;
                            }
                            corrupt.push(i);
                        }
                        SampleError::Panicked => {
                            if corrupt.is_empty() {
                                first =
                                    format!("{}: the PNG decoder panicked", path_of(i).display());
                            }
                            corrupt.push(i);
                        }
                    }
                }
            }
            progress.after(i + 1);
            ControlFlow::Continue(())
        },
    );
    if let Some(e) = write_error {
        return Err(e);
    }
    if !missing.is_empty() {
        // Files that vanished during the pass (the PNGs were checked just before).
        return Err(missing_error(input, missing));
    }
    if !corrupt.is_empty() {
        return Err(AssembleError::Corrupt {
            dir: input.samples_dir.to_path_buf(),
            num_samples: n,
            indices: corrupt,
            first,
        });
    }
    let bytes = npz
        .take()
        .expect("kept while no sample failed")
        .finish(input.labels)?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!("wrote {} ({bytes} bytes) in {seconds:.1} s", out.display());
    Ok(AssembleReport { bytes, seconds })
}

fn missing_error(input: &AssembleInput, indices: Vec<u64>) -> AssembleError {
    AssembleError::Missing {
        dir: input.samples_dir.to_path_buf(),
        num_samples: input.num_samples,
        indices,
    }
}

/// Refuses to start a write that cannot fit, rather than failing after minutes of work. An
/// existing `out` stays until the rename, so its space does not count as free. Filesystems that
/// report no sizes (some FUSE mounts) are not checked.
fn check_free_space(out: &Path, needed: u64) -> Result<(), AssembleError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let stat = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| AssembleError::io("checking free space for", out, e.into()))?;
    if stat.blocks() == 0 {
        return Ok(());
    }
    let available = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if available < needed {
        return Err(AssembleError::NoSpace {
            path: out.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

/// Checks that `path` holds `n` images of `image_size^2 x 3` uint8 and `n` int64 labels in
/// `np.savez` layout: zip entries, npy headers (format 1.0/2.0, descr, C order, shape, 64-byte
/// aligned data) and entry sizes. Reads the labels, never the images: milliseconds at 39 GB.
pub(crate) fn verify_npz(path: &Path, n: u64, image_size: u32) -> Result<(), AssembleError> {
    verify::check(path, n, image_size, image_size).map(drop)
}

/// The image side of an npz written by [`assemble`] (from its npy header).
/// How many images an npz's `arr_0` holds (read from its header).
pub(crate) fn npz_image_count(path: &Path) -> Result<u64, AssembleError> {
    verify::image_shape(path).map(|(n, _, _)| n)
}

pub(crate) fn npz_image_side(path: &Path) -> Result<u32, AssembleError> {
    verify::image_dims(path).map(|(h, _)| h)
}

/// [`verify_npz`] plus every byte of the images checked against the zip's CRC-32 and the
/// labels against `labels` (the state's records): what "complete" means. Reads the whole file
/// (about 1 s per GB from disk, 39 GB for 50k images of 512 px). `run` and `status --verify`
/// use [`check_against_pngs`], which also compares every image with its PNG.
#[cfg(test)]
pub(crate) fn verify_npz_full(
    path: &Path,
    n: u64,
    image_size: u32,
    labels: &[i64],
) -> Result<(), AssembleError> {
    verify::check_full(path, n, image_size, image_size, labels)
}

/// [`verify_npz`], returning the npz's labels (N x 8 bytes, checked by the zip reader's CRC).
pub(crate) fn verify_npz_labels(
    path: &Path,
    n: u64,
    image_size: u32,
) -> Result<Vec<i64>, AssembleError> {
    verify::check(path, n, image_size, image_size)
}
