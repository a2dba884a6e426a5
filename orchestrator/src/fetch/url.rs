//! A checkpoint from a plain URL (the DiT checkpoints are published that way) into fidshard's
//! cache, keyed by the URL (hub.rs `UrlRef::cached_path`). The file keeps the URL's file name;
//! its SHA-256 is recorded beside it, and checked against `model.sha256` (or the sha256 key of
//! `evaluate:`) when the job gives one
//! (a cached copy that differs is downloaded again). No token is ever sent to a plain URL.
use super::error::FetchError;
use super::http::{Auth, Failure, Http, Kind};
use super::progress::Reporter;
use super::settings::Settings;
use super::transfer::{self, Digest, Format, Transfer};
use crate::job::hub::{known_sha256, UrlRef};
use std::path::PathBuf;

/// Whether the cached copy of `u` is there (and has `sha256`, when given).
pub(crate) fn present(s: &Settings, u: &UrlRef, sha256: Option<&str>) -> bool {
    let dest = u.cached_path(&s.own_cache);
    dest.is_file() && sha256.is_none_or(|want| known_sha256(&dest).as_deref() == Some(want))
}

/// `sha256`: the digest and the job file's key that gives it (`model.sha256`, ...).
pub(crate) fn fetch(
    s: &Settings,
    http: &Http,
    u: &UrlRef,
    sha256: Option<(&str, &str)>,
    report: &mut Reporter,
) -> Result<PathBuf, FetchError> {
    let (sha256, key) = match sha256 {
        Some((d, k)) => (Some(d), Some(k)),
        None => (None, None),
    };
    let dest = u.cached_path(&s.own_cache);
    let with = |ext: &str| {
        let mut name = dest.file_name().unwrap_or_default().to_os_string();
        name.push(ext);
        dest.with_file_name(name)
    };
    if u.url.starts_with("http://") {
        let host = super::http::host_of(&u.url).unwrap_or_default();
        let local = ["127.", "localhost", "[::1]"]
            .iter()
            .any(|h| host.starts_with(h));
        if !local {
            tracing::warn!(url = %u.url, "plain http: the download is not encrypted (its size and, with model.sha256, its content are still checked)");
        }
    }
    let t = Transfer {
        url: &u.url,
        label: &u.url,
        dest: &dest,
        partial: &with(".incomplete"),
        lock: &with(".lock"),
        size: None,
        digest: sha256.map_or(Digest::None, |d| Digest::Sha256(d.to_string())),
        auth: Auth::Never,
        // A pinned sha256 says what the file is; without one, its format must.
        format: match sha256 {
            Some(_) => Format::Any,
            None => Format::of_name(&u.url),
        },
        record_sha256: true,
        digest_key: key,
    };
    transfer::fetch(
        &t,
        http,
        &s.policy,
        report,
        &|| present(s, u, sha256),
        &|f| refused(u, f),
    )?;
    Ok(dest)
}

fn refused(u: &UrlRef, f: &Failure) -> FetchError {
    let m = &f.message;
    FetchError::Input(match f.kind {
        Kind::Refused(404 | 410) => format!("{}: {m}: check the URL", u.url),
        Kind::Refused(401 | 403) => format!(
            "{}: {m}: the server refuses the download (fidshard sends no credentials to plain \
             URLs; download it yourself and give the local path)",
            u.url
        ),
        _ => format!("{}: {m}", u.url),
    })
}
