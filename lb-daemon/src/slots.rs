//! Allocation of Maglev table regions inside the one big slot array. Freed regions wait in
//! quarantine until the next sync, so a packet that read a service just before its table
//! moved never sees another service's table being written into the old place.
//!
//! Regions start on a word boundary of the slot array and are rounded up to whole words
//! (`lb_common::maglev_words`: four slots share an 8-byte element), so each word belongs
//! to one table and a table is written word by word.

use std::collections::BTreeMap;

use lb_common::maglev_words::SLOTS_PER_WORD;

/// `len` rounded up to whole words.
fn in_words(len: u32) -> u32 {
    len.next_multiple_of(SLOTS_PER_WORD)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotAllocator {
    capacity: u32,
    /// start → length of each free run, never adjacent to another (coalesced).
    free: BTreeMap<u32, u32>,
    quarantine: Vec<(u32, u32)>,
}

impl SlotAllocator {
    /// `capacity` slots, rounded down to whole words.
    pub fn new(capacity: u32) -> Self {
        let capacity = capacity - capacity % SLOTS_PER_WORD;
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self {
            capacity,
            free,
            quarantine: Vec::new(),
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn free_slots(&self) -> u64 {
        self.free.values().map(|&len| u64::from(len)).sum()
    }

    /// First fit. `None` when no free run is long enough.
    pub fn allocate(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return Some(0);
        }
        let len = in_words(len);
        let (&start, &run) = self.free.iter().find(|(_, &run)| run >= len)?;
        self.free.remove(&start);
        if run > len {
            self.free.insert(start + len, run - len);
        }
        Some(start)
    }

    /// Marks `[start, start + len)` as used; for rebuilding the allocator from pinned maps.
    /// Returns false if the range is not entirely free (overlapping or out of range).
    pub fn reserve(&mut self, start: u32, len: u32) -> bool {
        if len == 0 {
            return true;
        }
        if !start.is_multiple_of(SLOTS_PER_WORD) {
            return false;
        }
        let Some(end) = start.checked_add(in_words(len)) else {
            return false;
        };
        let Some((&run_start, &run_len)) = self.free.range(..=start).next_back() else {
            return false;
        };
        let run_end = run_start + run_len;
        if end > run_end {
            return false;
        }
        self.free.remove(&run_start);
        if start > run_start {
            self.free.insert(run_start, start - run_start);
        }
        if run_end > end {
            self.free.insert(end, run_end - end);
        }
        true
    }

    /// The region becomes reusable after the next `release_quarantine`.
    pub fn release_later(&mut self, start: u32, len: u32) {
        if len > 0 {
            self.quarantine.push((start, in_words(len)));
        }
    }

    pub fn release_quarantine(&mut self) {
        for (start, len) in std::mem::take(&mut self.quarantine) {
            self.insert_free(start, len);
        }
    }

    fn insert_free(&mut self, mut start: u32, mut len: u32) {
        if let Some((&prev_start, &prev_len)) = self.free.range(..start).next_back() {
            if prev_start + prev_len == start {
                self.free.remove(&prev_start);
                start = prev_start;
                len += prev_len;
            }
        }
        if let Some(&next_len) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += next_len;
        }
        self.free.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_free_coalesce() {
        let mut a = SlotAllocator::new(100);
        let x = a.allocate(28).unwrap();
        let y = a.allocate(28).unwrap();
        let z = a.allocate(44).unwrap();
        assert_eq!((x, y, z), (0, 28, 56));
        assert_eq!(a.allocate(1), None);
        a.release_later(y, 28);
        assert_eq!(a.allocate(1), None, "quarantined slots are not reused yet");
        a.release_quarantine();
        a.release_later(x, 28);
        a.release_later(z, 44);
        a.release_quarantine();
        assert_eq!(a.free_slots(), 100);
        assert_eq!(a.allocate(100), Some(0), "runs were coalesced");
    }

    #[test]
    fn regions_are_whole_words() {
        let mut a = SlotAllocator::new(103);
        assert_eq!(a.capacity(), 100, "rounded down to whole words");
        assert_eq!(a.allocate(30), Some(0));
        assert_eq!(a.allocate(1), Some(32), "30 slots take 8 words");
        assert_eq!(a.free_slots(), 64);
        a.release_later(0, 30);
        a.release_quarantine();
        assert_eq!(a.free_slots(), 96);
        assert!(!a.reserve(2, 4), "a region starts on a word");
    }

    #[test]
    fn reserve_rebuilds_usage() {
        let mut a = SlotAllocator::new(100);
        assert!(a.reserve(12, 20));
        assert!(!a.reserve(16, 4), "overlap is refused");
        assert!(a.reserve(52, 48));
        assert!(!a.reserve(100, 4), "out of range is refused");
        assert_eq!(a.allocate(12), Some(0));
        assert_eq!(a.allocate(20), Some(32));
        assert_eq!(a.allocate(1), None);
    }
}
