//! The worker's link to the coordinator: protocol lines out on stdout ([`Outbox`]), in from
//! stdin through a reader thread ([`Inbox`]), and the ties to the parent process.
//!
//! The end of input and a line that does not parse are passed on in order like any message, and
//! end the process from the reader thread ([`crate::end_now`]: exit 0, or exit 2 after a `fatal`
//! message) if the server has not ended it within [`END_GRACE`]: a worker idle or answering an
//! earlier message ends with its own code, one loading or sampling stops within a second and
//! never goes on writing into a run that another coordinator may resume. A closed stdout becomes
//! a value the server acts on (it returns its exit code to `main`).
use fidshard_core::protocol::{line, FailureKind, FromWorker, ToWorker};
use fidshard_core::Exit;
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// Messages to the coordinator, from the sampling and the writer thread alike.
#[derive(Clone)]
pub(super) struct Outbox {
    out: Arc<Mutex<std::io::Stdout>>,
    /// Set when a write failed: the coordinator is gone.
    gone: Arc<AtomicBool>,
}

impl Outbox {
    pub(super) fn new() -> Outbox {
        Outbox {
            out: Arc::new(Mutex::new(std::io::stdout())),
            gone: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(super) fn send(&self, msg: &FromWorker) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if out
            .write_all(line(msg).as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            self.gone.store(true, Ordering::SeqCst);
        }
    }

    /// Whether stdout is closed: the coordinator is gone, the worker ends like on end of stdin.
    pub(super) fn gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }
}

/// How long the server has to end on its own after the input ended (see the module doc).
const END_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What the reader thread passes on.
pub(super) enum Inbound {
    Msg(ToWorker),
    /// The input ended (exit 0: the coordinator is gone or wants us gone; never outlive it) or
    /// a line did not parse (exit 2, after a `fatal` message saying so).
    End(Exit),
}

/// What stops a shard between two batches.
pub(super) enum Stop {
    Drain,
    End(Exit),
}

/// Messages from the coordinator, read by a thread so that `drain` is seen while sampling.
pub(super) struct Inbox {
    rx: mpsc::Receiver<Inbound>,
    /// Messages read while a shard was sampling (looking for `drain`), handled after it.
    pending: VecDeque<Inbound>,
}

impl Inbox {
    pub(super) fn spawn(outbox: Outbox) -> Inbox {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let end = read_stdin(&tx, &outbox);
            let _ = tx.send(Inbound::End(end));
            std::thread::sleep(END_GRACE);
            crate::end_now(end);
        });
        Inbox {
            rx,
            pending: VecDeque::new(),
        }
    }

    /// The next message, waiting for it.
    pub(super) fn next(&mut self) -> Inbound {
        self.pending
            .pop_front()
            .or_else(|| self.rx.recv().ok())
            .unwrap_or(Inbound::End(Exit::Complete))
    }

    /// Between batches: `drain` or the end of input, if either came; other messages are kept,
    /// in order, for [`Inbox::next`].
    pub(super) fn stop_requested(&mut self) -> Option<Stop> {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Inbound::Msg(ToWorker::Drain) => return Some(Stop::Drain),
                Inbound::End(code) => return Some(Stop::End(code)),
                other => self.pending.push_back(other),
            }
        }
        None
    }
}

/// Forwards stdin's messages until it ends (exit 0) or a line does not parse (exit 2).
fn read_stdin(tx: &mpsc::Sender<Inbound>, outbox: &Outbox) -> Exit {
    let stdin = std::io::stdin();
    for l in stdin.lock().lines() {
        let Ok(l) = l else { break };
        match serde_json::from_str::<ToWorker>(&l) {
            Ok(msg) => {
                if tx.send(Inbound::Msg(msg)).is_err() {
                    break;
                }
            }
            Err(e) => {
                // The two binaries disagree (different versions?): stop at once and say so,
                // instead of idling until the stall timeout.
                let message = format!(
                    "protocol error: cannot parse a message from the coordinator ({e}); are fidshard and fidshard-worker the same version?"
                );
                tracing::error!("{message}");
                outbox.send(&FromWorker::Fatal {
                    kind: FailureKind::Protocol,
                    message,
                });
                return Exit::InvalidInput;
            }
        }
    }
    tracing::info!("stdin closed; exiting");
    Exit::Complete
}

/// Ties the worker to its parent: SIGKILL on parent death. False when the process that started
/// us is no longer our parent (it died before the prctl): the caller exits at once.
pub(super) fn bind_to_parent() -> bool {
    #[cfg(target_os = "linux")]
    {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    }
    // Slurm's `--signal=USR1` (without `B:`) and `srun` deliver SIGUSR1 to every process of
    // the step: the coordinator turns it into a `drain` message, so a worker ignores it
    // instead of dying with its batch in flight.
    // SAFETY: setting a signal's disposition to "ignore" runs no code in the handler.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGUSR1,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    match std::env::var("FIDSHARD_PARENT_PID") {
        Ok(ppid) => ppid.parse::<i32>().ok() == Some(nix::unistd::getppid().as_raw()),
        Err(_) => true,
    }
}
