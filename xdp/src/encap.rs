//! IPIP and IP6IP6 encapsulation (Katran's way): a new outer header addressed to the
//! backend, the client's packet untouched inside it, so the backend can answer the client
//! directly.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    wire::{ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_HLEN, IPV6_HLEN},
    Addr, BackendValue, NextHop, XdpReason,
};

use crate::parse::{ptr_at, EthHdr, Ipv4Hdr, Ipv4Packet, Ipv6Hdr, Ipv6Packet, ETH_HLEN, IP_DF};

pub const IPIP_OVERHEAD: u32 = IPV4_HLEN as u32;
pub const IP6IP6_OVERHEAD: u32 = IPV6_HLEN as u32;
const OUTER_TTL: u8 = 64;
const ETH_P_IP_BE: u16 = ETH_P_IP.to_be();
const ETH_P_IPV6_BE: u16 = ETH_P_IPV6.to_be();

/// IP6IP6: the outer header takes the client's traffic class and flow label, so ECMP and
/// QoS on the way to the backend see what they would have seen for the client's packet.
/// The caller checked the result fits the MTU (so the payload length cannot overflow).
#[inline(always)]
pub fn ip6ip6(
    ctx: &XdpContext,
    pkt: &Ipv6Packet,
    hop: &NextHop,
    src: &Addr,
    backend: &BackendValue,
) -> Result<(), XdpReason> {
    // SAFETY: the helper validates the delta against the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(IP6IP6_OVERHEAD as i32)) } != 0 {
        return Err(XdpReason::DropEncapFailed);
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(XdpReason::DropEncapFailed)?;
    let outer: *mut Ipv6Hdr = ptr_at(ctx, ETH_HLEN).ok_or(XdpReason::DropEncapFailed)?;
    // Written field by field into the packet: a 40-byte header built on the stack first
    // would not fit the IPv6 path's frame.
    // SAFETY: both pointers were bounds-checked by ptr_at after the head moved.
    unsafe {
        *eth = EthHdr {
            dst: hop.dst_mac,
            src: hop.src_mac,
            ether_type_be: ETH_P_IPV6_BE,
        };
        (*outer).vtc_flow = pkt.vtc_flow;
        (*outer).payload_len_be = (pkt.payload_len.wrapping_add(IPV6_HLEN as u16)).to_be();
        (*outer).nexthdr = IPPROTO_IPV6;
        (*outer).hop_limit = OUTER_TTL;
        (*outer).saddr = *src;
        (*outer).daddr = backend.addr;
    }
    Ok(())
}

#[inline(always)]
pub fn ipip(
    ctx: &XdpContext,
    pkt: &Ipv4Packet,
    hop: &NextHop,
    src: [u8; 4],
    backend: &BackendValue,
) -> Result<(), XdpReason> {
    // SAFETY: the helper validates the delta against the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(IPIP_OVERHEAD as i32)) } != 0 {
        return Err(XdpReason::DropEncapFailed);
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(XdpReason::DropEncapFailed)?;
    let outer: *mut Ipv4Hdr = ptr_at(ctx, ETH_HLEN).ok_or(XdpReason::DropEncapFailed)?;

    let mut header = Ipv4Hdr {
        version_ihl: 0x45,
        tos: pkt.tos,
        tot_len_be: (pkt.tot_len + IPIP_OVERHEAD as u16).to_be(),
        id_be: pkt.id_be,
        frag_off_be: if pkt.dont_fragment { IP_DF.to_be() } else { 0 },
        ttl: OUTER_TTL,
        protocol: IPPROTO_IPIP,
        check: 0,
        saddr: src,
        daddr: [
            backend.addr[0],
            backend.addr[1],
            backend.addr[2],
            backend.addr[3],
        ],
    };
    header.check = checksum(&header);
    // SAFETY: both pointers were bounds-checked by ptr_at after the head moved.
    unsafe {
        *eth = EthHdr {
            dst: hop.dst_mac,
            src: hop.src_mac,
            ether_type_be: ETH_P_IP_BE,
        };
        *outer = header;
    }
    Ok(())
}

/// RFC 791 header checksum over the 20-byte header, computed on the stack copy.
#[inline(always)]
pub fn checksum(header: &Ipv4Hdr) -> u16 {
    // SAFETY: Ipv4Hdr is 20 bytes of plain data, i.e. ten u16 words.
    let words: &[u16; 10] = unsafe { &*(header as *const Ipv4Hdr as *const [u16; 10]) };
    let mut sum: u32 = 0;
    for word in words {
        sum += u32::from(*word);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
