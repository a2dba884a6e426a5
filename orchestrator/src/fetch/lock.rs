//! One downloader per file, across processes and machines sharing the cache: an exclusive
//! `flock` on a lock file in the cache. For hub files it is the lock huggingface_hub itself
//! takes (`ROOT/.locks/models--org--name/{etag}.lock`, through the `filelock` package, which uses
//! `flock` on Unix), so fidshard and Python never download the same blob at once either. The
//! others wait, then find the file in place. The kernel releases the lock of a process that
//! dies, so a crashed downloader never blocks the next one.
use super::error::FetchError;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// The held lock; dropping it releases it (the file stays, as Python leaves it).
pub(crate) struct CacheLock {
    _file: Flock<File>,
}

/// Takes the lock at `path` (creating it and its folder), waiting while another process holds
/// it; a stop signal ends the wait.
pub(crate) fn lock(path: &Path, what: &str) -> Result<CacheLock, FetchError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(FetchError::io(dir))?;
    }
    let started = Instant::now();
    let mut said = false;
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(FetchError::io(path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => {
                if said {
                    tracing::info!(
                        file = what,
                        waited_s = format!("{:.1}", started.elapsed().as_secs_f64()),
                        "the other download finished"
                    );
                }
                return Ok(CacheLock { _file: file });
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                if !said {
                    tracing::info!(
                        file = what,
                        lock = %path.display(),
                        "another process is downloading this file; waiting for it"
                    );
                    said = true;
                }
                super::retry::sleep(Duration::from_millis(100), what)?;
            }
            Err((_, e)) => {
                return Err(FetchError::Io {
                    path: path.to_path_buf(),
                    source: e.into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_waits_for_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("locks/x.lock");
        let first = lock(&path, "x").unwrap();
        let p = path.clone();
        let t = std::thread::spawn(move || {
            let started = Instant::now();
            let _second = lock(&p, "x").unwrap();
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
        assert!(t.join().unwrap() >= Duration::from_millis(250));
    }
}
