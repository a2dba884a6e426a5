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
    }
    Ok(())
}
