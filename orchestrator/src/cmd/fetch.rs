//! `fidshard fetch CONFIG`: downloads the weights the job names (Hugging Face repos, URLs) into
//! the caches, exactly as `run` does before it starts any worker, then checks that the job loads
//! from them. Run it on a login node with network; then `HF_HUB_OFFLINE=1 fidshard run CONFIG`
//! on the compute nodes reads the same cache.
use crate::fetch::{prepare, For, State};
use crate::job::config::Job;
use anyhow::Result;
use std::path::Path;

pub(crate) fn run(config: &Path) -> Result<()> {
    crate::sys::signals::install()?;
    let entries = prepare(config, For::Other)?;
    // The whole job, resolved from the files now in place: a config error shows up here rather
    // than on the compute node.
    Job::load(config)?;
    for e in &entries {
        let (how, path) = match &e.state {
            State::Local(p) => ("local", p),
            State::Cached(p) => ("cached", p),
            State::Downloaded(p) => ("downloaded", p),
            State::Missing(why) => unreachable!("prepare leaves nothing missing: {why}"),
        };
        crate::sys::out::outln!("{}: {} -> {} ({how})", e.key, e.value, path.display());
        if let Some(line) = pin_hint(e, path) {
            crate::sys::out::outln!("  {line}");
        }
    }
    Ok(())
}

/// For a URL download the job does not pin: its SHA-256 (recorded at download) and the key
/// that would pin it, so that a later download of other bytes under the same URL is refused.
fn pin_hint(e: &crate::fetch::Entry, path: &Path) -> Option<String> {
    if e.sha256.is_some() || !matches!(e.remote, Some(crate::job::hub::Remote::Url(_))) {
        return None;
    }
    let sha = crate::job::hub::known_sha256(path)?;
    Some(format!(
        "sha256 {sha}: pin it with `{}: {sha}` in the job file",
        e.sha256_key
    ))
}
