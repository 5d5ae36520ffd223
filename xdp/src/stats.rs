//! Per-CPU packet and byte counters: by reason, by service, by backend.

use aya_ebpf::maps::PerCpuArray;
use lb_common::{Counter, XdpReason};

use crate::maps::{BACKEND_STATS, SERVICE_STATS, XDP_STATS};

#[inline(always)]
fn bump(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn count_reason(reason: XdpReason, bytes: u64) {
    bump(&XDP_STATS, reason as u32, bytes);
}

#[inline(always)]
pub fn count_service(service_id: u32, bytes: u64) {
    bump(&SERVICE_STATS, service_id, bytes);
}

#[inline(always)]
pub fn count_backend(backend_id: u32, bytes: u64) {
    bump(&BACKEND_STATS, backend_id, bytes);
}
