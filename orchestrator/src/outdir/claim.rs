//! Whose out dir is it? fidshard writes, and on `--restart` deletes, only in a folder it made:
//! one that was new or empty when a job first took it (it then gets the marker file), or one an
//! earlier fidshard version made (its own state DB or lock is there and nothing else is
//! foreign). Any other folder is refused untouched (exit 2): `out_dir: /` or a folder of the
//! user's own files never lose a byte. Inside its own out dir fidshard removes only names of
//! its own scheme (see [`is_own_png`], [`is_own_temp`]).
use super::OutDir;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimError {
    #[error("out_dir {}: exists and is not a folder; set out_dir to a new or empty folder", .0.display())]
    NotADir(PathBuf),
    #[error(
        "out_dir {}: not empty and not made by fidshard (it holds {found}); nothing was changed. \
         Set out_dir to a new or empty folder",
        dir.display()
    )]
    Foreign { dir: PathBuf, found: String },
    #[error(
        "out_dir {}: cannot write there; nothing was changed. Make it writable \
         (chmod u+w, chattr -i, a read-write mount) or set out_dir to a folder you can write",
        dir.display()
    )]
    ReadOnly {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "out_dir {}: `samples` is {what}; fidshard writes and deletes its PNGs only in a folder \
         of its own inside the out dir. Replace it with a real folder (move the PNGs into it) \
         or set out_dir to a new folder",
        dir.display()
    )]
    SamplesNotOwn { dir: PathBuf, what: String },
    #[error("out_dir {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Top-level names an earlier fidshard could have left in an out dir.
fn is_own_top_level(name: &str) -> bool {
    matches!(
        name,
        super::LOCK_FILE
            | super::STATE_DIR
            | super::SNAPSHOT_FILE
            | super::FINGERPRINT_FILE
            | super::SAMPLES_DIR
            | super::LOGS_DIR
            | super::NPZ_FILE
            | super::PROVENANCE_FILE
            | super::MARKER_FILE
            | super::RESOLVED_JOB_FILE
            | super::PARTITIONS_DIR
            | super::ASSEMBLE_LOCK
            | super::RECORDS_FILE
            | super::VERIFIED_FILE
    ) || name.starts_with(&format!("{}.old-", super::STATE_DIR))
        || name.starts_with(&format!("{}.broken-", super::STATE_DIR))
        || is_own_temp(name)
}

/// `..fidshard-out-dir.tmp.PID.N` (or `.PID`, an earlier version's name): the marker being
/// written.
fn is_marker_temp(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|r| r.strip_prefix(super::MARKER_FILE))
        .and_then(|r| r.strip_prefix(".tmp."))
        .is_some_and(|tail| tail.split('.').all(|p| p.parse::<u64>().is_ok()))
}

/// `000123.png` (six or more digits): a sample.
pub(crate) fn is_own_png(name: &str) -> bool {
    name.strip_suffix(".png")
        .is_some_and(|d| d.len() >= 6 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// `.NAME.tmp.PID` or `.NAME.tmp.PID.N` for NAME one of fidshard's files: a write that never
/// finished.
pub(crate) fn is_own_temp(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((base, tail)) = rest.split_once(".tmp.") else {
        return false;
    };
    let own_base = is_own_png(base)
        || matches!(
            base,
            super::SNAPSHOT_FILE
                | super::NPZ_FILE
                | super::PROVENANCE_FILE
                | super::FINGERPRINT_FILE
                | super::RESOLVED_JOB_FILE
                | super::VERIFIED_FILE
        );
    own_base && !tail.is_empty() && tail.split('.').all(|p| p.parse::<u64>().is_ok())
}

/// Makes sure `dir` is fidshard's (creating it, or marking a new/empty or legacy one), or
/// refuses it without writing anything.
pub(crate) fn claim(dir: &Path) -> Result<(), ClaimError> {
    let out = OutDir::new(dir);
    let io = |source| ClaimError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let read_only = |source: std::io::Error| ClaimError::ReadOnly {
        dir: dir.to_path_buf(),
        source,
    };
    let denied = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
        ) || e.raw_os_error() == Some(libc::EPERM)
    };
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(ClaimError::NotADir(dir.to_path_buf())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| if denied(&e) { read_only(e) } else { io(e) })?;
        }
        Err(e) => return Err(io(e)),
    }
    check_samples(dir)?;
    crate::sys::access::check_writable_dir(dir).map_err(read_only)?;
    if out.marker().is_file() {
        return Ok(());
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry
            .map_err(io)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        // Another coordinator of the same job (a partition) writing the marker right now.
        if is_marker_temp(&name) {
            continue;
        }
        names.push(name);
    }
    let foreign: Vec<&String> = names.iter().filter(|n| !is_own_top_level(n)).collect();
    let legacy = names
        .iter()
        .any(|n| n == super::STATE_DIR || n == super::LOCK_FILE || n == super::PARTITIONS_DIR);
    if !names.is_empty() && (!foreign.is_empty() || !legacy) {
        let listed: Vec<&String> = if foreign.is_empty() {
            names.iter().collect()
        } else {
            foreign
        };
        let shown: Vec<&str> = listed.iter().take(3).map(|s| s.as_str()).collect();
        let more = listed.len().saturating_sub(shown.len());
        let found = format!(
            "{}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
        return Err(ClaimError::Foreign {
            dir: dir.to_path_buf(),
            found,
        });
    }
    let text = format!(
        "This folder is a fidshard out dir; fidshard writes and deletes here.\nversion {}\n",
        env!("CARGO_PKG_VERSION")
    );
    fidshard_core::output::write_atomic(&out.marker(), text.as_bytes()).map_err(|e| match e {
        fidshard_core::CoreError::Io { source, .. } => io(source),
        other => io(std::io::Error::other(other.to_string())),
    })
}

/// `OUT/samples`, when there, must be a real folder: a symbolic link would let `--restart` and
/// the cleanup of temporary files act on a folder elsewhere.
fn check_samples(dir: &Path) -> Result<(), ClaimError> {
    let samples = OutDir::new(dir).samples();
    let Ok(m) = std::fs::symlink_metadata(&samples) else {
        return Ok(());
    };
    let what = if m.file_type().is_symlink() {
        let to = std::fs::read_link(&samples).unwrap_or_default();
        format!("a symbolic link (to {})", to.display())
    } else if !m.is_dir() {
        "not a folder".to_string()
    } else {
        return Ok(());
    };
    Err(ClaimError::SamplesNotOwn {
        dir: dir.to_path_buf(),
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_own_png("000123.png") && is_own_png("1234567.png"));
        assert!(!is_own_png("12.png") && !is_own_png("notes.png") && !is_own_png("000001.PNG"));
        assert!(is_own_temp(".000001.png.tmp.123"));
        assert!(is_own_temp(".status.json.tmp.77.3"));
        assert!(is_own_temp(".samples.npz.tmp.9"));
        assert!(!is_own_temp(".x.tmp.123"));
        assert!(!is_own_temp(".000001.png.tmp.abc"));
        assert!(!is_own_temp("000001.png.tmp.1"));
        assert!(is_marker_temp("..fidshard-out-dir.tmp.8223"));
        assert!(is_marker_temp("..fidshard-out-dir.tmp.8223.0"));
        assert!(!is_marker_temp("..fidshard-out-dir.tmp.8223.x"));
        assert!(!is_marker_temp(".fidshard-out-dir"));
    }

    #[test]
    fn new_empty_legacy_and_foreign() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("a/b");
        claim(&new).unwrap();
        assert!(OutDir::new(&new).marker().is_file());
        claim(&new).unwrap();

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        claim(&empty).unwrap();

        let legacy = tmp.path().join("legacy");
        std::fs::create_dir_all(legacy.join("state.sled")).unwrap();
        std::fs::create_dir_all(legacy.join("samples")).unwrap();
        claim(&legacy).unwrap();

        let foreign = tmp.path().join("foreign");
        std::fs::create_dir_all(foreign.join("samples")).unwrap();
        std::fs::write(foreign.join("samples.npz"), b"theirs").unwrap();
        std::fs::write(foreign.join(".x.tmp.123"), b"theirs").unwrap();
        let err = claim(&foreign).unwrap_err();
        assert!(matches!(err, ClaimError::Foreign { .. }), "{err}");
        assert!(err.to_string().contains(".x.tmp.123"), "{err}");
        assert!(!OutDir::new(&foreign).marker().exists());

        // Only fidshard's names, but no state or lock: still not provably ours.
        let lookalike = tmp.path().join("lookalike");
        std::fs::create_dir_all(&lookalike).unwrap();
        std::fs::write(lookalike.join("samples.npz"), b"theirs").unwrap();
        assert!(claim(&lookalike).is_err());

        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(claim(&file).unwrap_err(), ClaimError::NotADir(_)));
    }
}
