//! Fault injection for the failure tests (docs/operations.md lists the failure modes).
//!
//! Compiled in only with the `failpoints` feature (which `make test` enables): the `fail` crate
//! reads the `FAILPOINTS` environment variable at start-up, e.g.
//! `FAILPOINTS="worker-oom=return(4)"` makes every micro-batch larger than 4 fail like a CUDA
//! out-of-memory error, `FAILPOINTS="worker-io=10%return"` fails 10% of PNG writes. Without the
//! feature every function here is an empty inline function.

/// Starts fail's scenario from `FAILPOINTS` (once per process).
#[cfg(feature = "failpoints")]
pub(crate) fn setup() -> Option<fail::FailScenario<'static>> {
    Some(fail::FailScenario::setup())
}

#[cfg(not(feature = "failpoints"))]
pub(crate) fn setup() -> Option<()> {
    None
}

/// `worker-oom=return(N)`: a micro-batch of more than N images fails as out of memory
/// (`return` without N: every batch).
#[inline]
pub(crate) fn maybe_oom(batch: usize) -> Result<(), String> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("worker-oom", |arg: Option<String>| {
        let limit: usize = arg.and_then(|a| a.parse().ok()).unwrap_or(0);
        if batch > limit {
            Err(format!(
                "CUDA out of memory (injected by the worker-oom failpoint at batch {batch})"
            ))
        } else {
            Ok(())
        }
    });
    let _ = batch;
    Ok(())
}

/// `worker-io=return`: writing the PNG fails like a full disk.
#[inline]
pub(crate) fn maybe_io_error(path: &std::path::Path) -> fidshard_worker::Result<()> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("worker-io", |_| {
        Err(fidshard_worker::EngineError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "No space left on device (injected by the worker-io failpoint)",
            ),
        ))
    });
    let _ = path;
    Ok(())
}
