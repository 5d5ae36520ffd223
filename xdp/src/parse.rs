//! Header parsing. Every read is bounds-checked against `data_end` first, which is also
//! what the verifier demands.

use aya_ebpf::{helpers::bpf_xdp_load_bytes, programs::XdpContext};
pub use lb_common::wire::ETH_HLEN;
use lb_common::{
    wire::{IPV4_HLEN as IPV4_MIN_HLEN, IPV6_HLEN},
    Addr, FlowKey, XdpReason, FAMILY_V6, PROTO_TCP, PROTO_UDP,
};

pub use crate::fragment::Role;

const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// Offset of the flags byte (CWR ECE URG ACK PSH RST SYN FIN) in the TCP header.
const TCP_FLAGS_OFF: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// Fragment offset (in 8-byte units) and more-fragments flag, in host order.
pub const IP_OFFSET_MASK: u16 = 0x1fff;
pub const IP_MF: u16 = 0x2000;
/// The IPv6 fragment header: offset in its top 13 bits, the M flag in bit 0.
const IPV6_FRAG_HLEN: usize = 8;
const IPV6_FRAG_OFFSET_MASK: u16 = 0xfff8;
const IPV6_FRAG_M: u16 = 1;
pub const IP_DF: u16 = 0x4000;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type_be: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len_be: u16,
    pub id_be: u16,
    pub frag_off_be: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

/// The fixed IPv6 header. Two-byte alignment is all the packet offset 14 offers.
#[repr(C)]
pub struct Ipv6Hdr {
    /// Version, traffic class and flow label, as on the wire.
    pub vtc_flow: [u16; 2],
    pub payload_len_be: u16,
    pub nexthdr: u8,
    pub hop_limit: u8,
    pub saddr: Addr,
    pub daddr: Addr,
}
const _: () = assert!(core::mem::size_of::<Ipv6Hdr>() == IPV6_HLEN);

/// IPv6 next header of a fragment header (only right after the fixed header is one
/// parsed; behind other extension headers the packet is passed as another protocol).
const IPV6_NEXTHDR_FRAGMENT: u8 = 44;

/// What the rest of the program needs to know about a packet to a possible service.
pub struct Ipv4Packet {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub tos: u8,
    /// The client's IP identification, network order; reused for the outer header so a
    /// fragmentable outer packet carries the identification its sender chose.
    pub id_be: u16,
    /// Inner IPv4 total length, host order.
    pub tot_len: u16,
    pub dont_fragment: bool,
    /// See [`opens_connection`].
    pub opening: bool,
    /// Whole, or which fragment; a later fragment has no ports (zero here).
    pub role: Role,
}

/// A pointer to a `T` at `offset` bytes into the packet, if the packet is long enough.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// The IPv6 twin of [`Ipv4Packet`]. The addresses, ports and protocol live in the flow
/// key only (the IPv6 path cannot afford a second copy of 32 address bytes on its stack).
pub struct Ipv6Packet {
    pub flow: FlowKey,
    /// Copied to the outer header: traffic class and flow label (ECMP entropy) carry over.
    pub vtc_flow: [u16; 2],
    /// Host order.
    pub payload_len: u16,
    /// See [`opens_connection`].
    pub opening: bool,
    /// Whole, or which fragment; a later fragment has no ports (zero in `flow`), and
    /// `flow.proto` is its fragment header's next header.
    pub role: Role,
    /// The fragment header's identification, as on the wire (0 when whole).
    pub frag_id_be: u32,
}

/// The frame's ethertype, host order.
#[inline(always)]
pub fn ether_type(ctx: &XdpContext) -> Result<u16, XdpReason> {
    let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(XdpReason::DropMalformedIp)?;
    // SAFETY: ptr_at checked the bounds.
    Ok(u16::from_be(unsafe { (*eth).ether_type_be }))
}

/// Parses an IPv4 frame (the caller checked the ethertype).
#[inline(always)]
pub fn parse_ipv4(ctx: &XdpContext) -> Result<Ipv4Packet, XdpReason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, ETH_HLEN).ok_or(XdpReason::DropMalformedIp)?;
    // SAFETY: ptr_at checked the bounds.
    let ip = unsafe { &*ip };
    if ip.version_ihl >> 4 != 4 {
        return Err(XdpReason::DropMalformedIp);
    }
    let ip_hlen = usize::from(ip.version_ihl & 0x0f) * 4;
    if ip_hlen < IPV4_MIN_HLEN {
        return Err(XdpReason::DropMalformedIp);
    }
    let tot_len = u16::from_be(ip.tot_len_be);
    if usize::from(tot_len) < ip_hlen
        || ctx.data() + ETH_HLEN + usize::from(tot_len) > ctx.data_end()
    {
        return Err(XdpReason::DropMalformedIp);
    }
    let frag_off = u16::from_be(ip.frag_off_be);
    let mut pkt = Ipv4Packet {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport_be: 0,
        dport_be: 0,
        proto: ip.protocol,
        tos: ip.tos,
        id_be: ip.id_be,
        tot_len,
        dont_fragment: frag_off & IP_DF != 0,
        opening: false,
        role: Role::Whole,
    };
    if frag_off & IP_OFFSET_MASK != 0 {
        pkt.role = Role::Later;
        return Ok(pkt);
    }
    if frag_off & IP_MF != 0 {
        pkt.role = Role::First;
    }
    let l4_len = match pkt.proto {
        PROTO_TCP => TCP_HLEN,
        PROTO_UDP => UDP_HLEN,
        _ => return Err(XdpReason::PassOtherProtocol),
    };
    let l4_off = ETH_HLEN + ip_hlen;
    if ctx.data() + l4_off + l4_len > ctx.data_end() || usize::from(tot_len) < ip_hlen + l4_len {
        return Err(XdpReason::DropMalformedL4);
    }
    // Source and destination ports lead both the TCP and the UDP header.
    let ports: *const [u16; 2] = ptr_at(ctx, l4_off).ok_or(XdpReason::DropMalformedL4)?;
    // SAFETY: ptr_at checked the bounds.
    let ports = unsafe { *ports };
    pkt.sport_be = ports[0];
    pkt.dport_be = ports[1];
    pkt.opening = opens_connection(ctx, pkt.proto, l4_off)?;
    Ok(pkt)
}

/// Parses an IPv6 frame (the caller checked the ethertype). Only TCP or UDP right after
/// the fixed header, or after a fragment header right after it, is balanced; other
/// extension headers are left to the stack.
#[inline(always)]
pub fn parse_ipv6(ctx: &XdpContext) -> Result<Ipv6Packet, XdpReason> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN).ok_or(XdpReason::DropMalformedIp)?;
    // SAFETY: ptr_at checked the bounds.
    let ip = unsafe { &*ip };
    if u16::from_be(ip.vtc_flow[0]) >> 12 != 6 {
        return Err(XdpReason::DropMalformedIp);
    }
    let payload_len = u16::from_be(ip.payload_len_be);
    if ctx.data() + ETH_HLEN + IPV6_HLEN + usize::from(payload_len) > ctx.data_end() {
        return Err(XdpReason::DropMalformedIp);
    }
    let mut pkt = Ipv6Packet {
        flow: FlowKey {
            src: ip.saddr,
            dst: ip.daddr,
            sport_be: 0,
            dport_be: 0,
            proto: ip.nexthdr,
            family: FAMILY_V6,
            _pad: [0; 2],
        },
        vtc_flow: ip.vtc_flow,
        payload_len,
        opening: false,
        role: Role::Whole,
        frag_id_be: 0,
    };
    let mut l4_off = ETH_HLEN + IPV6_HLEN;
    // Bytes of the payload before the transport header.
    let mut ext_len = 0;
    if pkt.flow.proto == IPV6_NEXTHDR_FRAGMENT {
        if usize::from(payload_len) < IPV6_FRAG_HLEN {
            return Err(XdpReason::DropMalformedIp);
        }
        let (next_header, offset_m, id_be) =
            ipv6_fragment_header(ctx).ok_or(XdpReason::DropMalformedIp)?;
        pkt.flow.proto = next_header;
        pkt.frag_id_be = id_be;
        if offset_m & IPV6_FRAG_OFFSET_MASK != 0 {
            pkt.role = Role::Later;
            return Ok(pkt);
        }
        if offset_m & IPV6_FRAG_M != 0 {
            pkt.role = Role::First;
        }
        l4_off += IPV6_FRAG_HLEN;
        ext_len = IPV6_FRAG_HLEN;
    }
    let l4_len = match pkt.flow.proto {
        PROTO_TCP => TCP_HLEN,
        PROTO_UDP => UDP_HLEN,
        _ => return Err(XdpReason::PassOtherProtocol),
    };
    if ctx.data() + l4_off + l4_len > ctx.data_end() || usize::from(payload_len) < ext_len + l4_len
    {
        return Err(XdpReason::DropMalformedL4);
    }
    let ports: *const [u16; 2] = ptr_at(ctx, l4_off).ok_or(XdpReason::DropMalformedL4)?;
    // SAFETY: ptr_at checked the bounds.
    let ports = unsafe { *ports };
    pkt.flow.sport_be = ports[0];
    pkt.flow.dport_be = ports[1];
    pkt.opening = opens_connection(ctx, pkt.flow.proto, l4_off)?;
    Ok(pkt)
}

/// The fragment header right after the fixed IPv6 header: next header, offset and M
/// flag (host order), identification (wire order).
///
/// Copied out with `bpf_xdp_load_bytes` rather than read through a packet pointer: the
/// compiler proves a direct read's bounds check redundant (the payload, checked to lie
/// within the frame, holds at least these 8 bytes) and drops it, and the verifier, which
/// cannot follow that proof, would refuse the read.
#[inline(always)]
fn ipv6_fragment_header(ctx: &XdpContext) -> Option<(u8, u16, u32)> {
    let mut header = [0u16; 4];
    // SAFETY: the helper copies at most 8 bytes into our 8-byte buffer and fails, without
    // writing, when the packet is shorter.
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            (ETH_HLEN + IPV6_HLEN) as u32,
            header.as_mut_ptr().cast(),
            IPV6_FRAG_HLEN as u32,
        )
    };
    if rc != 0 {
        return None;
    }
    let [next_header, _reserved] = header[0].to_ne_bytes();
    let [i0, i1] = header[2].to_ne_bytes();
    let [i2, i3] = header[3].to_ne_bytes();
    Some((
        next_header,
        u16::from_be(header[1]),
        u32::from_ne_bytes([i0, i1, i2, i3]),
    ))
}

/// Whether the packet opens a TCP connection: SYN set, ACK clear (a client's SYN; a
/// SYN-ACK or anything later in a connection has ACK set). Such a packet is balanced
/// without writing the flow table (see `select` in balance.rs). UDP never is. `l4_off` is
/// where the TCP header starts; the caller checked that a whole fixed header is there,
/// and the read is bounds-checked again here for the verifier.
#[inline(always)]
fn opens_connection(ctx: &XdpContext, proto: u8, l4_off: usize) -> Result<bool, XdpReason> {
    if proto != PROTO_TCP {
        return Ok(false);
    }
    let flags: *const u8 = ptr_at(ctx, l4_off + TCP_FLAGS_OFF).ok_or(XdpReason::DropMalformedL4)?;
    // SAFETY: ptr_at checked the bounds.
    let flags = unsafe { *flags };
    Ok(flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
}
