//! The peer a socket call names, read from and written back to the kernel's
//! `bpf_sock_addr` (`user_ip4`/`user_ip6`, `user_port`). Rewriting it is all the socket
//! programs do to a connection: the kernel then connects, sends or reports with the
//! address written here.
//!
//! Every field is loaded and stored as one 32-bit word through a volatile access: the
//! verifier accepts only word-sized stores to these fields, and a plain access could be
//! merged by the compiler into a wider one it refuses.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::programs::SockAddrContext;
use lb_common::{v4_addr, Addr, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

/// An address and port as the maps key them: the family is the service's, so an
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket passes for an
/// IPv4 peer) is an IPv4 peer.
#[derive(Clone, Copy)]
pub struct Peer {
    pub addr: Addr,
    /// Network byte order, as the maps store ports.
    pub port_be: u16,
    pub family: u8,
}

/// The third word of an IPv4-mapped IPv6 address, as it sits in memory.
const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// An address as four words in memory order (how `user_ip6` holds it).
#[inline(always)]
fn words(addr: &Addr) -> [u32; 4] {
    // SAFETY: same size, and every byte pattern is a valid [u32; 4].
    unsafe { core::mem::transmute::<Addr, [u32; 4]>(*addr) }
}

#[inline(always)]
fn from_words(words: [u32; 4]) -> Addr {
    // SAFETY: same size, and every byte pattern is a valid Addr.
    unsafe { core::mem::transmute::<[u32; 4], Addr>(words) }
}

/// The socket's transport protocol, if it is one the services are keyed by.
#[inline(always)]
pub fn protocol(ctx: &SockAddrContext) -> Option<u8> {
    // SAFETY: `sock_addr` is the kernel's context for this run; the verifier rewrites
    // the load into a read of the socket's protocol.
    let proto = unsafe { read_volatile(&raw const (*ctx.sock_addr).protocol) };
    match proto {
        p if p == u32::from(PROTO_TCP) => Some(PROTO_TCP),
        p if p == u32::from(PROTO_UDP) => Some(PROTO_UDP),
        _ => None,
    }
}

/// The peer the call names; `v6` says which program family runs (`user_ip6` is only
/// valid in the IPv6 programs).
#[inline(always)]
pub fn read(ctx: &SockAddrContext, v6: bool) -> Peer {
    let sa = ctx.sock_addr;
    // SAFETY (every load below): `sa` is the kernel's context for this run, and each load
    // is a whole 32-bit field the program type may read.
    let port_be = unsafe { read_volatile(&raw const (*sa).user_port) } as u16;
    if !v6 {
        let ip = unsafe { read_volatile(&raw const (*sa).user_ip4) };
        return Peer {
            addr: v4_addr(ip.to_ne_bytes()),
            port_be,
            family: FAMILY_V4,
        };
    }
    let ip6 = unsafe { &raw const (*sa).user_ip6 }.cast::<u32>();
    // SAFETY: the four words of `user_ip6`.
    let w = unsafe {
        [
            read_volatile(ip6),
            read_volatile(ip6.add(1)),
            read_volatile(ip6.add(2)),
            read_volatile(ip6.add(3)),
        ]
    };
    if w[0] == 0 && w[1] == 0 && w[2] == V4_MAPPED_WORD {
        return Peer {
            addr: v4_addr(w[3].to_ne_bytes()),
            port_be,
            family: FAMILY_V4,
        };
    }
    Peer {
        addr: from_words(w),
        port_be,
        family: FAMILY_V6,
    }
}

/// Makes `peer` the address the call uses. An IPv4 peer in an IPv6 program is written
/// IPv4-mapped, as the socket passed it.
#[inline(always)]
pub fn write(ctx: &SockAddrContext, v6: bool, peer: &Peer) {
    let sa = ctx.sock_addr;
    let [w0, w1, w2, w3] = words(&peer.addr);
    // SAFETY (every store below): `sa` is the kernel's context for this run, and each
    // store is a whole 32-bit field the connect, sendmsg, recvmsg and getpeername
    // programs may write.
    unsafe { write_volatile(&raw mut (*sa).user_port, u32::from(peer.port_be)) };
    if !v6 {
        unsafe { write_volatile(&raw mut (*sa).user_ip4, w0) };
        return;
    }
    let ip6 = unsafe { &raw mut (*sa).user_ip6 }.cast::<u32>();
    let w = if peer.family == FAMILY_V6 {
        [w0, w1, w2, w3]
    } else {
        [0, 0, V4_MAPPED_WORD, w0]
    };
    // SAFETY: the four words of `user_ip6`.
    unsafe {
        write_volatile(ip6, w[0]);
        write_volatile(ip6.add(1), w[1]);
        write_volatile(ip6.add(2), w[2]);
        write_volatile(ip6.add(3), w[3]);
    }
}
