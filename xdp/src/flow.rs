//! The flow table: an established flow stays on its backend when the backend set or the
//! Maglev table changes, as long as that backend is still live. Entries are written by a
//! flow's first packet that is not a TCP SYN without ACK (see `select` in balance.rs).
//!
//! In front of the LRU hash sits a per-CPU direct-mapped cache indexed by the flow hash
//! (`LB_FLOW_CACHE`, see `FlowCacheEntry`): a hit reads one 64-byte line and compares the
//! key, where the LRU hashes 40 bytes and walks a bucket of cold elements. The cache only
//! copies what the table holds, and every `FLOW_CACHE_TOUCH_EVERY`-th hit of an entry goes
//! to the table too, so the LRU keeps the flows the cache serves (re-learning one it
//! evicted meanwhile, with the backend the flow already has).

use lb_common::{
    v4_addr, BackendValue, FlowCacheEntry, FlowKey, FlowValue, FAMILY_V4, FLOW_CACHE_TOUCH_EVERY,
};

use crate::{
    lookup,
    maps::{FLOWS, FLOW_CACHE},
    parse::Ipv4Packet,
};

#[inline(always)]
pub fn key(pkt: &Ipv4Packet) -> FlowKey {
    FlowKey {
        src: v4_addr(pkt.saddr),
        dst: v4_addr(pkt.daddr),
        sport_be: pkt.sport_be,
        dport_be: pkt.dport_be,
        proto: pkt.proto,
        family: FAMILY_V4,
        _pad: [0; 2],
    }
}

/// This CPU's cache entry for flow hash `hash`.
#[inline(always)]
fn cache_entry(hash: u32) -> Option<*mut FlowCacheEntry> {
    FLOW_CACHE.get_ptr_mut(hash & (lb_common::limits::FLOW_CACHE_ENTRIES - 1))
}

/// The key compared as five 8-byte words (no byte loop, no `memcmp`).
#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    // SAFETY: FlowKey is 40 bytes of plain data with no padding bytes of its own, aligned
    // to 8 (`repr(C, align(8))`), so it reads as five aligned u64 words.
    unsafe {
        let a = &*(a as *const FlowKey as *const [u64; 5]);
        let b = &*(b as *const FlowKey as *const [u64; 5]);
        (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) == 0
    }
}

/// The backend this flow already uses, if it is still the same live backend. `hash` is
/// the flow hash (it indexes the cache), `epoch` the config's `flow_epoch`.
#[inline(always)]
pub fn lookup(key: &FlowKey, hash: u32, epoch: u32) -> Option<(u32, BackendValue)> {
    let slot = cache_entry(hash)?;
    // SAFETY: this CPU's entry; only this CPU writes it, and not while this program runs
    // on it (XDP programs do not nest on one CPU).
    let cached = unsafe { &mut *slot };
    if cached.epoch == epoch && same_key(&cached.key, key) {
        cached.hits = cached.hits.wrapping_add(1);
        if cached.hits & (FLOW_CACHE_TOUCH_EVERY - 1) != 0 {
            let backend = lookup::backend(cached.backend_id)?;
            if backend.generation == cached.backend_generation {
                return Some((cached.backend_id, backend));
            }
            return None;
        }
        // Touch the table: the LRU keeps the flow; if it evicted it, learn it again.
        let (id, generation) = (cached.backend_id, cached.backend_generation);
        let backend = lookup::backend(id)?;
        if backend.generation != generation {
            return None;
        }
        // SAFETY: copied out at once (see below).
        if unsafe { FLOWS.get(key) }.is_none() {
            let value = FlowValue {
                backend_id: id,
                backend_generation: generation,
            };
            let _ = FLOWS.insert(key, value, 0);
        }
        return Some((id, backend));
    }
    // SAFETY: copied out at once; a concurrent LRU eviction can at worst hand us a recycled
    // entry, which the generation check below rejects or which names a valid backend.
    let entry = unsafe { FLOWS.get(key).copied() }?;
    let backend = lookup::backend(entry.backend_id)?;
    if backend.generation != entry.backend_generation {
        return None;
    }
    fill(
        cached,
        key,
        entry.backend_id,
        entry.backend_generation,
        epoch,
    );
    Some((entry.backend_id, backend))
}

#[inline(always)]
fn fill(cached: &mut FlowCacheEntry, key: &FlowKey, id: u32, generation: u32, epoch: u32) {
    cached.key = *key;
    cached.backend_id = id;
    cached.backend_generation = generation;
    cached.epoch = epoch;
    cached.hits = 0;
}

/// Records the flow's backend in the table. Not in the cache: a flow enters the cache at
/// its next packet (a table hit), so flows of one packet (a scan, a flood of ACKs) never
/// push established flows out of it.
#[inline(always)]
pub fn record(key: &FlowKey, backend_id: u32, backend: &BackendValue) {
    let value = FlowValue {
        backend_id,
        backend_generation: backend.generation,
    };
    // A full LRU evicts its oldest entry; an error here only costs the flow its stickiness.
    let _ = FLOWS.insert(key, value, 0);
}
