//! Weights from the Hugging Face Hub and from URLs, downloaded once per job, in the coordinator,
//! before any worker starts: workers only ever read local files. `fidshard fetch`, `run`,
//! `validate`, `sample` and `bench` all call [`prepare`], the one code path.
//!
//! | file | concern |
//! | --- | --- |
//! | `plan.rs` | which weights are local, cached, or missing (no network) |
//! | `hub_repo.rs`, `hub_errors.rs` | the Hub's protocol: file list, metadata, blobs, snapshots, refs; its refusals in words |
//! | `url.rs` | plain URLs into fidshard's cache |
//! | `transfer.rs` | one file: lock, resume, size and rate limits, verify, final name |
//! | `format.rs` | what a file without a pinned sha256 must look like (JSON, torch zip, safetensors) |
//! | `http.rs`, `origin.rs`, `retry.rs` | the client, redirects and where the token may go, its errors, backoff with jitter |
//! | `lock.rs` | one downloader per file across processes |
//! | `progress.rs` | bars, log lines, `status.json` |
//! | `settings.rs`, `error.rs` | the environment; the errors and their exit codes |
//!
//! The syntax of the references and the caches' layout are in `job/hub.rs`, which `Job::load`
//! uses to find the downloaded files.
mod error;
mod format;
mod http;
mod hub_errors;
mod hub_repo;
mod lock;
mod origin;
mod plan;
mod progress;
mod retry;
mod settings;
mod transfer;
mod url;

pub(crate) use error::FetchError;
pub(crate) use plan::{Entry, Plan, State};

use crate::job::hub::Remote;
use crate::job::partition::{Partition, Requested};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Who asks: `run` (with its `--partition`, if any) also shows the download in the
/// `status.json` of its state folder, holding that folder's coordinator lock meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum For {
    Run(Option<Requested>),
    Other,
}

/// Downloads what the job file `config` names and the caches lack (with nothing missing, no
/// network request at all), then checks `model.sha256` (and `evaluate:`'s sha256s). Returns
/// where each weights value (and file of `evaluate:`) is.
pub(crate) fn prepare(config: &Path, who: For) -> Result<Vec<Entry>> {
    let mut plan = plan::Plan::of(config)?;
    if plan.missing().next().is_some() {
        let s = settings::Settings::from_env()?;
        if s.offline {
            let e = plan.missing().next().expect("checked");
            let State::Missing(why) = &e.state else {
                unreachable!()
            };
            return Err(FetchError::Input(format!(
                "{}: `{}`: {why}; HF_HUB_OFFLINE is set, so nothing is downloaded: fetch it \
                 where the network is reachable, into the same cache (`fidshard fetch {}`), or \
                 unset HF_HUB_OFFLINE",
                config.display(),
                e.key,
                config.display()
            ))
            .into());
        }
        let lock = match who {
            For::Run(partition) => {
                let yaml = crate::job::config::Job::weights_spec(config)
                    .ok()
                    .and_then(|s| s.partitions_from);
                status_lock(&plan.out_dir, partition, yaml)?
            }
            For::Other => None,
        };
        let status = lock
            .as_ref()
            .map(|(_, dir)| progress::StatusFile::new(dir.clone()));
        let mut report = progress::Reporter::new(status);
        let res = download(&s, &mut plan, &mut report);
        report.finish();
        drop(lock);
        res?;
    }
    for e in &plan.entries {
        check_sha256(config, e)?;
    }
    Ok(plan.entries)
}

/// The coordinator lock of `run`'s state folder (the out dir, or its partition's folder), as
/// `run` takes it; `None` when the partition is not valid (`run` reports that next).
fn status_lock(
    out: &Path,
    partition: Option<Requested>,
    yaml: Option<crate::job::partition::Scheduler>,
) -> Result<Option<(crate::outdir::lock::JobLock, PathBuf)>> {
    let Ok((partition, _)) = Partition::resolve(partition, yaml) else {
        return Ok(None);
    };
    crate::outdir::claim::claim(out)?;
    let dir = crate::outdir::OutDir::new(out).state_dir(partition);
    let lock = crate::outdir::lock::JobLock::acquire(&dir)?;
    Ok(Some((lock, dir)))
}

/// The out dir of a job whose weights are still missing (a `run` may be downloading them), for
/// `status`, which cannot load such a job.
pub(crate) fn out_dir_if_missing(config: &Path) -> Option<PathBuf> {
    let plan = plan::Plan::of(config).ok()?;
    let missing = plan.missing().next().is_some();
    missing.then_some(plan.out_dir)
}

fn download(
    s: &settings::Settings,
    plan: &mut plan::Plan,
    report: &mut progress::Reporter,
) -> Result<()> {
    let http = http::Http::new(s);
    let hub = hub_repo::Hub::new(s, &http)?;
    let config = plan.config.clone();
    for e in &mut plan.entries {
        if !matches!(e.state, State::Missing(_)) {
            continue;
        }
        let context = || format!("{}: `{}`", config.display(), e.key);
        match e.remote.as_ref().expect("missing entries are remote") {
            Remote::Repo(r) => hub.fetch(r, e.wanted, report).with_context(context)?,
            Remote::Url(u) => {
                let sha256 = e.sha256.as_deref().map(|d| (d, e.sha256_key));
                url::fetch(s, &http, u, sha256, report).with_context(context)?;
            }
        }
        e.state = match plan::look(e) {
            State::Cached(p) => State::Downloaded(p),
            State::Missing(why) => {
                return Err(FetchError::Input(format!("{}: {why}", context())).into())
            }
            other => other,
        };
    }
    Ok(())
}

/// `model.sha256` against the checkpoint: from the cache's records when they know it (hub blobs
/// are named by it; URL downloads record it), else by reading the file.
fn check_sha256(config: &Path, e: &Entry) -> Result<()> {
    let (Some(want), Some(path)) = (&e.sha256, e.state.path()) else {
        return Ok(());
    };
    // A diffusers DiT folder: its weights file.
    let weights = fidshard_core::diffusers_dit::find(path).ok().flatten();
    let path = weights.as_ref().map_or(path, |d| d.weights.as_path());
    let got = match crate::job::hub::known_sha256(path) {
        Some(known) => known,
        None => sha256_of(path)?,
    };
    if &got != want {
        return Err(FetchError::Input(format!(
            "{}: `{}`: {} has sha256 {got}, {} says {want}{}",
            config.display(),
            e.sha256_key,
            path.display(),
            e.sha256_from,
            match &e.remote {
                Some(Remote::Repo(r)) if r.revision.is_none() => {
                    "; the repo's main branch may have moved: pin the revision the sha256 belongs to (org/name@commit)".to_string()
                }
                _ if e.key.starts_with("evaluate.") => format!(
                    "; give `{}` the file's sha256 or `{}` the file it names",
                    e.sha256_key, e.key
                ),
                _ => String::new(),
            }
        ))
        .into());
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Result<String> {
    Ok(crate::sys::sha256::sha256_file(path).map_err(FetchError::io(path))?)
}
