//! Reading a job file before serde sees it: a bounded read (no multi-gigabyte or endless file is
//! slurped), UTF-8 text with an optional BOM, and a cheap scan of the nesting depth, since
//! serde_yaml takes minutes on a few hundred kilobytes of deeply nested YAML. Then serde_yaml,
//! whose errors are rewritten into one line naming the file, the key and the line.
use super::limits::{MAX_CONFIG_BYTES, MAX_NESTING};
use super::raw::RawJob;
use anyhow::{anyhow, Result};
use std::io::Read;
use std::path::Path;

/// The text of a job file, or a one-line error naming it.
pub(super) fn read_job_text(path: &Path) -> Result<String> {
    let shown = path.display();
    if path.to_str().is_none() {
        return Err(anyhow!(
            "{shown}: the path of the job config is not valid UTF-8; rename the file (fidshard \
             passes paths to its workers as UTF-8 text)"
        ));
    }
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow!("{shown}: cannot read the job config: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| anyhow!("{shown}: cannot read the job config: {e}"))?;
    if meta.is_dir() {
        return Err(anyhow!("{shown}: is a folder; pass the job's YAML file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow!("{shown}: cannot read the job config: {e}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(anyhow!(
            "{shown}: the job config is larger than {} KiB; a job file is a few dozen lines \
             (see docs/configuration.md)",
            MAX_CONFIG_BYTES / 1024
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "{shown}: the job config is not UTF-8 text (byte {} is not); save it as UTF-8",
            e.utf8_error().valid_up_to()
        )
    })?;
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    };
    if let Some(line) = too_deep(&text, MAX_NESTING) {
        return Err(anyhow!(
            "{shown}: line {line}: nested deeper than {MAX_NESTING} levels; a job config is at \
             most 2 levels deep (see docs/configuration.md)"
        ));
    }
    Ok(text)
}

/// The first line (1-based) where block indentation levels, `- ` sequence markers and open
/// `[`/`{` brackets together exceed `max`; an over-estimate (quotes and comments are skipped,
/// block scalars are counted as nesting), which is fine for a bound far above any real job.
pub(super) fn too_deep(text: &str, max: usize) -> Option<usize> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut block = 0usize;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if flow == 0 {
            let indent = line.len() - trimmed.len();
            while indents.last().is_some_and(|&i| i > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
            let mut rest = trimmed;
            let mut dashes = 0;
            while rest == "-" || rest.starts_with("- ") {
                dashes += 1;
                rest = rest[1..].trim_start();
            }
            block = indents.len() + dashes;
        }
        if block > max {
            return Some(n + 1);
        }
        let (mut single, mut double, mut escaped) = (false, false, false);
        let mut prev = ' ';
        for c in line.chars() {
            if double {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => double = false,
                    _ => escaped = false,
                }
            } else if single {
                if c == '\'' {
                    single = false;
                }
            } else {
                let starts_scalar = prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':');
                match c {
                    '#' if prev.is_whitespace() => break,
                    '"' if starts_scalar => double = true,
                    '\'' if starts_scalar => single = true,
                    '[' | '{' => {
                        flow += 1;
                        if block + flow > max {
                            return Some(n + 1);
                        }
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                }
            }
            prev = c;
        }
    }
    None
}

/// serde_yaml over the checked text, with its errors rewritten.
pub(super) fn parse(path: &Path, text: &str) -> Result<RawJob> {
    let blank = |l: &str| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    };
    if text.lines().all(blank) {
        return Err(anyhow!(
            "{}: the job config is empty; see docs/configuration.md for the keys",
            path.display()
        ));
    }
    let overrides = super::overrides::global();
    if overrides.is_empty() && !has_model_shorthand(text) {
        return serde_yaml::from_str(text).map_err(|e| anyhow!("{}", yaml_error(path, &e)));
    }
    // With `--set` or the `model: REPO` shorthand: the document, changed, then the same checks.
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| anyhow!("{}", yaml_error(path, &e)))?;
    expand_model_shorthand(&mut doc);
    super::overrides::apply(&mut doc, overrides).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    // Through text again, so that serde_yaml's errors name the key path (`from_value`'s do
    // not); their line numbers are of that text, not the user's file, so they are dropped.
    let changed = serde_yaml::to_string(&doc).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    serde_yaml::from_str(&changed).map_err(|e| {
        let listed: Vec<&str> = overrides.iter().map(|o| o.text.as_str()).collect();
        anyhow!(
            "{} (with --set {})",
            yaml_error_without_line(path, &e),
            listed.join(", --set ")
        )
    })
}

/// `model: facebook/DiT-XL-2-256`: a diffusers pipeline (a Hub repo id, `hf://...`, or a
/// folder) names both models, as `from_pretrained` takes it: `model.checkpoint` is the
/// pipeline (its `transformer/`) and, unless `vae` is given, `vae` too (its `vae/`). Returns
/// whether the document was changed.
fn expand_model_shorthand(doc: &mut serde_yaml::Value) -> bool {
    use serde_yaml::Value;
    let Value::Mapping(map) = doc else {
        return false;
    };
    let key = Value::String("model".into());
    let Some(Value::String(repo)) = map.get(&key).cloned() else {
        return false;
    };
    if is_preset_name(&repo) {
        // `model: DiT-XL/2` is a preset written where the section goes: serde's "expected a
        // mapping" says so better than a Hub lookup of `DiT-XL/2` would.
        return false;
    }
    let mut model = serde_yaml::Mapping::new();
    model.insert("checkpoint".into(), Value::String(repo.clone()));
    map.insert(key, Value::Mapping(model));
    let vae = Value::String("vae".into());
    if !map.contains_key(&vae) {
        map.insert(vae, Value::String(repo));
    }
    true
}

/// Whether the text has a top-level `model:` whose value is on the same line and is not a flow
/// mapping (`model: facebook/DiT-XL-2-256`), and is not a preset name: only then is the
/// document rewritten, so that every other file keeps serde's messages with their lines.
fn has_model_shorthand(text: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix("model:").is_some_and(|v| {
            let v = v.trim();
            let v = v
                .split(" #")
                .next()
                .unwrap_or(v)
                .trim()
                .trim_matches(['"', '\'']);
            !v.is_empty() && !v.starts_with(['{', '#', '&', '*', '|', '>']) && !is_preset_name(v)
        })
    })
}

/// `DiT-XL/2`, `SiT-B/4`, ...: a preset, not a repository.
fn is_preset_name(v: &str) -> bool {
    v.starts_with("DiT-") || v.starts_with("SiT-")
}

/// The accepted values of the keys whose type is an enum, for messages that lack them.
const ENUM_VALUES: [(&str, &str); 5] = [
    ("sampler", "ddpm, ddim"),
    ("beta_schedule", "linear, squaredcos_cap_v2"),
    ("variance", "auto, learned_range, fixed_large, fixed_small"),
    ("precision", "fp32, tf32, bf16, fp16"),
    ("labels", "random, balanced, unconditional"),
];

/// One line: `FILE: `KEY` (line L): what is wrong; see docs/configuration.md`.
pub(super) fn yaml_error(path: &Path, e: &serde_yaml::Error) -> String {
    yaml_error_at(path, e, true)
}

/// [`yaml_error`] without the line (the text parsed was not the user's file).
fn yaml_error_without_line(path: &Path, e: &serde_yaml::Error) -> String {
    yaml_error_at(path, e, false)
}

fn yaml_error_at(path: &Path, e: &serde_yaml::Error, with_line: bool) -> String {
    let mut msg = e.to_string().replace('\n', " ");
    let mut line = e.location().map(|l| l.line()).filter(|_| with_line);
    // serde_yaml appends (or, for syntax errors, inserts) " at line L column C".
    if let Some(at) = msg.find(" at line ") {
        let tail = &msg[at + " at line ".len()..];
        let end = tail
            .find(" column ")
            .map(|c| {
                let after = &tail[c + " column ".len()..];
                c + " column ".len()
                    + after
                        .find(|ch: char| !ch.is_ascii_digit())
                        .unwrap_or(after.len())
            })
            .unwrap_or(0);
        msg = format!("{}{}", &msg[..at], &tail[end..]);
    }
    // serde_yaml names the key path first: `model.preset: ...`, `devices[1]: ...`.
    let (mut key, mut rest) = match msg.split_once(": ") {
        Some((p, r))
            if !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c)) =>
        {
            (Some(p.to_string()), r.to_string())
        }
        _ => (None, msg.clone()),
    };
    let join = |parent: &Option<String>, child: &str| match parent {
        Some(p) => format!("{p}.{child}"),
        None => child.to_string(),
    };
    let ticked = |s: &str| s.split('`').nth(1).map(str::to_string);
    let list = |s: &str| -> String {
        s.split('`')
            .skip(1)
            .step_by(2)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(r) = rest.strip_prefix("unknown field ") {
        let (name, expected) = r.split_once(", expected").unwrap_or((r, ""));
        key = Some(join(&key, &ticked(name).unwrap_or_default()));
        rest = if expected.contains('`') {
            format!("unknown key; the keys here are {}", list(expected))
        } else {
            "unknown key; this section takes no keys".to_string()
        };
    } else if let Some(r) = rest.strip_prefix("missing field ") {
        key = Some(join(&key, &ticked(r).unwrap_or_default()));
        rest = "is required".to_string();
        line = None;
    } else if let Some(r) = rest.strip_prefix("duplicate field ") {
        key = Some(join(&key, &ticked(r).unwrap_or_default()));
        rest = "is given twice".to_string();
        line = None;
    } else if let Some(r) = rest.strip_prefix("unknown variant ") {
        let (name, expected) = r.split_once(", expected").unwrap_or((r, ""));
        rest = format!(
            "`{}` is not one of {}",
            ticked(name).unwrap_or_default(),
            list(expected)
        );
    } else if let Some((invalid_value, r)) = Some(rest.clone()).and_then(|rest| {
        let typed = rest
            .strip_prefix("invalid type: ")
            .map(|r| (false, r.to_string()));
        typed.or_else(|| {
            rest.strip_prefix("invalid value: ")
                .map(|r| (true, r.to_string()))
        })
    }) {
        let r = r.as_str();
        let (got, expected) = r.split_once(", expected ").unwrap_or((r, "another type"));
        let enum_values = key
            .as_deref()
            .and_then(|k| ENUM_VALUES.iter().find(|(name, _)| *name == k))
            .map(|(_, v)| *v);
        let expected = match (expected.trim(), enum_values) {
            (_, Some(values)) => format!("one of {values}"),
            ("u64" | "usize", _) => "a whole number >= 0".to_string(),
            ("u32", _) => format!("a whole number in 0..={}", u32::MAX),
            ("i64" | "i32", _) => "a whole number".to_string(),
            ("f64" | "f32", _) => "a number".to_string(),
            ("path string", _) => "a path".to_string(),
            (e, _) if e.starts_with("struct ") => "a mapping of keys".to_string(),
            (e, _) => e.to_string(),
        };
        // `integer `X` as u128`: a whole number too large for any field.
        let too_large = got.ends_with(" as u128") || got.ends_with(" as i128");
        let got = got
            .trim_end_matches(" as u128")
            .trim_end_matches(" as i128");
        rest = if too_large || invalid_value {
            format!("{got} is out of range; expected {expected}")
        } else {
            format!("{got} is not {expected}")
        };
        if key.is_none() && expected == "a mapping of keys" {
            rest = format!("the job config must be a mapping of keys, not {got}");
        }
    }
    let shown = path.display();
    let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
    match key {
        Some(k) => format!("{shown}: `{k}`{at}: {rest}; see docs/configuration.md"),
        None => format!("{shown}{at}: {rest}; see docs/configuration.md"),
    }
}
