//! The flow hash of a flow key. The XDP program picks a Maglev slot with it and the
//! daemon's `explain` repeats the pick with it, so this is the one place where a key's
//! wire bytes become the words `lb_hashing::flow` consumes: the two cannot drift apart.

use lb_hashing::flow::{flow_hash_v4, flow_hash_v6};

use crate::{Addr, FlowKey, FAMILY_V6};

/// An address's four host-order words, most significant first (the flow hash's IPv6
/// input). Destructured, not indexed: nothing here has a bounds check.
#[inline(always)]
fn addr_words(addr: &Addr) -> [u32; 4] {
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15] = *addr;
    [
        u32::from_be_bytes([a0, a1, a2, a3]),
        u32::from_be_bytes([a4, a5, a6, a7]),
        u32::from_be_bytes([a8, a9, a10, a11]),
        u32::from_be_bytes([a12, a13, a14, a15]),
    ]
}

/// Odd 64-bit multipliers of [`FlowKey::cache_hash`] (digits of pi and e; any odd
/// constants with well-spread bits do).
const CACHE_MULTIPLIERS: [u64; 6] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7345,
    0xa409_3822_299f_31d1,
    0x082e_fa98_ec4e_6c89,
    0x4528_21e6_38d0_1377,
    0xb7e1_5162_8aed_2a6b,
];

impl FlowKey {
    /// The key as five 8-byte words, for whole-word compares and the cache hash.
    #[inline(always)]
    pub fn words(&self) -> &[u64; 5] {
        // SAFETY: FlowKey is 40 bytes of plain data with no implicit padding, aligned to 8
        // (`repr(C, align(8))`), so it reads as five aligned u64 words.
        unsafe { &*(self as *const FlowKey as *const [u64; 5]) }
    }

    /// Whether two keys are equal, compared as five words (no byte loop, no `memcmp`):
    /// the flow cache's and the flow tables' key compare.
    #[inline(always)]
    pub fn same_as(&self, other: &FlowKey) -> bool {
        let (a, b) = (self.words(), other.words());
        (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) == 0
    }

    /// The flow cache's hash of this key (where its entries are and their tag, see
    /// `FlowCacheEntry::slot`); not the flow hash. The fast path computes nothing else, and
    /// Murmur3 over the tuple's words is 4 (IPv4) or 10 (IPv6) dependent rounds, 10-25 ns
    /// of a ~40 ns hit here, while the cache needs only an even spread (a hit compares the
    /// whole key). So: the five words times independent odd constants, summed, the high
    /// half folded down and multiplied once more: every key bit reaches the high half.
    /// Seeded like the flow hash, so a sender cannot aim flows at one set without knowing
    /// the seed; flows aimed anyway only lose the cache, not their backend. The flow
    /// tables take their set and tag from the same function with a seed of their own
    /// (`FlowSlot::of`).
    #[inline(always)]
    pub fn cache_hash(&self, seed: u32) -> u64 {
        let [w0, w1, w2, w3, w4] = *self.words();
        let [k0, k1, k2, k3, k4, k5] = CACHE_MULTIPLIERS;
        let sum = (w0 ^ u64::from(seed))
            .wrapping_mul(k0)
            .wrapping_add(w1.wrapping_mul(k1))
            .wrapping_add(w2.wrapping_mul(k2))
            .wrapping_add(w3.wrapping_mul(k3))
            .wrapping_add(w4.wrapping_mul(k4));
        (sum ^ (sum >> 32)).wrapping_mul(k5)
    }

    /// The flow hash of this tuple with `seed` (the datapath's `LbConfig::flow_hash_seed`),
    /// of the family the key names.
    #[inline(always)]
    pub fn flow_hash(&self, seed: u32) -> u32 {
        if self.family == FAMILY_V6 {
            self.flow_hash_v6(seed)
        } else {
            self.flow_hash_v4(seed)
        }
    }

    /// [`flow_hash`](Self::flow_hash) of a key known to be IPv4. Each XDP path is one
    /// family's subprogram: a family test there would compile both hashes into each.
    #[inline(always)]
    pub fn flow_hash_v4(&self, seed: u32) -> u32 {
        let ([src, ..], [dst, ..]) = (addr_words(&self.src), addr_words(&self.dst));
        let (sport, dport) = self.ports();
        flow_hash_v4(src, dst, sport, dport, self.proto, seed)
    }

    /// [`flow_hash`](Self::flow_hash) of a key known to be IPv6.
    #[inline(always)]
    pub fn flow_hash_v6(&self, seed: u32) -> u32 {
        let (sport, dport) = self.ports();
        flow_hash_v6(
            &addr_words(&self.src),
            &addr_words(&self.dst),
            sport,
            dport,
            self.proto,
            seed,
        )
    }

    /// The hash of the client alone (source port left out) toward this key's frontend:
    /// the Maglev key of a frontend with session affinity, so every connection of one
    /// client meets the same slot, its SYNs included, before any affinity entry exists.
    #[inline(always)]
    pub fn client_hash(&self, seed: u32) -> u32 {
        if self.family == FAMILY_V6 {
            self.client_hash_v6(seed)
        } else {
            self.client_hash_v4(seed)
        }
    }

    #[inline(always)]
    pub fn client_hash_v4(&self, seed: u32) -> u32 {
        let ([src, ..], [dst, ..]) = (addr_words(&self.src), addr_words(&self.dst));
        flow_hash_v4(src, dst, 0, self.ports().1, self.proto, seed)
    }

    #[inline(always)]
    pub fn client_hash_v6(&self, seed: u32) -> u32 {
        flow_hash_v6(
            &addr_words(&self.src),
            &addr_words(&self.dst),
            0,
            self.ports().1,
            self.proto,
            seed,
        )
    }

    /// Source and destination port, host order.
    #[inline(always)]
    fn ports(&self) -> (u16, u16) {
        (u16::from_be(self.sport_be), u16::from_be(self.dport_be))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::boxed::Box;

    use super::*;
    use crate::{v4_addr, FAMILY_V4, PROTO_TCP};

    fn key(src: Addr, dst: Addr, family: u8) -> FlowKey {
        FlowKey {
            src,
            dst,
            sport_be: 40000u16.to_be(),
            dport_be: 80u16.to_be(),
            proto: PROTO_TCP,
            family,
            _pad: [0; 2],
        }
    }

    #[test]
    fn an_ipv4_key_hashes_its_addresses_and_ports_as_host_order_numbers() {
        let k = key(
            v4_addr([10, 0, 0, 1]),
            v4_addr([192, 168, 1, 10]),
            FAMILY_V4,
        );
        let expected = flow_hash_v4(0x0A00_0001, 0xC0A8_010A, 40000, 80, PROTO_TCP, 7);
        assert_eq!(k.flow_hash(7), expected);
    }

    #[test]
    fn a_client_hash_leaves_the_source_port_out() {
        let mut a = key(v4_addr([10, 0, 0, 1]), v4_addr([10, 0, 0, 9]), FAMILY_V4);
        let first = a.client_hash(7);
        a.sport_be = 41000u16.to_be();
        assert_eq!(a.client_hash(7), first);
        assert_eq!(
            first,
            flow_hash_v4(0x0A00_0001, 0x0A00_0009, 0, 80, PROTO_TCP, 7)
        );
        let mut b = a;
        b.src = v4_addr([10, 0, 0, 2]);
        assert_ne!(b.client_hash(7), first);
    }

    #[test]
    fn an_ipv6_key_hashes_its_address_words_most_significant_first() {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        src[15] = 1;
        let mut dst = src;
        dst[13] = 2;
        let k = key(src, dst, FAMILY_V6);
        let expected = flow_hash_v6(
            &[0x2001_0db8, 0, 0, 1],
            &[0x2001_0db8, 0, 0, 0x0002_0001],
            40000,
            80,
            PROTO_TCP,
            7,
        );
        assert_eq!(k.flow_hash(7), expected);
    }

    /// Flows past the two ways of their set, for `flows` keys: what a cache of the real
    /// shape would not hold at once.
    fn overflow(keys: impl Iterator<Item = FlowKey>, seed: u32) -> (usize, usize) {
        let mut sets = std::collections::HashMap::new();
        let mut chunks = std::collections::HashSet::new();
        let mut flows = 0;
        for k in keys {
            let slot = crate::FlowCacheEntry::slot(k.cache_hash(seed));
            *sets.entry((slot.chunk, slot.first)).or_insert(0usize) += 1;
            chunks.insert(slot.chunk);
            flows += 1;
        }
        assert_eq!(
            chunks.len() as u32,
            crate::limits::FLOW_CACHE_CHUNKS_PER_CPU
        );
        let over: usize = sets.values().map(|n| n.saturating_sub(2)).sum();
        (over, flows)
    }

    /// 10,000 flows in 32,640 two-way sets: a uniform hash leaves ~1.2% of them out.
    /// The cache hash must do about as well for the tuples that share most of their bits
    /// (one client's ports, one subnet's clients), in both families and for any seed.
    #[test]
    fn the_cache_hash_spreads_similar_tuples_over_the_sets() {
        let v4 = |i: u32, port: u16| FlowKey {
            sport_be: port.to_be(),
            ..key(
                v4_addr((0xc612_0000 + i).to_be_bytes()),
                v4_addr([198, 18, 100, 1]),
                FAMILY_V4,
            )
        };
        let v6 = |i: u32, port: u16| {
            let mut src = [0u8; 16];
            src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            src[12..].copy_from_slice(&i.to_be_bytes());
            FlowKey {
                sport_be: port.to_be(),
                ..key(src, [0x20; 16], FAMILY_V6)
            }
        };
        for seed in [0, 1, 0x5eed_1234] {
            type Make<'a> = Box<dyn Fn(u32) -> FlowKey + 'a>;
            let cases: [(&str, Make); 4] = [
                ("v4 ports", Box::new(|i| v4(1, 10_000 + i as u16))),
                ("v4 clients", Box::new(|i| v4(i, 40_000))),
                ("v6 ports", Box::new(|i| v6(1, 10_000 + i as u16))),
                ("v6 clients", Box::new(|i| v6(i, 40_000))),
            ];
            for (name, make) in cases {
                let (over, flows) = overflow((0..10_000).map(&make), seed);
                assert!(
                    over * 100 < flows * 3,
                    "{name}, seed {seed}: {over} of {flows} flows past their set's ways"
                );
            }
        }
    }
}
