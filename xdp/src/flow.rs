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
//!
//! Pressure. An LRU evicts the entries touched longest ago, and nothing is colder than an
//! idle established connection: in one table, a burst of new flows (300k UDP flows in
//! the finding that led here) evicted idle TCP connections' entries, and a backend change
//! then moved them. So each protocol has its own table (TCP `LB_FLOWS`, UDP
//! `LB_UDP_FLOWS`; a UDP flood cannot evict a TCP entry, and a TCP entry is written only
//! by a packet that is not a bare SYN), and new entries spend a per-CPU insert budget
//! (`rate`, `LbConfig::new_flow_rate_per_s`): above it a new flow is forwarded by Maglev
//! without an entry, as Katran does above its new-connection rate, so a flood inside one
//! protocol churns its table at a bounded pace. Every insert and skip is counted in
//! `LB_FLOW_STATS` (`FlowEvent`), from which the daemon derives evictions.

use aya_ebpf::maps::LruHashMap;
use lb_common::{
    v4_addr, BackendValue, FlowCacheEntry, FlowEvent, FlowKey, FlowValue, LbConfig, FAMILY_V4,
    FLOW_CACHE_TOUCH_EVERY, PROTO_UDP,
};

use crate::{
    lookup,
    maps::{FLOWS, FLOW_BUDGET, FLOW_CACHE, FLOW_STATS, UDP_FLOWS},
    parse::Ipv4Packet,
    rate,
};

/// `bpf_map_update_elem` flags: insert only a key the map does not hold / only update one
/// it does.
const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;
/// What an insert of a key the map holds returns with `BPF_NOEXIST`.
const EEXIST: i32 = 17;

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

/// The flow's table: its protocol's.
#[inline(always)]
fn table(key: &FlowKey) -> &'static LruHashMap<FlowKey, FlowValue> {
    if key.proto == PROTO_UDP {
        &UDP_FLOWS
    } else {
        &FLOWS
    }
}

#[inline(always)]
fn count(event: FlowEvent) {
    if let Some(counter) = FLOW_STATS.get_ptr_mut(event as u32) {
        // SAFETY: this CPU's slot; only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn recorded(key: &FlowKey) -> FlowEvent {
    if key.proto == PROTO_UDP {
        FlowEvent::UdpRecorded
    } else {
        FlowEvent::TcpRecorded
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
        let table = table(key);
        // SAFETY: copied out at once (see below).
        if unsafe { table.get(key) }.is_none() {
            let value = FlowValue {
                backend_id: id,
                backend_generation: generation,
            };
            // Not against the budget: the flow is established (the cache served it).
            if table.insert(key, value, BPF_NOEXIST).is_ok() {
                count(recorded(key));
                count(FlowEvent::Relearned);
            }
        }
        return Some((id, backend));
    }
    // SAFETY: copied out at once; a concurrent LRU eviction can at worst hand us a recycled
    // entry, which the generation check below rejects or which names a valid backend.
    let entry = unsafe { table(key).get(key).copied() }?;
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

/// Records the flow's backend in its table, if this CPU's new-flow budget allows. Not in
/// the cache: a flow enters the cache at its next packet (a table hit), so flows of one
/// packet (a scan, a flood of ACKs) never push established flows out of it.
#[inline(always)]
pub fn record(key: &FlowKey, backend_id: u32, backend: &BackendValue, config: &LbConfig) {
    let rate_per_s = config.new_flow_rate_per_s;
    if rate_per_s != 0 && !rate::take(&FLOW_BUDGET, rate_per_s, config.new_flow_burst) {
        count(FlowEvent::OverBudget);
        return;
    }
    let value = FlowValue {
        backend_id,
        backend_generation: backend.generation,
    };
    let table = table(key);
    // A full LRU evicts its oldest entry; an error here only costs the flow its
    // stickiness. `NOEXIST` first, so only keys the table did not hold count as recorded
    // (the daemon's eviction figure depends on it).
    match table.insert(key, value, BPF_NOEXIST) {
        Ok(()) => count(recorded(key)),
        // Its backend is gone or changed (or another CPU was first): rewrite it.
        Err(e) if e == -EEXIST => match table.insert(key, value, BPF_EXIST) {
            Ok(()) => count(FlowEvent::Replaced),
            Err(_) => count(FlowEvent::RecordFailed),
        },
        Err(_) => count(FlowEvent::RecordFailed),
    }
}
