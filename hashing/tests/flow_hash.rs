//! Flow hash: reference cross-check, determinism, distribution, avalanche.

use lb_hashing::flow::{flow_hash_v4, flow_hash_v6, socket_hash};
use proptest::prelude::*;

/// MurmurHash3_x86_32 of the spec's little-endian word serialisation,
/// computed by the independent `murmur3` crate.
fn reference(words: &[u32], seed: u32) -> u32 {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    murmur3::murmur3_32(&mut std::io::Cursor::new(bytes), seed).unwrap()
}

/// Small deterministic generator so the statistical tests never flake.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

proptest! {
    #[test]
    fn v4_is_murmur3_of_the_specified_words(
        saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8, seed: u32,
    ) {
        let words = [saddr, daddr, (u32::from(sport) << 16) | u32::from(dport), u32::from(proto)];
        prop_assert_eq!(flow_hash_v4(saddr, daddr, sport, dport, proto, seed), reference(&words, seed));
    }

    #[test]
    fn v6_is_murmur3_of_the_specified_words(
        saddr: [u32; 4], daddr: [u32; 4], sport: u16, dport: u16, proto: u8, seed: u32,
    ) {
        let mut words = Vec::from(saddr);
        words.extend_from_slice(&daddr);
        words.push((u32::from(sport) << 16) | u32::from(dport));
        words.push(u32::from(proto));
        prop_assert_eq!(flow_hash_v6(&saddr, &daddr, sport, dport, proto, seed), reference(&words, seed));
    }

    #[test]
    fn socket_hash_is_murmur3_of_the_cookie_bytes(cookie: u64, seed: u32) {
        let bytes = cookie.to_le_bytes();
        let reference = murmur3::murmur3_32(&mut std::io::Cursor::new(bytes), seed).unwrap();
        prop_assert_eq!(socket_hash(cookie, seed), reference);
    }

    #[test]
    fn deterministic(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8, seed: u32) {
        prop_assert_eq!(
            flow_hash_v4(saddr, daddr, sport, dport, proto, seed),
            flow_hash_v4(saddr, daddr, sport, dport, proto, seed)
        );
        let (s6, d6) = ([saddr, 1, 2, 3], [daddr, 4, 5, 6]);
        prop_assert_eq!(
            flow_hash_v6(&s6, &d6, sport, dport, proto, seed),
            flow_hash_v6(&s6, &d6, sport, dport, proto, seed)
        );
    }
}

#[test]
fn golden_values() {
    // 10.0.0.1:40000 -> 192.168.1.10:80 TCP, and the same tuple over IPv6.
    let (saddr, daddr) = (0x0A00_0001, 0xC0A8_010A);
    assert_eq!(flow_hash_v4(saddr, daddr, 40000, 80, 6, 0), GOLDEN_V4[0]);
    assert_eq!(
        flow_hash_v4(saddr, daddr, 40000, 80, 6, 0xDEAD_BEEF),
        GOLDEN_V4[1]
    );
    assert_eq!(flow_hash_v4(0, 0, 0, 0, 0, 0), GOLDEN_V4[2]);
    let s6 = [0x2001_0db8, 0, 0, 1];
    let d6 = [0x2001_0db8, 0, 0, 0x0002_0001];
    assert_eq!(flow_hash_v6(&s6, &d6, 40000, 80, 6, 0), GOLDEN_V6[0]);
    assert_eq!(
        flow_hash_v6(&s6, &d6, 40000, 80, 17, 0xDEAD_BEEF),
        GOLDEN_V6[1]
    );
    assert_eq!(flow_hash_v6(&[0; 4], &[0; 4], 0, 0, 0, 0), GOLDEN_V6[2]);
}

const GOLDEN_V4: [u32; 3] = [0x8baa_4e51, 0x272d_a30c, 0x8134_cdf8];
const GOLDEN_V6: [u32; 3] = [0x601f_e2cb, 0x3302_43f2, 0xc206_7ae9];

/// Socket cookies are handed out by a counter, so consecutive ones must spread as well as
/// random tuples do.
#[test]
fn spreads_30000_consecutive_cookies_evenly_over_3_buckets() {
    let mut buckets = [0u32; 3];
    for cookie in 4096..4096 + 30_000u64 {
        buckets[(socket_hash(cookie, 0x1234_5678) % 3) as usize] += 1;
    }
    for count in buckets {
        assert!((9_500..=10_500).contains(&count), "{buckets:?}");
    }
}

#[test]
fn spreads_30000_tuples_evenly_over_3_buckets() {
    let mut rng = SplitMix(7);
    let mut buckets = [0u32; 3];
    for _ in 0..30_000 {
        let hash = flow_hash_v4(
            rng.next_u32(),
            0xC0A8_010A,
            rng.next_u32() as u16,
            443,
            6,
            0x1234_5678,
        );
        buckets[(hash % 3) as usize] += 1;
    }
    for count in buckets {
        // 10000 expected; +-5% is about 10 standard deviations.
        assert!((9_500..=10_500).contains(&count), "{buckets:?}");
    }
    let mut buckets6 = [0u32; 3];
    for _ in 0..30_000 {
        let saddr = [0x2001_0db8, 0, rng.next_u32(), rng.next_u32()];
        let hash = flow_hash_v6(
            &saddr,
            &[0x2001_0db8, 0, 0, 1],
            rng.next_u32() as u16,
            443,
            6,
            0,
        );
        buckets6[(hash % 3) as usize] += 1;
    }
    for count in buckets6 {
        assert!((9_500..=10_500).contains(&count), "{buckets6:?}");
    }
}

/// Every input bit flips every output bit with probability close to 1/2.
#[test]
fn avalanche() {
    let mut rng = SplitMix(11);
    const TRIALS: u32 = 2_000;
    // Input bits: saddr (32), daddr (32), sport (16), dport (16), proto (8).
    let mut flips = vec![[0u32; 32]; 104];
    for _ in 0..TRIALS {
        let (s, d, sp, dp, p) = (
            rng.next_u32(),
            rng.next_u32(),
            rng.next_u32() as u16,
            rng.next_u32() as u16,
            rng.next_u32() as u8,
        );
        let base = flow_hash_v4(s, d, sp, dp, p, 0);
        for (bit, row) in flips.iter_mut().enumerate() {
            let flipped = match bit {
                0..=31 => flow_hash_v4(s ^ (1 << bit), d, sp, dp, p, 0),
                32..=63 => flow_hash_v4(s, d ^ (1 << (bit - 32)), sp, dp, p, 0),
                64..=79 => flow_hash_v4(s, d, sp ^ (1 << (bit - 64)), dp, p, 0),
                80..=95 => flow_hash_v4(s, d, sp, dp ^ (1 << (bit - 80)), p, 0),
                _ => flow_hash_v4(s, d, sp, dp, p ^ (1 << (bit - 96)), 0),
            };
            let diff = base ^ flipped;
            for (out, count) in row.iter_mut().enumerate() {
                *count += (diff >> out) & 1;
            }
        }
    }
    for (bit, row) in flips.iter().enumerate() {
        for (out, &count) in row.iter().enumerate() {
            let p = f64::from(count) / f64::from(TRIALS);
            // Binomial(2000, 0.5) has sd 0.011; 0.42..0.58 is over 7 sd.
            assert!(
                (0.42..=0.58).contains(&p),
                "input bit {bit} -> output bit {out}: {p}"
            );
        }
    }
}
