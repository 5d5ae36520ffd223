//! When a config file is ready to be read. Editors and configuration tools often write a
//! file in place, in several writes; a poll between two of them reads a prefix, and a
//! prefix cut at a service boundary is a valid, smaller config. So a text is taken only
//! once it has read the same for a settle period (and differs from the last one taken).
//! Writers that finish within that period are never seen half-done; the documented way to
//! update the file is still to write a temporary file and rename it into place, which is
//! atomic whatever the writer's pace. SIGHUP takes the file as it is, at once.

use std::time::{Duration, Instant};

pub struct Settle {
    period: Duration,
    /// The text seen last and since when it has read the same.
    seen: Option<(String, Instant)>,
    /// The text taken last (applied or rejected): not taken again until it changes.
    taken: Option<String>,
}

impl Settle {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            seen: None,
            taken: None,
        }
    }

    /// Records `text` as taken (the initial load, a SIGHUP reload).
    pub fn take(&mut self, text: &str) {
        self.taken = Some(text.to_owned());
        self.seen = None;
    }

    /// The file read `text` at `now`: returns it when it is new and has read the same
    /// for the settle period.
    pub fn observe(&mut self, text: String, now: Instant) -> Option<String> {
        if self.taken.as_deref() == Some(text.as_str()) {
            self.seen = None;
            return None;
        }
        match &self.seen {
            Some((seen, since)) if *seen == text => {
                if now.duration_since(*since) < self.period {
                    return None;
                }
                self.take(&text);
                Some(text)
            }
            _ => {
                self.seen = Some((text, now));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(500);

    #[test]
    fn a_file_caught_half_written_is_not_taken() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut settle = Settle::new(PERIOD);
        settle.take("services: [a, b, c]");
        // The writer stops at a service boundary for 300 ms: a valid, smaller file.
        assert_eq!(settle.observe("services: [a]".into(), ms(0)), None);
        assert_eq!(settle.observe("services: [a]".into(), ms(200)), None);
        // ... then finishes: only the whole file is taken, once it has settled.
        assert_eq!(settle.observe("services: [a, b]".into(), ms(300)), None);
        assert_eq!(settle.observe("services: [a, b]".into(), ms(700)), None);
        assert_eq!(
            settle
                .observe("services: [a, b]".into(), ms(800))
                .as_deref(),
            Some("services: [a, b]")
        );
        // Taken once; the same text again is nothing new.
        assert_eq!(settle.observe("services: [a, b]".into(), ms(2000)), None);
    }

    #[test]
    fn going_back_to_the_taken_text_cancels_a_pending_change() {
        let t0 = Instant::now();
        let mut settle = Settle::new(PERIOD);
        settle.take("old");
        assert_eq!(settle.observe("new".into(), t0), None);
        assert_eq!(settle.observe("old".into(), t0 + PERIOD), None);
        assert_eq!(settle.observe("new".into(), t0 + 2 * PERIOD), None);
        assert_eq!(
            settle.observe("new".into(), t0 + 3 * PERIOD).as_deref(),
            Some("new")
        );
    }
}
