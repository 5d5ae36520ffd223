//! Property tests of `maglev::build` on random backend sets.
#![cfg(feature = "std")]

use lb_hashing::maglev::{build, MaglevBackend, DEFAULT_SEED};
use proptest::prelude::*;

/// Table sizes small enough for many debug-mode cases, large enough to
/// reach the tail phase and both turn enumerations.
const SIZES: &[u32] = &[251, 509, 1021, 2039, 4093];

/// Distinct identities (a counter, so no accidental duplicates) with the
/// given weights.
fn identities(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| format!("10.{}.{}.1:8080", i / 256, i % 256).into_bytes())
        .collect()
}

fn backends<'a>(ids: &'a [Vec<u8>], weights: &[u32]) -> Vec<MaglevBackend<'a>> {
    ids.iter()
        .zip(weights)
        .map(|(id, &weight)| MaglevBackend {
            identity: id,
            weight,
        })
        .collect()
}

fn slot_counts(table: &[u32], n: usize) -> Vec<u64> {
    let mut counts = vec![0u64; n];
    for &entry in table {
        counts[entry as usize] += 1;
    }
    counts
}

/// Identity owning each slot: the comparison that matters across inputs
/// whose indices differ.
fn owners<'a>(table: &[u32], backends: &[MaglevBackend<'a>]) -> Vec<&'a [u8]> {
    table
        .iter()
        .map(|&i| backends[i as usize].identity)
        .collect()
}

fn size() -> impl Strategy<Value = u32> {
    proptest::sample::select(SIZES)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_slot_owned_by_a_live_backend(
        weights in proptest::collection::vec(0u32..5, 1..60),
        m in size(),
        seed: u32,
    ) {
        prop_assume!(weights.iter().any(|&w| w > 0));
        let ids = identities(weights.len());
        let bs = backends(&ids, &weights);
        let table = build(&bs, m, seed).unwrap();
        prop_assert_eq!(table.len(), m as usize);
        for &entry in &table {
            prop_assert!((entry as usize) < bs.len());
            prop_assert!(bs[entry as usize].weight > 0, "drained backend {} owns a slot", entry);
        }
    }

    #[test]
    fn equal_weights_give_floor_or_ceil(
        n in 1usize..250,
        weight in 1u32..u32::MAX,
        m in size(),
        seed: u32,
    ) {
        let ids = identities(n);
        let bs = backends(&ids, &vec![weight; n]);
        let table = build(&bs, m, seed).unwrap();
        let (floor, ceil) = (u64::from(m) / n as u64, u64::from(m).div_ceil(n as u64));
        for (i, count) in slot_counts(&table, n).into_iter().enumerate() {
            prop_assert!(count == floor || count == ceil, "backend {} owns {} of {}", i, count, m);
        }
    }

    #[test]
    fn input_order_never_matters(
        weights in proptest::collection::vec(0u32..4, 1..50),
        shuffle_seed: u64,
        m in size(),
        seed: u32,
    ) {
        prop_assume!(weights.iter().any(|&w| w > 0));
        let ids = identities(weights.len());
        let bs = backends(&ids, &weights);
        let mut shuffled = bs.clone();
        // Fisher-Yates with a small LCG: deterministic per case.
        let mut state = shuffle_seed;
        for i in (1..shuffled.len()).rev() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            shuffled.swap(i, (state >> 33) as usize % (i + 1));
        }
        let a = build(&bs, m, seed).unwrap();
        let b = build(&shuffled, m, seed).unwrap();
        prop_assert_eq!(owners(&a, &bs), owners(&b, &shuffled));
    }

    /// Tolerance: there is one scale `t` with `t * w_i - 1 <= slots_i <=
    /// t * w_i` for every live backend, i.e. every share is within one slot
    /// of exact proportionality. One slot is the least any integer table
    /// can promise (m = 251 slots cannot split 1:1:1 exactly), and it is what
    /// the turn order guarantees by construction (see schedule.rs).
    #[test]
    fn shares_proportional_to_weight_within_one_slot(
        weights in proptest::collection::vec(1u32..1000, 1..60),
        m in size(),
        seed: u32,
    ) {
        let ids = identities(weights.len());
        let bs = backends(&ids, &weights);
        let counts = slot_counts(&build(&bs, m, seed).unwrap(), weights.len());
        // Such a t exists iff max c_i / w_i <= min (c_i + 1) / w_i.
        for (a, (&ca, &wa)) in counts.iter().zip(&weights).enumerate() {
            for (b, (&cb, &wb)) in counts.iter().zip(&weights).enumerate() {
                prop_assert!(
                    u128::from(ca) * u128::from(wb) <= u128::from(cb + 1) * u128::from(wa),
                    "backend {} has {} slots for weight {}, backend {} has {} for {}",
                    a, ca, wa, b, cb, wb
                );
            }
        }
    }

    #[test]
    fn draining_equals_removing(
        weights in proptest::collection::vec(1u32..4, 2..50),
        drained in any::<prop::sample::Index>(),
        m in size(),
        seed: u32,
    ) {
        let ids = identities(weights.len());
        let drained = drained.index(weights.len());
        let mut drained_weights = weights.clone();
        drained_weights[drained] = 0;
        let with_drained = backends(&ids, &drained_weights);
        let mut removed = backends(&ids, &weights);
        removed.remove(drained);
        let a = build(&with_drained, m, seed).unwrap();
        let b = build(&removed, m, seed).unwrap();
        prop_assert!(a.iter().all(|&i| i as usize != drained));
        prop_assert_eq!(owners(&a, &with_drained), owners(&b, &removed));
    }

    #[test]
    fn only_weight_ratios_matter(
        weights in proptest::collection::vec(1u32..100, 1..40),
        factor in 1u32..1000,
        m in size(),
    ) {
        let ids = identities(weights.len());
        let scaled: Vec<u32> = weights.iter().map(|w| w * factor).collect();
        prop_assert_eq!(
            build(&backends(&ids, &weights), m, DEFAULT_SEED).unwrap(),
            build(&backends(&ids, &scaled), m, DEFAULT_SEED).unwrap()
        );
    }
}
