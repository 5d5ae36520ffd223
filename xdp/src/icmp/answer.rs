//! Turning the received frame into an ICMP answer in place: the frame is cut to the
//! quote, the new headers go in front of it (Ethernet back to the sender, IP from the
//! address the client called to the client, ICMP), and the checksums are computed over
//! what is in the packet.
//!
//! How much is quoted: IPv4, as much of the offending packet as keeps the answer within
//! 576 bytes (RFC 1812 section 4.3.2.3); IPv6, as much as keeps it within the minimum MTU
//! of 1280 (RFC 4443 section 2.4 (c)).

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    wire::{ETH_P_IP, ETH_P_IPV6, IPV4_HLEN, IPV6_HLEN},
    XdpReason,
};

use super::csum;
use crate::{
    encap,
    parse::{ptr_at, EthHdr, Ipv4Hdr, Ipv6Hdr, ETH_HLEN},
};

pub const ICMP_HLEN: usize = 8;
pub const IPV4_QUOTE_MAX: usize = 576 - IPV4_HLEN - ICMP_HLEN;
pub const IPV6_QUOTE_MAX: usize = 1280 - IPV6_HLEN - ICMP_HLEN;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// IPv4 type of service of ICMP errors (precedence "internetwork control"), as Linux sends.
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;
const ANSWER_TTL: u8 = 64;
/// Version 6, traffic class and flow label zero.
const IPV6_VTC_FLOW: [u16; 2] = [0x6000u16.to_be(), 0];

/// The ICMP header: type, code, checksum, and the four bytes whose meaning the type gives
/// (zero, or the MTU that fits).
#[repr(C)]
struct IcmpHdr {
    kind: u8,
    code: u8,
    check: u16,
    rest: [u16; 2],
}
const _: () = assert!(core::mem::size_of::<IcmpHdr>() == ICMP_HLEN);

pub struct Message {
    pub kind: u8,
    pub code: u8,
    /// The four bytes after the checksum, as on the wire.
    pub rest_be: u32,
}

impl Message {
    #[inline(always)]
    fn header(&self) -> IcmpHdr {
        let rest = self.rest_be.to_ne_bytes();
        IcmpHdr {
            kind: self.kind,
            code: self.code,
            check: 0,
            rest: [
                u16::from_ne_bytes([rest[0], rest[1]]),
                u16::from_ne_bytes([rest[2], rest[3]]),
            ],
        }
    }
}

/// Cuts the frame after `quote` bytes of its IP packet, then makes `room` bytes in front
/// of the old Ethernet header. The old frame's Ethernet header then sits at `room`, its IP
/// packet (the quote) at `ETH_HLEN + room`.
#[inline(always)]
fn reshape(ctx: &XdpContext, quote: usize, room: usize) -> Result<(), XdpReason> {
    let frame = ctx.data_end() - ctx.data();
    let delta = (ETH_HLEN + quote) as i32 - frame as i32;
    // SAFETY: the helper validates the delta (only shrinking here) against the frame.
    if delta < 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Err(XdpReason::DropEncapFailed);
    }
    // SAFETY: the helper validates the delta against the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(room as i32)) } != 0 {
        return Err(XdpReason::DropEncapFailed);
    }
    Ok(())
}

/// The Ethernet header back to the frame's sender, from the old header at `old`; read
/// before anything new is written over it.
#[inline(always)]
fn swap_ethernet(ctx: &XdpContext, old: usize, ether_type: u16) -> Result<(), XdpReason> {
    let old: *const EthHdr = ptr_at(ctx, old).ok_or(XdpReason::DropEncapFailed)?;
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(XdpReason::DropEncapFailed)?;
    // SAFETY: both bounds-checked by ptr_at; the MACs are copied out before the write.
    unsafe {
        let dst = (*old).src;
        let src = (*old).dst;
        *eth = EthHdr {
            dst,
            src,
            ether_type_be: ether_type.to_be(),
        };
    }
    Ok(())
}

/// The IPv4 frame (checked by the parser: `tot_len` is within the frame) becomes `msg`
/// from its destination to its source.
#[inline(always)]
pub fn v4(ctx: &XdpContext, msg: &Message) -> Result<(), XdpReason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, ETH_HLEN).ok_or(XdpReason::DropMalformedIp)?;
    // SAFETY: bounds-checked by ptr_at.
    let tot_len = usize::from(u16::from_be(unsafe { (*ip).tot_len_be }));
    let quote = if tot_len < IPV4_QUOTE_MAX {
        tot_len
    } else {
        IPV4_QUOTE_MAX
    };
    let room = IPV4_HLEN + ICMP_HLEN;
    reshape(ctx, quote, room)?;
    swap_ethernet(ctx, room, ETH_P_IP)?;
    let quoted: *const Ipv4Hdr = ptr_at(ctx, ETH_HLEN + room).ok_or(XdpReason::DropEncapFailed)?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_HLEN).ok_or(XdpReason::DropEncapFailed)?;
    let icmp_off = ETH_HLEN + IPV4_HLEN;
    let icmp: *mut IcmpHdr = ptr_at(ctx, icmp_off).ok_or(XdpReason::DropEncapFailed)?;
    // SAFETY: all three bounds-checked by ptr_at after the frame was reshaped; the quoted
    // header lies after the new ones, so reading it while writing them is sound.
    unsafe {
        let mut header = Ipv4Hdr {
            version_ihl: 0x45,
            tos: TOS_INTERNETWORK_CONTROL,
            tot_len_be: ((room + quote) as u16).to_be(),
            id_be: 0,
            frag_off_be: 0,
            ttl: ANSWER_TTL,
            protocol: IPPROTO_ICMP,
            check: 0,
            saddr: (*quoted).daddr,
            daddr: (*quoted).saddr,
        };
        header.check = encap::checksum(&header);
        *ip = header;
        *icmp = msg.header();
        (*icmp).check = csum::finish(csum::sum(ctx, icmp_off, ICMP_HLEN + quote));
    }
    Ok(())
}

/// The IPv6 frame (checked by the parser: the payload is within the frame) becomes `msg`
/// from its destination to its source, checksummed with the pseudo-header.
#[inline(always)]
pub fn v6(ctx: &XdpContext, msg: &Message) -> Result<(), XdpReason> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN).ok_or(XdpReason::DropMalformedIp)?;
    // SAFETY: bounds-checked by ptr_at.
    let packet = IPV6_HLEN + usize::from(u16::from_be(unsafe { (*ip).payload_len_be }));
    let quote = if packet < IPV6_QUOTE_MAX {
        packet
    } else {
        IPV6_QUOTE_MAX
    };
    let room = IPV6_HLEN + ICMP_HLEN;
    reshape(ctx, quote, room)?;
    swap_ethernet(ctx, room, ETH_P_IPV6)?;
    let quoted: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN + room).ok_or(XdpReason::DropEncapFailed)?;
    let ip: *mut Ipv6Hdr = ptr_at(ctx, ETH_HLEN).ok_or(XdpReason::DropEncapFailed)?;
    let icmp_off = ETH_HLEN + IPV6_HLEN;
    let icmp: *mut IcmpHdr = ptr_at(ctx, icmp_off).ok_or(XdpReason::DropEncapFailed)?;
    let length = (ICMP_HLEN + quote) as u16;
    // SAFETY: as in `v4`: bounds-checked, and the quote lies after the new headers.
    unsafe {
        (*ip).vtc_flow = IPV6_VTC_FLOW;
        (*ip).payload_len_be = length.to_be();
        (*ip).nexthdr = IPPROTO_ICMPV6;
        (*ip).hop_limit = ANSWER_TTL;
        (*ip).saddr = (*quoted).daddr;
        (*ip).daddr = (*quoted).saddr;
        *icmp = msg.header();
    }
    // The pseudo-header: both addresses, the upper-layer length and next header.
    let addresses = csum::sum(ctx, ETH_HLEN + 8, 32);
    let pseudo = addresses + csum::wire_word(length) + csum::wire_word(u16::from(IPPROTO_ICMPV6));
    let body = csum::sum(ctx, icmp_off, usize::from(length));
    // SAFETY: bounds-checked above; the packet did not move since.
    unsafe { (*icmp).check = csum::finish(pseudo + body) };
    Ok(())
}
