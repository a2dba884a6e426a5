//! Checkpoint loading without Python.
//!
//! - `.safetensors`: parsed by the `safetensors` crate.
//! - `.pt` / `.pth` / `.bin`: the zip container that `torch.save` writes (PyTorch >= 1.6), whose
//!   `data.pkl` is unpickled by [`pickle`] into [`value::Value`]s and whose tensor storages live
//!   in `data/<key>` entries ([`torch_zip`]). The format is chosen from the file's first bytes, not its extension.
//!
//! Which object of a `torch.save` file is the state dict, first match wins:
//! 1. a top-level dict's `"ema"`, if it is a dict of tensors (DiT's `train.py` checkpoints
//!    `{"model", "ema", "opt", "args"}` yield their EMA weights, as the reference's
//!    `find_model` does);
//! 2. its `"state_dict"`, then its `"model"`, if a dict of tensors (common training wrappers);
//! 3. the top-level dict itself, which must then map strings to tensors.
//!
//! A `module.` prefix (DistributedDataParallel) is stripped from every key.
//!
//! A diffusers-format DiT (a `transformer/` folder) is mapped onto the published layout by
//! [`diffusers_dit`].
pub mod diffusers_dit;
mod globals;
mod pickle;
mod safetensors_file;
mod torch_zip;
mod value;

use crate::error::{EngineError, Result};
use crate::params::StateDict;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use value::{TensorRef, Value};

pub use safetensors_file::load_safetensors;

/// What a legacy (pre-1.6, `_use_new_zipfile_serialization=False`) `torch.save` file starts
/// with: protocol 2, then the pickled magic number 0x1950a86a20f9469cfc6c as a 10-byte LONG1.
const LEGACY_TORCH_MAGIC: [u8; 14] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];

/// A safetensors file starts with the little-endian u64 length of its JSON header, then `{`.
fn looks_like_safetensors(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 9];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    if f.read_exact(&mut head).is_err() {
        return false;
    }
    let len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    head[8] == b'{' && len >= 2 && len <= size.saturating_sub(8)
}

/// Loads the state dict stored in `path`, choosing the format from the file's content.
pub fn load_state_dict(path: &Path) -> Result<StateDict> {
    let mut head = Vec::with_capacity(LEGACY_TORCH_MAGIC.len());
    {
        use std::io::Read;
        let f = std::fs::File::open(path)
            .map_err(|e| error(path, format!("cannot open checkpoint: {e}")))?;
        f.take(LEGACY_TORCH_MAGIC.len() as u64)
            .read_to_end(&mut head)
            .map_err(|e| EngineError::io(path, e))?;
        if head.len() < 4 {
            return Err(error(
                path,
                "file is too short to be a checkpoint (truncated?)",
            ));
        }
    }
    let tensors =
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            load_torch_zip(path)?
        } else if head == LEGACY_TORCH_MAGIC {
            return Err(error(
                path,
                "is a legacy (pre-1.6, non-zip) torch.save file, which is not supported; \
             re-save it with torch>=1.6: `sd = torch.load(path); torch.save(sd, path)`",
            ));
        } else if looks_like_safetensors(path) {
            load_safetensors(path)?
        } else {
            return Err(error(
                path,
                format!(
                "neither a torch.save checkpoint (a zip, starting `PK`) nor a .safetensors file \
                 (an 8-byte header length, then JSON); it starts with bytes {}: is it a \
                 checkpoint at all, or a truncated or HTML download?",
                head.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
            ),
            ));
        };
    Ok(StateDict::new(path, strip_module_prefix(tensors)))
}

/// The state dict of a `torch.save` zip file (see the module docs for which object it is).
fn load_torch_zip(path: &Path) -> Result<BTreeMap<String, tch::Tensor>> {
    let (mut zip, top) = torch_zip::TorchZip::open(path)?;
    let entries = select_state_dict(&top).map_err(|why| {
        error(
            path,
            format!(
                "holds no state dict ({why}); expected torch.save(model.state_dict()) or a DiT \
                 train.py checkpoint"
            ),
        )
    })?;
    drop(top);
    let mut out = BTreeMap::new();
    for (name, t) in entries {
        let tensor = zip.tensor(&name, &t)?;
        out.insert(name, tensor);
    }
    Ok(out)
}

/// The `(key, tensor)` pairs of the state dict in `top`, or why there is none.
fn select_state_dict(top: &Value) -> std::result::Result<Vec<(String, Rc<TensorRef>)>, String> {
    let Value::Dict(d) = top else {
        return Err(format!("top-level object is {}", top.describe()));
    };
    for key in ["ema", "state_dict", "model"] {
        if let Some(sd) = d.borrow().get_str(key).and_then(|v| tensor_dict(v).ok()) {
            return Ok(sd);
        }
    }
    tensor_dict(top).map_err(|why| format!("top-level object is a dict {why}"))
}

/// The entries of `v` if it is a non-empty dict from strings to tensors; else why not.
fn tensor_dict(v: &Value) -> std::result::Result<Vec<(String, Rc<TensorRef>)>, String> {
    let Value::Dict(d) = v else {
        return Err(format!("but {}", v.describe()));
    };
    let d = d.borrow();
    if d.entries().is_empty() {
        return Err("that is empty".into());
    }
    d.entries()
        .iter()
        .map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => Ok((k.to_string(), t.clone())),
            (Value::Str(k), v) => Err(format!(
                "whose key `{k}` holds {}, not a tensor",
                v.describe()
            )),
            (k, _) => Err(format!("with key {}, not a str", k.describe())),
        })
        .collect()
}

/// A checkpoint error whose message is one printable line. Names, keys, class names and dtypes
/// quoted in it come from the file, which may put newlines or terminal escapes in them or make
/// them megabytes long: control characters are escaped (`\n`, `\u{1b}`) and a very long message
/// keeps its start and its end (where the fix is).
pub(crate) fn error(path: &Path, msg: impl AsRef<str>) -> EngineError {
    EngineError::checkpoint(path, one_line(msg.as_ref()))
}

fn one_line(msg: &str) -> String {
    const MAX: usize = 1000;
    const HEAD: usize = 600;
    const TAIL: usize = 300;
    let n = msg.chars().count();
    let mut out = String::with_capacity(msg.len().min(4 * MAX));
    for (i, c) in msg.chars().enumerate() {
        if n > MAX && (HEAD..n - TAIL).contains(&i) {
            if i == HEAD {
                out.push_str(" [...] ");
            }
            continue;
        }
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Removes the `module.` prefix that DistributedDataParallel adds to every key.
pub(crate) fn strip_module_prefix<T>(
    map: std::collections::BTreeMap<String, T>,
) -> std::collections::BTreeMap<String, T> {
    map.into_iter()
        .map(|(k, v)| match k.strip_prefix("module.") {
            Some(rest) => (rest.to_string(), v),
            None => (k, v),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_printable_line() {
        let path = Path::new("m.pt");
        let e = error(path, "key `a\nb\r\u{1b}[31m\u{2028}` is bad").to_string();
        assert_eq!(e, "m.pt: key `a\\nb\\r\\u{1b}[31m\\u{2028}` is bad");
        let long = format!("start {} end", "é".repeat(5000));
        let e = one_line(&long);
        assert!(
            e.starts_with("start ") && e.ends_with(" end") && e.contains(" [...] "),
            "{e}"
        );
        assert!(e.chars().count() < 1000, "{}", e.len());
        assert_eq!(one_line("plain `ok` (é)"), "plain `ok` (é)");
    }
}
