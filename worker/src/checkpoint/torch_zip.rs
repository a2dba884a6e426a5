//! The zip container that `torch.save` writes (PyTorch >= 1.6).
//!
//! Layout: `<archive>/data.pkl` (the pickled object, see [`super::pickle`]), one entry
//! `<archive>/data/<key>` per storage holding its raw bytes (stored, not compressed),
//! `<archive>/byteorder` (`little`; absent in files older than PyTorch 1.10, which are
//! little-endian) and `<archive>/version`. The archive folder name varies (it is the file's stem
//! when torch.save was given a path), so it is found as the folder of `*/data.pkl`.
//!
//! Tensors are read lazily: [`TorchZip::tensor`] reads a storage the first time a tensor needs
//! it, as a 1-D tensor of its dtype (`Tensor::f_from_data_size`), and keeps it so that tensors
//! using the same key share it; each tensor is then `as_strided(size, stride, offset)` of its
//! storage, made contiguous.
use super::pickle;
use super::value::{TensorRef, Value};
use crate::error::{EngineError, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};
use zip::result::ZipError;
use zip::ZipArchive;

pub(crate) struct TorchZip {
    path: PathBuf,
    /// Bounds the buffer reserved for an entry (a corrupt header may claim any size).
    file_len: u64,
    archive: ZipArchive<BufReader<File>>,
    /// `<archive>/` (with the slash), or empty when `data.pkl` is at the root.
    prefix: String,
    /// Storages already read, by (key, dtype of the tensors viewing them).
    storages: HashMap<(String, Kind), Tensor>,
}

impl TorchZip {
    /// Opens `path` and unpickles its `data.pkl`; tensors in the returned value are not read yet.
    pub(crate) fn open(path: &Path) -> Result<(TorchZip, Value)> {
        let err = |msg: String| super::error(path, msg);
        let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
        let archive = ZipArchive::new(BufReader::new(file)).map_err(|e| {
            err(format!(
                "truncated or not a complete PyTorch checkpoint (cannot read its zip directory: {e})"
            ))
        })?;
        let names: Vec<String> = archive.file_names().map(str::to_string).collect();
        if names
            .iter()
            .any(|n| n.ends_with("/constants.pkl") || n.contains("/code/"))
        {
            return Err(err(
                "is a TorchScript archive (torch.jit.save), not torch.save; \
                 save the weights with torch.save(model.state_dict(), path)"
                    .into(),
            ));
        }
        let pkl = names
            .iter()
            .find(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
            .ok_or_else(|| {
                err("is a zip file without `*/data.pkl`, not a PyTorch checkpoint".into())
            })?;
        let prefix = pkl[..pkl.len() - "data.pkl".len()].to_string();
        let pkl = pkl.as_str();
        let mut tz = TorchZip {
            path: path.to_path_buf(),
            file_len,
            archive,
            prefix,
            storages: HashMap::new(),
        };
        let byteorder = format!("{}byteorder", tz.prefix);
        if let Some(b) = tz.read_entry(&byteorder)? {
            let order = String::from_utf8_lossy(&b);
            if order.trim() != "little" {
                return Err(err(format!(
                    "was saved on a `{}`-endian machine; only little-endian checkpoints are \
                     supported (re-save it on a little-endian machine)",
                    order.trim()
                )));
            }
        }
        let data = tz
            .read_entry(pkl)?
            .ok_or_else(|| err(format!("cannot read `{pkl}`")))?;
        let value = pickle::unpickle(&data)
            .map_err(|e| err(format!("cannot unpickle {}data.pkl: {e}", tz.prefix)))?;
        Ok((tz, value))
    }

    /// The bytes of entry `name`, or `None` if the archive has no such entry.
    fn read_entry(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = &self.path;
        let mut entry = match self.archive.by_name(name) {
            Ok(entry) => entry,
            Err(ZipError::FileNotFound) => return Ok(None),
            Err(e) => {
                return Err(super::error(
                    path,
                    format!("cannot read entry `{name}`: {e}"),
                ))
            }
        };
        let mut buf = Vec::with_capacity(entry.size().min(self.file_len) as usize);
        entry.read_to_end(&mut buf).map_err(|e| {
            super::error(
                path,
                format!("cannot read entry `{name}` ({e}): truncated or corrupt checkpoint"),
            )
        })?;
        Ok(Some(buf))
    }

    /// Reads the tensor `t`, the value of state dict key `name` (for error messages).
    pub(crate) fn tensor(&mut self, name: &str, t: &TensorRef) -> Result<Tensor> {
        let path = self.path.clone();
        let (kind, storage_elt) = kinds(&path, name, t)?;
        let elt = kind.elt_size_in_bytes();
        let nbytes = u64::try_from(t.storage.numel)
            .ok()
            .and_then(|n| n.checked_mul(storage_elt as u64))
            .ok_or_else(|| {
                let numel = t.storage.numel;
                super::error(&path, format!("tensor `{name}`: bad storage size {numel}"))
            })?;
        let numel = (nbytes / elt as u64) as i64;
        let storage = self.storage(name, t, kind, nbytes, numel)?;
        check_view(&path, name, t, elt, nbytes, numel)?;
        storage
            .f_as_strided(&t.size, &t.stride, Some(t.offset))
            .and_then(|v| v.f_contiguous())
            .map_err(|e| torch_error(&path, name, e))
    }

    /// The storage `t` views, as a 1-D tensor of `numel` elements of `kind` (`nbytes` bytes),
    /// read the first time a tensor needs it.
    fn storage(
        &mut self,
        name: &str,
        t: &TensorRef,
        kind: Kind,
        nbytes: u64,
        numel: i64,
    ) -> Result<&Tensor> {
        let s = &t.storage;
        let cache_key = (s.key.clone(), kind);
        if !self.storages.contains_key(&cache_key) {
            let path = self.path.clone();
            let err = |msg: String| super::error(&path, msg);
            let entry = format!("{}data/{}", self.prefix, s.key);
            let bytes = self.read_entry(&entry)?.ok_or_else(|| {
                err(format!(
                    "missing storage entry `{entry}` (for tensor `{name}`): truncated or not a \
                     complete PyTorch checkpoint"
                ))
            })?;
            if (bytes.len() as u64) < nbytes {
                return Err(err(format!(
                    "storage entry `{entry}` holds {} bytes but tensor `{name}` needs {nbytes}: \
                     truncated or not a complete PyTorch checkpoint",
                    bytes.len()
                )));
            }
            let elt = kind.elt_size_in_bytes();
            let storage = Tensor::f_from_data_size(&bytes[..numel as usize * elt], &[numel], kind)
                .map_err(|e| torch_error(&path, name, e))?;
            self.storages.insert(cache_key.clone(), storage);
        }
        Ok(&self.storages[&cache_key])
    }
}

/// The element type of tensor `name` and the size in bytes of one element of its storage
/// (1 for an untyped storage).
fn kinds(path: &Path, name: &str, t: &TensorRef) -> Result<(Kind, usize)> {
    let s = &t.storage;
    let unsupported = |what: &str| {
        super::error(
            path,
            format!(
                "tensor `{name}` has unsupported dtype {what}; convert it (e.g. with .float()) \
                 and re-save"
            ),
        )
    };
    let untyped = s.storage_type.ends_with(".UntypedStorage");
    let storage_elt = if untyped {
        1
    } else {
        storage_kind(&s.storage_type)
            .ok_or_else(|| unsupported(&s.storage_type))?
            .elt_size_in_bytes()
    };
    let kind = match &t.dtype {
        Some(d) => dtype_kind(d).ok_or_else(|| unsupported(d))?,
        None if untyped => Kind::Uint8,
        None => storage_kind(&s.storage_type).ok_or_else(|| unsupported(&s.storage_type))?,
    };
    Ok((kind, storage_elt))
}

/// Checks that the view of `t` (elements of `elt` bytes) lies inside its storage of `numel`
/// elements (`nbytes` bytes) and does not ask for far more memory than the storage holds.
fn check_view(
    path: &Path,
    name: &str,
    t: &TensorRef,
    elt: usize,
    nbytes: u64,
    numel: i64,
) -> Result<()> {
    if !view_fits(t, numel) {
        return Err(super::error(
            path,
            format!(
                "tensor `{name}`: its view (offset {}, size {:?}, stride {:?}) does not fit its \
                 storage of {numel} elements",
                t.offset, t.size, t.stride
            ),
        ));
    }
    // A view with a zero stride addresses elements many times (torch.save keeps expanded
    // tensors as they are), so a corrupt size could ask for any amount of memory here.
    let view_bytes = t
        .size
        .iter()
        .try_fold(elt as u64, |acc, &n| acc.checked_mul(n as u64));
    if !matches!(view_bytes, Some(b) if b <= nbytes.max(MAX_EXPANDED_BYTES)) {
        return Err(super::error(
            path,
            format!(
                "tensor `{name}`: its size {:?} (stride {:?}) needs far more memory than its \
                 storage of {nbytes} bytes: corrupt checkpoint",
                t.size, t.stride
            ),
        ));
    }
    Ok(())
}

/// libtorch's messages run on with a C++ backtrace: keep their first line.
fn torch_error(path: &Path, name: &str, e: tch::TchError) -> EngineError {
    let e = e.to_string();
    super::error(
        path,
        format!(
            "tensor `{name}`: libtorch cannot build it: {}",
            e.lines().next().unwrap_or_default()
        ),
    )
}

/// How many bytes a tensor may take when that is more than its storage holds (an expanded
/// view, stride 0): bounds what a corrupt size can make `contiguous()` allocate.
const MAX_EXPANDED_BYTES: u64 = 1 << 28;

/// Whether every element the view addresses lies inside a storage of `numel` elements.
fn view_fits(t: &TensorRef, numel: i64) -> bool {
    if t.offset < 0 || t.size.iter().chain(&t.stride).any(|&x| x < 0) {
        return false;
    }
    if t.size.contains(&0) {
        return t.offset <= numel;
    }
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |acc, (&n, &s)| {
            (n - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
        });
    matches!(last, Some(l) if l < numel)
}

/// The element type of a typed storage class such as `torch.FloatStorage`.
fn storage_kind(storage_type: &str) -> Option<Kind> {
    let name = storage_type.strip_prefix("torch.")?;
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        "ComplexFloatStorage" => Kind::ComplexFloat,
        "ComplexDoubleStorage" => Kind::ComplexDouble,
        _ => return None,
    })
}

/// The element type of a dtype such as `torch.float16` (given by `_rebuild_tensor_v3`).
fn dtype_kind(dtype: &str) -> Option<Kind> {
    let name = dtype.strip_prefix("torch.")?;
    Some(match name {
        "float32" | "float" => Kind::Float,
        "float64" | "double" => Kind::Double,
        "float16" | "half" => Kind::Half,
        "bfloat16" => Kind::BFloat16,
        "int64" | "long" => Kind::Int64,
        "int32" | "int" => Kind::Int,
        "int16" | "short" => Kind::Int16,
        "int8" => Kind::Int8,
        "uint8" => Kind::Uint8,
        "bool" => Kind::Bool,
        "complex32" | "chalf" => Kind::ComplexHalf,
        "complex64" | "cfloat" => Kind::ComplexFloat,
        "complex128" | "cdouble" => Kind::ComplexDouble,
        "float8_e5m2" => Kind::Float8e5m2,
        "float8_e4m3fn" => Kind::Float8e4m3fn,
        "float8_e5m2fnuz" => Kind::Float8e5m2fnuz,
        "float8_e4m3fnuz" => Kind::Float8e4m3fnuz,
        _ => return None,
    })
}
