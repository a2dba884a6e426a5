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
    let value: Value =
        serde_yaml::from_str(value).map_err(|e| format!("`{s}`: the value is not YAML: {e}"))?;
    Ok(Override {
        key,
        value,
        text: s.to_string(),
    })
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
}
