//! Service, configuration and Maglev lookups.

use lb_common::{
    maglev_words, BackendValue, FlowKey, LbConfig, ServiceKey, ServiceValue, XdpReason,
    BACKEND_F_ACTIVE, CONFIG_F_READY,
};

use crate::maps::{BACKENDS, CONFIG, MAGLEV, SERVICES};

/// The service a flow's destination names; both families, from the flow key.
#[inline(always)]
pub fn service(flow: &FlowKey) -> Option<ServiceValue> {
    let key = ServiceKey {
        addr: flow.dst,
        port_be: flow.dport_be,
        proto: flow.proto,
        family: flow.family,
    };
    // SAFETY: the service map is not preallocated, so the element stays valid for the RCU
    // section this program runs in; we copy it out at once.
    unsafe { SERVICES.get(key).copied() }
}

#[inline(always)]
pub fn config() -> Option<&'static LbConfig> {
    // Borrowed, not copied: the IPv6 path's stack has no room for another 40 bytes. The
    // daemon rewrites the element whole with one update, so fields read together belong
    // together for all a packet needs (seed and sources change only on restart).
    let config = CONFIG.get(0)?;
    if config.flags & CONFIG_F_READY == 0 {
        return None;
    }
    Some(config)
}

/// The live backend with this id, if any.
#[inline(always)]
pub fn backend(id: u32) -> Option<BackendValue> {
    live_backend(id).copied()
}

/// [`backend`], borrowed from the map (array elements are never freed): no copy on the
/// stack, for the fast path.
#[inline(always)]
pub fn live_backend(id: u32) -> Option<&'static BackendValue> {
    let backend = BACKENDS.get(id)?;
    if backend.flags & BACKEND_F_ACTIVE == 0 {
        return None;
    }
    Some(backend)
}

/// Maglev: the flow hash picks a slot of the service's table, the slot names the backend.
#[inline(always)]
pub fn maglev_backend(service: &ServiceValue, hash: u32) -> Result<(u32, BackendValue), XdpReason> {
    // No table: every backend drained or gone. Also keeps the division safe.
    if service.table_size == 0 {
        return Err(XdpReason::DropNoBackend);
    }
    let slot = service.table_base.wrapping_add(hash % service.table_size);
    let word = *MAGLEV
        .get(maglev_words::word_of(slot))
        .ok_or(XdpReason::DropBackendMissing)?;
    let id = maglev_words::id_in(word, slot);
    let backend = backend(id).ok_or(XdpReason::DropBackendMissing)?;
    Ok((id, backend))
}
