//! Retries with exponential backoff and jitter. An attempt that fails on something temporary is
//! tried again after `backoff * 2^(n-1)` (at most `backoff_max`), scaled by a random factor in
//! [0.5, 1] so that many processes do not hammer the server in step; a server's `Retry-After`
//! (429, 503) is honoured instead (up to [`MAX_RETRY_AFTER`]). An attempt that moved the
//! download forward (transfer.rs decides: at least [`MIN_PROGRESS`] bytes beyond the most ever
//! kept) starts the count of failures in a row afresh: a large file over a flaky link gets
//! there, one broken transfer at a time, while bytes that are thrown away again, or a few bytes
//! per attempt, are no progress.
use super::error::FetchError;
use super::http::{Failure, Kind};
use super::settings::Policy;
use std::time::{Duration, Instant};

/// The longest `Retry-After` honoured as given.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The bytes an attempt must add to the most ever kept of a file to count as progress.
pub(crate) const MIN_PROGRESS: u64 = 1 << 20;

/// The wait before retry `n` (1-based), without the server's opinion.
pub(crate) fn backoff(policy: &Policy, n: u32) -> Duration {
    let exp = 2f64.powi(n.saturating_sub(1).min(30) as i32);
    let base = (policy.backoff.as_secs_f64() * exp).min(policy.backoff_max.as_secs_f64());
    Duration::from_secs_f64(base * (0.5 + 0.5 * fastrand::f64()))
}

/// Sleeps `d`, waking for stop signals.
pub(crate) fn sleep(d: Duration, what: &str) -> Result<(), FetchError> {
    let until = Instant::now() + d;
    loop {
        stop_requested(what)?;
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// `Err(Interrupted)` once SIGTERM/SIGINT/SIGUSR1 arrived (see sys/signals.rs).
pub(crate) fn stop_requested(what: &str) -> Result<(), FetchError> {
    match crate::sys::signals::pending() {
        Some(signal) => Err(FetchError::Interrupted {
            signal,
            what: what.to_string(),
        }),
        None => Ok(()),
    }
}

/// Runs `op` until it succeeds, fails for good, or fails `policy.attempts` times in a row.
/// `op`'s outer error stops at once (a signal, the local disk); its inner one is an attempt
/// that failed. `refused` turns a non-temporary failure into the error the user sees.
pub(crate) fn with_retries<T>(
    policy: &Policy,
    url: &str,
    mut op: impl FnMut() -> Result<Result<T, Failure>, FetchError>,
    refused: impl Fn(&Failure) -> FetchError,
) -> Result<T, FetchError> {
    let mut in_a_row = 0u32;
    let mut total = 0u32;
    loop {
        stop_requested(url)?;
        total += 1;
        let f = match op()? {
            Ok(v) => return Ok(v),
            Err(f) => f,
        };
        if f.kind != Kind::Temporary {
            return Err(refused(&f));
        }
        in_a_row = if f.progressed { 1 } else { in_a_row + 1 };
        if in_a_row >= policy.attempts {
            return Err(FetchError::Exhausted {
                url: url.to_string(),
                attempts: total,
                last: f.message,
            });
        }
        let wait = match f.retry_after {
            Some(ra) => ra.min(MAX_RETRY_AFTER),
            None => backoff(policy, in_a_row),
        };
        tracing::warn!(
            url,
            attempt = total,
            "{}; retrying in {:.1} s",
            f.message,
            wait.as_secs_f64()
        );
        sleep(wait, url)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32) -> Policy {
        Policy {
            attempts,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            stall: Duration::from_secs(1),
            connect: Duration::from_secs(1),
            max_bytes: 1 << 20,
            min_rate: 0,
            rate_window: Duration::from_secs(1),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let p = policy(3);
        for _ in 0..50 {
            let b1 = backoff(&p, 1).as_secs_f64();
            assert!((0.05..=0.1).contains(&b1), "{b1}");
            let b2 = backoff(&p, 2).as_secs_f64();
            assert!((0.1..=0.2).contains(&b2), "{b2}");
            let b9 = backoff(&p, 9).as_secs_f64();
            assert!((0.15..=0.3).contains(&b9), "{b9}");
        }
    }

    #[test]
    fn gives_up_after_the_attempts_in_a_row_and_progress_resets_them() {
        let p = Policy {
            backoff: Duration::ZERO,
            ..policy(3)
        };
        let mut n = 0;
        let err = with_retries(
            &p,
            "http://h/x",
            || -> Result<Result<(), Failure>, FetchError> {
                n += 1;
                Ok(Err(Failure::temporary(format!("HTTP 500 #{n}"))))
            },
            |_| unreachable!(),
        )
        .unwrap_err();
        assert_eq!(n, 3);
        let msg = err.to_string();
        assert!(
            msg.contains("after 3 attempt(s)") && msg.contains("HTTP 500 #3"),
            "{msg}"
        );

        // Five failures, each after some progress, then success.
        let mut n = 0;
        let v = with_retries(
            &p,
            "http://h/x",
            || {
                n += 1;
                Ok(if n < 6 {
                    Err(Failure {
                        progressed: true,
                        ..Failure::temporary("reset")
                    })
                } else {
                    Ok(n)
                })
            },
            |_| unreachable!(),
        )
        .unwrap();
        assert_eq!(v, 6);

        // A refusal is not retried.
        let mut n = 0;
        let err = with_retries(
            &p,
            "http://h/x",
            || -> Result<Result<(), Failure>, FetchError> {
                n += 1;
                Ok(Err(Failure {
                    kind: Kind::Refused(404),
                    ..Failure::temporary("HTTP 404")
                }))
            },
            |f| FetchError::Input(f.message.clone()),
        )
        .unwrap_err();
        assert_eq!((n, err.to_string()), (1, "HTTP 404".to_string()));
    }
}
