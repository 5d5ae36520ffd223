//! The Maglev slot array (`LB_MAGLEV`) mapped into the daemon's memory. The array is
//! created `BPF_F_MMAPABLE`, so a table is written with plain stores instead of a syscall
//! that copies it word by word: a 10k-service first sync writes 20 MB of slots, which cost
//! most of its map-writing time as batch updates. Each word is stored whole (an aligned
//! 8-byte atomic store), as a packet on another CPU may read it at the same time; regions
//! being written are ones no service record names yet (make-before-break, see `planner`).
//!
//! An array pinned by an older build without the flag cannot be mapped: the writer then
//! keeps using batch updates.

use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{fence, AtomicU64, Ordering},
};

use aya::maps::MapData;

/// A shared, writable mapping of the whole slot array.
pub(super) struct SlotWindow {
    words: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics; the window
// owns it (unmapped on drop) and may move to another thread with the writer.
unsafe impl Send for SlotWindow {}

impl SlotWindow {
    /// Maps `map` (the slot array of `words` 8-byte elements); `None` when the kernel
    /// refuses (an array created without `BPF_F_MMAPABLE`).
    pub(super) fn map(map: &MapData, words: u32) -> Option<Self> {
        let len = words as usize;
        if len == 0 {
            return None;
        }
        let bytes = len * std::mem::size_of::<u64>();
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks the length
        // against the array and the flag, and we only keep the pointer on success.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        Some(Self {
            words: NonNull::new(ptr.cast::<AtomicU64>())?,
            len,
        })
    }

    /// Stores `words` from word index `first` on; `false` (nothing written) when they do
    /// not fit the array, for the caller to report through the syscall path.
    pub(super) fn write(&self, first: u32, words: impl ExactSizeIterator<Item = u64>) -> bool {
        let first = first as usize;
        if first
            .checked_add(words.len())
            .is_none_or(|end| end > self.len)
        {
            return false;
        }
        for (i, word) in words.enumerate() {
            // SAFETY: first + i < len (checked above), inside the live mapping; the
            // element is 8-byte aligned (page-aligned mapping of an array of u64).
            let element = unsafe { &*self.words.as_ptr().add(first + i) };
            element.store(word, Ordering::Relaxed);
        }
        // Every slot is visible before whatever the caller writes next (the service
        // record that switches to this region).
        fence(Ordering::Release);
        true
    }
}

impl Drop for SlotWindow {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` created; no reference outlives `self`.
        unsafe {
            libc::munmap(
                self.words.as_ptr().cast(),
                self.len * std::mem::size_of::<u64>(),
            );
        }
    }
}
