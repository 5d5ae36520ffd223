//! The flow table: an established flow stays on its backend when the backend set or the
//! Maglev table changes, as long as that backend is still live. Entries are written by a
//! flow's first packet that is not a TCP SYN without ACK (see `select` in balance.rs).
//!
//! A table is an array of sets of eight ways (`lb_common::FlowSet`, whose docs say why
//! not the kernel's LRU hash): a flow's set and tag come from a keyed hash of its tuple
//! (`FlowSlot`), a lookup reads the set's header line and the entry of a way whose tag
//! matches, and an insert replaces the set's empty or least recently used way (each way's
//! stamp is the `jiffies` of its last record or lookup), so a set evicts as an LRU would,
//! among eight flows instead of all.
//!
//! Beside the TCP table sits its SYN filter (`FLOW_FILTER`, `lb_common::SynFilter`): a
//! SYN, which only reads the table, skips it when its set's filter word says no way
//! holds its flow; every write of a TCP way writes its byte.
//!
//! In front of the tables sits the flow cache of the fast path (`fastpath`), per CPU:
//! the cache only copies what a table holds, and every `FLOW_CACHE_TOUCH_EVERY`-th hit
//! of a cached flow touches its table entry ([`keep`]), so the table keeps the flows the
//! cache serves (re-learning one it evicted meanwhile, with the backend the flow already
//! has).
//!
//! Pressure. Eviction takes the way used longest ago, and nothing is colder than an
//! idle established connection: in one table, a burst of new flows (300k UDP flows in
//! the finding that led here) evicted idle TCP connections' entries, and a backend change
//! then moved them. So each protocol has its own table (TCP `LB_FLOWS`, UDP
//! `LB_UDP_FLOWS`; a UDP flood cannot evict a TCP entry, and a TCP entry is written only
//! by a packet that is not a bare SYN), and new entries spend a per-CPU insert budget
//! (`rate`, `LbConfig::new_flow_rate_per_s`): above it a new flow is forwarded by Maglev
//! without an entry, as Katran does above its new-connection rate, so a flood inside one
//! protocol churns its table at a bounded pace. Every insert and skip is counted in
//! `LB_FLOW_STATS` (`FlowEvent`), from which the daemon derives evictions.

use aya_ebpf::{helpers::bpf_jiffies64, maps::Array};
use lb_common::{
    v4_addr, BackendValue, FlowEntry, FlowEvent, FlowKey, FlowSet, FlowSlot, LbConfig, SynFilter,
    FAMILY_V4, PROTO_UDP,
};

use crate::{
    lookup,
    maps::{FLOWS, FLOW_BUDGET, FLOW_FILTER, FLOW_PENDING, FLOW_STATS, UDP_FLOWS},
    parse::Ipv4Packet,
    rate,
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

/// Element `index` of a flow table. Each table's lookup must stay a call site of its own:
/// the verifier inlines an array lookup (a bounds check and an add) only where one map
/// reaches the call, and a lookup shared by both tables was a call into the kernel's
/// `array_map_lookup_elem` on every SYN and first packet (the object has one lookup
/// per table in each caller: `llvm-objdump -dr` shows the relocations).
#[inline(always)]
fn element(table: &Array<FlowSet>, index: u32) -> Option<*mut FlowSet> {
    table.get_ptr_mut(index)
}

/// One flow's set in its protocol's table, and its slot there.
struct Set {
    /// The set's header line (tags, then stamps); its ways follow it.
    header: *mut u8,
    slot: FlowSlot,
    /// Whether the set is the TCP table's, which has a SYN filter.
    tcp: bool,
}

impl Set {
    /// Flow `key`'s set: in its protocol's table (UDP's own, else TCP's), at the place
    /// `FlowSlot` names for the config's table seed and the table's size. `None` while
    /// the map writer has not sized the table.
    #[inline(always)]
    fn of(key: &FlowKey, config: &LbConfig) -> Option<Set> {
        let tcp = key.proto != PROTO_UDP;
        let sets = if tcp {
            config.tcp_flow_sets
        } else {
            config.udp_flow_sets
        };
        let slot = FlowSlot::of(key, config.flow_table_seed, sets);
        let value = if tcp {
            element(&FLOWS, slot.set)
        } else {
            element(&UDP_FLOWS, slot.set)
        }?
        .cast::<u8>();
        // Read back from the stack so the compiler cannot fold the mask into the offsets
        // below, which the verifier would then bound too loosely (as in `fastpath::set`).
        let skew = config.flow_cache_skew & 63;
        // SAFETY: a read of a local.
        let skew = unsafe { core::ptr::read_volatile(&skew) } as usize;
        if skew > 63 {
            return None;
        }
        // SAFETY: the header (at the skew) and every way lie inside the element for any
        // skew below 64 (asserted beside `FlowSet`).
        let header = unsafe { value.add(skew) };
        Some(Set { header, slot, tcp })
    }

    #[inline(always)]
    fn tag(&self, way: usize) -> *mut u32 {
        // SAFETY: inside the element (see `of`).
        unsafe { self.header.add(FlowSet::tag_offset(0, way)).cast() }
    }

    #[inline(always)]
    fn stamp(&self, way: usize) -> *mut u32 {
        // SAFETY: inside the element (see `of`).
        unsafe { self.header.add(FlowSet::stamp_offset(0, way)).cast() }
    }

    #[inline(always)]
    fn entry(&self, way: usize) -> *mut FlowEntry {
        // SAFETY: inside the element (see `of`).
        unsafe { self.header.add(FlowSet::entry_offset(0, way)).cast() }
    }

    /// The way holding `key`, if any: tags first (the header line), then the entry of a
    /// way whose tag matches.
    #[inline(always)]
    fn find(&self, key: &FlowKey) -> Option<usize> {
        (0..FlowSet::WAYS).find(|&way| {
            // SAFETY: inside the element; a racing writer can only make the compare fail
            // or match a key the check word then tests.
            unsafe { *self.tag(way) == self.slot.tag && (*self.entry(way)).key.same_as(key) }
        })
    }

    /// The way an insert replaces: an empty one, else the one used longest ago (from a
    /// way the tag picks, so ties do not always fall on way 0).
    #[inline(always)]
    fn victim(&self, now: u32) -> usize {
        let start = self.slot.tag as usize >> 1;
        let mut victim = start % FlowSet::WAYS;
        let mut oldest = 0u32;
        for i in 0..FlowSet::WAYS {
            let way = (start + i) % FlowSet::WAYS;
            // SAFETY: inside the element.
            if unsafe { *self.tag(way) } == 0 {
                return way;
            }
            // SAFETY: as above.
            let age = now.wrapping_sub(unsafe { *self.stamp(way) });
            if age > oldest {
                oldest = age;
                victim = way;
            }
        }
        victim
    }

    /// Marks `way` used now, writing its stamp only when it changes (a hot flow does not
    /// dirty its set's header every packet).
    #[inline(always)]
    fn touch(&self, way: usize, now: u32) {
        let stamp = self.stamp(way);
        // SAFETY: inside the element.
        unsafe {
            if *stamp != now {
                *stamp = now;
            }
        }
    }

    /// Whether the TCP table's SYN filter says the set may hold this slot's flow (see
    /// `SynFilter`); a set without a filter word may hold anything.
    #[inline(always)]
    fn may_hold(&self) -> bool {
        match FLOW_FILTER.get(self.slot.set) {
            Some(&word) => SynFilter::may_hold(word, self.slot.filter_byte()),
            None => true,
        }
    }

    /// Writes the flow into `way`: the entry first, then the tag that makes it findable,
    /// then (TCP) the way's byte of the SYN filter.
    #[inline(always)]
    fn write(&self, way: usize, key: &FlowKey, backend_id: u32, generation: u32, now: u32) {
        let entry = self.entry(way);
        // SAFETY: inside the element; a reader racing this write sees a key or check that
        // does not hold (a miss), never another flow's backend under its key.
        unsafe {
            (*entry).key = *key;
            (*entry).backend_id = backend_id;
            (*entry).backend_generation = generation;
            (*entry).check = self.slot.check(backend_id, generation);
            *self.tag(way) = self.slot.tag;
            *self.stamp(way) = now;
        }
        if self.tcp {
            if let Some(word) = FLOW_FILTER.get_ptr_mut(self.slot.set) {
                // SAFETY: inside the element; `way` is below `FlowSet::WAYS`, the word's
                // eight bytes.
                unsafe { *word.cast::<u8>().add(way % FlowSet::WAYS) = self.slot.filter_byte() };
            }
        }
    }
}

/// `jiffies`' low half: the stamps' clock (inlined by the verifier into one load).
#[inline(always)]
fn now() -> u32 {
    // SAFETY: a helper without arguments, callable from any program.
    unsafe { bpf_jiffies64() as u32 }
}

/// The backend this flow already uses, if it is still the same live backend. A packet
/// `opening` a TCP connection (SYN without ACK) asks the SYN filter first.
#[inline(always)]
pub fn lookup(key: &FlowKey, config: &LbConfig, opening: bool) -> Option<(u32, BackendValue)> {
    let found = find_backend(key, config, opening);
    if found == NOT_FOUND {
        return None;
    }
    let (backend_id, generation) = (found as u32, (found >> 32) as u32);
    let backend = lookup::backend(backend_id)?;
    if backend.generation != generation {
        return None;
    }
    Some((backend_id, backend))
}

/// What [`find_backend`] returns for a flow its table does not hold whole.
const NOT_FOUND: u64 = u64::MAX;

/// The backend id (low half) and generation (high half) of the flow's table entry, marked
/// used; else [`NOT_FOUND`]. A BPF subprogram of its own, returning one register: a
/// family's slow path has no stack to spare for its ways' loop or a returned struct.
#[inline(never)]
fn find_backend(key: &FlowKey, config: &LbConfig, opening: bool) -> u64 {
    let Some(set) = Set::of(key, config) else {
        return NOT_FOUND;
    };
    if opening && !set.may_hold() {
        return NOT_FOUND;
    }
    let Some(way) = set.find(key) else {
        return NOT_FOUND;
    };
    let entry = set.entry(way);
    // SAFETY: inside the element.
    let (backend_id, generation, check) = unsafe {
        (
            (*entry).backend_id,
            (*entry).backend_generation,
            (*entry).check,
        )
    };
    if set.slot.check(backend_id, generation) != check {
        return NOT_FOUND;
    }
    set.touch(way, now());
    (u64::from(generation) << 32) | u64::from(backend_id)
}

/// Touches the flow's table entry so the table keeps a flow the flow cache serves; if it
/// evicted it meanwhile, learns it again with the backend the flow already has.
#[inline(always)]
pub fn keep(key: &FlowKey, backend_id: u32, backend_generation: u32, config: &LbConfig) {
    let Some(set) = Set::of(key, config) else {
        return;
    };
    let now = now();
    if let Some(way) = set.find(key) {
        set.touch(way, now);
        return;
    }
    // Not against the budget: the flow is established (the cache served it).
    set.write(set.victim(now), key, backend_id, backend_generation, now);
    count(recorded(key));
    count(FlowEvent::Relearned);
}

/// Records the flow's backend in its table: leaves the write for [`commit`], which the
/// entry point calls once the slow path has sent the packet. The slow path's frame is
/// near the verifier's limit, and the ways' loops need a frame of their own, which only
/// fits below the entry point.
#[inline(always)]
pub fn record(key: &FlowKey, backend_id: u32, backend: &BackendValue) {
    if let Some(pending) = FLOW_PENDING.get_ptr_mut(0) {
        // SAFETY: this CPU's element; only this CPU's program uses it, and XDP programs do
        // not nest on a CPU.
        unsafe {
            (*pending).key = *key;
            (*pending).backend_id = backend_id;
            (*pending).backend_generation = backend.generation;
            (*pending).pending = 1;
        }
    }
}

/// Writes the flow [`record`] left, if this CPU's new-flow budget allows. Not into the
/// cache: a flow enters the cache at its next packet (a table hit), so flows of one
/// packet (a scan, a flood of ACKs) never push established flows out of it.
#[inline(never)]
pub fn commit() {
    let Some(pending) = FLOW_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `record`.
    let pending = unsafe { &mut *pending };
    if pending.pending == 0 {
        return;
    }
    pending.pending = 0;
    let Some(config) = lookup::config() else {
        return;
    };
    let rate_per_s = config.new_flow_rate_per_s;
    if rate_per_s != 0 && !rate::take(&FLOW_BUDGET, rate_per_s, config.new_flow_burst) {
        count(FlowEvent::OverBudget);
        return;
    }
    let key = &pending.key;
    let Some(set) = Set::of(key, config) else {
        count(FlowEvent::RecordFailed);
        return;
    };
    let (backend_id, generation) = (pending.backend_id, pending.backend_generation);
    let now = now();
    // A way holding the key: its backend is gone or changed (or another CPU was first,
    // or the entry was torn): rewrite it. Only keys the table did not hold count as
    // recorded (the daemon's eviction figure depends on it).
    match set.find(key) {
        Some(way) => {
            set.write(way, key, backend_id, generation, now);
            count(FlowEvent::Replaced);
        }
        None => {
            set.write(set.victim(now), key, backend_id, generation, now);
            count(recorded(key));
        }
    }
}
