//! Lookups of the socket programs: the frontend's service, the endpoint Maglev picks from
//! the table the XDP balancer reads too, and the endpoint's target port.

use lb_common::{
    maglev_words, Addr, BackendNatKey, BackendValue, ServiceKey, ServiceValue, SockReason, VipKey,
    BACKEND_F_ACTIVE,
};

use crate::{
    maps::{BACKENDS, CONFIG, MAGLEV, REJECT_ADDRS, SOCK_SERVICES, SOCK_TARGETS},
    peer::Peer,
};

/// The socket-balanced service `frontend` names over `proto`, if any.
#[inline(always)]
pub fn service(frontend: &Peer, proto: u8) -> Option<ServiceValue> {
    let key = ServiceKey {
        addr: frontend.addr,
        port_be: frontend.port_be,
        proto,
        family: frontend.family,
    };
    // SAFETY: the map is not preallocated, so the element stays valid for the RCU section
    // this program runs in; it is copied out at once.
    unsafe { SOCK_SERVICES.get(key).copied() }
}

/// Whether `frontend`'s address refuses the ports it has no frontend for (a ClusterIP's
/// undefined ports, kube-proxy's reject).
#[inline(always)]
pub fn rejects_unknown_ports(frontend: &Peer) -> bool {
    let key = VipKey {
        addr: frontend.addr,
        family: frontend.family,
        _pad: [0; 3],
    };
    // SAFETY: only presence matters; the value is not read.
    unsafe { REJECT_ADDRS.get(key) }.is_some()
}

/// The flow-hash seed the daemon configured; zero before it wrote any config, which
/// only makes the spread different, never wrong.
#[inline(always)]
pub fn seed() -> u32 {
    CONFIG.get(0).map_or(0, |config| config.flow_hash_seed)
}

/// Maglev: `hash` picks a slot of the service's table, the slot names the endpoint (its
/// id and entry).
#[inline(always)]
pub fn endpoint(service: &ServiceValue, hash: u32) -> Result<(u32, BackendValue), SockReason> {
    // No table: every endpoint drained or gone. Also keeps the division safe.
    if service.table_size == 0 {
        return Err(SockReason::DropNoBackend);
    }
    let slot = service.table_base.wrapping_add(hash % service.table_size);
    let word = *MAGLEV
        .get(maglev_words::word_of(slot))
        .ok_or(SockReason::DropBackendMissing)?;
    let id = maglev_words::id_in(word, slot);
    live_backend(id)
        .ok_or(SockReason::DropBackendMissing)
        .map(|b| (id, b))
}

/// The live endpoint with this id, if any.
#[inline(always)]
pub fn live_backend(id: u32) -> Option<BackendValue> {
    match BACKENDS.get(id) {
        Some(backend) if backend.flags & BACKEND_F_ACTIVE != 0 => Some(*backend),
        _ => None,
    }
}

/// The port the endpoint at `endpoint` listens on for `frontend`; the frontend's own
/// port when the daemon wrote none (a service whose target port equals its port).
#[inline(always)]
pub fn target_port(frontend: &Peer, proto: u8, endpoint: &Addr) -> u16 {
    let key = BackendNatKey {
        frontend: frontend.addr,
        endpoint: *endpoint,
        port_be: frontend.port_be,
        proto,
        family: frontend.family,
    };
    // SAFETY: not preallocated (see `service`); the port is copied out at once.
    unsafe { SOCK_TARGETS.get(key) }.map_or(frontend.port_be, |t| t.target_port_be)
}
