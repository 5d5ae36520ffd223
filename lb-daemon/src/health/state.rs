//! One backend's health as its checks' results move it: up until `fall` failures in a row,
//! down until `rise` successes in a row. Pure; the checker feeds it results.

use serde::{Deserialize, Serialize};

/// What a backend's checks say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    Down,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
        })
    }
}

/// A backend's health and the run of results that may change it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendHealth {
    pub health: Health,
    /// Results in a row that disagree with `health` (reset by one that agrees).
    pub streak: u32,
    pub checks: u64,
    pub failures: u64,
    /// Why the last failed check failed.
    pub last_error: Option<String>,
    /// Unix seconds of the last transition (or of the first check).
    pub since_unix_s: u64,
}

impl BackendHealth {
    /// A backend starts up: a daemon that restarts, or a backend added to the file, keeps
    /// or gets traffic at once instead of waiting `rise` intervals; a dead one leaves after
    /// `fall` failures.
    pub fn new(now_unix_s: u64) -> Self {
        Self {
            health: Health::Up,
            streak: 0,
            checks: 0,
            failures: 0,
            last_error: None,
            since_unix_s: now_unix_s,
        }
    }

    /// Takes one check's result; returns the new health when it changes.
    pub fn record(
        &mut self,
        result: Result<(), String>,
        rise: u32,
        fall: u32,
        now_unix_s: u64,
    ) -> Option<Health> {
        self.checks += 1;
        let ok = result.is_ok();
        if let Err(e) = result {
            self.failures += 1;
            self.last_error = Some(e);
        }
        let agrees = ok == (self.health == Health::Up);
        if agrees {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = match self.health {
            Health::Up => fall,
            Health::Down => rise,
        };
        if self.streak < needed {
            return None;
        }
        self.health = match self.health {
            Health::Up => Health::Down,
            Health::Down => Health::Up,
        };
        self.streak = 0;
        self.since_unix_s = now_unix_s;
        Some(self.health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> Result<(), String> {
        Err("refused".into())
    }

    #[test]
    fn falls_after_fall_failures_in_a_row_and_rises_after_rise_successes() {
        let mut b = BackendHealth::new(0);
        assert_eq!(b.record(fail(), 2, 3, 1), None);
        assert_eq!(b.record(fail(), 2, 3, 2), None);
        // One success resets the run.
        assert_eq!(b.record(Ok(()), 2, 3, 3), None);
        assert_eq!(b.record(fail(), 2, 3, 4), None);
        assert_eq!(b.record(fail(), 2, 3, 5), None);
        assert_eq!(b.record(fail(), 2, 3, 6), Some(Health::Down));
        assert_eq!(b.since_unix_s, 6);
        assert_eq!(b.last_error.as_deref(), Some("refused"));
        assert_eq!(b.record(Ok(()), 2, 3, 7), None);
        assert_eq!(b.record(fail(), 2, 3, 8), None);
        assert_eq!(b.record(Ok(()), 2, 3, 9), None);
        assert_eq!(b.record(Ok(()), 2, 3, 10), Some(Health::Up));
        assert_eq!((b.checks, b.failures), (10, 6));
    }

    #[test]
    fn counts_of_one_act_at_once() {
        let mut b = BackendHealth::new(0);
        assert_eq!(b.record(fail(), 1, 1, 1), Some(Health::Down));
        assert_eq!(b.record(Ok(()), 1, 1, 2), Some(Health::Up));
    }
}
