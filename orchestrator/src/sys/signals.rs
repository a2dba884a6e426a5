//! Preemption signals for `run` and `assemble`: SIGTERM (Slurm, systemd), SIGUSR1 (Slurm's
//! `--signal` warning), SIGINT (Ctrl-C). From `install()` on, these no longer kill the process:
//! they are recorded here, and every phase of a run checks them (the coordinator every tick),
//! stops cleanly and exits 75 (EX_TEMPFAIL: resumable). A second SIGINT means "now".
//!
//! The coordinator tells them apart ([`requested`]): SIGUSR1 asks for a drain (every worker
//! finishes and writes the batch in flight, then exits), SIGTERM and SIGINT for a stop within
//! the grace (workers get SIGTERM at once), a second SIGINT for SIGKILL now. A later, stronger
//! request escalates an earlier one (SIGUSR1, then Slurm's SIGTERM at the time limit).
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

static LAST: AtomicI32 = AtomicI32::new(0);
static TERM: AtomicBool = AtomicBool::new(false);
static USR1: AtomicBool = AtomicBool::new(false);
static INTS: AtomicUsize = AtomicUsize::new(0);

/// Registers the handlers (once per process).
pub(crate) fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    for sig in [SIGTERM, SIGUSR1, SIGINT] {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(sig, move || {
                LAST.store(sig, Ordering::SeqCst);
                match sig {
                    SIGINT => {
                        INTS.fetch_add(1, Ordering::SeqCst);
                    }
                    SIGTERM => TERM.store(true, Ordering::SeqCst),
                    _ => USR1.store(true, Ordering::SeqCst),
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

/// How hard a stop signal asks the coordinator to stop; later levels escalate earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum StopLevel {
    /// SIGUSR1: workers finish and write the batch in flight, then exit (up to the grace).
    Drain,
    /// SIGTERM, SIGINT: workers get SIGTERM now, SIGKILL after the grace.
    Terminate,
    /// A second SIGINT: SIGKILL now.
    Kill,
}

/// A stop asked for by a signal: how hard, and the signal's name (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StopRequest {
    pub level: StopLevel,
    pub signal: &'static str,
}

/// The strongest stop asked for so far, if any.
pub(crate) fn requested() -> Option<StopRequest> {
    let ints = INTS.load(Ordering::SeqCst);
    let (level, signal) = if ints >= 2 {
        (StopLevel::Kill, "second SIGINT")
    } else if TERM.load(Ordering::SeqCst) {
        (StopLevel::Terminate, "SIGTERM")
    } else if ints == 1 {
        (StopLevel::Terminate, "SIGINT")
    } else if USR1.load(Ordering::SeqCst) {
        (StopLevel::Drain, "SIGUSR1")
    } else {
        return None;
    };
    Some(StopRequest { level, signal })
}
