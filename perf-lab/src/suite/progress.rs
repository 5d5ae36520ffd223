//! The progress line of a run.

use std::{
    io::{IsTerminal, Write as _},
    time::Instant,
};

/// One line per step; on a terminal it rewrites itself in place.
pub(super) struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    tty: bool,
}

impl Progress {
    pub(super) fn new(total: usize) -> Self {
        Self {
            total: total.max(1),
            done: 0,
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub(super) fn step(&mut self, what: &str) {
        self.done += 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = elapsed / self.done as f64 * (self.total - self.done.min(self.total)) as f64;
        let line = format!(
            "[{:>4}/{:<4} {:>4.0}s elapsed, ~{:>4.0}s left] {what}",
            self.done, self.total, elapsed, left
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            if self.done >= self.total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}
