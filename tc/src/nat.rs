//! Backend-side translation of a decapsulated packet to the local endpoint (destination
//! address and target port), and the reverse on the endpoint's replies, so the client sees
//! the frontend it addressed (a ClusterIP or a NodePort on another node). The balancer
//! sends the packet unchanged; the (frontend, endpoint) pair the daemon programmed here
//! says which port the endpoint listens on.

use aya_ebpf::programs::TcContext;
use lb_common::{
    v4_addr,
    wire::{ETH_HLEN, IPV4_HLEN},
    BackendNatKey, RevNatKey, RevNatValue, TcReason, FAMILY_V4,
};

use crate::{
    l4::{self, End, Ports},
    maps::{BACKEND_NAT, REV_NAT},
};

/// A decapsulated packet's translation, found before the outer header is removed.
pub struct Translation {
    pub inner: Ports,
    pub endpoint: [u8; 4],
    pub target_port_be: u16,
}

/// The translation for the inner packet at `inner_ip`, sent to `endpoint` (the outer
/// destination), if the daemon programmed one.
#[inline(always)]
pub fn find(ctx: &TcContext, inner_ip: usize, endpoint: [u8; 4]) -> Option<Translation> {
    let inner = l4::read(ctx, inner_ip)?;
    let mut key = BackendNatKey {
        frontend: v4_addr(inner.daddr),
        endpoint: v4_addr(endpoint),
        port_be: inner.dport_be,
        proto: inner.proto,
        family: FAMILY_V4,
    };
    // SAFETY (both lookups): copied out at once.
    let value = match unsafe { BACKEND_NAT.get(key).copied() } {
        Some(value) => value,
        None => {
            // A NodePort: addressed to whichever node balanced it, programmed once with
            // the unspecified address.
            key.frontend = [0; 16];
            unsafe { BACKEND_NAT.get(key).copied() }?
        }
    };
    Some(Translation {
        inner,
        endpoint,
        target_port_be: value.target_port_be,
    })
}

/// Rewrites the packet (outer header already removed, so the inner IPv4 header follows
/// Ethernet) and remembers the flow for its replies.
#[inline(always)]
pub fn apply(ctx: &mut TcContext, t: &Translation) -> Result<(), TcReason> {
    // The inner headers moved up by the outer header's length.
    let mut pkt = t.inner;
    pkt.l4 = t.inner.l4 - IPV4_HLEN;
    l4::rewrite(ctx, &pkt, End::Destination, t.endpoint, t.target_port_be)?;
    let key = RevNatKey {
        client: v4_addr(pkt.saddr),
        endpoint: v4_addr(t.endpoint),
        client_port_be: pkt.sport_be,
        target_port_be: t.target_port_be,
        proto: pkt.proto,
        family: FAMILY_V4,
        _pad: [0; 2],
    };
    let value = RevNatValue {
        frontend: v4_addr(pkt.daddr),
        port_be: pkt.dport_be,
        _pad: 0,
    };
    // Written only when new or changed: an update per packet would cost the hot path a
    // locked LRU write.
    // SAFETY: copied out at once.
    let known = unsafe { REV_NAT.get(key).copied() };
    if known != Some(value) {
        // A full LRU evicts its oldest flow; that flow's replies then leave untranslated.
        let _ = REV_NAT.insert(key, value, 0);
    }
    Ok(())
}

/// Egress: a reply of a translated flow gets the frontend back as its source.
#[inline(always)]
pub fn restore_reply(ctx: &mut TcContext) -> Result<TcReason, TcReason> {
    let ether_type: u16 = ctx.load(12).map_err(|_| TcReason::PassNotTranslated)?;
    if u16::from_be(ether_type) != lb_common::wire::ETH_P_IP {
        return Err(TcReason::PassNotTranslated);
    }
    let pkt = l4::read(ctx, ETH_HLEN).ok_or(TcReason::PassNotTranslated)?;
    let key = RevNatKey {
        client: v4_addr(pkt.daddr),
        endpoint: v4_addr(pkt.saddr),
        client_port_be: pkt.dport_be,
        target_port_be: pkt.sport_be,
        proto: pkt.proto,
        family: FAMILY_V4,
        _pad: [0; 2],
    };
    // SAFETY: copied out at once.
    let frontend = unsafe { REV_NAT.get(key).copied() }.ok_or(TcReason::PassNotTranslated)?;
    let addr = [
        frontend.frontend[0],
        frontend.frontend[1],
        frontend.frontend[2],
        frontend.frontend[3],
    ];
    l4::rewrite(ctx, &pkt, End::Source, addr, frontend.port_be)?;
    Ok(TcReason::ReplyRestored)
}
