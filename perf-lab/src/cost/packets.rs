//! The frames the cost layer feeds BPF_PROG_RUN: TCP segments of numbered client tuples,
//! and the fixed frames of the classes the balancer passes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;

use crate::services::{v6_plus, Family, SERVICE_PORT, SOURCE_BASE, SOURCE_BASE6};

use super::CostError;

pub(super) const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];

/// Which TCP segment a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Segment {
    /// SYN without ACK: opens a connection, balanced without a flow-table insert.
    Syn,
    /// ACK without SYN: a segment of a connection, which the flow table records.
    Ack,
}

pub(super) fn tcp_syn(
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
) -> Result<Vec<u8>, CostError> {
    tcp_segment(Segment::Syn, src, sport, dst, dport)
}

fn tcp_segment(
    segment: Segment,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
) -> Result<Vec<u8>, CostError> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => {
            return Err(CostError::Packet(format!(
                "{src} and {dst} differ in family"
            )))
        }
    };
    let b = match segment {
        Segment::Syn => ip.tcp(sport, dport, 1, 64_240).syn(),
        Segment::Ack => ip.tcp(sport, dport, 2, 64_240).ack(1),
    };
    let mut v = Vec::with_capacity(b.size(0));
    b.write(&mut v, &[])
        .map_err(|e| CostError::Packet(e.to_string()))?;
    Ok(v)
}

pub(super) fn icmp_echo(dst: [u8; 4]) -> Result<Vec<u8>, CostError> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(SOURCE_BASE.octets(), dst, 64)
        .icmpv4_echo_request(1, 1);
    let mut v = Vec::new();
    b.write(&mut v, &[0; 16])
        .map_err(|e| CostError::Packet(e.to_string()))?;
    Ok(v)
}

/// TCP to an IPv6 address no service has (2001:db8::100, outside the VIP prefix).
pub(super) fn ipv6_syn() -> Result<Vec<u8>, CostError> {
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
    let dst = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
    tcp_syn(src.into(), 40_000, dst.into(), SERVICE_PORT)
}

/// The i-th distinct client tuple of `family`: sources from 198.18.128.0/17 or
/// 2001:db8:128::/64 (the same offset), ports 1024..61024.
fn client(family: Family, i: u32) -> (IpAddr, u16) {
    let offset = (i / 60_000) % (1 << 15);
    let addr = match family {
        Family::Ipv4 => Ipv4Addr::from(u32::from(SOURCE_BASE) + offset).into(),
        Family::Ipv6 => v6_plus(SOURCE_BASE6, offset).into(),
    };
    (addr, 1024 + (i % 60_000) as u16)
}

/// A `segment` of the i-th client tuple of `family` to `vip`'s service port.
pub(super) fn flow_packet(
    segment: Segment,
    family: Family,
    i: u32,
    vip: IpAddr,
) -> Option<Vec<u8>> {
    let (src, sport) = client(family, i);
    tcp_segment(segment, src, sport, vip, SERVICE_PORT).ok()
}
