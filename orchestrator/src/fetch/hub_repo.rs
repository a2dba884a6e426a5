//! A Hugging Face repo into the hub cache, the way huggingface_hub does it, so that Python and
//! fidshard share one copy:
//!
//! 1. `GET $HF_ENDPOINT/api/models/{repo}/revision/{revision}` (hf-hub's `info_request`): the
//!    commit and the file list, from which the files the job needs are picked;
//! 2. per file, `HEAD $HF_ENDPOINT/{repo}/resolve/{commit}/{file}`: `X-Linked-Etag` (the SHA-256
//!    of an LFS file) or `ETag` (the git blob id of a small one), `X-Linked-Size` or
//!    `Content-Length`, `X-Repo-Commit`;
//! 3. the bytes, following the redirect to the CDN, into `blobs/{etag}` (transfer.rs), verified
//!    against the ETag;
//! 4. `snapshots/{commit}/{file}`, a relative symlink to the blob, and `refs/{revision}`.
use super::error::FetchError;
use super::http::{Auth, Failure, Http};
use super::hub_errors::refused;
use super::progress::Reporter;
use super::retry::with_retries;
use super::settings::Settings;
use super::transfer::{self, Digest, Transfer};
use crate::job::hub::{is_checkpoint_name, is_commit, RepoRef, Wanted};
use std::path::{Path, PathBuf};

pub(crate) struct Hub<'a> {
    s: &'a Settings,
    http: &'a Http,
    api: hf_hub::api::sync::Api,
}

/// What the hub says of one file.
struct Meta {
    etag: String,
    size: Option<u64>,
}

impl<'a> Hub<'a> {
    pub fn new(s: &'a Settings, http: &'a Http) -> Result<Hub<'a>, FetchError> {
        let api =
            hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(s.hub_cache.path.clone()))
                .with_endpoint(s.endpoint.clone())
                // No token: hf-hub only builds URLs here; requests go through `Http`, which
                // sends the token to the endpoint's own origin only.
                .with_token(None)
                .with_progress(false)
                .with_user_agent("fidshard", env!("CARGO_PKG_VERSION"))
                .build()
                .map_err(|e| FetchError::Input(format!("cannot set up the hub client: {e}")))?;
        Ok(Hub { s, http, api })
    }

    /// Downloads what `wanted` needs of `repo` (the files already in the snapshot are kept).
    pub fn fetch(
        &self,
        repo: &RepoRef,
        wanted: Wanted,
        report: &mut Reporter,
    ) -> Result<(), FetchError> {
        let (commit, files) = self.list(repo)?;
        let needed = pick(repo, wanted, &files)?;
        for file in &needed {
            self.file(repo, &commit, file, report)?;
        }
        let rev = repo.revision();
        if rev != commit {
            let refs = repo.folder(&self.s.hub_cache).join("refs").join(rev);
            if std::fs::read_to_string(&refs)
                .ok()
                .as_deref()
                .map(str::trim)
                != Some(&commit)
            {
                if let Some(dir) = refs.parent() {
                    std::fs::create_dir_all(dir).map_err(FetchError::io(dir))?;
                }
                transfer::write_atomic(&refs, commit.as_bytes())?;
            }
        }
        Ok(())
    }

    /// The commit of the revision and the repo's files.
    fn list(&self, repo: &RepoRef) -> Result<(String, Vec<String>), FetchError> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.s.endpoint,
            repo.id(),
            repo.hf().url_revision()
        );
        let p = &self.s.policy;
        let info = with_retries(
            p,
            &url,
            || {
                let resp = match self.http.get_small(&url, Auth::Hub) {
                    Ok(r) => r,
                    Err(f) => return Ok(Err(f)),
                };
                Ok(resp
                    .into_json::<hf_hub::api::RepoInfo>()
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::InvalidData => Failure::final_(format!(
                            "the hub's file list is not what huggingface_hub expects ({e}); is \
                             HF_ENDPOINT={} a Hugging Face Hub?",
                            self.s.endpoint
                        )),
                        _ => Failure::body(&e, p.stall, false),
                    }))
            },
            |f| refused(self.s, repo, None, &url, f),
        )?;
        if !is_commit(&info.sha) {
            return Err(FetchError::Input(format!(
                "{url}: the hub names commit `{}`, not a commit hash",
                info.sha
            )));
        }
        Ok((
            info.sha,
            info.siblings.into_iter().map(|s| s.rfilename).collect(),
        ))
    }

    /// `HEAD .../resolve/{commit}/{file}`.
    fn meta(&self, repo: &RepoRef, url: &str, file: &str) -> Result<Meta, FetchError> {
        with_retries(
            &self.s.policy,
            url,
            || {
                let resp = match self.http.head(url, Auth::Hub) {
                    Ok(r) => r,
                    Err(f) => return Ok(Err(f)),
                };
                let etag = resp
                    .header("X-Linked-Etag")
                    .or(resp.header("ETag"))
                    .map(|e| {
                        e.trim()
                            .trim_start_matches("W/")
                            .trim_matches('"')
                            .to_string()
                    })
                    .filter(|e| !e.is_empty());
                let size = resp
                    .header("X-Linked-Size")
                    .or(resp.header("Content-Length"))
                    .and_then(|v| v.trim().parse().ok());
                Ok(match etag {
                    Some(etag) if !etag.contains(['/', '\\']) => Ok(Meta { etag, size }),
                    _ => Err(Failure::final_(format!(
                        "the hub's answer has no usable ETag; is HF_ENDPOINT={} a Hugging Face \
                         Hub?",
                        self.s.endpoint
                    ))),
                })
            },
            |f| refused(self.s, repo, Some(file), url, f),
        )
    }

    /// One file of the snapshot: its blob (downloaded unless some snapshot already has it) and
    /// its symlink.
    fn file(
        &self,
        repo: &RepoRef,
        commit: &str,
        file: &str,
        report: &mut Reporter,
    ) -> Result<(), FetchError> {
        let dir = repo.folder(&self.s.hub_cache);
        let link = dir.join("snapshots").join(commit).join(file);
        if link.is_file() {
            return Ok(());
        }
        let at_commit = RepoRef {
            revision: Some(commit.to_string()),
            ..repo.clone()
        };
        let url = self.api.repo(at_commit.hf()).url(file);
        let meta = self.meta(repo, &url, file)?;
        let blob = dir.join("blobs").join(&meta.etag);
        let hexd =
            |n: usize| meta.etag.len() == n && meta.etag.chars().all(|c| c.is_ascii_hexdigit());
        let digest = if hexd(64) {
            Digest::Sha256(meta.etag.to_ascii_lowercase())
        } else if hexd(40) {
            Digest::GitSha1(meta.etag.to_ascii_lowercase())
        } else {
            Digest::None
        };
        if !blob.is_file() {
            let label = format!("{}/{file}", repo.id());
            let t = Transfer {
                url: &url,
                label: &label,
                dest: &blob,
                partial: &dir.join("blobs").join(format!("{}.incomplete", meta.etag)),
                lock: &self
                    .s
                    .hub_cache
                    .path
                    .join(".locks")
                    .join(repo.hf().folder_name())
                    .join(format!("{}.lock", meta.etag)),
                size: meta.size,
                digest,
                auth: Auth::Hub,
                format: transfer::Format::of_name(file),
                record_sha256: false,
                digest_key: None,
            };
            transfer::fetch(
                &t,
                self.http,
                &self.s.policy,
                report,
                &|| blob.is_file(),
                &|f| refused(self.s, repo, Some(file), &url, f),
            )?;
        }
        symlink(&blob, &link, file)
    }
}

/// The files of the repo that `wanted` needs.
fn pick(repo: &RepoRef, wanted: Wanted, files: &[String]) -> Result<Vec<String>, FetchError> {
    let has = |f: &str| files.iter().any(|x| x == f);
    let err = |what: String| FetchError::Input(format!("`{repo}` {what}"));
    // A diffusers folder's config.json and weights.
    let folder = |prefix: &str| -> Result<Vec<String>, FetchError> {
        let config = format!("{prefix}config.json");
        if !has(&config) {
            return Err(err(format!("has no {config}")));
        }
        let weights = fidshard_core::vae_config::WEIGHT_FILES
            .iter()
            .map(|w| format!("{prefix}{w}"))
            .find(|w| has(w))
            .ok_or_else(|| {
                err(format!(
                    "has no {prefix}diffusion_pytorch_model.safetensors (or .bin)"
                ))
            })?;
        Ok(vec![config, weights])
    };
    let wanted = match (wanted, repo.path.as_deref()) {
        // `model.checkpoint`: a diffusers DiT folder (named, a pipeline's transformer/, or the
        // root), the weights file of one with its config.json, else one checkpoint file.
        (Wanted::Model, Some(p))
            if !has(p) && has(&format!("{}/config.json", p.trim_end_matches('/'))) =>
        {
            return folder(&format!("{}/", p.trim_end_matches('/')));
        }
        (Wanted::Model, Some(p)) => {
            let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
            let dir = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            let config = format!("{dir}config.json");
            if has(p) && fidshard_core::vae_config::WEIGHT_FILES.contains(&name) && has(&config) {
                return Ok(vec![config, p.to_string()]);
            }
            Wanted::CheckpointFile
        }
        (Wanted::Model, None) if has("transformer/config.json") => return folder("transformer/"),
        (Wanted::Model, None)
            if has("config.json")
                && !files.iter().any(|f| {
                    !f.contains('/')
                        && is_checkpoint_name(f)
                        && !fidshard_core::vae_config::WEIGHT_FILES.contains(&f.as_str())
                }) =>
        {
            return folder("")
        }
        (Wanted::Model, None) => Wanted::CheckpointFile,
        (w, _) => w,
    };
    match wanted {
        Wanted::VaeFolder => {
            let prefix = match repo.path.as_deref() {
                Some(p) => format!("{}/", p.trim_end_matches('/')),
                None if has("config.json") => String::new(),
                None if has("vae/config.json") => "vae/".to_string(),
                None => {
                    return Err(err(
                        "has no config.json at its root or in vae/: it is not a diffusers \
                         AutoencoderKL or pipeline repo"
                            .into(),
                    ))
                }
            };
            folder(&prefix)
        }
        Wanted::CheckpointFile | Wanted::Model => {
            let top: Vec<&String> = files
                .iter()
                .filter(|f| !f.contains('/') && is_checkpoint_name(f))
                .collect();
            let list = || {
                top.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match (&repo.path, top.as_slice()) {
                (Some(p), _) if has(p) => Ok(vec![p.clone()]),
                (Some(p), _) => Err(err(format!(
                    "has no file {p} (checkpoints at its root: {})",
                    list()
                ))),
                (None, [one]) => Ok(vec![(*one).clone()]),
                (None, []) => Err(err(
                    "holds no .pt, .pth, .ckpt, .bin or .safetensors file at its root".into(),
                )),
                (None, many) => Err(err(format!(
                    "holds several checkpoints ({}); name the one to use, e.g. `{}@{}/{}`",
                    list(),
                    repo.id(),
                    repo.revision(),
                    many[0]
                ))),
            }
        }
    }
}

/// `link` -> `../../blobs/{etag}` (one more `..` per folder of `file`), as huggingface_hub
/// makes it. Another process making the same link at the same time is fine.
fn symlink(blob: &Path, link: &Path, file: &str) -> Result<(), FetchError> {
    let dir = link.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(FetchError::io(dir))?;
    let mut target = PathBuf::new();
    for _ in 0..file.split('/').count() + 1 {
        target.push("..");
    }
    target.push("blobs");
    target.push(blob.file_name().unwrap_or_default());
    for _ in 0..2 {
        match std::os::unix::fs::symlink(&target, link) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if link.is_file() {
                    return Ok(());
                }
                // A dangling link (its blob was deleted): make it again.
                let _ = std::fs::remove_file(link);
            }
            Err(e) => return Err(FetchError::io(link)(e)),
        }
    }
    Err(FetchError::Io {
        path: link.to_path_buf(),
        source: std::io::Error::other("cannot make the snapshot's symlink"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: Option<&str>) -> RepoRef {
        RepoRef {
            org: "acme".into(),
            name: "x".into(),
            revision: None,
            path: path.map(str::to_string),
        }
    }

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn picks_a_diffusers_dit_for_the_model() {
        let pipe = files(&[
            "model_index.json",
            "scheduler/scheduler_config.json",
            "transformer/config.json",
            "transformer/diffusion_pytorch_model.bin",
            "transformer/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ]);
        let dit = files(&[
            "transformer/config.json",
            "transformer/diffusion_pytorch_model.safetensors",
        ]);
        assert_eq!(pick(&repo(None), Wanted::Model, &pipe).unwrap(), dit);
        assert_eq!(
            pick(&repo(Some("transformer")), Wanted::Model, &pipe).unwrap(),
            dit
        );
        let file = repo(Some("transformer/diffusion_pytorch_model.safetensors"));
        assert_eq!(pick(&file, Wanted::Model, &pipe).unwrap(), dit);
        let root = files(&[
            "config.json",
            "diffusion_pytorch_model.safetensors",
            "README.md",
        ]);
        assert_eq!(
            pick(&repo(None), Wanted::Model, &root).unwrap(),
            root[..2].to_vec()
        );
        // A plain checkpoint repo is picked as before, a config.json beside it or not.
        let plain = files(&["config.json", "DiT-XL-2-256x256.pt"]);
        assert_eq!(
            pick(&repo(None), Wanted::Model, &plain).unwrap(),
            files(&["DiT-XL-2-256x256.pt"])
        );
    }

    #[test]
    fn picks_the_files_a_job_needs() {
        let vae = files(&[
            "config.json",
            "diffusion_pytorch_model.bin",
            "diffusion_pytorch_model.safetensors",
            "README.md",
        ]);
        assert_eq!(
            pick(&repo(None), Wanted::VaeFolder, &vae).unwrap(),
            files(&["config.json", "diffusion_pytorch_model.safetensors"])
        );
        let pipe = files(&[
            "model_index.json",
            "vae/config.json",
            "vae/diffusion_pytorch_model.bin",
        ]);
        assert_eq!(
            pick(&repo(None), Wanted::VaeFolder, &pipe).unwrap(),
            files(&["vae/config.json", "vae/diffusion_pytorch_model.bin"])
        );
        let e = pick(&repo(Some("unet")), Wanted::VaeFolder, &pipe).unwrap_err();
        assert!(e.to_string().contains("has no unet/config.json"), "{e}");

        let dit = files(&["a.pt", "b.safetensors", "sub/c.pt", "README.md"]);
        let e = pick(&repo(None), Wanted::CheckpointFile, &dit).unwrap_err();
        assert!(
            e.to_string()
                .contains("several checkpoints (a.pt, b.safetensors)"),
            "{e}"
        );
        assert!(e.to_string().contains("`acme/x@main/a.pt`"), "{e}");
        assert_eq!(
            pick(&repo(Some("sub/c.pt")), Wanted::CheckpointFile, &dit).unwrap(),
            files(&["sub/c.pt"])
        );
        assert!(pick(&repo(Some("d.pt")), Wanted::CheckpointFile, &dit).is_err());
        assert_eq!(
            pick(&repo(None), Wanted::CheckpointFile, &files(&["m.pt"])).unwrap(),
            files(&["m.pt"])
        );
    }

    #[test]
    fn snapshot_links_are_relative() {
        let tmp = tempfile::tempdir().unwrap();
        let blob = tmp.path().join("blobs/abc");
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, "x").unwrap();
        let link = tmp.path().join("snapshots/c0/vae/config.json");
        symlink(&blob, &link, "vae/config.json").unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../../../blobs/abc")
        );
        assert_eq!(std::fs::read(&link).unwrap(), b"x");
        symlink(&blob, &link, "vae/config.json").unwrap();
    }
}
