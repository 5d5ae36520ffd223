//! `build` against a deliberately naive transcription of the paper's
//! population loop (section 3.4, pseudocode 1) with the identity hash taken
//! from the independent `xxhash-rust` crate: the fast path (bitset, 4-wide
//! probing, inverse-view tail) must produce exactly the paper's table.
#![cfg(feature = "std")]

use lb_hashing::maglev::{build, MaglevBackend, DEFAULT_SEED};
use proptest::prelude::*;
use xxhash_rust::xxh64::xxh64;

/// Paper's loop for equal weights: round robin over backends sorted by
/// identity, each taking the next unfilled entry of its permutation.
fn naive(identities: &[Vec<u8>], m: u32, seed: u32) -> Vec<u32> {
    let m = u64::from(m);
    let mut order: Vec<usize> = (0..identities.len()).collect();
    order.sort_by(|&a, &b| identities[a].cmp(&identities[b]));
    let perms: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| {
            let id = &identities[i];
            let offset = xxh64(id, u64::from(seed)) % m;
            let skip = xxh64(id, u64::from(seed) + (1 << 32)) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; perms.len()];
    let mut entry = vec![u32::MAX; m as usize];
    let mut filled = 0;
    loop {
        for (i, &(offset, skip)) in perms.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m;
            while entry[c as usize] != u32::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            entry[c as usize] = order[i] as u32;
            next[i] += 1;
            filled += 1;
            if filled == m {
                return entry;
            }
        }
    }
}

fn equal_backends(identities: &[Vec<u8>]) -> Vec<MaglevBackend<'_>> {
    identities
        .iter()
        .map(|id| MaglevBackend {
            identity: id,
            weight: 1,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn equal_weights_match_the_papers_loop(
        identities in proptest::collection::btree_set(
            proptest::collection::vec(any::<u8>(), 0..24), 1..80),
        m in proptest::sample::select(&[251u32, 1021, 4093, 16381][..]),
        seed: u32,
    ) {
        let identities: Vec<Vec<u8>> = identities.into_iter().rev().collect();
        prop_assert_eq!(build(&equal_backends(&identities), m, seed).unwrap(), naive(&identities, m, seed));
    }
}

#[test]
fn large_table_matches_the_papers_loop() {
    let identities: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("backend-{i}").into_bytes())
        .collect();
    assert_eq!(
        build(&equal_backends(&identities), 65537, DEFAULT_SEED).unwrap(),
        naive(&identities, 65537, DEFAULT_SEED)
    );
}
