//! The ICMP answer rate limit: GCRA (a token bucket kept as one time stamp) per CPU, so
//! CPUs never contend for it. `rate` answers a second with bursts of up to `burst`, on
//! each CPU; a rate of 0 sends no answers.

use aya_ebpf::helpers::bpf_ktime_get_ns;

use crate::maps::ICMP_RATE;

const NS_PER_S: u64 = 1_000_000_000;

/// Takes one answer's worth of budget if there is one.
#[inline(always)]
pub fn take(rate: u16, burst: u16) -> bool {
    if rate == 0 {
        return false;
    }
    let Some(due) = ICMP_RATE.get_ptr_mut(0) else {
        return false;
    };
    let interval = NS_PER_S / u64::from(rate);
    // Up to `burst` answers may be sent ahead of the steady pace.
    let tolerance = interval * u64::from(burst.max(1) - 1);
    // SAFETY: a helper without arguments, callable from any program.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's slot, bounds checked by the map lookup; only this CPU writes it.
    let next = unsafe { *due }.max(now);
    if next - now > tolerance {
        return false;
    }
    // SAFETY: as above.
    unsafe { *due = next + interval };
    true
}
