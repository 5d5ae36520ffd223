//! The IPv4 + TCP/UDP fields both directions translate, and the checksum-correct rewrite of
//! one address and one port. The kernel helpers keep partial (offloaded) checksums right:
//! a pseudo-header change adjusts the seed, a port change is left to the final sum.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use lb_common::{wire::ETH_HLEN, TcReason, PROTO_TCP, PROTO_UDP};

const IP_FRAG_OFF: usize = 6;
const IP_PROTO_OFF: usize = 9;
const IP_CSUM_OFF: usize = 10;
pub const IP_SADDR_OFF: usize = 12;
pub const IP_DADDR_OFF: usize = 16;
/// More-fragments flag and fragment offset, in host order.
pub const IP_MF_OFFSET_MASK: u16 = 0x3fff;
const TCP_CSUM_OFF: usize = 16;
const UDP_CSUM_OFF: usize = 6;

/// A TCP or UDP packet's addresses and ports, all in network byte order.
#[derive(Clone, Copy)]
pub struct Ports {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    /// Offset of the TCP/UDP header in the frame.
    pub l4: usize,
}

/// Reads the IPv4 header at `ip` and the ports behind it. `None` for anything that is not
/// an unfragmented TCP/UDP packet with a complete port pair: such packets carry no flow to
/// translate.
#[inline(always)]
pub fn read(ctx: &TcContext, ip: usize) -> Option<Ports> {
    let ver_ihl: u8 = ctx.load(ip).ok()?;
    if ver_ihl >> 4 != 4 || ver_ihl & 0x0f < 5 {
        return None;
    }
    let proto: u8 = ctx.load(ip + IP_PROTO_OFF).ok()?;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let frag_be: u16 = ctx.load(ip + IP_FRAG_OFF).ok()?;
    if u16::from_be(frag_be) & IP_MF_OFFSET_MASK != 0 {
        return None;
    }
    let l4 = ip + usize::from(ver_ihl & 0x0f) * 4;
    Some(Ports {
        saddr: ctx.load(ip + IP_SADDR_OFF).ok()?,
        daddr: ctx.load(ip + IP_DADDR_OFF).ok()?,
        sport_be: ctx.load(l4).ok()?,
        dport_be: ctx.load(l4 + 2).ok()?,
        proto,
        l4,
    })
}

/// Which end of the packet a rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// Replaces one end's address and port of the packet whose IPv4 header starts right after
/// the Ethernet header, fixing the IPv4 and TCP/UDP checksums incrementally.
#[inline(always)]
pub fn rewrite(
    ctx: &mut TcContext,
    pkt: &Ports,
    end: End,
    addr: [u8; 4],
    port_be: u16,
) -> Result<(), TcReason> {
    let (addr_off, port_off, old_addr, old_port) = match end {
        End::Source => (IP_SADDR_OFF, 0, pkt.saddr, pkt.sport_be),
        End::Destination => (IP_DADDR_OFF, 2, pkt.daddr, pkt.dport_be),
    };
    let (csum_off, mangled) = if pkt.proto == PROTO_TCP {
        (TCP_CSUM_OFF, 0)
    } else {
        // A zero UDP checksum means "none" and must stay zero; a computed zero is sent
        // as 0xffff.
        (UDP_CSUM_OFF, u64::from(BPF_F_MARK_MANGLED_0))
    };
    let csum_at = pkt.l4 + csum_off;
    let old_word = u64::from(u32::from_ne_bytes(old_addr));
    let new_word = u64::from(u32::from_ne_bytes(addr));
    let fail = |_| TcReason::DropRewriteFailed;
    if old_addr != addr {
        ctx.l4_csum_replace(
            csum_at,
            old_word,
            new_word,
            u64::from(BPF_F_PSEUDO_HDR) | 4 | mangled,
        )
        .map_err(fail)?;
        ctx.l3_csum_replace(ETH_HLEN + IP_CSUM_OFF, old_word, new_word, 4)
            .map_err(fail)?;
        ctx.store(ETH_HLEN + addr_off, &addr, 0).map_err(fail)?;
    }
    if old_port != port_be {
        ctx.l4_csum_replace(
            csum_at,
            u64::from(old_port),
            u64::from(port_be),
            2 | mangled,
        )
        .map_err(fail)?;
        ctx.store(pkt.l4 + port_off, &port_be, 0).map_err(fail)?;
    }
    Ok(())
}
