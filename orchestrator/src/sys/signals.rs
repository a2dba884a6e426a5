//! Preemption signals for `run` and `assemble`: SIGTERM (Slurm, systemd), SIGUSR1 (Slurm's
//! `--signal` warning), SIGINT (Ctrl-C). From `install()` on, these no longer kill the process:
//! they are recorded here, and every phase of a run checks them (the coordinator every tick),
//! stops cleanly and exits 75 (EX_TEMPFAIL: resumable). A second SIGINT means "now".
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

static LAST: AtomicI32 = AtomicI32::new(0);
static INTS: AtomicUsize = AtomicUsize::new(0);

/// Registers the handlers (once per process).
pub(crate) fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    for sig in [SIGTERM, SIGUSR1, SIGINT] {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(sig, move || {
                LAST.store(sig, Ordering::SeqCst);
                if sig == SIGINT {
                    INTS.fetch_add(1, Ordering::SeqCst);
                }
            })?;
        }
    }
    Ok(())
}

/// The name of the last stop signal received, if any.
pub(crate) fn pending() -> Option<&'static str> {
    match LAST.load(Ordering::SeqCst) {
        0 => None,
        signal_hook::consts::SIGTERM => Some("SIGTERM"),
        signal_hook::consts::SIGUSR1 => Some("SIGUSR1"),
        signal_hook::consts::SIGINT => Some("SIGINT"),
        _ => Some("signal"),
    }
}

/// True after a second SIGINT: stop without waiting for anything.
pub(crate) fn urgent() -> bool {
    INTS.load(Ordering::SeqCst) >= 2
}
