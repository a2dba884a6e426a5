//! Can this process write into a folder? Asked before a command writes anything, so that a
//! read-only out dir is an input error (exit 2, one line) instead of an I/O failure halfway.
//! `access(2)` answers for the process's real identity and covers what mode bits miss for
//! root: a read-only mount (EROFS) and an immutable folder (`chattr +i`, EPERM).
use std::path::Path;

/// `Ok` when files can be created in `dir` (an existing folder).
pub(crate) fn check_writable_dir(dir: &Path) -> std::io::Result<()> {
    use nix::unistd::{access, AccessFlags};
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(std::io::Error::from)
}

/// The folder `path` is, or the nearest existing folder above it (where it would be created).
pub(crate) fn nearest_existing_dir(path: &Path) -> Option<&Path> {
    let mut p = Some(path);
    while let Some(d) = p {
        if d.is_dir() {
            return Some(d);
        }
        p = d.parent().filter(|q| !q.as_os_str().is_empty());
    }
    Some(Path::new(".")).filter(|_| path.is_relative())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_folder_is_writable_and_the_nearest_existing_one_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(check_writable_dir(tmp.path()).is_ok());
        let deep = tmp.path().join("a/b/c");
        assert_eq!(nearest_existing_dir(&deep), Some(tmp.path()));
        assert_eq!(
            nearest_existing_dir(Path::new("no/such/dir")),
            Some(Path::new("."))
        );
    }
}
