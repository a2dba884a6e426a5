//! Preemption signals for `run` and `assemble`: SIGTERM (Slurm, systemd), SIGUSR1 (Slurm's
//! `--signal` warning), SIGINT (Ctrl-C), SIGHUP (a closed terminal or ssh session: treated
//! exactly like SIGTERM). From `install()` on, these no longer kill the process:
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
static HUP: AtomicBool = AtomicBool::new(false);
static USR1: AtomicBool = AtomicBool::new(false);
static INTS: AtomicUsize = AtomicUsize::new(0);

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Registers the handlers (once per process). A SIGHUP that is ignored already (`nohup`) stays
/// ignored.
pub(crate) fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    for sig in [SIGTERM, SIGUSR1, SIGINT, SIGHUP] {
        if sig == SIGHUP && ignored(sig) {
            continue;
        }
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(sig, move || {
                LAST.store(sig, Ordering::SeqCst);
                match sig {
                    SIGINT => {
                        INTS.fetch_add(1, Ordering::SeqCst);
                    }
                    SIGTERM => TERM.store(true, Ordering::SeqCst),
                    SIGHUP => {
                        HUP.store(true, Ordering::SeqCst);
                        TERM.store(true, Ordering::SeqCst);
                    }
                    _ => USR1.store(true, Ordering::SeqCst),
                }
            })?;
        }
    }
    INSTALLED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether [`install`] ran: this process turns stop signals into a clean exit 75 (and may then
/// run its helpers in their own process group, stopping them itself).
pub(crate) fn installed() -> bool {
    INSTALLED.load(Ordering::SeqCst)
}

/// Whether `sig`'s disposition is "ignore" (inherited from `nohup`, for SIGHUP).
fn ignored(sig: i32) -> bool {
    // SAFETY: a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// The name of the last stop signal received, if any.
pub(crate) fn pending() -> Option<&'static str> {
    match LAST.load(Ordering::SeqCst) {
        0 => None,
        signal_hook::consts::SIGTERM => Some("SIGTERM"),
        signal_hook::consts::SIGUSR1 => Some("SIGUSR1"),
        signal_hook::consts::SIGINT => Some("SIGINT"),
        signal_hook::consts::SIGHUP => Some("SIGHUP"),
        _ => Some("signal"),
    }
}

/// How hard a stop signal asks the coordinator to stop; later levels escalate earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum StopLevel {
    /// SIGUSR1: workers finish and write the batch in flight, then exit (up to the grace).
    Drain,
    /// SIGTERM, SIGHUP, SIGINT: workers get SIGTERM now, SIGKILL after the grace.
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
        let name = if HUP.load(Ordering::SeqCst) {
            "SIGHUP"
        } else {
            "SIGTERM"
        };
        (StopLevel::Terminate, name)
    } else if ints == 1 {
        (StopLevel::Terminate, "SIGINT")
    } else if USR1.load(Ordering::SeqCst) {
        (StopLevel::Drain, "SIGUSR1")
    } else {
        return None;
    };
    Some(StopRequest { level, signal })
}
