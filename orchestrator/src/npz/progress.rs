//! The "assembled N of M samples" lines of a long assembly: only for a large npz (a small one is
//! done in a second or two and gets only its final line), at 25, 50 and 75 %, and between them
//! at most one line every [`EVERY`] (a slow shared file system still shows that it moves).
use std::time::{Duration, Instant};

/// Fewer samples than this: no progress lines.
pub(super) const LARGE: u64 = 10_000;
/// The least time between two lines that are not at a quarter.
pub(super) const EVERY: Duration = Duration::from_secs(10);

pub(super) struct Progress {
    n: u64,
    started: Instant,
    last_line: Instant,
    next_quarter: u64,
}

impl Progress {
    pub(super) fn new(n: u64, started: Instant) -> Progress {
        Progress {
            n,
            started,
            last_line: started,
            next_quarter: 1,
        }
    }

    /// After the first `done` samples were added.
    pub(super) fn after(&mut self, done: u64) {
        if self.n < LARGE || done >= self.n {
            return;
        }
        let mut at_quarter = false;
        while self.next_quarter < 4 && done >= self.n * self.next_quarter / 4 {
            self.next_quarter += 1;
            at_quarter = true;
        }
        let now = Instant::now();
        if at_quarter || now.duration_since(self.last_line) >= EVERY {
            self.last_line = now;
            tracing::info!(
                "assembled {done} of {} samples ({:.0} s)",
                self.n,
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// The quarters not logged yet (for the tests).
    #[cfg(test)]
    pub(super) fn quarters_left(&self) -> u64 {
        4 - self.next_quarter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_npz_logs_no_progress_and_a_large_one_its_quarters() {
        let mut small = Progress::new(100, Instant::now());
        (1..=100).for_each(|i| small.after(i));
        assert_eq!(small.quarters_left(), 3);
        let mut large = Progress::new(LARGE, Instant::now());
        large.after(LARGE / 4 - 1);
        assert_eq!(large.quarters_left(), 3);
        large.after(LARGE / 4);
        assert_eq!(large.quarters_left(), 2);
        large.after(LARGE - 1);
        assert_eq!(large.quarters_left(), 0);
    }
}
