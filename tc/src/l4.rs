//! The IPv4/IPv6 + TCP/UDP fields both directions translate, and the checksum-correct
//! rewrite of one address and one port. The kernel helpers keep partial (offloaded)
//! checksums right: a pseudo-header change adjusts the seed, a port change is left to the
//! final sum.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use lb_common::{v4_addr, Addr, TcReason, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

pub const IP_FRAG_OFF: usize = 6;
pub const IP_PROTO_OFF: usize = 9;
const IP_CSUM_OFF: usize = 10;
const IP_SADDR_OFF: usize = 12;
pub const IP_DADDR_OFF: usize = 16;
pub const IP6_NEXTHDR_OFF: usize = 6;
const IP6_SADDR_OFF: usize = 8;
pub const IP6_DADDR_OFF: usize = 24;
const IP6_HLEN: usize = 40;
/// More-fragments flag and fragment offset, in host order.
pub const IP_MF_OFFSET_MASK: u16 = 0x3fff;
const TCP_CSUM_OFF: usize = 16;
const UDP_CSUM_OFF: usize = 6;

/// A TCP or UDP packet's addresses (16-byte form; IPv4 in the first four) and ports, in
/// network byte order.
#[derive(Clone, Copy, Default)]
pub struct Ports {
    pub saddr: Addr,
    pub daddr: Addr,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub family: u8,
    /// Offset of the IP header and of the TCP/UDP header in the frame.
    pub ip: u16,
    pub l4: u16,
}

/// Reads the IP header at `ip` (of the version it claims) and the ports behind it. `None`
/// for anything that is not an unfragmented TCP/UDP packet with a complete port pair
/// (IPv6: TCP/UDP right after the fixed header): such packets carry no flow to translate.
#[inline(always)]
pub fn read(ctx: &TcContext, ip: usize) -> Option<Ports> {
    let ver_ihl: u8 = ctx.load(ip).ok()?;
    let (saddr, daddr, proto, family, l4) = match ver_ihl >> 4 {
        4 => {
            if ver_ihl & 0x0f < 5 {
                return None;
            }
            let frag_be: u16 = ctx.load(ip + IP_FRAG_OFF).ok()?;
            if u16::from_be(frag_be) & IP_MF_OFFSET_MASK != 0 {
                return None;
            }
            let saddr: [u8; 4] = ctx.load(ip + IP_SADDR_OFF).ok()?;
            let daddr: [u8; 4] = ctx.load(ip + IP_DADDR_OFF).ok()?;
            let proto: u8 = ctx.load(ip + IP_PROTO_OFF).ok()?;
            let l4 = ip + usize::from(ver_ihl & 0x0f) * 4;
            (v4_addr(saddr), v4_addr(daddr), proto, FAMILY_V4, l4)
        }
        6 => {
            let saddr: Addr = ctx.load(ip + IP6_SADDR_OFF).ok()?;
            let daddr: Addr = ctx.load(ip + IP6_DADDR_OFF).ok()?;
            let proto: u8 = ctx.load(ip + IP6_NEXTHDR_OFF).ok()?;
            (saddr, daddr, proto, FAMILY_V6, ip + IP6_HLEN)
        }
        _ => return None,
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    Some(Ports {
        saddr,
        daddr,
        sport_be: ctx.load(l4).ok()?,
        dport_be: ctx.load(l4 + 2).ok()?,
        proto,
        family,
        ip: ip as u16,
        l4: l4 as u16,
    })
}

/// Which end of the packet a rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// An address as the four 32-bit words the checksum helpers take (memory order).
#[inline(always)]
fn words(addr: &Addr) -> [u32; 4] {
    // SAFETY: same size, every bit pattern valid.
    unsafe { core::mem::transmute::<Addr, [u32; 4]>(*addr) }
}

/// Replaces one end's address and port of `pkt`, fixing the IPv4 header checksum and the
/// TCP/UDP checksum incrementally.
#[inline(always)]
pub fn rewrite(
    ctx: &mut TcContext,
    pkt: &Ports,
    end: End,
    addr: &Addr,
    port_be: u16,
) -> Result<(), TcReason> {
    let v6 = pkt.family == FAMILY_V6;
    let (old_addr, old_port, port_off) = match end {
        End::Source => (&pkt.saddr, pkt.sport_be, 0),
        End::Destination => (&pkt.daddr, pkt.dport_be, 2),
    };
    let addr_off = match (v6, end) {
        (false, End::Source) => IP_SADDR_OFF,
        (false, End::Destination) => IP_DADDR_OFF,
        (true, End::Source) => IP6_SADDR_OFF,
        (true, End::Destination) => IP6_DADDR_OFF,
    };
    let (csum_off, mangled) = if pkt.proto == PROTO_TCP {
        (TCP_CSUM_OFF, 0)
    } else {
        // A zero UDP checksum means "none" and must stay zero; a computed zero is sent
        // as 0xffff. (IPv6 UDP always carries one.)
        (UDP_CSUM_OFF, u64::from(BPF_F_MARK_MANGLED_0))
    };
    let (ip, l4) = (usize::from(pkt.ip), usize::from(pkt.l4));
    let csum_at = l4 + csum_off;
    let fail = |_| TcReason::DropRewriteFailed;
    if old_addr != addr {
        let [o0, o1, o2, o3] = words(old_addr);
        let [n0, n1, n2, n3] = words(addr);
        let pseudo = u64::from(BPF_F_PSEUDO_HDR) | 4 | mangled;
        ctx.l4_csum_replace(csum_at, u64::from(o0), u64::from(n0), pseudo)
            .map_err(fail)?;
        if v6 {
            for (o, n) in [(o1, n1), (o2, n2), (o3, n3)] {
                ctx.l4_csum_replace(csum_at, u64::from(o), u64::from(n), pseudo)
                    .map_err(fail)?;
            }
            ctx.store(ip + addr_off, addr, 0).map_err(fail)?;
        } else {
            ctx.l3_csum_replace(ip + IP_CSUM_OFF, u64::from(o0), u64::from(n0), 4)
                .map_err(fail)?;
            ctx.store(ip + addr_off, &n0, 0).map_err(fail)?;
        }
    }
    if old_port != port_be {
        ctx.l4_csum_replace(
            csum_at,
            u64::from(old_port),
            u64::from(port_be),
            2 | mangled,
        )
        .map_err(fail)?;
        ctx.store(l4 + port_off, &port_be, 0).map_err(fail)?;
    }
    Ok(())
}
