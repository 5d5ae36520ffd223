//! Per-CPU counters: socket outcomes by reason, and selections by service (the balancer's
//! per-service counters, so a service's figures include its socket-level selections).
//! Only `packets` moves: a socket call has no size of its own.

use aya_ebpf::maps::PerCpuArray;
use lb_common::{Counter, SockReason};

use crate::maps::{SERVICE_STATS, SOCK_STATS};

#[inline(always)]
fn bump(map: &PerCpuArray<Counter>, index: u32) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; the program runs with preemption off, so only it writes
        // the slot meanwhile.
        unsafe { (*counter).packets += 1 };
    }
}

#[inline(always)]
pub fn count_reason(reason: SockReason) {
    bump(&SOCK_STATS, reason as u32);
}

#[inline(always)]
pub fn count_service(service_id: u32) {
    bump(&SERVICE_STATS, service_id);
}
