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

impl FlowKey {
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
}
