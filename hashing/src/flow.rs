//! Flow hash: maps a connection's 5-tuple to a 32-bit value.
//!
//! The data plane (eBPF, `bpfel-unknown-none`) and the control plane (host)
//! both compile this module, so the two always agree on which Maglev slot a
//! flow lands in. That is why it is restricted to what the eBPF verifier and
//! `no_std` accept: no allocation, no loops, no slice indexing, no division,
//! only wrapping `u32` multiplies, xors, shifts and rotates (rotates lower to
//! shift/or pairs on eBPF). Nothing in here can panic.
//!
//! # Specification (version [`FLOW_HASH_VERSION`] = 1)
//!
//! The hash is exactly **MurmurHash3_x86_32** (Austin Appleby's public-domain
//! reference) of a sequence of 32-bit words serialised little-endian, with
//! the caller's `seed` as the Murmur seed:
//!
//! * IPv4: 4 words, 16 bytes: `saddr, daddr, (sport << 16) | dport, proto`.
//! * IPv6: 10 words, 40 bytes: `saddr[0..4], daddr[0..4], (sport << 16) | dport, proto`.
//! * Socket cookie (the socket programs' key at `connect()` time, see
//!   [`socket_hash`]): 2 words, 8 bytes: `cookie & 0xffff_ffff, cookie >> 32`, that is
//!   the cookie's own little-endian bytes.
//!
//! Addresses are the host-order numeric value of the address words
//! (`u32::from_be_bytes` of the wire bytes; for IPv6 word 0 is the most
//! significant), ports are host order. Because the byte length is mixed into
//! the finaliser, a v4 and a v6 tuple never collide by construction of the
//! input alone. The Murmur3 finaliser (`fmix32`) gives full avalanche: every
//! input bit flips every output bit with probability close to 1/2 (tested).

/// Version of the flow hash specification above. Bump on any output change.
pub const FLOW_HASH_VERSION: u32 = 1;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// One Murmur3 body step: scramble the word, fold it into the state.
#[inline(always)]
const fn mix(h: u32, word: u32) -> u32 {
    let k = word.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// Murmur3 tail: fold in the byte length, then `fmix32` for avalanche.
#[inline(always)]
const fn finish(h: u32, byte_len: u32) -> u32 {
    let mut h = h ^ byte_len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Ports share one word so the tuple fits the 4-word Murmur block.
#[inline(always)]
const fn ports_word(sport: u16, dport: u16) -> u32 {
    ((sport as u32) << 16) | dport as u32
}

/// Hash of an IPv4 5-tuple (see the module docs for the exact spec).
#[inline(always)]
pub const fn flow_hash_v4(
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    seed: u32,
) -> u32 {
    let mut h = seed;
    h = mix(h, saddr);
    h = mix(h, daddr);
    h = mix(h, ports_word(sport, dport));
    h = mix(h, proto as u32);
    finish(h, 16)
}

/// Hash of an IPv6 5-tuple (see the module docs for the exact spec).
#[inline(always)]
pub const fn flow_hash_v6(
    saddr: &[u32; 4],
    daddr: &[u32; 4],
    sport: u16,
    dport: u16,
    proto: u8,
    seed: u32,
) -> u32 {
    // Destructuring instead of indexing: nothing here has a bounds check.
    let [s0, s1, s2, s3] = *saddr;
    let [d0, d1, d2, d3] = *daddr;
    let mut h = seed;
    h = mix(h, s0);
    h = mix(h, s1);
    h = mix(h, s2);
    h = mix(h, s3);
    h = mix(h, d0);
    h = mix(h, d1);
    h = mix(h, d2);
    h = mix(h, d3);
    h = mix(h, ports_word(sport, dport));
    h = mix(h, proto as u32);
    finish(h, 40)
}

/// Hash of a socket cookie (`bpf_get_socket_cookie`), the key the socket programs pick a
/// Maglev slot with when `connect()` or `sendmsg()` names a frontend: the source port is
/// not chosen yet at that point, and the cookie keeps every datagram of an unconnected
/// UDP socket on one endpoint. See the module docs for the exact spec.
#[inline(always)]
pub const fn socket_hash(cookie: u64, seed: u32) -> u32 {
    let mut h = seed;
    h = mix(h, cookie as u32);
    h = mix(h, (cookie >> 32) as u32);
    finish(h, 8)
}
