//! Weighted Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and
//! Reliable Software Network Load Balancer", NSDI 2016, section 3.4).
//!
//! # Algorithm (version [`MAGLEV_HASH_VERSION`] = 1)
//!
//! 1. Backends are sorted by identity bytes (lexicographic); drained ones
//!    (weight 0) are dropped. Neither the caller's order nor drained entries
//!    can therefore change which identity owns a slot.
//! 2. Each live backend gets the permutation `offset + j * skip (mod m)`,
//!    `j = 0, 1, ...` with
//!    `offset = XXH64(identity, seed) mod m` and
//!    `skip = XXH64(identity, seed + 2^32) mod (m - 1) + 1`
//!    (XXH64 = xxHash64 spec v0.1.1, seed widened to `u64`; adding `2^32`
//!    separates the two uses). `m` is prime, so every permutation visits
//!    every slot.
//! 3. Backends take turns; on its turn a backend claims the first slot of its
//!    permutation that is still empty. Every turn fills one slot, so slot
//!    counts equal turn counts. The turn order (weighted rounds in the style
//!    of Katran's second Maglev variant, see `schedule.rs`) makes every
//!    backend's slot count lie within one slot of `t * weight` for a common
//!    `t`; with equal weights that is exactly `floor(m/n)` or `ceil(m/n)`.
//!
//! Working memory besides the table is O(n) plus an `m`-bit bitset: the
//! `n x m` permutation matrix of the paper is never built.

mod fill;
mod schedule;

use std::cmp::Ordering;

use fill::Permutation;

/// Table entry meaning "no backend". [`build`] never produces it (every slot
/// gets a backend); it exists for callers that pre-fill or clear BPF maps.
pub const NO_BACKEND: u32 = u32::MAX;

/// Version of the population algorithm and identity hash described in the
/// module docs. Any change that can move a slot must bump it.
pub const MAGLEV_HASH_VERSION: u32 = 1;

/// Default seed of the identity hash: ASCII "MGLV". Any fixed value works;
/// what matters is that every table of one deployment uses the same one.
pub const DEFAULT_SEED: u32 = 0x4D47_4C56;

/// Allowed table sizes, ascending. All are prime (required for the
/// permutations to be full cycles). Most are the largest prime below a power
/// of two (or 2^k + 1 for 65537), so BPF map sizes stay predictable; 655373
/// is the "~100 slots per backend for ~6500 backends" size also used by
/// Katran. The smallest, 251, still gives 100 slots each to 2 backends.
pub const TABLE_SIZES: &[u32] = &[
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 65537, 131071, 262139, 524287, 655373,
    1048573,
];

/// One backend as seen by [`build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaglevBackend<'a> {
    /// Stable identity bytes (e.g. the address and port of the real server).
    /// Slots follow identities, never positions in the input slice.
    pub identity: &'a [u8],
    /// Relative weight; shares are proportional to it. 0 drains the backend.
    pub weight: u32,
}

/// Why a table cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum MaglevError {
    /// The size is not one of [`TABLE_SIZES`].
    #[error("Maglev table size {size} is not allowed: it must be one of the primes {allowed:?}", allowed = TABLE_SIZES)]
    TableSizeNotAllowed {
        /// The rejected size.
        size: u32,
    },
    /// No backend has a weight above zero, so nobody can own a slot.
    #[error("no Maglev backend has a weight above zero")]
    NoBackends,
    /// Two backends have the same identity bytes, so slots could not follow
    /// identities.
    #[error("two Maglev backends have the same identity")]
    DuplicateIdentity,
    /// More live backends than slots: some could not own any slot.
    #[error(
        "{backends} Maglev backends with weight above zero do not fit a table of {size} slots"
    )]
    TooManyBackends {
        /// Number of backends with weight above zero (or all backends, if
        /// their count does not fit a table entry).
        backends: usize,
        /// The table size.
        size: u32,
    },
}

/// Accepts `m` only if it is one of [`TABLE_SIZES`].
pub fn validate_table_size(m: u32) -> Result<(), MaglevError> {
    match TABLE_SIZES.binary_search(&m) {
        Ok(_) => Ok(()),
        Err(_) => Err(MaglevError::TableSizeNotAllowed { size: m }),
    }
}

/// Smallest listed size with at least 100 slots per backend (the paper's
/// rule of thumb for small imbalance and disruption), but at most `cap`.
///
/// `cap` should itself be a listed size; otherwise the largest listed size
/// not above it is used (the smallest listed size if `cap` is below all).
pub fn choose_table_size(n_backends: usize, cap: u32) -> u32 {
    let cap = TABLE_SIZES
        .iter()
        .copied()
        .rev()
        .find(|&s| s <= cap)
        .unwrap_or(TABLE_SIZES[0]);
    let wanted = n_backends.saturating_mul(100);
    TABLE_SIZES
        .iter()
        .copied()
        .find(|&s| s as usize >= wanted)
        .map_or(cap, |s| s.min(cap))
}

/// Builds the lookup table of size `m` (must be in [`TABLE_SIZES`]).
///
/// Entry `i` is the index into `backends` (the caller's order) of the backend
/// owning slot `i`; every entry is a backend with weight above zero.
///
/// Errors: [`MaglevError::TableSizeNotAllowed`], [`MaglevError::NoBackends`]
/// if no weight is above zero, [`MaglevError::DuplicateIdentity`],
/// [`MaglevError::TooManyBackends`] if more live backends than slots.
pub fn build(backends: &[MaglevBackend<'_>], m: u32, seed: u32) -> Result<Vec<u32>, MaglevError> {
    validate_table_size(m)?;
    // Entries are u32 indices and NO_BACKEND must stay distinguishable.
    let Ok(count) = u32::try_from(backends.len()) else {
        return Err(MaglevError::TooManyBackends {
            backends: backends.len(),
            size: m,
        });
    };
    if count == NO_BACKEND {
        return Err(MaglevError::TooManyBackends {
            backends: backends.len(),
            size: m,
        });
    }

    let mut sorted: Vec<u32> = (0..count).collect();
    let identity = |i: u32| backends[i as usize].identity;
    sorted.sort_unstable_by(|&a, &b| identity(a).cmp(identity(b)));
    if sorted
        .windows(2)
        .any(|pair| identity(pair[0]).cmp(identity(pair[1])) == Ordering::Equal)
    {
        return Err(MaglevError::DuplicateIdentity);
    }
    sorted.retain(|&i| backends[i as usize].weight > 0);
    if sorted.is_empty() {
        return Err(MaglevError::NoBackends);
    }
    if sorted.len() > m as usize {
        return Err(MaglevError::TooManyBackends {
            backends: sorted.len(),
            size: m,
        });
    }

    // Turns speak in positions among live, sorted backends; the table
    // stores the caller's index (the label).
    let perms: Vec<Permutation> = sorted
        .iter()
        .map(|&i| permutation(identity(i), m, seed, i))
        .collect();
    let weights: Vec<u32> = sorted
        .iter()
        .map(|&i| backends[i as usize].weight)
        .collect();
    Ok(fill::fill(&perms, m, schedule::turns(&weights, m)))
}

/// Offset and skip of one backend (step 2 of the module docs); its slots get
/// `label`.
fn permutation(identity: &[u8], m: u32, seed: u32, label: u32) -> Permutation {
    let offset_hash = crate::xxh64::xxh64(identity, u64::from(seed));
    let skip_hash = crate::xxh64::xxh64(identity, u64::from(seed) + (1 << 32));
    Permutation {
        offset: (offset_hash % u64::from(m)) as u32,
        skip: (skip_hash % u64::from(m - 1)) as u32 + 1,
        label,
    }
}

/// Slots whose entry differs between `old` and `new`. Tables of different
/// lengths share no slot, so then every slot of `new` is reported.
///
/// Entries are compared as they are; when comparing tables built from
/// different backend lists, map entries to identities first and use
/// [`disruption`].
pub fn changed_slots(old: &[u32], new: &[u32]) -> Vec<u32> {
    if old.len() != new.len() {
        return (0..new.len() as u32).collect();
    }
    old.iter()
        .zip(new)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i as u32)
        .collect()
}

/// How much a table change moves traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Disruption {
    /// Share of all slots whose owner changed (0.0 ..= 1.0).
    pub changed_share: f64,
    /// Share of the slots whose old owner survived that changed anyway: the
    /// needless disruption; Maglev keeps it small, ideal is 0.
    pub changed_share_among_surviving: f64,
}

/// Compares two tables given as one owner identity (or any comparable owner
/// key) per slot. `survived(owner)` says whether an old owner is still in the
/// new backend set. Tables of different lengths count as fully changed;
/// empty denominators give 0.0.
pub fn disruption<T: PartialEq>(old: &[T], new: &[T], survived: impl Fn(&T) -> bool) -> Disruption {
    let same_length = old.len() == new.len();
    let mut changed = 0usize;
    let mut surviving = 0usize;
    let mut surviving_changed = 0usize;
    for (i, owner) in old.iter().enumerate() {
        let moved = !same_length || new.get(i) != Some(owner);
        changed += usize::from(moved);
        if survived(owner) {
            surviving += 1;
            surviving_changed += usize::from(moved);
        }
    }
    if !same_length {
        changed = new.len().max(old.len());
    }
    let share = |part: usize, whole: usize| {
        if whole == 0 {
            0.0
        } else {
            part as f64 / whole as f64
        }
    };
    Disruption {
        changed_share: share(changed, old.len().max(new.len())),
        changed_share_among_surviving: share(surviving_changed, surviving),
    }
}

/// Max over backends with weight above zero of `slots / weight`, divided by
/// the mean of `slots / weight` over those backends. 1.0 is perfect balance;
/// 1.05 means the most loaded backend gets 5% more than its fair share.
/// `weights` is indexed like the table entries; entries without a weight
/// (out of range, [`NO_BACKEND`]) are ignored. Degenerate inputs (no backend
/// with weight above zero, or none of them owning a slot) give 1.0.
pub fn imbalance(table: &[u32], weights: &[u32]) -> f64 {
    let mut slots = vec![0u64; weights.len()];
    for &entry in table {
        if let Some(count) = slots.get_mut(entry as usize) {
            *count += 1;
        }
    }
    let loads: Vec<f64> = slots
        .iter()
        .zip(weights)
        .filter(|(_, &w)| w > 0)
        .map(|(&s, &w)| s as f64 / f64::from(w))
        .collect();
    if loads.is_empty() {
        return 1.0;
    }
    let mean = loads.iter().sum::<f64>() / loads.len() as f64;
    let max = loads.iter().copied().fold(0.0, f64::max);
    if mean > 0.0 {
        max / mean
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_prime(n: u32) -> bool {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn table_sizes_are_ascending_primes() {
        assert!(TABLE_SIZES.windows(2).all(|w| w[0] < w[1]));
        assert!(TABLE_SIZES.iter().all(|&m| is_prime(m)), "{TABLE_SIZES:?}");
        // Barrett reduction in fill.rs needs m < 2^31.
        assert!(TABLE_SIZES.iter().all(|&m| m < 1 << 31));
    }

    #[test]
    fn permutation_is_pinned() {
        // Pins step 2 of the spec independently of the population.
        let p = permutation(b"10.0.0.1:80", 65537, DEFAULT_SEED, 0);
        let offset = crate::xxh64::xxh64(b"10.0.0.1:80", 0x4D47_4C56) % 65537;
        let skip = crate::xxh64::xxh64(b"10.0.0.1:80", 0x1_4D47_4C56) % 65536 + 1;
        assert_eq!((u64::from(p.offset), u64::from(p.skip)), (offset, skip));
    }
}
