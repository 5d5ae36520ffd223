//! The flow table: an established flow stays on its backend when the backend set or the
//! Maglev table changes, as long as that backend is still live. Entries are written by a
//! flow's first packet that is not a TCP SYN without ACK (see `select` in balance.rs).
//!
//! In front of the LRU hash sits the flow cache of the fast path (`fastpath`): a hit
//! reads one 64-byte line and compares the key, where the LRU hashes 40 bytes and walks a
//! bucket of cold elements. The cache only copies what the table holds, and every
//! `FLOW_CACHE_TOUCH_EVERY`-th hit of a cached flow touches the table ([`keep`]), so the
//! LRU keeps the flows the cache serves (re-learning one it evicted meanwhile, with the
//! backend the flow already has).
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
    v4_addr, BackendValue, FlowEvent, FlowKey, FlowValue, LbConfig, FAMILY_V4, PROTO_UDP,
};

use crate::{
    lookup,
    maps::{FLOWS, FLOW_BUDGET, FLOW_STATS, UDP_FLOWS},
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

/// The backend this flow already uses, if it is still the same live backend.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Option<(u32, BackendValue)> {
    // SAFETY: copied out at once; a concurrent LRU eviction can at worst hand us a recycled
    // entry, which the generation check below rejects or which names a valid backend.
    let entry = unsafe { table(key).get(key).copied() }?;
    let backend = lookup::backend(entry.backend_id)?;
    if backend.generation != entry.backend_generation {
        return None;
    }
    Some((entry.backend_id, backend))
}

/// Touches the flow's table entry so the LRU keeps a flow the flow cache serves; if the
/// LRU evicted it meanwhile, learns it again with the backend the flow already has.
#[inline(always)]
pub fn keep(key: &FlowKey, backend_id: u32, backend_generation: u32) {
    let table = table(key);
    // SAFETY: only presence matters; the value is not read.
    if unsafe { table.get(key) }.is_some() {
        return;
    }
    let value = FlowValue {
        backend_id,
        backend_generation,
    };
    // Not against the budget: the flow is established (the cache served it).
    if table.insert(key, value, BPF_NOEXIST).is_ok() {
        count(recorded(key));
        count(FlowEvent::Relearned);
    }
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
