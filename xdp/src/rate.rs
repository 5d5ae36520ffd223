//! Per-CPU rate limits: GCRA (a token bucket kept as one time stamp, the time the next
//! event is due at the configured rate) in a one-element per-CPU array, so CPUs never
//! contend for it. Used by the ICMP answer limit and the new-flow insert budget.

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::PerCpuArray};

const NS_PER_S: u64 = 1_000_000_000;

/// Takes one event's worth of budget from this CPU's `state` if there is one: `rate`
/// events a second in bursts of up to `burst`. A rate of 0 allows nothing.
#[inline(always)]
pub fn take(state: &PerCpuArray<u64>, rate: u32, burst: u32) -> bool {
    if rate == 0 {
        return false;
    }
    let Some(due) = state.get_ptr_mut(0) else {
        return false;
    };
    let interval = NS_PER_S / u64::from(rate);
    // Up to `burst` events may run ahead of the steady pace.
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
