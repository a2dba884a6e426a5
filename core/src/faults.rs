//! Fault injection for the failure tests (docs/operations.md lists the failure modes).
//!
//! Compiled in only with the `failpoints` feature (which `make test` enables): the `fail` crate
//! reads the `FAILPOINTS` environment variable at start-up, e.g.
//! `FAILPOINTS="worker-oom=return(4)"` makes every micro-batch larger than 4 fail like a CUDA
//! out-of-memory error, `FAILPOINTS="worker-io=10%return"` fails 10% of PNG writes. Without the
//! feature every function here is an empty inline function.

/// Starts fail's scenario from `FAILPOINTS` (once per process).
#[cfg(feature = "failpoints")]
pub fn setup() -> Option<fail::FailScenario<'static>> {
    Some(fail::FailScenario::setup())
}

#[cfg(not(feature = "failpoints"))]
pub fn setup() -> Option<()> {
    None
}

/// `worker-oom=return(N)`: a micro-batch of more than N images fails as out of memory
/// (`return` without N: every batch).
#[inline]
pub fn maybe_oom(batch: usize) -> Result<(), String> {
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
pub fn maybe_io_error(path: &std::path::Path) -> Result<(), crate::error::CoreError> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("worker-io", |_| {
        Err(crate::error::CoreError::io(
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

/// `worker-crash=return(ID)`: worker ID aborts (like a segfault or the OOM killer) as soon as
/// it is assigned a shard; `return` without ID: every worker.
#[inline]
pub fn maybe_crash(worker: u32) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("worker-crash", |arg: Option<String>| {
        if arg
            .and_then(|a| a.parse::<u32>().ok())
            .is_none_or(|id| id == worker)
        {
            eprintln!("worker {worker}: aborting (worker-crash failpoint)");
            std::process::abort();
        }
    });
    let _ = worker;
}

/// `worker-poison=return(SHARD)`: sampling shard SHARD always fails (a "poison" shard).
#[inline]
pub fn maybe_poison(shard: u64) -> Result<(), String> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("worker-poison", |arg: Option<String>| {
        if arg.and_then(|a| a.parse::<u64>().ok()) == Some(shard) {
            return Err(format!(
                "shard {shard} cannot be sampled (worker-poison failpoint)"
            ));
        }
        Ok(())
    });
    let _ = shard;
    Ok(())
}

/// `worker-load=return`: loading the model fails in the worker (after the coordinator's own
/// check passed), e.g. a file that changed or a GPU that cannot hold it.
#[inline]
pub fn maybe_load_failure() -> Result<(), String> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("worker-load", |_| {
        Err("cannot load the checkpoint (worker-load failpoint)".to_string())
    });
    Ok(())
}

/// `worker-slow-check=return(MS)`: the model check task sleeps MS milliseconds before it loads
/// the models (a slow file system; makes the check last long enough to be interrupted).
#[inline]
pub fn maybe_slow_check() {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("worker-slow-check", |arg: Option<String>| {
        let ms = arg.and_then(|a| a.parse().ok()).unwrap_or(1000);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    });
}

/// `worker-wrong-labels=return`: a serve worker reports every label of a finished shard off by
/// one (a lying or broken worker; the coordinator must catch it).
#[inline]
pub fn maybe_wrong_labels(labels: &mut [i64]) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("worker-wrong-labels", |_| {
        for l in labels.iter_mut() {
            *l += 1;
        }
    });
    let _ = labels;
}

/// `assemble-slow=return(MS)`: the coordinator sleeps MS milliseconds before it appends each
/// image to `samples.npz` (makes an assembly last long enough to be interrupted).
#[inline]
pub fn maybe_slow_assembly() {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("assemble-slow", |arg: Option<String>| {
        let ms = arg.and_then(|a| a.parse().ok()).unwrap_or(100);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    });
}

/// `worker-slow=return(MS)`: sleep MS milliseconds before each micro-batch (makes a short test
/// job last long enough to be interrupted, without changing its images).
#[inline]
pub fn maybe_slow() {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("worker-slow", |arg: Option<String>| {
        let ms = arg.and_then(|a| a.parse().ok()).unwrap_or(100);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    });
}
