//! A reference batch npz, as the ADM evaluator reads it (`Evaluator.read_statistics`,
//! `open_npz_array`): its `mu`, `sigma`, `mu_s`, `sigma_s` when present (guided-diffusion's
//! `VIRTUAL_imagenet256_labeled.npz` holds them), else statistics from its `arr_0` images
//! (uint8, `N x H x W x 3`), which are streamed in batches, never read whole.
use super::Statistics;
use nalgebra::{DMatrix, DVector};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Why a reference npz cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("reference batch {path}: {message}")]
pub struct ReferenceError {
    pub path: PathBuf,
    pub message: String,
}

/// The pool_3 and spatial statistics an npz holds (`mu`, `sigma` and `mu_s`, `sigma_s`), or
/// `None` when it has no `mu` (the evaluator then computes them from `arr_0`).
pub fn read_statistics(path: &Path) -> Result<Option<(Statistics, Statistics)>, ReferenceError> {
    let mut zip = open(path)?;
    if zip.index_for_name("mu.npy").is_none() {
        return Ok(None);
    }
    let mut stats = |mu_name: &str, sigma_name: &str| -> Result<Statistics, ReferenceError> {
        let (mu_shape, mu) = read_f64(&mut zip, mu_name).map_err(|e| err(path, e))?;
        let (s_shape, sigma) = read_f64(&mut zip, sigma_name).map_err(|e| err(path, e))?;
        let n = mu.len();
        if mu_shape.len() != 1 || s_shape != [n as u64, n as u64] {
            return Err(err(path, format!("`{mu_name}` has shape {mu_shape:?} and `{sigma_name}` {s_shape:?}, expected [D] and [D, D]")));
        }
        Ok(Statistics {
            mu: DVector::from_vec(mu),
            sigma: DMatrix::from_row_slice(n, n, &sigma),
        })
    };
    let pool = stats("mu", "sigma")?;
    let spatial = stats("mu_s", "sigma_s")?;
    Ok(Some((pool, spatial)))
}

/// Calls `each(images, n)` with consecutive batches of at most `batch` images of `arr_0`
/// (`n x height x width x 3` uint8, row-major); returns `(count, height, width)`.
pub fn for_each_image_batch(
    path: &Path,
    batch: usize,
    mut each: impl FnMut(&[u8], usize) -> Result<(), ReferenceError>,
) -> Result<(u64, u64, u64), ReferenceError> {
    let mut zip = open(path)?;
    let mut entry = zip
        .by_name("arr_0.npy")
        .map_err(|e| err(path, format!("no `arr_0`: {e}")))?;
    let header = npyz::NpyHeader::from_reader(&mut entry).map_err(|e| err(path, e))?;
    let shape = header.shape().to_vec();
    let descr = header.dtype().descr();
    if !matches!(descr.trim_matches('\''), "|u1" | "u1")
        || header.order() != npyz::Order::C
        || shape.len() != 4
        || shape[3] != 3
    {
        return Err(err(
            path,
            format!("`arr_0` is {descr} {shape:?}, expected C-order uint8 [N, H, W, 3]"),
        ));
    }
    let image = (shape[1] * shape[2] * 3) as usize;
    let mut buf = vec![0u8; image * batch.max(1)];
    let mut left = shape[0] as usize;
    while left > 0 {
        let n = left.min(batch.max(1));
        entry
            .read_exact(&mut buf[..n * image])
            .map_err(|e| err(path, format!("reading `arr_0`: {e}")))?;
        each(&buf[..n * image], n)?;
        left -= n;
    }
    Ok((shape[0], shape[1], shape[2]))
}

fn open(path: &Path) -> Result<zip::ZipArchive<File>, ReferenceError> {
    let f = File::open(path).map_err(|e| err(path, e))?;
    zip::ZipArchive::new(f).map_err(|e| err(path, format!("not an npz (zip): {e}")))
}

/// The shape and values of `<name>.npy`, float64 (`<f8`) or float32 (`<f4`: the evaluator's
/// `np.mean` of float32 features is float32, so its npz files hold `mu` as float32).
fn read_f64(zip: &mut zip::ZipArchive<File>, name: &str) -> io::Result<(Vec<u64>, Vec<f64>)> {
    let entry = zip
        .by_name(&format!("{name}.npy"))
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("no `{name}`: {e}")))?;
    let npy = npyz::NpyFile::new(entry)?;
    // Either order: `mu` is a vector and `sigma` symmetric.
    let shape = npy.shape().to_vec();
    let values = if npy.dtype().descr().contains("f4") {
        npy.into_vec::<f32>()
            .map(|v| v.into_iter().map(f64::from).collect())
    } else {
        npy.into_vec::<f64>()
    };
    let values = values.map_err(|e| io::Error::new(e.kind(), format!("`{name}`: {e}")))?;
    Ok((shape, values))
}

fn err(path: &Path, e: impl std::fmt::Display) -> ReferenceError {
    ReferenceError {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
