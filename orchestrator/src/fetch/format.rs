//! What a downloaded file must look like before it is kept, when no `model.sha256` says what it
//! is: a JSON config is a JSON object; weights are a `torch.save` zip (with `*/data.pkl`) or a
//! safetensors file (a header length that fits, a JSON header, tensors that end where the file
//! does). So a login page or an error page served with status 200 never enters the cache.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The largest JSON config or safetensors header read.
const MAX_HEADER: u64 = 100 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// A config file: a JSON object.
    Json,
    /// A checkpoint or VAE weights: torch zip or safetensors.
    Weights,
    /// A numpy `.npz` (the reference batch of `evaluate:`): a zip of `.npy` arrays.
    Npz,
    /// Checked otherwise (a pinned sha256).
    Any,
}

impl Format {
    /// By the file name at the end of `name` (a path or a URL).
    pub fn of_name(name: &str) -> Format {
        let path = name.split(['?', '#']).next().unwrap_or(name);
        let file = path.rsplit('/').next().unwrap_or(path);
        let lower = file.to_ascii_lowercase();
        if lower.ends_with(".json") {
            Format::Json
        } else if lower.ends_with(".npz") {
            Format::Npz
        } else {
            Format::Weights
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Format::Json => "a JSON config (a JSON object)",
            Format::Npz => "a numpy .npz (a zip of .npy arrays)",
            _ => "weights (a torch.save zip with */data.pkl, or a safetensors file)",
        }
    }
}

/// `Err(what the file is instead, and what to do)` when `path` is not of `format`.
pub(crate) fn check(path: &Path, format: Format) -> Result<(), String> {
    let ok = match format {
        Format::Any => true,
        Format::Json => is_json_object(path),
        Format::Weights => is_torch_zip(path) || is_safetensors(path),
        Format::Npz => is_npz(path),
    };
    if ok {
        return Ok(());
    }
    let got = describe(path);
    let fix = if got.starts_with("an HTML page") {
        "a login or error page: if the file needs a login, download it yourself and give its \
         local path; else check the address"
    } else {
        "check the address, or download the file yourself and give its local path"
    };
    Err(format!(
        "expected {} but got {got}; nothing was kept ({fix})",
        format.expected()
    ))
}

fn len(f: &File) -> u64 {
    f.metadata().map(|m| m.len()).unwrap_or(0)
}

fn is_json_object(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    if len(&f) > MAX_HEADER {
        return false;
    }
    matches!(
        serde_json::from_reader::<_, serde_json::Value>(std::io::BufReader::new(f)),
        Ok(serde_json::Value::Object(_))
    )
}

fn is_torch_zip(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let Ok(zip) = zip::ZipArchive::new(f) else {
        return false;
    };
    let found = zip.file_names().any(|n| {
        n.strip_suffix("/data.pkl")
            .is_some_and(|dir| !dir.is_empty() && !dir.contains('/'))
    });
    found
}

fn is_npz(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let Ok(zip) = zip::ZipArchive::new(f) else {
        return false;
    };
    let found = zip.file_names().any(|n| n.ends_with(".npy"));
    found
}

/// An 8-byte little-endian header length, a JSON object header, and data offsets whose end is
/// the end of the file (what the safetensors library itself checks).
fn is_safetensors(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let total = len(&f);
    let mut n = [0u8; 8];
    if f.read_exact(&mut n).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(n);
    if !(2..=MAX_HEADER.min(total - 8)).contains(&n) {
        return false;
    }
    let mut header = vec![0u8; n as usize];
    if f.read_exact(&mut header).is_err() {
        return false;
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&header) else {
        return false;
    };
    let mut end = 0u64;
    for (name, v) in &map {
        if name == "__metadata__" {
            continue;
        }
        match v["data_offsets"].as_array().map(|a| a.as_slice()) {
            Some([a, b]) => match (a.as_u64(), b.as_u64()) {
                (Some(a), Some(b)) if a <= b => end = end.max(b),
                _ => return false,
            },
            _ => return false,
        }
    }
    end == total - 8 - n
}

/// What the file looks like, in words: "an HTML page (title ...)", "a JSON document", ...
fn describe(path: &Path) -> String {
    let mut head = Vec::new();
    let total = File::open(path)
        .and_then(|mut f| {
            let total = len(&f);
            f.seek(SeekFrom::Start(0))?;
            f.take(4096).read_to_end(&mut head)?;
            Ok(total)
        })
        .unwrap_or(0);
    if total == 0 {
        return "an empty file".to_string();
    }
    let text = String::from_utf8_lossy(&head);
    let lower = text.trim_start().to_ascii_lowercase();
    if lower.starts_with("<!doctype html") || lower.starts_with("<html") || lower.contains("<html")
    {
        let title = lower
            .find("<title>")
            .and_then(|i| {
                let rest = &text.trim_start()[i + 7..];
                rest.find("</").map(|j| rest[..j].trim().to_string())
            })
            .filter(|t| !t.is_empty())
            .map(|t| format!(" titled \"{}\"", printable(&t, 60)))
            .unwrap_or_default();
        return format!("an HTML page{title} ({total} bytes)");
    }
    if lower.starts_with('<') {
        return format!("an XML or HTML document ({total} bytes)");
    }
    if lower.starts_with('{') || lower.starts_with('[') {
        return format!("a JSON document ({total} bytes) that is not a file of this kind");
    }
    if head.starts_with(b"PK") {
        return format!(
            "a zip ({total} bytes) that is damaged, truncated or has no */data.pkl (not a \
             torch.save checkpoint)"
        );
    }
    let printable_share = head
        .iter()
        .filter(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
        .count();
    if printable_share * 10 >= head.len() * 9 {
        return format!(
            "{total} bytes of text starting \"{}\"",
            printable(text.trim_start(), 40)
        );
    }
    format!("{total} bytes of unknown content")
}

/// At most `max` characters of `s`, control characters escaped.
fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    fn safetensors(tail: usize, end: u64) -> Vec<u8> {
        let h =
            format!("{{\"w\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,{end}]}}}}  ");
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend(h.as_bytes());
        b.extend(vec![0u8; tail]);
        b
    }

    #[test]
    fn formats_by_content() {
        assert_eq!(Format::of_name("http://h/a/config.JSON?x=1"), Format::Json);
        assert_eq!(Format::of_name("vae/model.safetensors"), Format::Weights);
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/golden");
        assert!(check(&golden.join("dit/model.pt"), Format::Weights).is_ok());
        assert!(check(&golden.join("vae/config.json"), Format::Json).is_ok());
        let vae = golden.join("vae/diffusion_pytorch_model.safetensors");
        assert!(check(&vae, Format::Weights).is_ok());
        assert!(check(file(&safetensors(4, 4)).path(), Format::Weights).is_ok());
        for bad in [safetensors(3, 4), safetensors(5, 4), b"\xff\xff".to_vec()] {
            assert!(check(file(&bad).path(), Format::Weights).is_err());
        }
        let page = file(b"\n<!DOCTYPE html><html><head><title>Sign in</title></head></html>");
        let e = check(page.path(), Format::Weights).unwrap_err();
        assert!(
            e.contains("an HTML page titled \"Sign in\"") && e.contains("login"),
            "{e}"
        );
        assert!(check(page.path(), Format::Json).is_err());
        assert!(check(file(b"[1, 2]").path(), Format::Json).is_err());
        let e = check(file(b"").path(), Format::Json).unwrap_err();
        assert!(e.contains("an empty file"), "{e}");
        let e = check(file(b"PK\x03\x04junk").path(), Format::Weights).unwrap_err();
        assert!(e.contains("a zip"), "{e}");
        assert!(check(file(b"anything").path(), Format::Any).is_ok());
        assert_eq!(Format::of_name("https://h/ref/VIRTUAL.npz"), Format::Npz);
        assert!(check(&golden.join("../eval/reference.npz"), Format::Npz).is_ok());
        let e = check(&golden.join("dit/model.pt"), Format::Npz).unwrap_err();
        assert!(e.contains("numpy .npz"), "{e}");
        assert!(check(page.path(), Format::Npz).is_err());
    }
}
