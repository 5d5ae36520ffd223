//! `sessionAffinity: ClientIP` at the socket: every socket a client opens to the service
//! gets the same endpoint until the client has made no call to it for the timeout.
//!
//! The client is the caller's network namespace, by its cookie: a pod is one namespace
//! (one address), and the host's processes share the host's namespace as they share its
//! source address. The source address itself is no key here: at `connect()` an unbound
//! socket has none yet (Cilium keys its socket-level affinity by the netns cookie for the
//! same reason).
//!
//! Without an entry Maglev picks over the namespace cookie, so every socket of the
//! namespace meets the same slot; the entry keeps the endpoint across backend-set
//! changes. Each selecting call (a `connect()`, or each datagram of an unconnected UDP
//! socket) refreshes it; traffic on a connected socket makes no call and does not, as
//! kube-proxy's iptables `recent` match is refreshed by new connections only. The entry
//! ends when its endpoint is retired or reused (generation) or, when the endpoint leaves
//! the service but serves others, by the daemon's purge (`PurgeAffinity`).

use aya_ebpf::{
    helpers::{bpf_get_netns_cookie, bpf_ktime_get_coarse_ns},
    programs::SockAddrContext,
    EbpfContext,
};
use lb_common::{
    affinity::{expired, refresh_ns},
    AffinityKey, AffinityValue, BackendValue, ServiceValue, SockReason,
};
use lb_hashing::flow::socket_hash;

use crate::{lookup, maps::SOCK_AFFINITY};

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: plain helper call without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The endpoint the caller's namespace keeps for `service`, or Maglev's pick over the
/// namespace cookie, which the namespace then keeps.
#[inline(always)]
pub fn endpoint(ctx: &SockAddrContext, service: &ServiceValue) -> Result<BackendValue, SockReason> {
    // SAFETY: the helper takes the program's own context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let [c0, c1, c2, c3, c4, c5, c6, c7] = netns.to_ne_bytes();
    let key = AffinityKey {
        client: [c0, c1, c2, c3, c4, c5, c6, c7, 0, 0, 0, 0, 0, 0, 0, 0],
        service_id: service.service_id,
        family: 0,
        _pad: [0; 3],
    };
    let now = now_ns();
    if let Some(entry) = SOCK_AFFINITY.get_ptr_mut(key) {
        // SAFETY: a valid element pointer for this program's RCU section; the stamp is one
        // aligned 8-byte word, never torn by a concurrent refresh.
        let (last_used, id, generation) = unsafe {
            (
                core::ptr::read_volatile(&raw const (*entry).last_used_ns),
                (*entry).backend_id,
                (*entry).backend_generation,
            )
        };
        let age = now.saturating_sub(last_used);
        if !expired(age, service.affinity_timeout_s) {
            if let Some(backend) = lookup::live_backend(id).filter(|b| b.generation == generation) {
                if age >= refresh_ns(service.affinity_timeout_s) {
                    // SAFETY: as above; an in-place store of one word.
                    unsafe { core::ptr::write_volatile(&raw mut (*entry).last_used_ns, now) };
                }
                return Ok(backend);
            }
        }
    }
    let (id, backend) = lookup::endpoint(service, socket_hash(netns, lookup::seed()))?;
    let value = AffinityValue {
        last_used_ns: now,
        backend_id: id,
        backend_generation: backend.generation,
    };
    // A full LRU evicts its stalest entry; a failure only costs the stickiness across a
    // later table change.
    let _ = SOCK_AFFINITY.insert(key, value, 0);
    Ok(backend)
}
