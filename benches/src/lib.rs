//! Shared inputs for the Maglev benchmarks, so `lb_hashing::maglev` and the
//! `maglev` crate (0.2.1) are always measured on exactly the same backends.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use lb_hashing::maglev::{self, MaglevBackend, DEFAULT_SEED};

/// Backend counts of the comparison grid.
pub const BACKEND_COUNTS: [usize; 3] = [10, 100, 1000];
/// Table sizes of the comparison grid (all prime, all in `TABLE_SIZES`).
pub const TABLE_SIZES: [u32; 3] = [16381, 65537, 655373];

/// The `maglev` crate materialises an `n x m` matrix of `usize`; at
/// n = 1000, m = 655373 that is 5.2 GB per build, so that cell is skipped
/// unless explicitly requested.
pub fn baseline_feasible(n: usize, m: u32) -> bool {
    (n as u64) * u64::from(m) * 8 <= 1 << 30
}

/// `n` distinct backend identities shaped like real ones ("ip:port").
pub fn identities(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256))
        .collect()
}

/// Equal-weight backends for `lb_hashing`.
pub fn backends(ids: &[String]) -> Vec<MaglevBackend<'_>> {
    ids.iter()
        .map(|id| MaglevBackend {
            identity: id.as_bytes(),
            weight: 1,
        })
        .collect()
}

/// Our table, as caller indices.
pub fn ours(ids: &[String], m: u32) -> Vec<u32> {
    maglev::build(&backends(ids), m, DEFAULT_SEED).expect("grid inputs are valid")
}

/// The `maglev` crate's build as its users call it (default hasher).
pub fn baseline(ids: &[String], m: u32) -> ::maglev::Maglev<&str> {
    ::maglev::Maglev::with_capacity(ids.iter().map(String::as_str), m as usize)
}

/// The `maglev` crate's lookup table, slot by slot, as indices into `ids`.
///
/// Its table is private, so we read it through its public `get`: nodes are
/// hashed by the wrapped `DefaultHasher` exactly as with the default hasher
/// (same table), while a [`SlotKey`] hashes to its own slot number, so
/// `get(&SlotKey(i))` returns the owner of slot `i`.
pub fn baseline_table(ids: &[String], m: u32) -> Vec<u32> {
    use ::maglev::ConsistentHasher;
    let nodes = ids.iter().map(String::as_str);
    let table = ::maglev::Maglev::with_capacity_and_hasher(nodes, m as usize, SlotProbe);
    assert_eq!(table.capacity(), m as usize, "m must be prime");
    let index: HashMap<&str, u32> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u32))
        .collect();
    (0..u64::from(m))
        .map(|slot| index[*table.get(&SlotKey(slot)).expect("table is populated")])
        .collect()
}

/// Marker in the high half of a `write_u128` that carries a slot number.
const SLOT_MARKER: u128 = 0x5107_5107_5107_5107;

/// A key that hashes to a chosen slot under [`SlotProbe`].
#[derive(Debug, PartialEq, Eq)]
pub struct SlotKey(pub u64);

impl Hash for SlotKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128((SLOT_MARKER << 64) | u128::from(self.0));
    }
}

/// Build-hasher that behaves like `DefaultHasher` except for [`SlotKey`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotProbe;

impl BuildHasher for SlotProbe {
    type Hasher = SlotProbeHasher;

    fn build_hasher(&self) -> SlotProbeHasher {
        SlotProbeHasher {
            inner: DefaultHasher::new(),
            slot: None,
        }
    }
}

/// See [`SlotProbe`].
#[derive(Debug)]
pub struct SlotProbeHasher {
    inner: DefaultHasher,
    slot: Option<u64>,
}

impl Hasher for SlotProbeHasher {
    fn finish(&self) -> u64 {
        self.slot.unwrap_or_else(|| self.inner.finish())
    }

    fn write(&mut self, bytes: &[u8]) {
        self.inner.write(bytes);
    }

    fn write_u32(&mut self, value: u32) {
        self.inner.write_u32(value);
    }

    fn write_u128(&mut self, value: u128) {
        if value >> 64 == SLOT_MARKER {
            self.slot = Some(value as u64);
        } else {
            self.inner.write_u128(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_probe_reads_the_default_hasher_table() {
        use ::maglev::ConsistentHasher;
        let ids = identities(7);
        let table = baseline_table(&ids, 251);
        let default = baseline(&ids, 251);
        // Same node hashing, so lookups of ordinary keys agree; the crate
        // hashes a key as seed 0xdead_babe followed by the key.
        for key in ["alice", "bob", "carol", "dave", "eve"] {
            let mut h = DefaultHasher::new();
            h.write_u32(0xdead_babe);
            key.hash(&mut h);
            let owner = table[(h.finish() % 251) as usize] as usize;
            assert_eq!(default.get(key), Some(&ids[owner].as_str()));
        }
    }
}
