//! The model's ICMP, from the behaviour's specification (docs/architecture.md "datapath",
//! the ICMP reasons in common/src/reason.rs, RFC 792/1191/1812/4443/8200):
//!
//! - an ICMP error (IPv4 destination unreachable or time exceeded; ICMPv6 destination
//!   unreachable, packet too big or time exceeded) quoting a TCP/UDP packet sent from the
//!   error's destination names the client's flow (the quote turned around); that flow
//!   picks the backend as the client's packets do and the whole error is encapsulated to
//!   it (`forwarded_icmp_error`), never recorded, never answered;
//! - answers (port unreachable, fragmentation needed, packet too big) are built from the
//!   frame: Ethernet back to the sender, IP from the address the client called, ICMP, and
//!   the offending packet quoted up to 576 bytes (IPv4) or 1280 (IPv6) of answer.

use super::model::{be16, Packet, Role, ETH_HLEN, TCP, UDP};
use lb_common::{XdpReason, FAMILY_V4, FAMILY_V6};

/// What makes the answer: ICMP type, code and the four bytes after the checksum.
#[derive(Clone, Copy)]
pub struct Message {
    pub kind: u8,
    pub code: u8,
    pub rest: [u8; 4],
}

pub const PORT_UNREACH_V4: Message = Message {
    kind: 3,
    code: 3,
    rest: [0; 4],
};
pub const PORT_UNREACH_V6: Message = Message {
    kind: 1,
    code: 4,
    rest: [0; 4],
};

/// "Fragmentation needed" with the next-hop MTU (RFC 1191) that fits before encapsulation.
pub fn frag_needed(fits: u16) -> Message {
    let m = fits.to_be_bytes();
    Message {
        kind: 3,
        code: 4,
        rest: [0, 0, m[0], m[1]],
    }
}

/// "Packet too big" with the MTU that fits, never below IPv6's minimum of 1280.
pub fn packet_too_big(fits: u32) -> Message {
    Message {
        kind: 2,
        code: 0,
        rest: fits.max(1280).to_be_bytes(),
    }
}

/// The client flow an ICMPv4 error is about, or why the frame is not one. `f` passed
/// the IPv4 header checks and is unfragmented-or-first and neither TCP nor UDP.
pub fn error_v4(f: &[u8]) -> Result<Packet, XdpReason> {
    let other = XdpReason::PassOtherProtocol;
    let short = XdpReason::DropMalformedL4;
    let frag = be16(f, 20);
    if f[23] != 1 || frag & 0x3fff != 0 {
        return Err(other);
    }
    let icmp = ETH_HLEN + usize::from(f[14] & 0x0f) * 4;
    if f.len() < icmp + 8 {
        return Err(short);
    }
    if f[icmp] != 3 && f[icmp] != 11 {
        return Err(other);
    }
    let q = icmp + 8;
    if f.len() < q + 20 {
        return Err(short);
    }
    let qhlen = usize::from(f[q] & 0x0f) * 4;
    if f[q] >> 4 != 4 || qhlen < 20 {
        return Err(short);
    }
    let qproto = f[q + 9];
    if qproto != TCP && qproto != UDP || f[q + 12..q + 16] != f[30..34] {
        return Err(other);
    }
    if f.len() < q + qhlen + 4 {
        return Err(short);
    }
    let ports = q + qhlen;
    Ok(Packet {
        family: FAMILY_V4,
        src: lb_common::v4_addr(f[q + 16..q + 20].try_into().unwrap()),
        dst: lb_common::v4_addr(f[q + 12..q + 16].try_into().unwrap()),
        proto: qproto,
        sport: be16(f, ports + 2),
        dport: be16(f, ports),
        opening: true,
        role: Role::Whole,
        frag_id: 0,
        inner_len: u32::from(be16(f, 16)),
        dont_fragment: frag & 0x4000 != 0,
        icmp_error: true,
    })
}

/// [`error_v4`] for ICMPv6 right after the fixed header (`f` passed the IPv6 checks and
/// is not TCP or UDP).
pub fn error_v6(f: &[u8]) -> Result<Packet, XdpReason> {
    let other = XdpReason::PassOtherProtocol;
    let short = XdpReason::DropMalformedL4;
    if f[20] != 58 {
        return Err(other);
    }
    let icmp = ETH_HLEN + 40;
    if f.len() < icmp + 8 {
        return Err(short);
    }
    if !matches!(f[icmp], 1..=3) {
        return Err(other);
    }
    let q = icmp + 8;
    if f.len() < q + 40 {
        return Err(short);
    }
    let qproto = f[q + 6];
    if qproto != TCP && qproto != UDP || f[q + 8..q + 24] != f[38..54] {
        return Err(other);
    }
    if f.len() < q + 44 {
        return Err(short);
    }
    Ok(Packet {
        family: FAMILY_V6,
        src: f[q + 24..q + 40].try_into().unwrap(),
        dst: f[q + 8..q + 24].try_into().unwrap(),
        proto: qproto,
        sport: be16(f, q + 42),
        dport: be16(f, q + 40),
        opening: true,
        role: Role::Whole,
        frag_id: 0,
        inner_len: u32::from(be16(f, 18)) + 40,
        dont_fragment: false,
        icmp_error: true,
    })
}

/// The frame `body` (an IPv4 or IPv6 packet the parser accepted) turned into `msg` back
/// to its sender.
pub fn answer(body: &[u8], family: u8, msg: Message) -> Vec<u8> {
    let mut out = body[6..12].to_vec();
    out.extend_from_slice(&body[0..6]);
    let ip = &body[ETH_HLEN..];
    let header = [
        msg.kind,
        msg.code,
        0,
        0,
        msg.rest[0],
        msg.rest[1],
        msg.rest[2],
        msg.rest[3],
    ];
    if family == FAMILY_V4 {
        let quote = &ip[..usize::from(be16(ip, 2)).min(576 - 28)];
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[1] = 0xc0;
        h[2..4].copy_from_slice(&((28 + quote.len()) as u16).to_be_bytes());
        h[8] = 64;
        h[9] = 1;
        h[12..16].copy_from_slice(&ip[16..20]);
        h[16..20].copy_from_slice(&ip[12..16]);
        let sum = checksum(&[&h]);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut icmp = header.to_vec();
        let sum = checksum(&[&icmp, quote]);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&[0x08, 0x00]);
        out.extend_from_slice(&h);
        out.extend_from_slice(&icmp);
        out.extend_from_slice(quote);
    } else {
        debug_assert_eq!(family, FAMILY_V6);
        let quote = &ip[..(40 + usize::from(be16(ip, 4))).min(1280 - 48)];
        let len = (8 + quote.len()) as u16;
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&[58, 64]);
        h.extend_from_slice(&ip[24..40]);
        h.extend_from_slice(&ip[8..24]);
        let mut pseudo = h[8..40].to_vec();
        pseudo.extend_from_slice(&u32::from(len).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        let mut icmp = header.to_vec();
        let sum = checksum(&[&pseudo, &icmp, quote]);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&[0x86, 0xdd]);
        out.extend_from_slice(&h);
        out.extend_from_slice(&icmp);
        out.extend_from_slice(quote);
    }
    out
}

/// The Internet checksum (RFC 1071) of the parts laid end to end (each part but the last
/// of even length), an odd last byte padded with zero.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        for w in part.chunks(2) {
            let hi = u64::from(w[0]) << 8;
            sum += hi | w.get(1).map_or(0, |&b| u64::from(b));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
