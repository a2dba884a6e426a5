//! The forms a weights value of the job file may take besides a local path (hub repos and
//! URLs), the local name a URL download gets, and the digests the caches already know.
use super::CacheRoot;
use std::fmt;
use std::path::{Path, PathBuf};

/// A Hugging Face model repo, at a revision (`main` when none is given), maybe a path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepoRef {
    pub org: String,
    pub name: String,
    pub revision: Option<String>,
    /// A file (checkpoint) or folder (VAE) inside the repo.
    pub path: Option<String>,
}

impl RepoRef {
    /// `org/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.org, self.name)
    }

    /// The revision asked for: a branch, a tag or a commit hash.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// hf-hub's view of it (folder names, URLs).
    pub fn hf(&self) -> hf_hub::Repo {
        hf_hub::Repo::with_revision(
            self.id(),
            hf_hub::RepoType::Model,
            self.revision().to_string(),
        )
    }

    /// `ROOT/models--{org}--{name}`.
    pub fn folder(&self, root: &CacheRoot) -> PathBuf {
        root.path.join(self.hf().folder_name())
    }

    /// The command of today's Python tools that downloads the same files into the same cache.
    pub fn hf_download(&self) -> String {
        let mut cmd = format!("hf download {}", self.id());
        if let Some(rev) = &self.revision {
            cmd += &format!(" --revision {rev}");
        }
        cmd
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.id())?;
        if let Some(rev) = &self.revision {
            write!(f, "@{rev}")?;
        }
        if let Some(p) = &self.path {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// One file behind a plain `https://` (or `http://`) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlRef {
    pub url: String,
}

impl UrlRef {
    /// The last segment of the URL's path (`DiT-XL-2-256x256.pt`), made safe as a file name.
    /// The local copy keeps it, so the job fingerprint (which includes the file name) is the same
    /// as for a local file of that name.
    pub fn file_name(&self) -> String {
        let rest = self.url.split_once("://").map_or("", |(_, r)| r);
        let path = rest.split(['?', '#']).next().unwrap_or("");
        let last = path.split_once('/').map_or("", |(_, p)| p);
        let last = last.rsplit('/').next().unwrap_or("");
        let name: String = last
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        match name.trim_start_matches('.') {
            "" => "download".to_string(),
            n => n.to_string(),
        }
    }

    /// `ROOT/downloads/{first 16 hex digits of sha256(url)}/{file name}`.
    pub fn cached_path(&self, root: &CacheRoot) -> PathBuf {
        use sha2::Digest;
        let key = hex(&sha2::Sha256::digest(self.url.as_bytes()));
        root.path
            .join("downloads")
            .join(&key[..16])
            .join(self.file_name())
    }
}

/// A weights value that is not a local path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Remote {
    Repo(RepoRef),
    Url(UrlRef),
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Remote::Repo(r) => write!(f, "{r}"),
            Remote::Url(u) => write!(f, "{}", u.url),
        }
    }
}

/// What a weights value of the job file names: `Ok(None)` for a local path (the caller resolves
/// it as one), `Ok(Some(..))` for a hub repo or a URL, `Err` for a URL or `hf://` reference that
/// is malformed. A bare `org/name...` counts as a repo only when no path `local` (the value
/// resolved beside the job file) exists; `hf://` and URLs never look at the disk.
pub(crate) fn remote(value: &Path, local: &Path) -> Result<Option<Remote>, String> {
    let Some(s) = value.to_str() else {
        return Ok(None);
    };
    if let Some(rest) = s.strip_prefix("https://").or(s.strip_prefix("http://")) {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.is_empty() || s.chars().any(char::is_whitespace) {
            return Err(format!(
                "`{s}` is not a URL: expected https://host/path/file"
            ));
        }
        return Ok(Some(Remote::Url(UrlRef { url: s.to_string() })));
    }
    if let Some(rest) = s.strip_prefix("hf://") {
        return parse_repo(rest, true)
            .map(|r| Some(Remote::Repo(r)))
            .ok_or_else(|| {
                format!("`{s}` is not a hub reference: expected hf://org/name[@revision][/path]")
            });
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(format!(
            "`{scheme}://` is not supported: give a local path, a Hugging Face repo id \
             (org/name, hf://org/name@revision/file) or an https:// URL"
        ));
    }
    if local.exists() {
        return Ok(None);
    }
    Ok(parse_repo(s, false).map(Remote::Repo))
}

/// `org/name[@rev][/path]`. Bare (not `hf://`) references with a path need the `@rev`, so that
/// a mistyped local path such as `pretrained/dit/model.pt` is not taken for a repo.
fn parse_repo(s: &str, explicit: bool) -> Option<RepoRef> {
    let mut parts = s.split('/');
    let org = parts.next()?;
    let second = parts.next()?;
    let (name, revision) = match second.split_once('@') {
        Some((n, r)) => (n, Some(r)),
        None => (second, None),
    };
    let mut rest: Vec<&str> = parts.collect();
    let word = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if !word(org) || !word(name) {
        return None;
    }
    if let Some(r) = revision {
        if r.is_empty() || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
    }
    if !rest.is_empty() && revision.is_none() && !explicit {
        return None;
    }
    if rest.last() == Some(&"") {
        rest.pop();
    }
    if rest.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return None;
    }
    Some(RepoRef {
        org: org.to_string(),
        name: name.to_string(),
        revision: revision.map(str::to_string),
        path: (!rest.is_empty()).then(|| rest.join("/")),
    })
}

/// `sha256:` in the job file: 64 hex digits, optionally prefixed `sha256:`; lower case.
pub(crate) fn parse_sha256(s: &str) -> Result<String, String> {
    let hexd = s.trim().strip_prefix("sha256:").unwrap_or(s.trim());
    if hexd.len() == 64 && hexd.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hexd.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{s}` is not a SHA-256: expected 64 hexadecimal digits (what `sha256sum FILE` prints)"
        ))
    }
}

/// The SHA-256 of a cached file when it is known without reading it: the name of the blob a hub
/// snapshot's symlink points to (LFS files are stored under their SHA-256), or the record
/// fidshard wrote beside a URL download.
pub(crate) fn known_sha256(path: &Path) -> Option<String> {
    let is_sha = |s: &str| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit());
    if let Ok(target) = std::fs::read_link(path) {
        let name = target.file_name()?.to_str()?.to_string();
        return is_sha(&name).then_some(name);
    }
    let text = std::fs::read_to_string(sha256_record(path)).ok()?;
    let text = text.trim();
    is_sha(text).then(|| text.to_string())
}

/// Where fidshard records the SHA-256 of a URL download: `FILE.sha256`.
pub(crate) fn sha256_record(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    path.with_file_name(name)
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
