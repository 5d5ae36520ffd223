//! The flow tables' layout (`LB_FLOWS`, `LB_UDP_FLOWS`): set-associative arrays the XDP
//! program and the daemon both address through this module, so they cannot disagree on
//! where a flow lives.
//!
//! Why not the kernel's LRU hash. A miss in a full LRU hash walks a bucket of cold
//! elements, and an insert pops a free element off the CPU's LRU list, which with the
//! table full means shrinking the list and unlinking an evicted element from its own
//! bucket under that bucket's lock: 300–500 ns of a new flow's ~950 ns here, most of it
//! cache misses (see `perf-lab/README.md`). A set here is one header line (eight tags and
//! eight last-use stamps) in front of eight 64-byte entries: a miss reads the header only,
//! a hit the header and one entry, and an insert overwrites the way the header names
//! oldest, with no lock, list or allocation.
//!
//! Ways are written by every CPU (a flow's packets normally come to one CPU, but flows of
//! one set do not), without a lock. A torn entry (two CPUs writing one way at once) is
//! caught by `check`, which binds the entry's backend to its key: a reader that matches
//! the key recomputes it and treats a mismatch as a miss (the flow is picked again).
//! The daemon deletes ways by clearing their tags (a set's read-modify-write, see
//! `lb-daemon/src/maps/flow_tables.rs`).

use crate::FlowKey;

/// One entry of a flow table: the flow, its backend (id and the generation it had when
/// recorded, so a reused id is not followed) and the check word (see the module docs).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEntry {
    pub key: FlowKey,
    pub backend_id: u32,
    pub backend_generation: u32,
    /// [`FlowSlot::check`] of the key's slot and this backend.
    pub check: u32,
    /// Zero: the entry fills one 64-byte cache line with no implicit padding.
    pub _pad: [u32; 3],
}
const _: () = assert!(core::mem::size_of::<FlowEntry>() == 64);

/// A flow-table write the slow path leaves for after its packet is sent (one per CPU,
/// `LB_FLOW_PENDING`; see `xdp/src/flow.rs`, `record`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowPending {
    pub key: FlowKey,
    pub backend_id: u32,
    pub backend_generation: u32,
    /// 1 while a write waits.
    pub pending: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FlowPending>() == 56);

/// One element of a flow table's array: a set of [`FlowSet::WAYS`] entries behind a header
/// line, and room to start both on cache lines.
///
/// Layout for `skew` (`LbConfig::flow_cache_skew`: the kernel puts an array's values
/// after its header, 312 bytes on 6.18, so an element starts `64 - skew` bytes into a
/// line; the element size is a multiple of 64, so every element has the same skew):
/// - `skew + 4 * way`: the way's tag, 0 for an empty way (see [`FlowSlot::tag`]);
/// - `skew + 32 + 4 * way`: the way's stamp, the low 32 bits of `jiffies` when the flow
///   was last recorded or found (the oldest way is the one an insert replaces);
/// - `skew + 64 + 64 * way`: the way's [`FlowEntry`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlowSet {
    pub words: [u64; FlowSet::WORDS],
}

impl FlowSet {
    pub const WAYS: usize = 8;
    /// Header line, entries, and one line of room for the skew.
    const WORDS: usize = (2 + Self::WAYS) * 8;
    pub const BYTES: usize = Self::WORDS * 8;

    /// Sets of a table of `entries` entries (rounded up to whole sets).
    pub const fn sets(entries: u32) -> u32 {
        entries.div_ceil(Self::WAYS as u32)
    }

    /// Entries a table of `sets` sets holds.
    pub const fn entries(sets: u32) -> u32 {
        sets.saturating_mul(Self::WAYS as u32)
    }

    pub const fn tag_offset(skew: u32, way: usize) -> usize {
        (skew & 63) as usize + 4 * way
    }

    pub const fn stamp_offset(skew: u32, way: usize) -> usize {
        (skew & 63) as usize + 32 + 4 * way
    }

    pub const fn entry_offset(skew: u32, way: usize) -> usize {
        (skew & 63) as usize + 64 + 64 * way
    }

    /// Way `way`'s tag in a set read out of the kernel.
    #[cfg(feature = "user")]
    pub fn tag(&self, skew: u32, way: usize) -> u32 {
        self.read(Self::tag_offset(skew, way % Self::WAYS))
    }

    /// Empties way `way` (the daemon's delete).
    #[cfg(feature = "user")]
    pub fn clear(&mut self, skew: u32, way: usize) {
        let offset = Self::tag_offset(skew, way % Self::WAYS);
        self.bytes_mut()[offset..offset + 4].fill(0);
    }

    /// Way `way`'s entry in a set read out of the kernel.
    #[cfg(feature = "user")]
    pub fn entry(&self, skew: u32, way: usize) -> FlowEntry {
        self.read(Self::entry_offset(skew, way % Self::WAYS))
    }

    /// Way `way`'s entry, if the way holds one that is whole (its check holds for `seed`).
    #[cfg(feature = "user")]
    pub fn valid_entry(&self, skew: u32, way: usize, seed: u32) -> Option<FlowEntry> {
        let tag = self.tag(skew, way);
        if tag == 0 {
            return None;
        }
        let entry = self.entry(skew, way);
        let slot = FlowSlot::of(&entry.key, seed, 1);
        (slot.tag == tag && slot.check(entry.backend_id, entry.backend_generation) == entry.check)
            .then_some(entry)
    }

    /// The way holding a whole entry of flow `key`, and that entry (the datapath's
    /// lookup, for a set read out of the kernel).
    #[cfg(feature = "user")]
    pub fn find(&self, skew: u32, seed: u32, key: &FlowKey) -> Option<(usize, FlowEntry)> {
        (0..Self::WAYS).find_map(|way| {
            self.valid_entry(skew, way, seed)
                .filter(|entry| entry.key == *key)
                .map(|entry| (way, entry))
        })
    }

    /// A set's value with `entry` in way `way` (tag and stamp included): how tests and
    /// benchmarks plant entries the datapath will find.
    #[cfg(feature = "user")]
    pub fn with_entry(mut self, skew: u32, way: usize, slot: &FlowSlot, entry: &FlowEntry) -> Self {
        let way = way % Self::WAYS;
        let entry = FlowEntry {
            check: slot.check(entry.backend_id, entry.backend_generation),
            ..*entry
        };
        self.write(Self::entry_offset(skew, way), &entry);
        self.write(Self::tag_offset(skew, way), &slot.tag);
        self
    }

    #[cfg(feature = "user")]
    fn read<T: Copy>(&self, offset: usize) -> T {
        let bytes = &self.bytes()[offset..offset + core::mem::size_of::<T>()];
        // SAFETY: in bounds; T is plain data valid for any bytes, read unaligned.
        unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) }
    }

    #[cfg(feature = "user")]
    fn write<T: Copy>(&mut self, offset: usize, value: &T) {
        let bytes = &mut self.bytes_mut()[offset..offset + core::mem::size_of::<T>()];
        // SAFETY: in bounds; written unaligned.
        unsafe { core::ptr::write_unaligned(bytes.as_mut_ptr().cast(), *value) }
    }

    #[cfg(feature = "user")]
    fn bytes(&self) -> &[u8] {
        // SAFETY: plain u64 words, viewed as their bytes.
        unsafe { core::slice::from_raw_parts(self.words.as_ptr().cast(), Self::BYTES) }
    }

    #[cfg(feature = "user")]
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`.
        unsafe { core::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast(), Self::BYTES) }
    }
}

impl Default for FlowSet {
    fn default() -> Self {
        Self {
            words: [0; Self::WORDS],
        }
    }
}

// Any skew leaves the header and all ways inside the element.
const _: () = assert!(FlowSet::entry_offset(63, FlowSet::WAYS - 1) + 64 <= FlowSet::BYTES);
const _: () = assert!(FlowSet::BYTES.is_multiple_of(64));

/// Where a flow lives in its table and how its ways are recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSlot {
    /// The set: an index into the table's array.
    pub set: u32,
    /// Never 0 (an empty way's tag).
    pub tag: u32,
    /// The key's hash, which the check word folds in.
    hash: u64,
}

/// Odd constant of the check word's mix.
const CHECK_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl FlowSlot {
    /// Flow `key`'s slot in a table of `sets` sets, for the table seed `seed`
    /// (`LbConfig::flow_table_seed`). The set comes from the hash's high half (a multiply
    /// and shift: an even spread over any count), the tag from bits below it.
    #[inline(always)]
    pub fn of(key: &FlowKey, seed: u32, sets: u32) -> Self {
        let hash = key.cache_hash(seed);
        FlowSlot {
            set: (((hash >> 32) * u64::from(sets)) >> 32) as u32,
            tag: (hash >> 8) as u32 | 1,
            hash,
        }
    }

    /// This slot's byte in the SYN filter ([`SynFilter`]): 8 bits of the tag above its
    /// lowest (which is always 1), never 0.
    #[inline(always)]
    pub fn filter_byte(&self) -> u8 {
        SynFilter::byte(self.tag)
    }

    /// The check word of an entry of this slot naming `backend_id` at `generation`.
    #[inline(always)]
    pub fn check(&self, backend_id: u32, generation: u32) -> u32 {
        let backend = (u64::from(backend_id) << 32) | u64::from(generation);
        ((self.hash ^ backend).wrapping_mul(CHECK_MULTIPLIER) >> 32) as u32
    }
}

/// The SYN filter of the TCP table (`LB_FLOW_FILTER`): one 8-byte word per set, byte
/// `way` holding [`FlowSlot::filter_byte`] of the flow last written into that way (0 for
/// a way never written).
///
/// Why. A TCP SYN without ACK follows a live entry of its tuple (a reused tuple stays on
/// its backend, see `select` in `xdp/src/balance.rs`), so every SYN looked its set up. A
/// SYN's tuple is almost always new, and its set's header line is cold: reading it was
/// ~150 ns of a ~230 ns SYN here, the new-flow path's largest cost. The filter is 1/80 of
/// the table (256 KiB for the default 262,144 entries), read by every SYN and so kept in
/// the CPU's caches; a SYN whose byte is in no way of its set's word skips the table.
///
/// Exactness. Every datapath write of a way writes the way's byte after its entry and
/// tag, so a way the table holds has its byte (no false negative), except where two CPUs
/// write one way at once: the byte may then name the other flow, the race that can
/// already tear that way's entry (see the module docs), and its SYN is picked by Maglev as
/// a torn entry's flow would be. A way the daemon clears keeps its byte until the way is
/// written again: a false positive, which only costs that SYN the header read. One byte
/// in 128 values (the lowest bit is always set) matches by chance: about one SYN in 16
/// reads the header anyway with all eight ways full.
pub struct SynFilter;

impl SynFilter {
    /// The byte of a way whose tag is `tag`: 8 bits above the tag's lowest (which is
    /// always 1), never 0.
    #[inline(always)]
    pub const fn byte(tag: u32) -> u8 {
        (tag >> 8) as u8 | 1
    }

    /// The word of a set whose ways' tags are `tags` (0 for an empty way), as the datapath
    /// leaves it: how the loader rebuilds a filter for a table that has none.
    pub fn word(tags: impl IntoIterator<Item = u32>) -> u64 {
        tags.into_iter()
            .take(FlowSet::WAYS)
            .enumerate()
            .filter(|&(_, tag)| tag != 0)
            .fold(0, |word, (way, tag)| {
                word | u64::from(Self::byte(tag)) << (8 * way)
            })
    }

    /// Whether any byte of `word` is `byte`: the zero-byte test over `word` with `byte`
    /// xored into every lane (exact, no false answers either way).
    #[inline(always)]
    pub fn may_hold(word: u64, byte: u8) -> bool {
        const LOW: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let lanes = word ^ (u64::from(byte) * LOW);
        lanes.wrapping_sub(LOW) & !lanes & HIGH != 0
    }
}

#[cfg(all(test, feature = "user"))]
mod tests {
    extern crate std;

    use super::*;
    use crate::{v4_addr, FAMILY_V4, PROTO_TCP};

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src: v4_addr([198, 18, 0, 9]),
            dst: v4_addr([198, 18, 100, 1]),
            sport_be: sport.to_be(),
            dport_be: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }

    fn entry(sport: u16, backend_id: u32) -> FlowEntry {
        FlowEntry {
            key: key(sport),
            backend_id,
            backend_generation: 3,
            ..FlowEntry::default()
        }
    }

    #[test]
    fn sizes_round_up_to_whole_sets() {
        assert_eq!(FlowSet::sets(262_144), 32_768);
        assert_eq!(FlowSet::sets(9), 2);
        assert_eq!(FlowSet::entries(FlowSet::sets(9)), 16);
    }

    #[test]
    fn a_planted_entry_reads_back_whole_for_every_skew() {
        for skew in [0, 8, 56, 63] {
            let slot = FlowSlot::of(&key(1000), 7, 100);
            assert!(slot.set < 100);
            assert_ne!(slot.tag, 0);
            let set = FlowSet::default().with_entry(skew, 5, &slot, &entry(1000, 42));
            let found = set.valid_entry(skew, 5, 7).expect("the planted entry");
            assert_eq!((found.key, found.backend_id), (key(1000), 42));
            assert!((0..FlowSet::WAYS)
                .filter(|&w| w != 5)
                .all(|w| set.valid_entry(skew, w, 7).is_none()));
        }
    }

    /// Two CPUs writing one way at once can leave one flow's key beside another's
    /// backend: the check word must not hold for it, nor under another seed.
    #[test]
    fn a_torn_entry_or_a_foreign_seed_is_not_valid() {
        let slot = FlowSlot::of(&key(1000), 7, 100);
        let mut set = FlowSet::default().with_entry(8, 0, &slot, &entry(1000, 42));
        assert!(set.valid_entry(8, 0, 8).is_none(), "another seed");
        let torn = FlowEntry {
            backend_id: 43,
            ..set.entry(8, 0)
        };
        set.write(FlowSet::entry_offset(8, 0), &torn);
        assert!(set.valid_entry(8, 0, 7).is_none(), "torn");
        set.clear(8, 0);
        assert_eq!(set.tag(8, 0), 0);
    }

    /// 200,000 flows of a few clients over 32,768 eight-way sets (a table of 262,144):
    /// the flows past their set's eighth way (evicted before the table is full) must be
    /// about what a uniform hash leaves, Poisson(200,000 / 32,768) per set.
    #[test]
    fn one_clients_flows_spread_over_the_sets() {
        const FLOWS: u32 = 200_000;
        let sets = FlowSet::sets(262_144);
        let mut load = std::vec![0u32; sets as usize];
        for i in 0..FLOWS {
            let k = FlowKey {
                src: v4_addr((0xc612_0000 + (i >> 16)).to_be_bytes()),
                ..key(i as u16)
            };
            load[FlowSlot::of(&k, 0x5eed, sets).set as usize] += 1;
        }
        let over: u32 = load.iter().map(|&n| n.saturating_sub(8)).sum();
        let lambda = f64::from(FLOWS) / f64::from(sets);
        let (mut p, mut expected) = ((-lambda).exp(), 0.0);
        for n in 1..64 {
            p *= lambda / f64::from(n);
            if n > 8 {
                expected += f64::from(n - 8) * p;
            }
        }
        let expected = expected * f64::from(sets);
        std::println!(
            "{over} of {FLOWS} flows past their set's eight ways; uniform: {expected:.0}"
        );
        assert!(
            f64::from(over) < expected * 1.1,
            "{over} flows past their set's ways"
        );
    }

    /// The filter answers exactly: a word holds a byte if and only if one of its lanes is
    /// that byte, whatever the other lanes hold.
    #[test]
    fn the_syn_filter_test_is_exact() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            state = state.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(7);
            let word = state;
            let byte = (state >> 29) as u8;
            let expected = word.to_le_bytes().contains(&byte);
            assert_eq!(
                SynFilter::may_hold(word, byte),
                expected,
                "{word:#x} {byte:#x}"
            );
            for lane in 0..8 {
                let mut bytes = word.to_le_bytes();
                bytes[lane] = byte;
                assert!(SynFilter::may_hold(u64::from_le_bytes(bytes), byte));
            }
        }
    }

    /// A set's word from its tags names every way written and nothing for empty ways; a
    /// flow's own byte is found in it.
    #[test]
    fn the_syn_filter_word_names_the_sets_flows() {
        let slots: std::vec::Vec<FlowSlot> = (0..4)
            .map(|i| FlowSlot::of(&key(40_000 + i), 7, 64))
            .collect();
        let mut tags = [0u32; FlowSet::WAYS];
        for (way, slot) in slots.iter().enumerate() {
            tags[way * 2] = slot.tag;
        }
        let word = SynFilter::word(tags);
        for slot in &slots {
            assert_ne!(slot.filter_byte(), 0);
            assert!(SynFilter::may_hold(word, slot.filter_byte()));
        }
        for (way, tag) in tags.iter().enumerate() {
            let lane = (word >> (8 * way)) as u8;
            assert_eq!(lane == 0, *tag == 0, "way {way}");
        }
        assert_eq!(SynFilter::word([0; FlowSet::WAYS]), 0);
    }
}
