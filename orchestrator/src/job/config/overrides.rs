//! `--set key=value` (repeatable, on every command): changes one key of the job YAML without
//! editing the file. Keys are dotted (`model.checkpoint`, `retry.attempts`); values are YAML
//! (`--set cfg_scale=1.5`, `--set devices='{cpu: 4}'`, `--set steps='"250"'`). They are applied
//! to the parsed YAML before it is checked, so every check and message applies to them too.
use anyhow::{anyhow, Result};
use serde_yaml::{Mapping, Value};
use std::sync::OnceLock;

/// One `--set`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Override {
    pub key: Vec<String>,
    pub value: Value,
    /// As typed, for messages.
    pub text: String,
}

/// Parses `key=value` (the clap value parser of `--set`).
pub(crate) fn parse(s: &str) -> Result<Override, String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not key=value (e.g. --set cfg_scale=1.5)"))?;
    let key: Vec<String> = key
        .trim()
        .split('.')
        .map(|k| k.trim().to_string())
        .collect();
    if key.iter().any(String::is_empty) {
        return Err(format!("`{s}`: the key is empty or has an empty part"));
    }
    let mut value: Value =
        serde_yaml::from_str(value).map_err(|e| format!("`{s}`: the value is not YAML: {e}"))?;
    if let (Value::String(v), Ok(cwd)) = (&value, std::env::current_dir()) {
        if let Some(abs) = from_cwd(&key.join("."), v, &cwd) {
            value = Value::String(abs);
        }
    }
    Ok(Override {
        key,
        value,
        text: s.to_string(),
    })
}

/// The keys whose values are files or folders.
const PATH_KEYS: [&str; 8] = [
    "out_dir",
    "model.checkpoint",
    "model.torchscript",
    "model.config",
    "vae",
    "vae.torchscript",
    "evaluate.reference",
    "evaluate.inception",
];

/// A path typed on the command line is where the user is, not where the job file is (values in
/// the YAML stay relative to its folder): `out_dir` always, the other path keys when the file
/// exists there (else the value stays as written: a Hub id, a URL, or a path beside the job
/// file). The absolute path, or `None` to keep the value.
fn from_cwd(key: &str, value: &str, cwd: &std::path::Path) -> Option<String> {
    let p = std::path::Path::new(value);
    if !PATH_KEYS.contains(&key) || p.is_absolute() || value.contains("://") || value.is_empty() {
        return None;
    }
    let abs = cwd.join(p);
    (key == "out_dir" || abs.exists()).then(|| abs.to_string_lossy().into_owned())
}

/// The overrides of this invocation (set once by `main` from the command line).
static OVERRIDES: OnceLock<Vec<Override>> = OnceLock::new();

pub(crate) fn set_global(list: Vec<Override>) {
    let _ = OVERRIDES.set(list);
}

pub(crate) fn global() -> &'static [Override] {
    OVERRIDES.get().map(Vec::as_slice).unwrap_or(&[])
}

/// Applies `list` to the parsed document `doc` (a mapping), creating nested mappings as needed.
pub(crate) fn apply(doc: &mut Value, list: &[Override]) -> Result<()> {
    for o in list {
        let mut node = &mut *doc;
        for (depth, part) in o.key.iter().enumerate() {
            let map: &mut Mapping = match node {
                Value::Mapping(m) => m,
                Value::Null => {
                    *node = Value::Mapping(Mapping::new());
                    match node {
                        Value::Mapping(m) => m,
                        _ => unreachable!("just set"),
                    }
                }
                _ => {
                    return Err(anyhow!(
                        "--set {}: `{}` is not a section, so it has no key `{part}`",
                        o.text,
                        o.key[..depth].join(".")
                    ))
                }
            };
            let k = Value::String(part.clone());
            if depth + 1 == o.key.len() {
                map.insert(k, o.value.clone());
                break;
            }
            node = map.entry(k).or_insert(Value::Null);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_applies_dotted_keys() {
        let mut doc: Value = serde_yaml::from_str("model: {checkpoint: a.pt}\nseed: 0\n").unwrap();
        let list = vec![
            parse("model.checkpoint=b.pt").unwrap(),
            parse("seed=7").unwrap(),
            parse("retry.attempts=5").unwrap(),
            parse("devices={cpu: 2}").unwrap(),
        ];
        apply(&mut doc, &list).unwrap();
        assert_eq!(doc["model"]["checkpoint"], Value::String("b.pt".into()));
        assert_eq!(doc["seed"], Value::Number(7.into()));
        assert_eq!(doc["retry"]["attempts"], Value::Number(5.into()));
        assert_eq!(doc["devices"]["cpu"], Value::Number(2.into()));
        assert!(parse("novalue").is_err());
        assert!(parse("=3").is_err());
        assert!(parse("a..b=3").is_err());
        let err = apply(&mut doc, &[parse("seed.x=1").unwrap()]).unwrap_err();
        assert!(err.to_string().contains("`seed` is not a section"), "{err}");
    }

    #[test]
    fn paths_typed_on_the_command_line_are_where_the_user_is() {
        let cwd = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(cwd.path().join("weights")).unwrap();
        std::fs::write(cwd.path().join("weights/model.pt"), b"x").unwrap();
        let at = |rel: &str| cwd.path().join(rel).to_string_lossy().into_owned();
        let f = |key: &str, v: &str| from_cwd(key, v, cwd.path());
        assert_eq!(f("out_dir", "runs/x"), Some(at("runs/x")));
        assert_eq!(
            f("model.checkpoint", "weights/model.pt"),
            Some(at("weights/model.pt"))
        );
        // Not there: a Hub id, or a path beside the job file, as written.
        assert_eq!(f("vae", "stabilityai/sd-vae-ft-ema"), None);
        assert_eq!(f("model.checkpoint", "https://host/m.pt"), None);
        assert_eq!(f("out_dir", "/abs/out"), None);
        assert_eq!(f("cfg_scale", "weights"), None);
    }
}
