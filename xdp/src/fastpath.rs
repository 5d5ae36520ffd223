//! The established-flow fast path: a packet of a flow the flow cache holds is forwarded
//! from that one cache line, before (and instead of) the service lookup and the flow
//! table. The cache (`LB_FLOW_CACHE`, see `FlowCacheEntry`) is two-way set-associative,
//! indexed by a cheap hash of its own (`FlowKey::cache_hash`; the flow hash is Murmur3,
//! which a hit need not pay), one region of small arrays per CPU (see
//! `lb_common::FlowCacheChunk` for why small arrays, and why each set has a tag word that
//! a probe reads before any entry); an entry copies a flow-table entry
//! plus the frontend's counter id, and is written when the slow path finds the flow in
//! the table ([`learn`], into the set the fast path probed and missed).
//!
//! What a hit still checks, so the fast path changes no verdict the slow path would give:
//! - the whole key (no tag-only match);
//! - `LbConfig::flow_epoch`: the daemon bumps it after a flow purge and a frontend's
//!   deletion, so an entry made before either is not followed;
//! - the backend: live, and the same generation (a retired or reused id re-selects);
//! - the next hop: this CPU's cached one, fresh (`nexthop::cached`); a stale or missing
//!   one is left to the slow path, which asks the kernel and refreshes the cache.
//!
//! Left to the slow path: TCP SYNs without ACK (they rarely have an entry, and a probe is
//! one more cold line on the new-flow path), ICMP errors, fragments (a first fragment is
//! remembered for its later ones, see `fragment`), frontends with session affinity (a hit
//! refreshes the client's entry, so they are never learned), and a packet too big for
//! the next hop (the ICMP answer), and a backend on this host (its frame keeps its MACs).
//!
//! Each family's fast path is a BPF subprogram of its own, called from the entry point
//! beside (not inside) the family's slow path: the verifier adds up the frames of a call
//! chain, and the slow path's is near the 512-byte limit alone. So it parses the packet
//! itself and hands back a [`Forward`] (its outcome) or nothing; the slow path parses
//! again (a few ns on a miss) and, on a table hit, hashes the key again to find the set
//! ([`learn`]).

use aya_ebpf::{helpers::bpf_get_smp_processor_id, programs::XdpContext};
use lb_common::{
    BackendValue, FlowCacheChunk, FlowCacheEntry, FlowKey, LbConfig, NextHop, XdpReason,
    CONFIG_F_V6_READY, FAMILY_V6, FLOW_CACHE_TOUCH_EVERY, NEXTHOP_F_LOCAL,
};

use crate::{
    balance, encap, flow, lookup,
    maps::FLOW_CACHE,
    nexthop,
    parse::{self, Role},
    verdict::{self, Forward},
};

/// A cached flow's backend and next hop, borrowed from their maps.
struct Hit {
    backend_id: u32,
    service_id: u32,
    backend: &'static BackendValue,
    hop: &'static NextHop,
}

/// This CPU's set for cache hash `hash` (`FlowKey::cache_hash`): its tag word and its two
/// entries (ways), adjacent entries of one chunk (see `FlowCacheEntry::slot`), so two
/// flows whose hashes meet in one set both stay cached. `skew` is
/// `LbConfig::flow_cache_skew`, which starts the tag lines and every entry on a cache
/// line.
struct Set {
    /// Way 0's tag in the low half, way 1's in the high (see `FlowCacheChunk`).
    tags: *mut u32,
    ways: [*mut FlowCacheEntry; 2],
    tag: u16,
}

impl Set {
    #[inline(always)]
    fn of(hash: u64, skew: u32) -> Option<Set> {
        // SAFETY: a helper without arguments, callable from any program.
        let cpu = unsafe { bpf_get_smp_processor_id() };
        let slot = FlowCacheEntry::slot(hash);
        let outer = slot.outer_index(cpu);
        // The inner key on the stack: a literal `&0` would be a constant in a `.rodata`
        // section, which becomes a map of its own (the device-bound load finds every map
        // it relocates pinned, and that one is not).
        let inner_key = 0u32;
        let chunk = FLOW_CACHE
            .get_value_ptr_mut(outer, &inner_key)?
            .cast::<u8>();
        let offsets = (
            FlowCacheChunk::tags_offset(skew, slot.first),
            FlowCacheChunk::entry_offset(skew, slot.first),
        );
        // The compiler knows the offsets are in bounds and folds them into bit operations
        // whose bounds the verifier tracks too loosely to accept the access; values read
        // back from the stack are opaque to the compiler, so these checks stay and bound
        // them.
        // SAFETY: a read of a local.
        let (tags, first) = unsafe { core::ptr::read_volatile(&offsets) };
        if tags > FlowCacheChunk::LAST_TAGS_OFFSET || first > FlowCacheChunk::LAST_SET_OFFSET {
            return None;
        }
        // SAFETY: the tag word and both entries lie inside the chunk's value
        // (`FlowCacheChunk::BYTES` leaves room past the last set for any skew).
        unsafe {
            Some(Set {
                tags: chunk.add(tags).cast(),
                ways: [
                    chunk.add(first).cast(),
                    chunk.add(first + FLOW_CACHE_ENTRY_BYTES).cast(),
                ],
                tag: slot.tag,
            })
        }
    }

    /// Way `way`'s tag.
    #[inline(always)]
    fn tag_of(tags: u32, way: usize) -> u16 {
        (tags >> (16 * way)) as u16
    }

    /// Sets way `way`'s tag to this set's.
    #[inline(always)]
    fn mark(&self, way: usize) {
        // SAFETY: the tag word is inside the chunk (see `of`), 4-aligned; this CPU's only.
        unsafe { *self.tags.cast::<u16>().add(way) = self.tag };
    }
}

const FLOW_CACHE_ENTRY_BYTES: usize = core::mem::size_of::<FlowCacheEntry>();

/// This CPU's entry of flow `key` (cache hash `hash`) under the config's epoch, in either
/// way of its set. A way whose tag differs is not read: a miss costs the tag word only.
#[inline(always)]
fn find(key: &FlowKey, hash: u64, config: &LbConfig) -> Option<&'static mut FlowCacheEntry> {
    let set = Set::of(hash, config.flow_cache_skew)?;
    // SAFETY: inside the chunk (see `Set::of`); only this CPU writes it, and not while
    // this program runs on it (XDP programs do not nest on one CPU).
    let tags = unsafe { *set.tags };
    for (way, entry) in set.ways.into_iter().enumerate() {
        if Set::tag_of(tags, way) != set.tag {
            continue;
        }
        // SAFETY: as above.
        let cached = unsafe { &mut *entry };
        if cached.epoch == config.flow_epoch && cached.key.same_as(key) {
            return Some(cached);
        }
    }
    None
}

/// The cached flow `key` (cache hash `hash`), if its entry is current, its backend the same
/// live one and that backend's next hop cached, fresh and not this host.
#[inline(always)]
fn hit(key: &FlowKey, hash: u64, config: &LbConfig) -> Option<Hit> {
    let cached = find(key, hash, config)?;
    let (backend_id, generation) = (cached.backend_id, cached.backend_generation);
    let backend = lookup::live_backend(backend_id)?;
    if backend.generation != generation {
        return None;
    }
    let hop = nexthop::cached(backend_id, backend)?;
    if hop.flags & NEXTHOP_F_LOCAL != 0 {
        return None;
    }
    cached.hits = cached.hits.wrapping_add(1);
    if cached.hits & (FLOW_CACHE_TOUCH_EVERY - 1) == 0 {
        flow::keep(key, backend_id, generation, config);
    }
    Some(Hit {
        backend_id,
        service_id: cached.service_id,
        backend,
        hop,
    })
}

/// Remembers a flow the slow path found in the flow table in this CPU's set under the
/// config's epoch: its next packets take the fast path. Not a flow the packet only now
/// records: flows of one packet (a scan, a flood of ACKs) never push established flows
/// out of the cache.
#[inline(always)]
pub fn learn(
    key: &FlowKey,
    config: &LbConfig,
    service_id: u32,
    backend_id: u32,
    backend: &BackendValue,
) {
    let hash = key.cache_hash(config.flow_hash_seed);
    let Some(set) = Set::of(hash, config.flow_cache_skew) else {
        return;
    };
    let epoch = config.flow_epoch;
    // The way to fill: one this epoch does not use, else the one the hash names (see
    // `FlowCacheEntry::replaces_second`), a choice the flows of a set share fairly.
    // SAFETY: as in `find`.
    let [first, second] = set.ways.map(|way| unsafe { &mut *way });
    let (way, cached) = if first.epoch != epoch || first.key.same_as(key) {
        (0, first)
    } else if second.epoch != epoch || FlowCacheEntry::replaces_second(hash) {
        (1, second)
    } else {
        (0, first)
    };
    cached.key = *key;
    cached.backend_id = backend_id;
    cached.backend_generation = backend.generation;
    cached.epoch = epoch;
    cached.hits = 0;
    cached.service_id = service_id;
    set.mark(way);
}

/// The outcome of an encapsulated hit: counted for its service and backend and sent, or
/// the encapsulation's failure (as a `Forward`, which `verdict::finish` counts alike).
#[inline(always)]
fn sent(ctx: &XdpContext, hit: &Hit, encapped: Result<(), XdpReason>, len: u64) -> Forward {
    match encapped {
        Ok(()) => balance::sent(ctx, hit.service_id, hit.backend_id, hit.hop, len),
        Err(reason) => Forward {
            action: verdict::action_for(reason),
            reason,
        },
    }
}

/// An IPv4 packet sent from the cache: a whole one (not a fragment, not an ICMP error)
/// that does not open a connection, of a cached flow. `None` leaves it to the slow path.
#[inline(never)]
pub fn v4(ctx: &XdpContext, len: u64) -> Option<Forward> {
    let pkt = parse::parse_ipv4(ctx).ok()?;
    if pkt.role != Role::Whole || pkt.opening {
        return None;
    }
    let config = lookup::config()?;
    let key = flow::key(&pkt);
    let hash = key.cache_hash(config.flow_hash_seed);
    let hit = hit(&key, hash, config)?;
    if u32::from(pkt.tot_len) + encap::IPIP_OVERHEAD > u32::from(hit.hop.mtu) {
        return None;
    }
    let encapped = encap::ipip(ctx, &pkt, hit.hop, config.encap_src_v4, hit.backend);
    Some(sent(ctx, &hit, encapped, len))
}

/// [`v4`] for IPv6.
#[inline(never)]
pub fn v6(ctx: &XdpContext, len: u64) -> Option<Forward> {
    let pkt = parse::parse_ipv6(ctx).ok()?;
    if pkt.role != Role::Whole || pkt.opening {
        return None;
    }
    let config = lookup::config()?;
    if config.flags & CONFIG_F_V6_READY == 0 {
        return None;
    }
    let key = &pkt.flow;
    let hash = key.cache_hash(config.flow_hash_seed);
    let hit = hit(key, hash, config)?;
    if hit.backend.family != FAMILY_V6
        || u32::from(pkt.payload_len) + 2 * encap::IP6IP6_OVERHEAD > u32::from(hit.hop.mtu)
    {
        return None;
    }
    let encapped = encap::ip6ip6(ctx, &pkt, hit.hop, &config.encap_src_v6, hit.backend);
    Some(sent(ctx, &hit, encapped, len))
}
