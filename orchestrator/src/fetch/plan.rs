//! Which weights of a job file are local, which are already in a cache, and which must be
//! downloaded: decided from the file and the disk alone, so that a job whose weights are all
//! there makes no network request at all.
use crate::job::config::Job;
use crate::job::hub::{self, Remote, Wanted};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Where a weights value stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// A path beside (or named by) the job file.
    Local(PathBuf),
    /// In a cache before this command started.
    Cached(PathBuf),
    /// Downloaded by this command.
    Downloaded(PathBuf),
    /// Not in the cache: what `hub::locate` said.
    Missing(String),
}

impl State {
    pub fn path(&self) -> Option<&Path> {
        match self {
            State::Local(p) | State::Cached(p) | State::Downloaded(p) => Some(p),
            State::Missing(_) => None,
        }
    }
}

/// One weights value of the job file.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// `vae` (`vae.torchscript`), `model.checkpoint` (`model.torchscript`),
    /// `evaluate.reference` or `evaluate.inception`.
    pub key: &'static str,
    /// As written.
    pub value: String,
    /// What a local path would be.
    pub local: PathBuf,
    pub wanted: Wanted,
    pub remote: Option<Remote>,
    /// `model.sha256` (`evaluate.reference_sha256`, `evaluate.inception_sha256`).
    pub sha256: Option<String>,
    /// The key of `sha256`.
    pub sha256_key: &'static str,
    /// Who says `sha256`: the job file, or torch-fidelity for the default Inception weights.
    pub sha256_from: &'static str,
    pub state: State,
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub config: PathBuf,
    pub out_dir: PathBuf,
    /// The VAE first (the smaller download), then the checkpoint, then the files of
    /// `evaluate:` (the reference batch, the Inception weights) when the job has it.
    pub entries: Vec<Entry>,
}

impl Plan {
    /// Reads the job file (its errors are `Job::load`'s, exit 2) and looks in the caches.
    pub fn of(config: &Path) -> Result<Plan> {
        let spec = Job::weights_spec(config)?;
        let err = |key: &str, msg: String| {
            fidshard_core::Fatal::input(anyhow::anyhow!("{}: `{key}`: {msg}", config.display()))
        };
        let sha256 = match &spec.checkpoint_sha256 {
            Some(s) => Some(hub::parse_sha256(s).map_err(|m| err("model.sha256", m))?),
            None => None,
        };
        let mut entries = Vec::new();
        let model = [
            (spec.vae_key, spec.vae, spec.vae_wanted, None, "", ""),
            (
                spec.checkpoint_key,
                spec.checkpoint,
                spec.checkpoint_wanted,
                sha256,
                "model.sha256",
                "the job file",
            ),
        ];
        let evaluate = spec.evaluate.into_iter().map(|f| {
            (
                f.key,
                (f.value, f.local),
                Wanted::CheckpointFile,
                f.sha256,
                f.sha256_key,
                f.sha256_from,
            )
        });
        for (key, (value, local), wanted, sha, sha256_key, sha256_from) in
            model.into_iter().chain(evaluate)
        {
            let remote = hub::remote(&value, &local).map_err(|m| err(key, m))?;
            let mut e = Entry {
                key,
                value: value.to_string_lossy().into_owned(),
                local,
                wanted,
                remote,
                sha256: sha,
                sha256_key,
                sha256_from,
                state: State::Missing(String::new()),
            };
            e.state = look(&e);
            entries.push(e);
        }
        Ok(Plan {
            config: config.to_path_buf(),
            out_dir: spec.out_dir,
            entries,
        })
    }

    pub fn missing(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, State::Missing(_)))
    }
}

/// The entry's state on disk now.
pub(crate) fn look(e: &Entry) -> State {
    let Some(remote) = &e.remote else {
        return State::Local(e.local.clone());
    };
    match hub::locate(remote, e.wanted, &e.local) {
        // A URL download whose recorded digest is not `model.sha256`: fetch it again.
        Ok(path)
            if matches!(remote, Remote::Url(_))
                && e.sha256.is_some()
                && hub::known_sha256(&path) != e.sha256 =>
        {
            State::Missing(format!(
                "the cached download {} is not the file `{}` names",
                path.display(),
                e.sha256_key
            ))
        }
        Ok(path) => State::Cached(path),
        Err(msg) => State::Missing(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_need_nothing_and_repo_ids_are_looked_up() {
        let tmp = tempfile::tempdir().unwrap();
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/golden");
        let cfg = tmp.path().join("job.yaml");
        std::fs::write(
            &cfg,
            format!(
                "model:\n  config: {g}/dit/config.json\n  checkpoint: {g}/dit/model.pt\n\
                 vae: hf://acme/no-such-vae@v1\nnum_samples: 8\nout_dir: o\n",
                g = golden.display()
            ),
        )
        .unwrap();
        let plan = Plan::of(&cfg).unwrap();
        assert_eq!(plan.out_dir, tmp.path().join("o"));
        let [vae, ckpt] = &plan.entries[..] else {
            panic!()
        };
        assert!(matches!(&ckpt.state, State::Local(p) if p.ends_with("dit/model.pt")));
        assert!(matches!(&vae.state, State::Missing(m) if m.contains("acme/no-such-vae@v1")));
        assert_eq!(plan.missing().count(), 1);

        std::fs::write(
            &cfg,
            "model:\n  checkpoint: s3://x/y.pt\nvae: v\nnum_samples: 8\n",
        )
        .unwrap();
        let e = Plan::of(&cfg).unwrap_err();
        assert!(
            format!("{e:#}").contains("`model.checkpoint`: `s3://` is not supported"),
            "{e:#}"
        );
    }
}
