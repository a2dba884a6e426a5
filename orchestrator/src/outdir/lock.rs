//! One coordinator per out dir: an exclusive `flock` on `OUT/coordinator.lock`.
//!
//! Why `flock` and not a pid file: the kernel drops the lock when the holding process dies, even
//! by SIGKILL or an OOM kill, so a crashed coordinator never leaves a stale lock that needs a
//! human. The file's contents (pid, host, start time, command line) only serve the "who holds it"
//! message; the lock itself is the truth. Rust opens files with O_CLOEXEC, so workers spawned by
//! the coordinator do not inherit the lock and cannot keep it alive after the coordinator dies.
//!
//! `status` briefly takes the same lock to read `state.sled` (sled admits one process at a time;
//! holding the lock keeps a coordinator from starting in the middle of the read). A coordinator
//! starting during that window would see the lock held by a process that is not the one named in
//! the file, so `acquire` retries for [`PROBE_GRACE`] whenever the named holder is not alive.
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::sys::host::hostname;

/// How long `acquire` and `holder` wait out a lock held by someone other than the process the
/// lock file names (a `status` probe, or a coordinator between taking the lock and writing its
/// info). Such holds last milliseconds.
const PROBE_GRACE: Duration = Duration::from_secs(3);
const RETRY_EVERY: Duration = Duration::from_millis(25);

/// Who holds (or last held) the lock, as written into the lock file by [`JobLock::acquire`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub pid: u32,
    pub hostname: String,
    pub started_unix: u64,
    pub command: String,
}

impl Holder {
    fn me() -> Holder {
        Holder {
            pid: std::process::id(),
            hostname: hostname(),
            started_unix: crate::sys::time::unix_now() as u64,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }

    /// False only when the holder is on this host and its pid does not exist. A holder on
    /// another host (an out dir on a shared file system) cannot be checked and counts as alive.
    fn is_alive(&self) -> bool {
        if self.hostname != hostname() {
            return true;
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        // Signal 0 checks existence; EPERM means it exists but belongs to another user.
        !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(Errno::ESRCH)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error(
        "another coordinator (pid {pid}{host}, since {since}) holds {path}; wait for it or stop it",
        host = host.as_deref().map(|h| format!(" on {h}")).unwrap_or_default(),
        since = crate::sys::time::format_utc(*since),
        path = path.display()
    )]
    Held {
        pid: u32,
        /// The holder's host (a partition of a many-node job may run anywhere).
        host: Option<String>,
        /// Unix seconds when the holder started.
        since: u64,
        path: PathBuf,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The out dir is not fidshard's (claim.rs).
    #[error(transparent)]
    Claim(#[from] crate::outdir::claim::ClaimError),
}

impl LockError {
    fn held(holder: Option<Holder>, out_dir: &Path) -> LockError {
        let h = holder.unwrap_or(Holder {
            pid: 0,
            hostname: hostname(),
            started_unix: 0,
            command: String::new(),
        });
        LockError::Held {
            pid: h.pid,
            host: (!h.hostname.is_empty()).then_some(h.hostname),
            since: h.started_unix,
            path: out_dir.to_path_buf(),
        }
    }
}

/// The result of [`JobLock::probe`].
pub(crate) enum Probe {
    /// A live coordinator holds the out dir.
    Held(Holder),
    /// Nobody held it; the caller holds it now (without announcing itself in the file) until
    /// the guard is dropped. `None` when there is no lock file (no coordinator ever ran here).
    Free(Option<JobLock>),
}

/// The held lock. Dropping it releases the lock (the file stays, with the last holder's info).
#[derive(Debug)]
pub(crate) struct JobLock {
    file: Flock<File>,
    out_dir: PathBuf,
}

impl JobLock {
    /// Takes the out dir for this process (creating the dir), or says who has it.
    /// A folder that is not fidshard's is refused untouched (see claim.rs).
    pub fn acquire(out_dir: &Path) -> Result<JobLock, LockError> {
        crate::outdir::claim::claim(out_dir)?;
        let lock = match Self::take(out_dir, true)? {
            Ok(lock) => lock,
            Err(holder) => return Err(LockError::held(holder, out_dir)),
        };
        lock.announce(&Holder::me())?;
        Ok(lock)
    }

    #[cfg(test)]
    /// Who holds the out dir, if a live coordinator does; `None` releases at once.
    pub fn holder(out_dir: &Path) -> Option<Holder> {
        match Self::probe(out_dir) {
            Ok(Probe::Held(h)) => Some(h),
            _ => None,
        }
    }

    /// Like [`holder`](Self::holder), but keeps the lock when it is free, so the caller can read
    /// the out dir's state while no coordinator can start. Creates nothing, and needs only read
    /// access (flock works on a read-only descriptor), so another user can run `status`.
    pub fn probe(out_dir: &Path) -> Result<Probe, LockError> {
        if !Self::path(out_dir).is_file() {
            // No coordinator ever ran here (or the file was deleted): nothing to hold.
            return Ok(Probe::Free(None));
        }
        Ok(match Self::take(out_dir, false)? {
            Ok(lock) => Probe::Free(Some(lock)),
            Err(holder) => Probe::Held(holder.unwrap_or_else(|| Holder {
                pid: 0,
                hostname: String::new(),
                started_unix: 0,
                command: "(unknown: the lock file is empty)".into(),
            })),
        })
    }

    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    pub fn path(out_dir: &Path) -> PathBuf {
        crate::outdir::OutDir::new(out_dir).lock_file()
    }

    /// Tries the lock; while it is held by a process other than the one the file names (which
    /// lasts milliseconds, see the module doc), retries up to [`PROBE_GRACE`]. `Err(holder)`
    /// when a live holder has it (or the grace ran out).
    fn take(out_dir: &Path, write: bool) -> Result<Result<JobLock, Option<Holder>>, LockError> {
        let path = Self::path(out_dir);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let deadline = Instant::now() + PROBE_GRACE;
        loop {
            // A fresh open file description each try: flock belongs to the description, so a
            // second JobLock in the same process conflicts with the first, as another process
            // would.
            let file = OpenOptions::new()
                .read(true)
                .write(write)
                .create(write)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(file) => {
                    return Ok(Ok(JobLock {
                        file,
                        out_dir: out_dir.to_path_buf(),
                    }))
                }
                Err((_, Errno::EWOULDBLOCK)) => {
                    let holder = read_holder(&path);
                    let alive = holder.as_ref().is_some_and(Holder::is_alive);
                    if alive || Instant::now() >= deadline {
                        return Ok(Err(holder));
                    }
                    std::thread::sleep(RETRY_EVERY);
                }
                Err((_, e)) => return Err(io(e.into())),
            }
        }
    }

    /// Replaces the file's contents with `holder` (truncating only now that we hold the lock, so
    /// a losing contender never erases the winner's info).
    fn announce(&self, holder: &Holder) -> Result<(), LockError> {
        let io = |source| LockError::Io {
            path: Self::path(&self.out_dir),
            source,
        };
        let mut text = serde_json::to_string(holder).expect("Holder serializes");
        text.push('\n');
        self.file.set_len(0).map_err(io)?;
        self.file.write_all_at(text.as_bytes(), 0).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

/// The holder info in the lock file; `None` when it is missing, empty or half-written.
fn read_holder(path: &Path) -> Option<Holder> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fidshard_core::Exit;

    #[test]
    fn second_acquire_fails_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = JobLock::acquire(&out).unwrap();
        assert!(crate::outdir::OutDir::new(&out).lock_file().is_file());

        let t = Instant::now();
        let err = JobLock::acquire(&out).unwrap_err();
        // The holder (this process) is alive: no grace wait.
        assert!(t.elapsed() < PROBE_GRACE);
        match &err {
            LockError::Held { pid, host, .. } => {
                assert_eq!(*pid, std::process::id());
                assert_eq!(host.as_deref(), Some(hostname().as_str()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&format!(
            "another coordinator (pid {} on {}",
            std::process::id(),
            hostname()
        )));
        assert!(msg.contains("wait for it or stop it"), "{msg}");
        assert_eq!(crate::exit_code::code_of(&err.into()), Exit::Locked);

        drop(first);
        let again = JobLock::acquire(&out).unwrap();
        assert_eq!(again.out_dir(), out);
    }

    #[test]
    fn holder_names_the_live_coordinator_and_releases_when_free() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        assert_eq!(JobLock::holder(&out.join("missing")), None);
        assert!(!out.join("missing").exists(), "probing creates nothing");

        let lock = JobLock::acquire(out).unwrap();
        let h = JobLock::holder(out).expect("held");
        assert_eq!(h.pid, std::process::id());
        assert_eq!(h.hostname, hostname());
        assert!(h.started_unix > 1_600_000_000);
        assert!(!h.command.is_empty());
        drop(lock);

        assert_eq!(JobLock::holder(out), None);
        // holder() released the lock again: acquiring works.
        let _lock = JobLock::acquire(out).unwrap();
    }

    #[test]
    fn a_probe_holding_the_lock_is_waited_out_not_reported() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_path_buf();
        // A previous coordinator that is gone: its info names a pid that does not exist.
        std::fs::write(
            crate::outdir::OutDir::new(&out).lock_file(),
            r#"{"pid":4194303,"hostname":"HOST","started_unix":1,"command":"old"}"#
                .replace("HOST", &hostname()),
        )
        .unwrap();
        let Probe::Free(Some(guard)) = JobLock::probe(&out).unwrap() else {
            panic!("free");
        };
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(guard);
        });
        let lock = JobLock::acquire(&out).expect("waits for the probe to finish");
        releaser.join().unwrap();
        assert_eq!(
            read_holder(&JobLock::path(&out)).unwrap().pid,
            std::process::id()
        );
        drop(lock);
    }
}
