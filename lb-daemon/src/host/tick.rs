//! The kernel's timer tick (1/HZ), the unit of `jiffies`: the clock the XDP program times
//! its cached next hops with. `bpf_jiffies64` is inlined by the verifier into one load,
//! where a clock helper costs a call and a return (about 17 ns each packet here), so the
//! daemon hands the program its TTL in ticks.

use std::{sync::OnceLock, time::Duration};

/// The tick when the kernel does not say (HZ=250, the most common configuration).
const FALLBACK_TICK: Duration = Duration::from_millis(4);

/// The kernel's tick: CLOCK_MONOTONIC_COARSE advances once per tick, so its resolution is
/// the tick's length (`TICK_NSEC`).
pub fn tick() -> Duration {
    static TICK: OnceLock<Duration> = OnceLock::new();
    *TICK.get_or_init(|| {
        let mut res = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `res` is a valid, writable timespec.
        let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
        let tick = Duration::new(res.tv_sec as u64, res.tv_nsec as u32);
        if rc != 0 || tick.is_zero() {
            tracing::warn!("the kernel's tick is unknown; assuming {FALLBACK_TICK:?}");
            return FALLBACK_TICK;
        }
        tick
    })
}

/// `ttl` in whole ticks of length `tick`, at least one (a TTL shorter than a tick still
/// expires).
pub fn ticks(ttl: Duration, tick: Duration) -> u64 {
    let ticks = ttl.as_nanos() / tick.as_nanos().max(1);
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_is_counted_in_whole_ticks_and_never_zero() {
        let tick = Duration::from_millis(4);
        assert_eq!(ticks(Duration::from_secs(1), tick), 250);
        assert_eq!(ticks(Duration::from_millis(10), tick), 2);
        assert_eq!(ticks(Duration::from_micros(1), tick), 1);
        assert_eq!(ticks(Duration::ZERO, tick), 1);
    }

    #[test]
    fn the_kernel_tick_is_between_100_and_1000_hz() {
        let tick = tick();
        assert!(tick >= Duration::from_millis(1) && tick <= Duration::from_millis(10));
    }
}
