//! How the report writes a summary of runs: the median, then the range [min–max], in the
//! unit of its table.

use crate::stats::Summary;

pub(super) fn mpps(s: &Summary) -> String {
    format!(
        "{:.3} [{:.3}–{:.3}]",
        s.median / 1e6,
        s.min / 1e6,
        s.max / 1e6
    )
}

pub(super) fn ns(s: &Summary) -> String {
    format!("{:.0} [{:.0}–{:.0}]", s.median, s.min, s.max)
}

pub(super) fn secs(s: &Summary) -> String {
    if s.median < 1.0 {
        format!(
            "{:.1} ms [{:.1}–{:.1}]",
            s.median * 1e3,
            s.min * 1e3,
            s.max * 1e3
        )
    } else {
        format!("{:.2} s [{:.2}–{:.2}]", s.median, s.min, s.max)
    }
}

pub(super) fn micros(s: &Summary) -> String {
    let digits = if s.median < 100.0 { 1 } else { 0 };
    format!("{:.d$} [{:.d$}–{:.d$}]", s.median, s.min, s.max, d = digits)
}

pub(super) fn per_second(s: &Summary) -> String {
    if s.median >= 1e4 {
        format!(
            "{:.1}k [{:.1}k–{:.1}k]",
            s.median / 1e3,
            s.min / 1e3,
            s.max / 1e3
        )
    } else {
        format!("{:.0} [{:.0}–{:.0}]", s.median, s.min, s.max)
    }
}
