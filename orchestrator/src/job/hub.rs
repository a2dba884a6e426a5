//! Weights named by where they come from instead of by a local path, and where their local
//! copies are. This module never touches the network: it parses the forms a job file accepts,
//! and finds what earlier downloads (fidshard's `fetch/`, or Python's huggingface_hub) left in
//! the caches. `Job::load` resolves through it; `fetch/` uses it to decide what is missing.
//!
//! Forms (docs/configuration.md): `org/name`, `org/name@revision`, `org/name@revision/path`
//! (a path beside the job file of that name wins), `hf://org/name[@revision][/path]`, and
//! `https://...` / `http://...` (one file, the checkpoint).
//!
//! Hub cache layout (huggingface_hub's, shared with Python): `ROOT/models--{org}--{name}/refs/
//! {revision}` holds the commit hash of `snapshots/{commit}/`, whose files are symlinks into
//! `blobs/`. ROOT is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`,
//! else `~/.cache/huggingface/hub`. Plain URLs go to fidshard's own cache:
//! `$FIDSHARD_CACHE/downloads/{sha256(url)[..16]}/{file name}` (default `~/.cache/fidshard`).
mod refs;

pub(crate) use refs::{
    hex, known_sha256, parse_sha256, remote, sha256_record, Remote, RepoRef, UrlRef,
};
use std::path::{Path, PathBuf};

/// What the source should provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// A diffusers AutoencoderKL folder: the snapshot itself (a standalone VAE repo such as
    /// `stabilityai/sd-vae-ft-ema`), its `vae/` subfolder (a whole pipeline repo), or the folder
    /// the reference names.
    VaeFolder,
    /// The checkpoint the reference names, or the one checkpoint file (`.pt`, `.pth`, `.ckpt`,
    /// `.bin`, `.safetensors`) at the snapshot's root.
    CheckpointFile,
    /// `model.checkpoint`: the checkpoint file or diffusers DiT folder the reference names;
    /// without a path, a diffusers pipeline's `transformer/` (`facebook/DiT-XL-2-256`), else a
    /// diffusers DiT at the snapshot's root (config.json beside the weights), else as
    /// [`Wanted::CheckpointFile`].
    Model,
}

/// The `transformer/` folder of a diffusers pipeline repo (where `DiTPipeline` keeps its DiT).
pub(crate) const TRANSFORMER_FOLDER: &str = "transformer";

/// A cache folder and which setting chose it (for error messages).
#[derive(Debug, Clone)]
pub(crate) struct CacheRoot {
    pub path: PathBuf,
    pub from: &'static str,
}

fn env_path(k: &str) -> Option<PathBuf> {
    std::env::var_os(k)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn home() -> PathBuf {
    env_path("HOME").unwrap_or_else(|| PathBuf::from("/"))
}

impl CacheRoot {
    /// The Hugging Face hub cache, from the environment, as huggingface_hub picks it.
    pub fn from_env() -> CacheRoot {
        let (path, from) = if let Some(p) = env_path("HF_HUB_CACHE") {
            (p, "$HF_HUB_CACHE")
        } else if let Some(p) = env_path("HF_HOME") {
            (p.join("hub"), "$HF_HOME/hub")
        } else if let Some(p) = env_path("XDG_CACHE_HOME") {
            (p.join("huggingface/hub"), "$XDG_CACHE_HOME/huggingface/hub")
        } else {
            (
                home().join(".cache/huggingface/hub"),
                "the default ~/.cache/huggingface/hub",
            )
        };
        CacheRoot { path, from }
    }

    /// fidshard's own cache (URL downloads): `$FIDSHARD_CACHE`, else
    /// `$XDG_CACHE_HOME/fidshard`, else `~/.cache/fidshard`.
    pub fn fidshard() -> CacheRoot {
        let (path, from) = if let Some(p) = env_path("FIDSHARD_CACHE") {
            (p, "$FIDSHARD_CACHE")
        } else if let Some(p) = env_path("XDG_CACHE_HOME") {
            (p.join("fidshard"), "$XDG_CACHE_HOME/fidshard")
        } else {
            (
                home().join(".cache/fidshard"),
                "the default ~/.cache/fidshard",
            )
        };
        CacheRoot { path, from }
    }
}

/// The local copy of `remote`, found in the caches without any network access. The error is
/// one line (without the YAML file and key, which the caller adds) naming where it looked and
/// the fix; `local` is the path beside the job file that a bare repo id could also have meant.
pub(crate) fn locate(remote: &Remote, wanted: Wanted, local: &Path) -> Result<PathBuf, String> {
    match remote {
        Remote::Url(_) if wanted == Wanted::VaeFolder => Err(
            "a URL names one file, but the VAE is a folder (config.json and the weights): give a \
             local folder or a Hugging Face repo id such as stabilityai/sd-vae-ft-ema"
                .to_string(),
        ),
        Remote::Url(u) => {
            let root = CacheRoot::fidshard();
            let path = u.cached_path(&root);
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "`{}` has not been downloaded into fidshard's cache yet ({}, cache from {}); \
                     download it with `fidshard fetch` (which `run` and `validate` do first)",
                    u.url,
                    path.display(),
                    root.from
                ))
            }
        }
        Remote::Repo(r) => resolve(&CacheRoot::from_env(), r, wanted, local),
    }
}

/// Finds `repo` in the hub cache.
pub(crate) fn resolve(
    root: &CacheRoot,
    repo: &RepoRef,
    wanted: Wanted,
    local: &Path,
) -> Result<PathBuf, String> {
    let dir = repo.folder(root);
    let give_local = match wanted {
        Wanted::VaeFolder => "give a local folder",
        Wanted::CheckpointFile => "give a local file",
        Wanted::Model => "give a local file or diffusers DiT folder",
    };
    let fix = format!(
        "download it with `fidshard fetch` (which `run` and `validate` do first) or Python's \
         `{}`, or {give_local}",
        repo.hf_download()
    );
    let snapshots = dir.join("snapshots");
    let which = match repo.path.is_none() && repo.revision.is_none() {
        true => format!(
            "neither a path beside the job file ({}) nor",
            local.display()
        ),
        false => "not".to_string(),
    };
    if !snapshots.is_dir() {
        return Err(format!(
            "`{repo}` is {which} in the local Hugging Face cache ({}, cache from {}); {fix}",
            dir.display(),
            root.from
        ));
    }
    let snapshot = pick_snapshot(&dir, &snapshots, repo).map_err(|e| format!("{e}; {fix}"))?;
    let missing = |what: &str| -> String {
        format!(
            "{} (the Hugging Face cache's `{repo}`) {what}; {fix}",
            snapshot.display()
        )
    };
    let config = fidshard_core::vae_config::CONFIG_FILE;
    // A diffusers folder's weights beside its config.json.
    let weights_beside = |dir: PathBuf| -> Result<PathBuf, String> {
        match fidshard_core::vae_config::find_weights(&dir) {
            Ok(_) => Ok(dir),
            Err(_) => Err(missing(
                "has config.json but no diffusion_pytorch_model.safetensors (or .bin) beside \
                 it (an interrupted download?)",
            )),
        }
    };
    let wanted = match (wanted, &repo.path) {
        (Wanted::Model, Some(p)) if snapshot.join(p).join(config).is_file() => {
            return weights_beside(snapshot.join(p));
        }
        (Wanted::Model, None) => {
            // A pipeline's transformer/, or a diffusers DiT at the root (a config.json that
            // is not a DiT's, such as some repos keep beside a .pt, does not count).
            let transformer = snapshot.join(TRANSFORMER_FOLDER);
            if transformer.join(config).is_file() {
                return weights_beside(transformer);
            }
            if let Ok(Some(_)) = fidshard_core::diffusers_dit::find(&snapshot) {
                return Ok(snapshot.clone());
            }
            Wanted::CheckpointFile
        }
        (Wanted::Model, Some(_)) => Wanted::CheckpointFile,
        (w, _) => w,
    };
    match wanted {
        Wanted::VaeFolder => {
            let dirs = match &repo.path {
                Some(p) => vec![snapshot.join(p)],
                None => vec![snapshot.clone(), snapshot.join("vae")],
            };
            let Some(dir) = dirs.into_iter().find(|d| d.join(config).is_file()) else {
                return Err(missing(&match &repo.path {
                    Some(p) => format!("has no {p}/config.json"),
                    None => "has no config.json, at its root or in vae/; expected a diffusers \
                             AutoencoderKL or a pipeline with a vae/ folder"
                        .to_string(),
                }));
            };
            weights_beside(dir)
        }
        Wanted::CheckpointFile | Wanted::Model => {
            if let Some(p) = &repo.path {
                let file = snapshot.join(p);
                return match file.is_file() {
                    true => Ok(file),
                    false => Err(missing(&format!("has no file {p}"))),
                };
            }
            let mut files = weight_files(&snapshot);
            match files.len() {
                1 => Ok(files.remove(0)),
                0 => Err(missing(
                    "holds no .pt, .pth, .ckpt, .bin or .safetensors file",
                )),
                _ => Err(format!(
                    "{} (the Hugging Face cache's `{repo}`) holds several checkpoints ({}); name \
                     the one to use, e.g. `{}@{}/{}`",
                    snapshot.display(),
                    names(&files).join(", "),
                    repo.id(),
                    repo.revision(),
                    names(&files)[0],
                )),
            }
        }
    }
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| f.file_name())
        .map(|f| f.to_string_lossy().into_owned())
        .collect()
}

/// Is `s` a full commit hash?
pub(crate) fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// `snapshots/<commit>` for the revision: a commit hash names its snapshot; a branch or tag
/// is looked up in `refs/`; without a revision and without `refs/main`, the only snapshot (a
/// cache copied without its refs).
fn pick_snapshot(repo_dir: &Path, snapshots: &Path, repo: &RepoRef) -> Result<PathBuf, String> {
    let rev = repo.revision();
    if is_commit(rev) {
        let dir = snapshots.join(rev);
        return match dir.is_dir() {
            true => Ok(dir),
            false => Err(format!("{} does not exist", dir.display())),
        };
    }
    let refs = repo_dir.join("refs").join(rev);
    if let Ok(commit) = std::fs::read_to_string(&refs) {
        let commit = commit.trim();
        let dir = snapshots.join(commit);
        if commit.is_empty() || !dir.is_dir() {
            return Err(format!(
                "{} names revision `{commit}` but {} does not exist (an interrupted download?)",
                refs.display(),
                dir.display()
            ));
        }
        return Ok(dir);
    }
    if repo.revision.is_some() {
        return Err(format!(
            "revision `{rev}` of `{}` is not in the cache (no {})",
            repo.id(),
            refs.display()
        ));
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
            refs.display()
        )),
    }
}

/// Checkpoint-like file names.
pub(crate) fn is_checkpoint_name(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "pt" | "pth" | "ckpt" | "bin" | "safetensors"))
}

/// Checkpoint-like files at the top of `dir` (the cache's symlinks count: `is_file` follows).
fn weight_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file() && is_checkpoint_name(&p.to_string_lossy()));
    files.sort();
    files
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
