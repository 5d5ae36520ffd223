//! ICMP errors about a VIP flow. A backend answers a client from the VIP (direct server
//! return), so a router's "unreachable", "fragmentation needed" / "packet too big" or
//! "time exceeded" about such an answer is addressed to the VIP and reaches the balancer.
//! Only the backend that owns the flow can act on it (lower its path MTU, abort the
//! connection): the quoted answer (VIP:port → client:port) is turned around into the
//! client's flow (client:port → VIP:port), which then picks the backend exactly as the
//! client's own packets do (flow table, else Maglev with the same hash) and the whole
//! error is encapsulated to it. The flow is never recorded from an error (`opening`).

use aya_ebpf::programs::XdpContext;
use lb_common::{
    wire::{IPV4_HLEN, IPV6_HLEN},
    Addr, FlowKey, XdpReason, FAMILY_V6, PROTO_TCP, PROTO_UDP,
};

use super::answer::ICMP_HLEN;
use crate::parse::{
    ptr_at, Ipv4Hdr, Ipv4Packet, Ipv6Hdr, Ipv6Packet, Role, ETH_HLEN, IP_DF, IP_MF, IP_OFFSET_MASK,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PKT_TOOBIG: u8 = 2;
const ICMPV6_TIME_EXCEED: u8 = 3;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// The client's flow an ICMPv4 error (the caller's parse found a valid, unfragmented
/// IPv4 header of another protocol than TCP/UDP) is about. Anything else is passed as
/// before: other ICMP, errors quoting no TCP/UDP, quotes not sent from the error's
/// destination.
#[inline(always)]
pub fn flow_v4(ctx: &XdpContext) -> Result<Ipv4Packet, XdpReason> {
    let other = XdpReason::PassOtherProtocol;
    let ip: *const Ipv4Hdr = ptr_at(ctx, ETH_HLEN).ok_or(other)?;
    // SAFETY: bounds-checked by ptr_at.
    let ip = unsafe { &*ip };
    let frag_off = u16::from_be(ip.frag_off_be);
    // A fragmented error (the first fragment reaches here; later ones follow the fragment
    // table by protocol and find nothing) is no error about a flow.
    if ip.protocol != IPPROTO_ICMP || frag_off & (IP_MF | IP_OFFSET_MASK) != 0 {
        return Err(other);
    }
    let icmp_off = ETH_HLEN + usize::from(ip.version_ihl & 0x0f) * 4;
    let kind = kind_at(ctx, icmp_off)?;
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED {
        return Err(other);
    }
    let quoted_off = icmp_off + ICMP_HLEN;
    let quoted: *const Ipv4Hdr = ptr_at(ctx, quoted_off).ok_or(XdpReason::DropMalformedL4)?;
    // SAFETY: bounds-checked by ptr_at.
    let quoted = unsafe { &*quoted };
    let quoted_hlen = usize::from(quoted.version_ihl & 0x0f) * 4;
    if quoted.version_ihl >> 4 != 4 || quoted_hlen < IPV4_HLEN {
        return Err(XdpReason::DropMalformedL4);
    }
    if quoted.protocol != PROTO_TCP && quoted.protocol != PROTO_UDP || quoted.saddr != ip.daddr {
        return Err(other);
    }
    let ports: *const [u16; 2] =
        ptr_at(ctx, quoted_off + quoted_hlen).ok_or(XdpReason::DropMalformedL4)?;
    // SAFETY: bounds-checked by ptr_at.
    let ports = unsafe { *ports };
    Ok(Ipv4Packet {
        saddr: quoted.daddr,
        daddr: quoted.saddr,
        sport_be: ports[1],
        dport_be: ports[0],
        proto: quoted.protocol,
        tos: ip.tos,
        id_be: ip.id_be,
        tot_len: u16::from_be(ip.tot_len_be),
        dont_fragment: frag_off & IP_DF != 0,
        opening: true,
        role: Role::Whole,
    })
}

/// [`flow_v4`] for ICMPv6 right after the fixed header.
#[inline(always)]
pub fn flow_v6(ctx: &XdpContext) -> Result<Ipv6Packet, XdpReason> {
    let other = XdpReason::PassOtherProtocol;
    let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN).ok_or(other)?;
    // SAFETY: bounds-checked by ptr_at.
    let ip = unsafe { &*ip };
    if ip.nexthdr != IPPROTO_ICMPV6 {
        return Err(other);
    }
    let icmp_off = ETH_HLEN + IPV6_HLEN;
    let kind = kind_at(ctx, icmp_off)?;
    if kind != ICMPV6_DEST_UNREACH && kind != ICMPV6_PKT_TOOBIG && kind != ICMPV6_TIME_EXCEED {
        return Err(other);
    }
    let quoted_off = icmp_off + ICMP_HLEN;
    let quoted: *const Ipv6Hdr = ptr_at(ctx, quoted_off).ok_or(XdpReason::DropMalformedL4)?;
    // SAFETY: bounds-checked by ptr_at.
    let quoted = unsafe { &*quoted };
    let proto = quoted.nexthdr;
    if proto != PROTO_TCP && proto != PROTO_UDP || !same(&quoted.saddr, &ip.daddr) {
        return Err(other);
    }
    let ports: *const [u16; 2] =
        ptr_at(ctx, quoted_off + IPV6_HLEN).ok_or(XdpReason::DropMalformedL4)?;
    // SAFETY: bounds-checked by ptr_at.
    let ports = unsafe { *ports };
    Ok(Ipv6Packet {
        flow: FlowKey {
            src: quoted.daddr,
            dst: quoted.saddr,
            sport_be: ports[1],
            dport_be: ports[0],
            proto,
            family: FAMILY_V6,
            _pad: [0; 2],
        },
        vtc_flow: ip.vtc_flow,
        payload_len: u16::from_be(ip.payload_len_be),
        opening: true,
        role: Role::Whole,
        frag_id_be: 0,
    })
}

/// The type of the ICMP header at `offset`, read with the whole header (a lone byte at a
/// variable offset compiles to a bounds check the verifier does not accept).
#[inline(always)]
fn kind_at(ctx: &XdpContext, offset: usize) -> Result<u8, XdpReason> {
    let header: *const [u8; ICMP_HLEN] = ptr_at(ctx, offset).ok_or(XdpReason::DropMalformedL4)?;
    // SAFETY: bounds-checked by ptr_at.
    Ok(unsafe { (*header)[0] })
}

/// Two addresses compared a word at a time, in place (the IPv6 path has no stack to copy
/// them to).
#[inline(always)]
fn same(a: &Addr, b: &Addr) -> bool {
    // SAFETY: [u8; 16] and [u16; 8] have the same size; the packet gives 2-byte alignment.
    let (a, b) = unsafe {
        (
            &*(a as *const Addr as *const [u16; 8]),
            &*(b as *const Addr as *const [u16; 8]),
        )
    };
    let mut i = 0;
    while i < 8 {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
