//! One file from a URL to its final name in a cache, whatever the network does. Under the
//! cache lock (lock.rs), bytes go to `PARTIAL` (the `.incomplete` file huggingface_hub uses for
//! the same blob): a broken or stalled transfer is retried from the bytes already there
//! (`Range: bytes=N-`); a server that ignores the range starts the file over. A body is cut off
//! past its announced size (or, with none, past `FIDSHARD_FETCH_MAX_BYTES`), and a transfer
//! slower than `FIDSHARD_FETCH_MIN_RATE` over `FIDSHARD_FETCH_RATE_WINDOW` is aborted. Only when
//! the size, the digest and (without a pinned sha256) the format (format.rs) match does the file
//! get its final name (rename in the same folder), so a final name never holds a partial or
//! wrong file.
use super::error::FetchError;
use super::format;
pub(crate) use super::format::Format;
use super::http::{Auth, Failure, Http, Kind};
use super::progress::Reporter;
use super::retry;
use super::settings::Policy;
use crate::job::hub::hex;
use sha2::Digest as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

/// What the bytes must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Digest {
    /// SHA-256 (hub LFS files: their ETag; URLs: `model.sha256`).
    Sha256(String),
    /// Git's blob id, SHA-1 of `blob {size}\0` + content (small hub files: their ETag).
    GitSha1(String),
    None,
}

pub(crate) struct Transfer<'a> {
    pub url: &'a str,
    /// How logs and bars name the file.
    pub label: &'a str,
    pub dest: &'a Path,
    pub partial: &'a Path,
    pub lock: &'a Path,
    /// The size the server announced beforehand (hub metadata), if any.
    pub size: Option<u64>,
    pub digest: Digest,
    /// Whether the requests may carry the hub token.
    pub auth: Auth,
    /// What the file must look like before it is kept.
    pub format: Format,
    /// Also write the SHA-256 to `FILE.sha256` (hub.rs `sha256_record`), after the rename and
    /// under the lock (URL downloads, whose name says nothing of their content).
    pub record_sha256: bool,
    /// The job file's key when the digest comes from it (`model.sha256`, ...): content that
    /// keeps hashing to the same other value is what the server has, not a transfer error
    /// (exit 2 instead of retrying).
    pub digest_key: Option<&'a str>,
}

/// Downloads `t` unless `present()` says (under the lock) that another process already did.
/// `refused` words a non-temporary HTTP error.
pub(crate) fn fetch(
    t: &Transfer,
    http: &Http,
    policy: &Policy,
    report: &mut Reporter,
    present: &dyn Fn() -> bool,
    refused: &dyn Fn(&Failure) -> FetchError,
) -> Result<(), FetchError> {
    let _lock = super::lock::lock(t.lock, t.label)?;
    if present() {
        return Ok(());
    }
    if let Some(dir) = t.dest.parent() {
        std::fs::create_dir_all(dir).map_err(FetchError::io(dir))?;
    }
    let mut st = State {
        total: t.size,
        hasher: None,
        last_mismatch: None,
        best: file_len(t.partial),
    };
    report.begin(t.label, t.size, st.best);
    let res = retry::with_retries(
        policy,
        t.url,
        || {
            let res = attempt(t, http, policy, &mut st, report)?;
            Ok(res.map_err(|f| progressed(t, &mut st, f)))
        },
        refused,
    );
    report.end(res.is_ok());
    res
}

struct State {
    /// The file's size, once known.
    total: Option<u64>,
    /// Hashes of the bytes in `partial` so far.
    hasher: Option<Hasher>,
    /// The digest of the last complete but wrong download.
    last_mismatch: Option<String>,
    /// The most bytes `partial` ever held in this process.
    best: u64,
}

/// A failed attempt made progress when it left at least [`retry::MIN_PROGRESS`] bytes more on
/// disk than ever before: bytes thrown away (a restart, a wrong file) or a few bytes per
/// attempt do not reset the count of failures.
fn progressed(t: &Transfer, st: &mut State, f: Failure) -> Failure {
    let now = file_len(t.partial);
    let progressed = now >= st.best.saturating_add(retry::MIN_PROGRESS);
    st.best = st.best.max(now);
    Failure { progressed, ..f }
}

#[derive(Clone)]
struct Hasher {
    sha256: sha2::Sha256,
    git: Option<sha1::Sha1>,
    len: u64,
}

impl Hasher {
    fn new(digest: &Digest, size: Option<u64>) -> Hasher {
        let git = match (digest, size) {
            (Digest::GitSha1(_), Some(n)) => {
                let mut h = sha1::Sha1::new();
                h.update(format!("blob {n}\0").as_bytes());
                Some(h)
            }
            _ => None,
        };
        Hasher {
            sha256: sha2::Sha256::new(),
            git,
            len: 0,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        if let Some(g) = &mut self.git {
            g.update(bytes);
        }
        self.len += bytes.len() as u64;
    }

    /// The hashes of what is already in `path` (a resumed download).
    fn of_file(path: &Path, digest: &Digest, size: Option<u64>) -> std::io::Result<Hasher> {
        let mut h = Hasher::new(digest, size);
        let mut f = File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf)? {
                0 => return Ok(h),
                n => h.update(&buf[..n]),
            }
        }
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Removes the partial file (a wrong or unusable one).
fn drop_partial(t: &Transfer, st: &mut State) -> Result<(), FetchError> {
    st.hasher = None;
    match std::fs::remove_file(t.partial) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FetchError::io(t.partial)(e)),
        _ => Ok(()),
    }
}

/// `bytes a-b/T` of a 206: `(a, T)`.
fn content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let v = v.trim().strip_prefix("bytes ")?;
    let (range, total) = v.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

fn attempt(
    t: &Transfer,
    http: &Http,
    policy: &Policy,
    st: &mut State,
    report: &mut Reporter,
) -> Result<Result<(), Failure>, FetchError> {
    let mut have = file_len(t.partial);
    if st.total.is_some_and(|n| have > n) {
        drop_partial(t, st)?;
        have = 0;
    }
    if have == 0 || st.total != Some(have) {
        let resp = match http.get(t.url, have, t.auth) {
            Ok(r) => r,
            Err(f) if f.kind == Kind::Refused(416) => {
                // What is on disk is not a prefix of the file (longer, or another file).
                drop_partial(t, st)?;
                return Ok(Err(Failure::temporary(
                    "the partial download does not fit the file (HTTP 416); starting over",
                )));
            }
            Err(f) => return Ok(Err(f)),
        };
        let announced: Option<u64> = resp
            .header("Content-Length")
            .and_then(|v| v.trim().parse().ok());
        let (start, total) = match resp.status() {
            206 => match resp.header("Content-Range").and_then(content_range) {
                Some((start, total)) => (start, total.or(announced.map(|n| start + n))),
                None => {
                    return Ok(Err(Failure::temporary(
                        "a 206 answer without Content-Range",
                    )))
                }
            },
            200 => (0, announced),
            s => {
                return Ok(Err(Failure::final_(format!(
                    "unexpected HTTP {s} to a download"
                ))))
            }
        };
        if start != have {
            if start != 0 {
                return Ok(Err(Failure::temporary(format!(
                    "asked for bytes from {have} on, the server sent them from {start}"
                ))));
            }
            // The server ignores ranges: start over.
            drop_partial(t, st)?;
            have = 0;
        }
        match (st.total, total) {
            (Some(want), Some(got)) if want != got => {
                drop_partial(t, st)?;
                return Ok(Err(Failure::temporary(format!(
                    "the server now sends {got} bytes where {want} were announced; starting over"
                ))));
            }
            (None, Some(got)) => {
                st.total = Some(got);
                report.total(got);
            }
            _ => {}
        }
        if st.hasher.as_ref().map(|h| h.len) != Some(have) {
            st.hasher = Some(if have == 0 {
                Hasher::new(&t.digest, st.total)
            } else {
                Hasher::of_file(t.partial, &t.digest, st.total)
                    .map_err(FetchError::io(t.partial))?
            });
        }
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(t.partial)
            .map_err(FetchError::io(t.partial))?;
        let limits = Limits::new(policy, http, st.total);
        if let Err(f) = copy(t, resp.into_reader(), &mut out, have, st, &limits, report)? {
            return Ok(Err(f));
        }
        out.sync_all().map_err(FetchError::io(t.partial))?;
    }
    finish(t, st)
}

/// What one transfer may take: bytes, and time at a low rate.
struct Limits {
    /// The size announced (nothing past it is accepted), or the cap for an unannounced one.
    max: u64,
    announced: bool,
    min_rate: u64,
    window: std::time::Duration,
    stall: std::time::Duration,
}

impl Limits {
    fn new(policy: &Policy, http: &Http, total: Option<u64>) -> Limits {
        Limits {
            max: total.unwrap_or(policy.max_bytes),
            announced: total.is_some(),
            min_rate: policy.min_rate,
            window: policy.rate_window,
            stall: http.stall,
        }
    }

    /// The failure for a body that went on past `max`: the partial file is worthless.
    fn too_long(&self) -> Failure {
        if self.announced {
            Failure::temporary(format!(
                "the server sent more than the {} bytes announced; starting over",
                self.max
            ))
        } else {
            Failure::final_(format!(
                "the server sent more than {} bytes without announcing a size, and kept \
                 sending; nothing was kept (a larger file needs FIDSHARD_FETCH_MAX_BYTES raised, \
                 e.g. FIDSHARD_FETCH_MAX_BYTES=200G)",
                self.max
            ))
        }
    }
}

/// Body to file, hashing; `Ok(Err)` when the transfer broke, went past its size, or crawled.
fn copy(
    t: &Transfer,
    mut body: impl Read,
    out: &mut File,
    have: u64,
    st: &mut State,
    limits: &Limits,
    report: &mut Reporter,
) -> Result<Result<(), Failure>, FetchError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    let hasher = st.hasher.as_mut().expect("set before the copy");
    let (mut window_start, mut window_bytes) = (Instant::now(), 0u64);
    loop {
        retry::stop_requested(t.label)?;
        // One byte more than the limit allows, to see a body that goes on.
        let room = limits.max.saturating_sub(have + got).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = match body.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok(Err(Failure::body(&e, limits.stall, got > 0))),
        };
        if have + got + n as u64 > limits.max {
            drop(body);
            drop_partial(t, st)?;
            return Ok(Err(limits.too_long()));
        }
        out.write_all(&buf[..n])
            .map_err(FetchError::io(t.partial))?;
        hasher.update(&buf[..n]);
        got += n as u64;
        window_bytes += n as u64;
        report.at(have + got);
        let elapsed = window_start.elapsed();
        if elapsed >= limits.window {
            let rate = window_bytes as f64 / elapsed.as_secs_f64();
            if rate < limits.min_rate as f64 {
                return Ok(Err(Failure::temporary(format!(
                    "too slow: {window_bytes} bytes in {:.1} s, below the minimum of {} bytes/s \
                     (FIDSHARD_FETCH_MIN_RATE over FIDSHARD_FETCH_RATE_WINDOW seconds)",
                    elapsed.as_secs_f64(),
                    limits.min_rate
                ))));
            }
            (window_start, window_bytes) = (Instant::now(), 0);
        }
    }
    let len = have + got;
    match st.total {
        Some(total) if len < total => Ok(Err(Failure {
            progressed: got > 0,
            ..Failure::temporary(format!("the body ended after {len} of {total} bytes"))
        })),
        _ => Ok(Ok(())),
    }
}

/// Size and digest, then the final name.
fn finish(t: &Transfer, st: &mut State) -> Result<Result<(), Failure>, FetchError> {
    let len = file_len(t.partial);
    if st.total.is_some_and(|n| n != len) {
        let n = st.total.unwrap_or(0);
        drop_partial(t, st)?;
        return Ok(Err(Failure::temporary(format!(
            "got {len} bytes where {n} were announced; starting over"
        ))));
    }
    let h = match st.hasher.clone() {
        Some(h) if h.len == len => h,
        _ => Hasher::of_file(t.partial, &t.digest, Some(len)).map_err(FetchError::io(t.partial))?,
    };
    let sha256 = hex(&h.sha256.finalize());
    let (want, got, what) = match &t.digest {
        Digest::Sha256(want) => (Some(want.clone()), sha256.clone(), "sha256"),
        Digest::GitSha1(want) => (
            Some(want.clone()),
            h.git
                .map(|g| hex(&g.finalize()))
                .unwrap_or_else(|| want.clone()),
            "git blob sha1",
        ),
        Digest::None => (None, String::new(), ""),
    };
    let wrong_digest = want.as_ref().is_some_and(|w| *w != got);
    if let Err(what) = format::check(t.partial, t.format) {
        drop_partial(t, st)?;
        // With a digest that does not match either, it may be a transfer gone wrong: retry.
        return Ok(Err(if wrong_digest {
            Failure::temporary(format!("{what}; downloading again"))
        } else {
            Failure::final_(what)
        }));
    }
    if let Some(want) = want.filter(|w| *w != got) {
        drop_partial(t, st)?;
        let again = st.last_mismatch.as_deref() == Some(got.as_str());
        st.last_mismatch = Some(got.clone());
        if let Some(key) = t.digest_key.filter(|_| again) {
            return Ok(Err(Failure {
                kind: Kind::Final,
                ..Failure::temporary(format!(
                    "{} serves a file whose sha256 is {got}, twice, but `{key}` says \
                     {want}; nothing was kept. Check the URL and the sha256 in the job file",
                    t.url
                ))
            }));
        }
        return Ok(Err(Failure::temporary(format!(
            "the {len} bytes received have {what} {got}, expected {want}; downloading again"
        ))));
    }
    std::fs::rename(t.partial, t.dest).map_err(FetchError::io(t.dest))?;
    if t.record_sha256 {
        let record = crate::job::hub::sha256_record(t.dest);
        write_atomic(&record, format!("{sha256}\n").as_bytes())?;
    }
    if let Some(dir) = t.dest.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(Ok(()))
}

/// `path` replaced by `bytes` through fidshard-core's `write_atomic` (readers never see a torn
/// file), its error as a `FetchError`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    fidshard_core::output::write_atomic(path, bytes).map_err(|e| FetchError::io(path)(e.into_io()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("items 1-2/3"), None);
    }

    #[test]
    fn git_blob_ids() {
        // `git hash-object` of "hello\n".
        let mut h = Hasher::new(&Digest::GitSha1(String::new()), Some(6));
        h.update(b"hello\n");
        assert_eq!(
            hex(&h.git.unwrap().finalize()),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
