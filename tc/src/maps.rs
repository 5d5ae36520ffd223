//! Maps of the backend-side program, pinned by name like the balancer's.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    limits, BackendNatKey, BackendNatValue, Counter, RevNatKey, RevNatValue, TcReason, VipKey,
};

use crate::types::Translation;

#[map(name = "LB_LOCAL_VIPS")]
pub static LOCAL_VIPS: HashMap<VipKey, u32> = HashMap::pinned(limits::LOCAL_VIPS, 0);

#[map(name = "LB_BACKEND_NAT")]
pub static BACKEND_NAT: HashMap<BackendNatKey, BackendNatValue> =
    HashMap::pinned(limits::BACKEND_NATS, 0);

#[map(name = "LB_REV_NAT")]
pub static REV_NAT: LruHashMap<RevNatKey, RevNatValue> = LruHashMap::pinned(limits::REV_NATS, 0);

/// Per-CPU room for a translation between lookup and rewrite (not pinned: nothing outside
/// one program run reads it).
#[map]
pub static SCRATCH: PerCpuArray<Translation> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "LB_TC_STATS")]
pub static TC_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(TcReason::COUNT, 0);

#[inline(always)]
pub fn count(reason: TcReason, bytes: u64) {
    if let Some(counter) = TC_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}
