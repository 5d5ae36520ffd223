//! `sessionAffinity: ClientIP`: a client address keeps its endpoint for a service until
//! it sends nothing to the service for the service's timeout.
//!
//! The order of selection is: the flow table (an established flow stays where it is),
//! then the client's affinity entry, then Maglev. Maglev is keyed by the client address
//! alone for such a service (`FlowKey::client_hash`), so every connection of a client
//! meets the same slot before any entry exists: concurrent SYNs of one client agree,
//! and so do several balancers behind one ECMP route. The entry is what keeps the
//! endpoint when the backend set changes and Maglev would move the client.
//!
//! Like a flow entry, an entry is written by a packet that is not a TCP SYN without ACK
//! (spoofed SYNs cannot evict real clients), and ends when its backend is retired or
//! reused (generation). When an endpoint leaves a service but keeps serving others the
//! daemon purges the service's entries for it after the table flip (`PurgeAffinity`).

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use lb_common::{
    affinity::{expired, refresh_ns},
    AffinityKey, AffinityValue, BackendValue, FlowKey, ServiceValue, XdpReason,
};

use crate::{lookup, maps::AFFINITY};

#[inline(always)]
fn key(flow: &FlowKey, service: &ServiceValue) -> AffinityKey {
    AffinityKey {
        client: flow.src,
        service_id: service.service_id,
        family: flow.family,
        _pad: [0; 3],
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: plain helper call without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The live entry of `key`, with its backend; refreshes its stamp when it is older than
/// the refresh interval. `backend_id`, when given, must match for the refresh.
#[inline(always)]
fn live_entry(
    key: &AffinityKey,
    service: &ServiceValue,
    only_for: Option<u32>,
) -> Option<(u32, BackendValue)> {
    let entry = AFFINITY.get_ptr_mut(key)?;
    let now = now_ns();
    // SAFETY: a valid element pointer for this program's RCU section. The stamp is one
    // aligned 8-byte word, so a concurrent refresh on another CPU is never torn.
    let (last_used, backend_id, generation) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*entry).last_used_ns),
            (*entry).backend_id,
            (*entry).backend_generation,
        )
    };
    let age = now.saturating_sub(last_used);
    if expired(age, service.affinity_timeout_s) {
        return None;
    }
    if only_for.is_some_and(|id| id != backend_id) {
        return None;
    }
    let backend = lookup::backend(backend_id)?;
    if backend.generation != generation {
        return None;
    }
    if age >= refresh_ns(service.affinity_timeout_s) {
        // SAFETY: as above; an in-place store, no map update and no allocation.
        unsafe { core::ptr::write_volatile(&raw mut (*entry).last_used_ns, now) };
    }
    Some((backend_id, backend))
}

/// A packet of an established flow of the client: keeps the client's entry fresh when it
/// names the flow's backend (traffic to another endpoint says nothing about this one).
#[inline(always)]
pub fn touch(flow: &FlowKey, service: &ServiceValue, backend_id: u32) {
    let _ = live_entry(&key(flow, service), service, Some(backend_id));
}

/// A flow the flow table does not know: the client's endpoint if its entry lives, else
/// Maglev's pick over `client_hash`, recorded for the client unless the packet is
/// `opening` a TCP connection.
#[inline(always)]
pub fn pick(
    flow: &FlowKey,
    service: &ServiceValue,
    opening: bool,
    client_hash: impl FnOnce() -> u32,
) -> Result<(u32, BackendValue), XdpReason> {
    let key = key(flow, service);
    if let Some(kept) = live_entry(&key, service, None) {
        return Ok(kept);
    }
    let picked = lookup::maglev_backend(service, client_hash())?;
    if !opening {
        let value = AffinityValue {
            last_used_ns: now_ns(),
            backend_id: picked.0,
            backend_generation: picked.1.generation,
        };
        // A full LRU evicts its stalest entry; a failure only costs the client its
        // stickiness across a later table change.
        let _ = AFFINITY.insert(key, value, 0);
    }
    Ok(picked)
}
