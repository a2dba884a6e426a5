//! This machine's name, as `gethostname(2)` gives it: written into the lock file and the status
//! snapshot, and compared to tell a holder on this host (whose pid can be checked) from one on
//! another host sharing the out dir.

/// The host name, or `unknown` when the call fails.
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates (we cut at the first NUL either way).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
