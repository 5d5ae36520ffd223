//! Errors, table-size policy, comparison helpers, golden tables.
#![cfg(feature = "std")]

use lb_hashing::maglev::{
    build, changed_slots, choose_table_size, disruption, imbalance, validate_table_size,
    MaglevBackend, MaglevError, DEFAULT_SEED, MAGLEV_HASH_VERSION, NO_BACKEND, TABLE_SIZES,
};

fn backend(identity: &[u8], weight: u32) -> MaglevBackend<'_> {
    MaglevBackend { identity, weight }
}

#[test]
fn rejects_sizes_not_listed() {
    for size in [0, 1, 2, 250, 252, 1000, 65536, 65539, 655371, u32::MAX] {
        assert_eq!(
            validate_table_size(size),
            Err(MaglevError::TableSizeNotAllowed { size })
        );
        assert_eq!(
            build(&[backend(b"a", 1)], size, 0),
            Err(MaglevError::TableSizeNotAllowed { size })
        );
    }
    for &size in TABLE_SIZES {
        assert_eq!(validate_table_size(size), Ok(()));
    }
}

#[test]
fn error_messages_say_what_is_wrong() {
    let text = MaglevError::TableSizeNotAllowed { size: 1000 }.to_string();
    assert!(
        text.starts_with("Maglev table size 1000 is not allowed"),
        "{text}"
    );
    assert!(text.contains("65537") && text.contains("655373"), "{text}");
    assert_eq!(
        MaglevError::NoBackends.to_string(),
        "no Maglev backend has a weight above zero"
    );
    assert_eq!(
        MaglevError::DuplicateIdentity.to_string(),
        "two Maglev backends have the same identity"
    );
    assert_eq!(
        MaglevError::TooManyBackends {
            backends: 300,
            size: 251
        }
        .to_string(),
        "300 Maglev backends with weight above zero do not fit a table of 251 slots"
    );
}

#[test]
fn rejects_bad_backend_sets() {
    assert_eq!(build(&[], 251, 0), Err(MaglevError::NoBackends));
    assert_eq!(
        build(&[backend(b"a", 0), backend(b"b", 0)], 251, 0),
        Err(MaglevError::NoBackends)
    );
    assert_eq!(
        build(
            &[backend(b"a", 1), backend(b"b", 1), backend(b"a", 0)],
            251,
            0
        ),
        Err(MaglevError::DuplicateIdentity)
    );
    let ids: Vec<[u8; 2]> = (0..252u16).map(u16::to_be_bytes).collect();
    let many: Vec<_> = ids.iter().map(|id| backend(id, 1)).collect();
    assert_eq!(
        build(&many, 251, 0),
        Err(MaglevError::TooManyBackends {
            backends: 252,
            size: 251
        })
    );
    // Drained backends need no slot, so they do not count.
    let mut mostly_drained = many.clone();
    mostly_drained[0].weight = 0;
    assert!(build(&mostly_drained, 251, 0).is_ok());
}

#[test]
fn table_size_policy() {
    assert!(TABLE_SIZES.windows(2).all(|w| w[0] < w[1]));
    for required in [
        251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 65537, 131071, 655373,
    ] {
        assert!(TABLE_SIZES.contains(&required), "{required}");
    }
    assert_eq!(choose_table_size(0, 65537), 251);
    assert_eq!(choose_table_size(1, 65537), 251);
    assert_eq!(choose_table_size(3, 65537), 509);
    assert_eq!(choose_table_size(100, 65537), 16381);
    assert_eq!(choose_table_size(655, 65537), 65521);
    assert_eq!(choose_table_size(656, 65537), 65537);
    assert_eq!(choose_table_size(1000, 65537), 65537);
    assert_eq!(choose_table_size(1000, 655373), 131071);
    assert_eq!(choose_table_size(usize::MAX, 655373), 655373);
    // A cap that is not listed is rounded down to a listed size.
    assert_eq!(choose_table_size(1000, 100_000), 65537);
    assert_eq!(choose_table_size(1000, 10), 251);
}

#[test]
fn changed_slots_compares_positions() {
    assert_eq!(changed_slots(&[0, 1, 2, 3], &[0, 2, 2, 0]), vec![1, 3]);
    assert!(changed_slots(&[5; 8], &[5; 8]).is_empty());
    assert_eq!(changed_slots(&[0, 1], &[0, 1, 2]), vec![0, 1, 2]);
}

#[test]
fn disruption_separates_needless_moves() {
    // Slots 0-1 belonged to "c", which is removed; slot 2 moved needlessly.
    let old = ["c", "c", "a", "a", "b", "b"];
    let new = ["a", "b", "b", "a", "b", "b"];
    let d = disruption(&old, &new, |owner| *owner != "c");
    assert_eq!(d.changed_share, 3.0 / 6.0);
    assert_eq!(d.changed_share_among_surviving, 1.0 / 4.0);
    let same = disruption(&old, &old, |_| true);
    assert_eq!(same.changed_share, 0.0);
    assert_eq!(same.changed_share_among_surviving, 0.0);
    let resized = disruption(&old, &old[..3], |_| true);
    assert_eq!(resized.changed_share, 1.0);
}

#[test]
fn imbalance_is_max_over_mean_of_slots_per_weight() {
    assert_eq!(imbalance(&[0, 1, 0, 1], &[1, 1]), 1.0);
    // Backend 0: 3 slots / weight 1; backend 1: 1 / 1: mean 2, max 3.
    assert_eq!(imbalance(&[0, 0, 0, 1], &[1, 1]), 1.5);
    // Weighted: 2/2 and 1/1 are perfectly proportional; drained ignored.
    assert_eq!(imbalance(&[0, 0, 1, NO_BACKEND], &[2, 1, 0]), 1.0);
    assert_eq!(imbalance(&[], &[1]), 1.0);
    assert_eq!(imbalance(&[0], &[0]), 1.0);
}

/// FNV-1a 64 over the entries' little-endian bytes: a compact fingerprint
/// of a whole table for the golden tests.
fn fingerprint(table: &[u32]) -> u64 {
    table
        .iter()
        .flat_map(|e| e.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Golden tables: any change of hash, turn order, sorting or tail handling
/// moves slots and must fail here (and bump MAGLEV_HASH_VERSION).
#[test]
fn golden_tables() {
    assert_eq!(MAGLEV_HASH_VERSION, 1);
    let ids: Vec<String> = (0..100).map(|i| format!("10.0.0.{i}:80")).collect();
    let equal: Vec<_> = ids.iter().map(|id| backend(id.as_bytes(), 1)).collect();
    let weighted: Vec<_> = ids[..10]
        .iter()
        .enumerate()
        .map(|(i, id)| backend(id.as_bytes(), i as u32))
        .collect();
    let cases: [(&str, Vec<u32>); 4] = [
        (
            "3 equal, m=251",
            build(&equal[..3], 251, DEFAULT_SEED).unwrap(),
        ),
        (
            "100 equal, m=65537",
            build(&equal, 65537, DEFAULT_SEED).unwrap(),
        ),
        (
            "weights 0..10, m=4093, seed 7",
            build(&weighted, 4093, 7).unwrap(),
        ),
        (
            "100 equal, m=655373",
            build(&equal, 655373, DEFAULT_SEED).unwrap(),
        ),
    ];
    let mut actual = String::new();
    for (name, table) in &cases {
        actual += &format!("{name}: {:#018x} {:?}\n", fingerprint(table), &table[..16]);
    }
    assert_eq!(actual, GOLDEN, "\nactual:\n{actual}");
}

const GOLDEN: &str = "\
3 equal, m=251: 0xadc418ab79006df7 [2, 1, 0, 0, 0, 1, 2, 2, 2, 1, 0, 0, 0, 1, 0, 0]
100 equal, m=65537: 0x83b0970d5d94f4af [2, 13, 64, 77, 22, 64, 89, 66, 6, 70, 42, 74, 20, 67, 17, 21]
weights 0..10, m=4093, seed 7: 0x7012ff8643ca23cd [9, 9, 9, 5, 9, 4, 9, 8, 8, 4, 6, 7, 8, 8, 6, 5]
100 equal, m=655373: 0x015cf6b0f4ffcc93 [56, 1, 39, 92, 97, 1, 89, 1, 99, 14, 82, 1, 26, 1, 18, 1]
";
