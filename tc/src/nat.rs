//! Backend-side translation of a decapsulated packet to the local endpoint (destination
//! address and target port), and the reverse on the endpoint's replies, so the client sees
//! the frontend it addressed (a ClusterIP or a NodePort on another node). The balancer
//! sends the packet unchanged; the (frontend, endpoint) pair the daemon programmed here
//! says which port the endpoint listens on. IPv4 and IPv6 alike.

use aya_ebpf::programs::TcContext;
use lb_common::{
    v4_addr,
    wire::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6},
    Addr, BackendNatKey, RevNatKey, RevNatValue, TcReason, FAMILY_V6,
};

use crate::{
    l4::{self, End},
    maps::{BACKEND_NAT, REV_NAT, SCRATCH},
    types::Translation,
};

/// This CPU's scratch translation; a program run owns it from start to end.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Translation> {
    // SAFETY: per-CPU and programs do not nest on one CPU for tc, so nothing else uses
    // the slot while this run holds it.
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// The translation for the inner packet at `inner_ip`, sent to the endpoint whose address
/// (the outer destination, `family`) is at `endpoint_at`, if the daemon programmed one. A
/// subprogram of its own (see `apply`), which also reads the address itself: the IPv6
/// caller's frame has no room for it.
#[inline(never)]
pub fn find(
    ctx: &TcContext,
    inner_ip: usize,
    endpoint_at: usize,
    family: u8,
    out: &mut Translation,
) -> bool {
    let endpoint = if family == FAMILY_V6 {
        match ctx.load::<Addr>(endpoint_at) {
            Ok(addr) => addr,
            Err(_) => return false,
        }
    } else {
        match ctx.load::<[u8; 4]>(endpoint_at) {
            Ok(addr) => v4_addr(addr),
            Err(_) => return false,
        }
    };
    match try_find(ctx, inner_ip, &endpoint, family) {
        Some(t) => {
            *out = t;
            true
        }
        None => false,
    }
}

#[inline(always)]
fn try_find(ctx: &TcContext, inner_ip: usize, endpoint: &Addr, family: u8) -> Option<Translation> {
    let inner = l4::read(ctx, inner_ip)?;
    if inner.family != family {
        return None;
    }
    let mut key = BackendNatKey {
        frontend: inner.daddr,
        endpoint: *endpoint,
        port_be: inner.dport_be,
        proto: inner.proto,
        family: inner.family,
    };
    // SAFETY: copied out at once, so no reference outlives the lookup.
    let value = match unsafe { BACKEND_NAT.get(key).copied() } {
        Some(value) => value,
        None => {
            // A NodePort: addressed to whichever node balanced it, programmed once with
            // the unspecified address.
            key.frontend = [0; 16];
            // SAFETY: as above, copied out at once.
            unsafe { BACKEND_NAT.get(key).copied() }?
        }
    };
    Some(Translation {
        inner,
        endpoint: *endpoint,
        target_port_be: value.target_port_be,
    })
}

/// Rewrites the packet (outer header already removed, so the inner IP header follows
/// Ethernet) and remembers the flow for its replies. A subprogram of its own, so the IPv6
/// decapsulation's frame stays within the stack limit. Returns the counter's reason.
#[inline(never)]
pub fn apply(ctx: &mut TcContext, t: &mut Translation) -> TcReason {
    match try_apply(ctx, t) {
        Ok(()) => TcReason::DecapsulatedTranslated,
        Err(reason) => reason,
    }
}

#[inline(always)]
fn try_apply(ctx: &mut TcContext, t: &mut Translation) -> Result<(), TcReason> {
    // The inner headers moved up by the outer header's length.
    let pkt = &mut t.inner;
    let shift = pkt.ip - ETH_HLEN as u16;
    pkt.ip = ETH_HLEN as u16;
    pkt.l4 -= shift;
    let pkt = &t.inner;
    l4::rewrite(ctx, pkt, End::Destination, &t.endpoint, t.target_port_be)?;
    let key = RevNatKey {
        client: pkt.saddr,
        endpoint: t.endpoint,
        client_port_be: pkt.sport_be,
        target_port_be: t.target_port_be,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    };
    let value = RevNatValue {
        frontend: pkt.daddr,
        port_be: pkt.dport_be,
        _pad: 0,
    };
    // Written only when new or changed: an update per packet would cost the hot path a
    // locked LRU write.
    // SAFETY: compared at once.
    let known = unsafe { REV_NAT.get(key) }.is_some_and(|v| *v == value);
    if !known {
        // A full LRU evicts its oldest flow; that flow's replies then leave untranslated.
        let _ = REV_NAT.insert(key, value, 0);
    }
    Ok(())
}

/// Egress: a reply of a translated flow gets the frontend back as its source.
#[inline(always)]
pub fn restore_reply(ctx: &mut TcContext) -> Result<TcReason, TcReason> {
    let ether_type: u16 = ctx.load(12).map_err(|_| TcReason::PassNotTranslated)?;
    let ether_type = u16::from_be(ether_type);
    if ether_type != ETH_P_IP && ether_type != ETH_P_IPV6 {
        return Err(TcReason::PassNotTranslated);
    }
    let pkt = l4::read(ctx, ETH_HLEN).ok_or(TcReason::PassNotTranslated)?;
    let key = RevNatKey {
        client: pkt.daddr,
        endpoint: pkt.saddr,
        client_port_be: pkt.dport_be,
        target_port_be: pkt.sport_be,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    };
    // SAFETY: copied out at once.
    let frontend = unsafe { REV_NAT.get(key).copied() }.ok_or(TcReason::PassNotTranslated)?;
    l4::rewrite(ctx, &pkt, End::Source, &frontend.frontend, frontend.port_be)?;
    Ok(TcReason::ReplyRestored)
}
