//! Hugging Face hub repo ids in the job YAML (`vae: stabilityai/sd-vae-ft-ema`), resolved in the
//! local hub cache only. Compute nodes often have no network, and a download in the middle of a
//! job start would make the start slow and its result depend on the hub's state that day; what
//! `huggingface-cli download` (or `diffusers`) put in the cache is used, or the job is refused
//! with the command that fixes it.
//!
//! Cache layout (huggingface_hub's): `ROOT/models--{org}--{name}/refs/main` holds the commit
//! hash of the snapshot `ROOT/models--{org}--{name}/snapshots/{hash}/`, whose files are symlinks
//! into `blobs/`. ROOT is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
use std::path::{Path, PathBuf};

/// What the repo should provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// A diffusers AutoencoderKL folder: the snapshot itself (a standalone VAE repo such as
    /// `stabilityai/sd-vae-ft-ema`) or its `vae/` subfolder (a whole pipeline repo).
    VaeFolder,
    /// The one checkpoint file (`.pt`, `.pth`, `.ckpt`, `.bin`, `.safetensors`) at the
    /// snapshot's root.
    CheckpointFile,
}

/// `(org, name)` when `value` is spelled like a hub repo id: exactly two path components of
/// `[A-Za-z0-9._-]`, neither `.` nor `..`. The caller checks first that no such local path
/// exists, so a folder `org/name` next to the YAML always wins.
pub(crate) fn repo_id(value: &Path) -> Option<(&str, &str)> {
    let s = value.to_str()?;
    let (org, name) = s.split_once('/')?;
    let ok = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    (ok(org) && ok(name)).then_some((org, name))
}

/// The cache folder and which setting chose it (for error messages).
#[derive(Debug, Clone)]
pub(crate) struct CacheRoot {
    pub path: PathBuf,
    pub from: &'static str,
}

impl CacheRoot {
    /// From the environment, as huggingface_hub picks it.
    pub fn from_env() -> CacheRoot {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(p) = var("HF_HUB_CACHE") {
            return CacheRoot {
                path: p,
                from: "$HF_HUB_CACHE",
            };
        }
        if let Some(p) = var("HF_HOME") {
            return CacheRoot {
                path: p.join("hub"),
                from: "$HF_HOME/hub",
            };
        }
        if let Some(p) = var("XDG_CACHE_HOME") {
            return CacheRoot {
                path: p.join("huggingface/hub"),
                from: "$XDG_CACHE_HOME/huggingface/hub",
            };
        }
        CacheRoot {
            path: var("HOME")
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".cache/huggingface/hub"),
            from: "the default ~/.cache/huggingface/hub",
        }
    }
}

/// Finds `org/name` in the cache. The error is one line (without the YAML file and key, which
/// the caller adds) naming the folders looked in and the fix.
pub(crate) fn resolve(
    root: &CacheRoot,
    (org, name): (&str, &str),
    wanted: Wanted,
    local: &Path,
) -> Result<PathBuf, String> {
    let repo = root.path.join(format!("models--{org}--{name}"));
    let give_local = match wanted {
        Wanted::VaeFolder => "give a local folder",
        Wanted::CheckpointFile => "give a local file",
    };
    let fix =
        format!("download it once with `huggingface-cli download {org}/{name}` or {give_local}");
    let snapshots = repo.join("snapshots");
    if !snapshots.is_dir() {
        return Err(format!(
            "`{org}/{name}` is neither a path beside the job file ({}) nor in the local Hugging \
             Face cache ({}, cache from {}); {fix}",
            local.display(),
            repo.display(),
            root.from
        ));
    }
    let snapshot = pick_snapshot(&repo, &snapshots).map_err(|e| format!("{e}; {fix}"))?;
    match wanted {
        Wanted::VaeFolder => {
            for dir in [snapshot.clone(), snapshot.join("vae")] {
                if dir.join(fidshard_core::vae_config::CONFIG_FILE).is_file() {
                    return Ok(dir);
                }
            }
            Err(format!(
                "{} (the Hugging Face cache's `{org}/{name}`) has no config.json, at its root or \
                 in vae/; expected a diffusers AutoencoderKL or a pipeline with a vae/ folder; \
                 {fix}",
                snapshot.display()
            ))
        }
        Wanted::CheckpointFile => {
            let mut files = weight_files(&snapshot);
            match files.len() {
                1 => Ok(files.remove(0)),
                0 => Err(format!(
                    "{} (the Hugging Face cache's `{org}/{name}`) holds no .pt, .pth, .ckpt, .bin \
                     or .safetensors file; {fix}",
                    snapshot.display()
                )),
                _ => Err(format!(
                    "{} (the Hugging Face cache's `{org}/{name}`) holds several checkpoints ({}); \
                     give the one to use as a path",
                    snapshot.display(),
                    files
                        .iter()
                        .filter_map(|f| f.file_name())
                        .map(|f| f.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
}

/// `snapshots/<refs/main>`, or the only snapshot when there is no `refs/main` (a cache copied
/// without its refs, or filled by `snapshot_download(revision=<hash>)`).
fn pick_snapshot(repo: &Path, snapshots: &Path) -> Result<PathBuf, String> {
    let refs_main = repo.join("refs").join("main");
    if let Ok(rev) = std::fs::read_to_string(&refs_main) {
        let rev = rev.trim();
        let dir = snapshots.join(rev);
        if rev.is_empty() || !dir.is_dir() {
            return Err(format!(
                "{} names revision `{rev}` but {} does not exist (an interrupted download?)",
                refs_main.display(),
                dir.display()
            ));
        }
        return Ok(dir);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(snapshots)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    match dirs.len() {
        1 => Ok(dirs.remove(0)),
        0 => Err(format!("{} holds no snapshot", snapshots.display())),
        n => Err(format!(
            "{} holds {n} snapshots and there is no {} saying which is current",
            snapshots.display(),
            refs_main.display()
        )),
    }
}

/// Checkpoint-like files at the top of `dir` (the cache's symlinks count: `is_file` follows).
fn weight_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.is_file()
            && p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "pt" | "pth" | "ckpt" | "bin" | "safetensors"))
    });
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(dir: &Path) -> CacheRoot {
        CacheRoot {
            path: dir.to_path_buf(),
            from: "$HF_HUB_CACHE",
        }
    }

    #[test]
    fn repo_ids_are_exactly_org_slash_name() {
        assert_eq!(
            repo_id(Path::new("stabilityai/sd-vae-ft-ema")),
            Some(("stabilityai", "sd-vae-ft-ema"))
        );
        assert_eq!(repo_id(Path::new("a.b/c_d-1")), Some(("a.b", "c_d-1")));
        for no in [
            "vae",
            "/abs/path",
            "a/b/c",
            "./vae",
            "../vae",
            "a/",
            "a b/c",
            "pretrained/vae.d/x",
        ] {
            assert_eq!(repo_id(Path::new(no)), None, "{no}");
        }
    }

    #[test]
    fn finds_vae_at_the_root_or_in_vae_and_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--acme--tiny-vae");
        let snap = repo.join("snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        let r = root(tmp.path());
        let local = Path::new("/job/acme/tiny-vae");
        let id = ("acme", "tiny-vae");
        let err = resolve(&r, id, Wanted::VaeFolder, local).unwrap_err();
        assert!(err.contains("no config.json"), "{err}");
        std::fs::create_dir_all(snap.join("vae")).unwrap();
        std::fs::write(snap.join("vae/config.json"), "{}").unwrap();
        assert_eq!(
            resolve(&r, id, Wanted::VaeFolder, local).unwrap(),
            snap.join("vae")
        );
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        assert_eq!(resolve(&r, id, Wanted::VaeFolder, local).unwrap(), snap);

        let err = resolve(&r, id, Wanted::CheckpointFile, local).unwrap_err();
        assert!(err.contains("no .pt"), "{err}");
        std::fs::write(snap.join("model.pt"), "x").unwrap();
        assert_eq!(
            resolve(&r, id, Wanted::CheckpointFile, local).unwrap(),
            snap.join("model.pt")
        );
        std::fs::write(snap.join("model.safetensors"), "x").unwrap();
        let err = resolve(&r, id, Wanted::CheckpointFile, local).unwrap_err();
        assert!(err.contains("model.pt, model.safetensors"), "{err}");

        // refs/main naming a missing snapshot; then no refs: the single snapshot.
        std::fs::write(repo.join("refs/main"), "def456").unwrap();
        let err = resolve(&r, id, Wanted::VaeFolder, local).unwrap_err();
        assert!(err.contains("def456") && err.contains("huggingface-cli download acme/tiny-vae"));
        std::fs::remove_file(repo.join("refs/main")).unwrap();
        assert_eq!(resolve(&r, id, Wanted::VaeFolder, local).unwrap(), snap);
        std::fs::create_dir_all(repo.join("snapshots/def456")).unwrap();
        let err = resolve(&r, id, Wanted::VaeFolder, local).unwrap_err();
        assert!(err.contains("2 snapshots"), "{err}");
    }

    #[test]
    fn a_missing_repo_names_both_places_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve(
            &root(tmp.path()),
            ("stabilityai", "sd-vae-ft-ema"),
            Wanted::VaeFolder,
            Path::new("/job/stabilityai/sd-vae-ft-ema"),
        )
        .unwrap_err();
        assert!(!err.contains('\n'));
        for part in [
            "/job/stabilityai/sd-vae-ft-ema",
            "models--stabilityai--sd-vae-ft-ema",
            "$HF_HUB_CACHE",
            "huggingface-cli download stabilityai/sd-vae-ft-ema",
            "give a local folder",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
    }
}
