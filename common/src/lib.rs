//! The one contract between the kernel programs and the daemon: every map key and value
//! layout, the map names, their sizes and the reason codes that double as counter indices.
//!
//! Every type is `#[repr(C)]` with explicit padding and a compile-time size check, so a
//! layout change is a build failure rather than a silent misread of pinned maps.
#![no_std]

mod flow_hash;
mod flow_table;
pub mod reason;

pub use flow_table::{FlowEntry, FlowPending, FlowSet, FlowSlot, SynFilter};

pub use reason::{FlowEvent, SockReason, TcReason, XdpReason};

/// Default directory under bpffs where maps and links are pinned.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/ferrolb";

/// Map names. They are also the pin file names, so loader, CLI and tests agree on them.
pub mod map_names {
    pub const SERVICES: &str = "LB_SERVICES";
    pub const BACKENDS: &str = "LB_BACKENDS";
    pub const MAGLEV: &str = "LB_MAGLEV";
    /// TCP flows (set-associative, see [`FlowSet`](crate::FlowSet)). UDP flows have a
    /// table of their own, so a flood of new UDP flows cannot evict established TCP
    /// connections (see `xdp/src/flow.rs`).
    pub const FLOWS: &str = "LB_FLOWS";
    /// UDP flows (set-associative).
    pub const UDP_FLOWS: &str = "LB_UDP_FLOWS";
    /// Per-CPU state of the new-flow insert budget (one GCRA time stamp).
    pub const FLOW_BUDGET: &str = "LB_FLOW_BUDGET";
    /// The TCP table's SYN filter, a word per set ([`SynFilter`](crate::SynFilter)).
    pub const FLOW_FILTER: &str = "LB_FLOW_FILTER";
    /// Per-CPU flow-table write the slow path left for after its packet
    /// ([`FlowPending`](crate::FlowPending)).
    pub const FLOW_PENDING: &str = "LB_FLOW_PENDING";
    /// Per-CPU flow-table event counters, indexed by [`FlowEvent`](crate::FlowEvent).
    pub const FLOW_STATS: &str = "LB_FLOW_STATS";
    /// Per-CPU direct-mapped cache in front of `FLOWS` (see [`crate::FlowCacheEntry`]).
    pub const FLOW_CACHE: &str = "LB_FLOW_CACHE";
    pub const NEXTHOPS: &str = "LB_NEXTHOPS";
    pub const NEIGH_MISSES: &str = "LB_NEIGH_MISS";
    pub const CONFIG: &str = "LB_CONFIG";
    pub const XDP_STATS: &str = "LB_XDP_STATS";
    pub const SERVICE_STATS: &str = "LB_SVC_STATS";
    pub const BACKEND_STATS: &str = "LB_BE_STATS";
    pub const LOCAL_VIPS: &str = "LB_LOCAL_VIPS";
    pub const TC_STATS: &str = "LB_TC_STATS";
    pub const BACKEND_NAT: &str = "LB_BACKEND_NAT";
    pub const REV_NAT: &str = "LB_REV_NAT";
    /// Frontends balanced at the socket (east-west): same key and value as `SERVICES`,
    /// tables in the same slot array.
    pub const SOCK_SERVICES: &str = "LB_SOCK_SVCS";
    /// (frontend, endpoint) → the endpoint's target port, for every endpoint of a
    /// socket-balanced frontend (same layout as `BACKEND_NAT`).
    pub const SOCK_TARGETS: &str = "LB_SOCK_TGTS";
    /// (socket cookie, endpoint address and port) → the frontend the socket addressed.
    pub const SOCK_REVNAT: &str = "LB_SOCK_REV";
    pub const SOCK_STATS: &str = "LB_SOCK_STATS";
    /// Endpoints that sit behind this node (its pods): the balancer hands their packets,
    /// still encapsulated, to this node's own stack, whose backend side decapsulates,
    /// translates and routes them to the pod, instead of sending them to the pod's veth.
    pub const LOCAL_ENDPOINTS: &str = "LB_LOCAL_EPS";
    /// Fragmented datagrams whose first fragment the balancer sent (LRU).
    pub const FRAGMENTS: &str = "LB_FRAGMENTS";
    /// Every external service's `loadBalancerSourceRanges`: an LPM trie keyed by
    /// (service id, source address) (see [`SourceRangeKey`](super::SourceRangeKey)).
    pub const SOURCE_RANGES: &str = "LB_SRC_RANGES";
    /// `sessionAffinity: ClientIP` of external frontends: (service, client address) → the
    /// endpoint the client keeps and when it last used it (LRU).
    pub const AFFINITY: &str = "LB_AFFINITY";
    /// The same for socket-balanced frontends, keyed by the caller's network namespace.
    pub const SOCK_AFFINITY: &str = "LB_SOCK_AFF";
    /// Addresses (ClusterIPs) on which a (port, protocol) no frontend names is refused:
    /// ICMP port unreachable from the balancer, ECONNREFUSED at the socket.
    pub const REJECT_ADDRS: &str = "LB_REJECT_ADDRS";
    /// The balancer's ICMP answer rate limit: one per-CPU state word.
    pub const ICMP_RATE: &str = "LB_ICMP_RATE";
}

/// Program names as they appear in the object files.
pub mod program_names {
    pub const XDP_BALANCER: &str = "xdp_balancer";
    pub const XDP_PASS: &str = "xdp_pass";
    pub const TC_DECAP: &str = "tc_decap";
    pub const TC_REVNAT: &str = "tc_revnat";
    pub const SOCK_CONNECT4: &str = "sock_connect4";
    pub const SOCK_CONNECT6: &str = "sock_connect6";
    pub const SOCK_SENDMSG4: &str = "sock_sendmsg4";
    pub const SOCK_SENDMSG6: &str = "sock_sendmsg6";
    pub const SOCK_RECVMSG4: &str = "sock_recvmsg4";
    pub const SOCK_RECVMSG6: &str = "sock_recvmsg6";
    pub const SOCK_GETPEERNAME4: &str = "sock_getpeername4";
    pub const SOCK_GETPEERNAME6: &str = "sock_getpeername6";
}

/// The XDP metadata kfunc the balancer reads a frame's VLAN tag with. The object calls it
/// as a helper with the placeholder id [`RX_VLAN_TAG_CALL`](xdp_metadata::RX_VLAN_TAG_CALL)
/// (the toolchain emits no kfunc calls); the loader rewrites each such call into the kfunc
/// call for a device-bound load and into `r0 = -EOPNOTSUPP` for every other load.
///
/// A second placeholder, [`DEVICE_BOUND_CALL`](xdp_metadata::DEVICE_BOUND_CALL), asks
/// whether this load is device-bound: the loader rewrites it into `r0 = 1` there and
/// `r0 = 0` elsewhere, a constant the verifier prunes by, so a load that cannot read
/// metadata does not call the tag's subprograms for an untagged frame at all (a call and
/// its return cost about 8 ns each here).
pub mod xdp_metadata {
    /// Far above every helper id the kernel defines, so it never means a real helper.
    pub const RX_VLAN_TAG_CALL: i32 = 0x6c62_7601;
    /// Whether the program was loaded device-bound (1) or not (0); see the module docs.
    pub const DEVICE_BOUND_CALL: i32 = 0x6c62_7602;
    /// The kfunc's name in the kernel's BTF.
    pub const RX_VLAN_TAG_KFUNC: &str = "bpf_xdp_metadata_rx_vlan_tag";
}

/// Map capacities. The daemon refuses configurations that would exceed them.
pub mod limits {
    pub const MAX_SERVICES: u32 = 65_536;
    pub const MAX_BACKENDS: u32 = 65_536;
    /// Total Maglev slots across all distinct tables, plus room for the tables being
    /// replaced at once (a replacement is written whole into a fresh region before the
    /// flip). 2^22 slots, four to an 8-byte element (see [`crate::maglev_words`]): 8 MiB.
    pub const MAGLEV_SLOTS: u32 = 1 << 22;
    /// Entries of the TCP flow table (`--tcp-flow-entries`; whole sets of
    /// [`FlowSet::WAYS`](crate::FlowSet::WAYS)).
    pub const DEFAULT_FLOWS: u32 = 262_144;
    /// Entries of the UDP flow table (`--udp-flow-entries`).
    pub const DEFAULT_UDP_FLOWS: u32 = 131_072;
    /// Chunks of the flow cache per CPU (see [`crate::FlowCacheChunk`]): 136 chunks of
    /// 480 entries, 65,280 entries (4.25 MiB) a CPU. The outer map holds this many for
    /// every possible CPU.
    pub const FLOW_CACHE_CHUNKS_PER_CPU: u32 = 136;
    pub const NEIGH_MISSES: u32 = 1_024;
    pub const LOCAL_VIPS: u32 = 4_096;
    /// (frontend, local endpoint) pairs a backend node translates.
    pub const BACKEND_NATS: u32 = 65_536;
    /// Translated flows a backend node remembers for their replies (LRU).
    pub const REV_NATS: u32 = 131_072;
    /// Socket-level target ports: every endpoint of every socket-balanced frontend.
    pub const SOCK_TARGETS: u32 = 262_144;
    /// Sockets whose peer the socket programs rewrote (LRU).
    pub const SOCK_REVNATS: u32 = 131_072;
    pub const LOCAL_ENDPOINTS: u32 = 65_536;
    /// Datagrams in flight in fragments whose backend is remembered (LRU); a datagram's
    /// fragments arrive within milliseconds, so a few thousand cover a busy node.
    pub const FRAGMENTS: u32 = 8_192;
    /// Source ranges of all services together (LPM trie entries, allocated on insert).
    pub const SOURCE_RANGES: u32 = 65_536;
    /// (service, client) pairs with session affinity, per scope (LRU; the default of
    /// `--affinity-entries`).
    pub const AFFINITY_ENTRIES: u32 = 131_072;
    /// Addresses whose undefined ports are refused (a cluster's ClusterIPs).
    pub const REJECT_ADDRS: u32 = 65_536;
}

/// The layout of the Maglev slot array `LB_MAGLEV`: each 8-byte element (a "word") holds
/// four slots, a 16-bit backend id each (slot `s` is bits `16 * (s % 4)` up in word
/// `s / 4`), so a slot costs 2 bytes where a 4-byte array value cost 8 (the kernel rounds
/// array values up to 8 bytes). Tables start on a word boundary and own their words whole
/// (the planner's regions are rounded up to [`SLOTS_PER_WORD`]), so a table is written
/// word by word without touching another table's slots.
pub mod maglev_words {
    pub const SLOTS_PER_WORD: u32 = 4;
    /// Map flags of the slot array in every object that declares it: `BPF_F_MMAPABLE`,
    /// so the daemon writes tables with plain stores into a shared mapping.
    pub const MAP_FLAGS: u32 = 1 << 10;
    pub const ID_BITS: u32 = 16;
    const ID_MASK: u64 = (1 << ID_BITS) - 1;

    /// Words an array of `slots` slots needs.
    pub const fn words(slots: u32) -> u32 {
        slots.div_ceil(SLOTS_PER_WORD)
    }

    /// The word holding slot `slot`.
    #[inline(always)]
    pub const fn word_of(slot: u32) -> u32 {
        slot / SLOTS_PER_WORD
    }

    /// The backend id in `slot`, read from its word.
    #[inline(always)]
    pub const fn id_in(word: u64, slot: u32) -> u32 {
        ((word >> ((slot % SLOTS_PER_WORD) * ID_BITS)) & ID_MASK) as u32
    }

    /// `word` with `slot` set to `id` (ids are below 2^16: `MAX_BACKENDS`).
    #[inline(always)]
    pub const fn with_id(word: u64, slot: u32, id: u32) -> u64 {
        let shift = (slot % SLOTS_PER_WORD) * ID_BITS;
        (word & !(ID_MASK << shift)) | (((id as u64) & ID_MASK) << shift)
    }
}
const _: () = assert!(limits::MAX_BACKENDS <= 1 << maglev_words::ID_BITS);

/// Address family tags stored in keys (values match AF_INET / AF_INET6).
pub const FAMILY_V4: u8 = 2;
pub const FAMILY_V6: u8 = 10;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Wire constants both datapath programs parse and build packets with.
pub mod wire {
    pub const ETH_HLEN: usize = 14;
    pub const ETH_P_IP: u16 = 0x0800;
    pub const ETH_P_IPV6: u16 = 0x86dd;
    pub const IPPROTO_IPIP: u8 = 4;
    /// IPv6 in IPv6 (RFC 2473), the IPv6 twin of IPIP.
    pub const IPPROTO_IPV6: u8 = 41;
    /// The fixed IPv6 header, which is also what IP6IP6 encapsulation adds.
    pub const IPV6_HLEN: usize = 40;
    /// An IPv4 header without options, which is also what IPIP encapsulation adds.
    pub const IPV4_HLEN: usize = 20;
}

/// An IPv4 or IPv6 address in network byte order; IPv4 uses the first four bytes and
/// leaves the rest zero, so every map carries IPv6 without a layout change.
pub type Addr = [u8; 16];

/// An IPv4 address in the 16-byte form. Built from four words, so the eBPF compiler emits
/// four stores instead of a call to a byte-wise `memset` for the zero tail.
#[inline(always)]
pub const fn v4_addr(octets: [u8; 4]) -> Addr {
    let words: [u32; 4] = [u32::from_ne_bytes(octets), 0, 0, 0];
    // SAFETY: [u32; 4] and [u8; 16] have the same size, and every byte pattern is valid.
    unsafe { core::mem::transmute::<[u32; 4], Addr>(words) }
}

/// Key of the service map: a frontend (VIP, port, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr: Addr,
    /// Destination port in network byte order, exactly as it sits in the packet.
    pub port_be: u16,
    pub proto: u8,
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);

/// Service flag: the service has at least one backend with weight > 0.
pub const SERVICE_F_HAS_BACKENDS: u32 = 1;
/// Service flag: without backends the frontend is refused (ICMP port unreachable from the
/// balancer, ECONNREFUSED at the socket) rather than dropped.
pub const SERVICE_F_REJECT: u32 = 2;
/// Service flag: `sessionAffinity: ClientIP`; a client address keeps its endpoint for
/// `affinity_timeout_s` seconds without traffic.
pub const SERVICE_F_AFFINITY: u32 = 4;
/// Service flag: only sources inside the service's `loadBalancerSourceRanges` are served.
pub const SERVICE_F_SOURCE_RANGES: u32 = 8;

/// Value of the service map. The datapath indexes `LB_MAGLEV[table_base + hash % table_size]`.
/// Replacing a table writes the new one whole into a fresh region no packet reads, then a
/// single update of this value points `table_base` at it, so no packet ever reads a
/// half-written table. `spare_base` (a name kept for the pinned layout) repeats the live
/// region's base, so a restarted daemon can account for every region in use.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceValue {
    pub service_id: u32,
    pub table_base: u32,
    pub table_size: u32,
    pub spare_base: u32,
    pub flags: u32,
    pub backend_count: u32,
    /// With `SERVICE_F_AFFINITY`: seconds a client's endpoint is kept without traffic.
    pub affinity_timeout_s: u32,
    /// Zero; keeps the value a whole number of 8-byte words.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 32);

/// Backend flag: the entry is live. A cleared flag makes flow-table hits re-select.
pub const BACKEND_F_ACTIVE: u32 = 1;

/// Value of the backend array, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendValue {
    pub addr: Addr,
    pub family: u8,
    pub _pad: [u8; 3],
    pub flags: u32,
    /// Bumped every time the id is given to a new address, so flow entries and next-hop
    /// cache entries made for the previous owner of the id are recognised as stale.
    pub generation: u32,
    pub _pad2: u32,
}
const _: () = assert!(core::mem::size_of::<BackendValue>() == 32);

/// Key of the flow table: the client's 5-tuple as seen on the wire. Aligned to 8 (its
/// size already is a multiple), so the flow cache compares it as five words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    pub backend_id: u32,
    pub backend_generation: u32,
}
const _: () = assert!(core::mem::size_of::<FlowValue>() == 8);

/// One entry of the flow cache (`LB_FLOW_CACHE`), a two-way set-associative copy of
/// flow-table entries indexed by the cache hash (`FlowKey::cache_hash`), one region per
/// CPU: an established flow's
/// packet reads this one cache line instead of the service map and a flow-table set (the
/// XDP program's fast path, `xdp/src/fastpath.rs`). Filled only from what the flow table
/// holds (a table hit), so it never knows a flow the table did not; followed only while
/// `epoch` is `LbConfig::flow_epoch` (a purge of flow-table entries or a deleted frontend
/// bumps it) and the backend is the same live one (`backend_generation`).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowCacheEntry {
    pub key: FlowKey,
    pub backend_id: u32,
    pub backend_generation: u32,
    pub epoch: u32,
    /// Hits since the flow table was last touched for this flow: every
    /// `FLOW_CACHE_TOUCH_EVERY` hits the packet looks the flow up in the table too, so
    /// the table keeps (or re-learns) flows the cache serves.
    pub hits: u32,
    /// The frontend's `ServiceValue::service_id`: the counter a hit bumps without the
    /// service lookup.
    pub service_id: u32,
    /// Zero: the entry fills one 64-byte cache line with no implicit padding.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FlowCacheEntry>() == 64);

/// Where a flow's cache entries are: chunk `chunk` of a CPU's region, and in it the
/// two adjacent entries (ways) from `first` on, found by `tag` (see
/// [`FlowCacheChunk`]'s tag lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowCacheSlot {
    pub chunk: u32,
    pub first: u32,
    /// Never 0, the tag of an empty way.
    pub tag: u16,
}

impl FlowCacheSlot {
    /// The outer array's index of this slot's chunk in CPU `cpu`'s region (the datapath
    /// and `explain` both find chunks with it).
    pub const fn outer_index(&self, cpu: u32) -> u32 {
        cpu.wrapping_mul(limits::FLOW_CACHE_CHUNKS_PER_CPU)
            .wrapping_add(self.chunk)
    }
}

impl FlowCacheEntry {
    /// The set and tag of cache hash `hash` (`FlowKey::cache_hash`): its high half picks
    /// the chunk (top 16 bits) and the set in the chunk (low 16), each by a multiply and
    /// shift (an even spread over counts that are not powers of two, without a division);
    /// the tag comes from the low half, which neither uses.
    pub const fn slot(hash: u64) -> FlowCacheSlot {
        let high = (hash >> 32) as u32;
        let chunk = ((high >> 16) * limits::FLOW_CACHE_CHUNKS_PER_CPU) >> 16;
        let set = ((high & 0xffff) * (FlowCacheChunk::ENTRIES / 2)) >> 16;
        FlowCacheSlot {
            chunk,
            first: set * 2,
            tag: (hash >> 8) as u16 | 1,
        }
    }

    /// Which way a new flow of a full set replaces: a hash bit neither the set's multiply
    /// and shift nor the tag leans on, so the flows of one set share the choice fairly.
    pub const fn replaces_second(hash: u64) -> bool {
        (hash >> 32) & 1 != 0
    }
}

/// One inner array's only value: `ENTRIES` flow-cache entries behind their tag lines,
/// and room to start both on cache lines.
///
/// Why chunks. A flow-cache hit is one cold line; what made it cost ~270 ns here was the
/// address translation, not the line: one big array map is vmalloc'd, mapped with 4 KiB
/// pages, so a random entry also misses the TLB and walks page tables (two-dimensional
/// in a VM). An array map whose whole allocation is at most 32 KiB is kmalloc'd instead,
/// in the kernel's direct map and its large pages. So the cache is an array of maps, one
/// such small array per chunk (`perf-lab/tools/cold_read.py` measures both layouts).
///
/// Why tags. Most packets that miss the cache are a flow's first non-SYN packets, whose
/// set nothing has read for a long time: reading its two entries cost ~170 ns of a
/// ~450 ns first ACK here (4.25 MiB of entries a CPU do not stay in its caches). Each set
/// has a 4-byte tag word instead (way 0's 16-bit tag in the low half, way 1's in the
/// high), 15 lines a chunk that every probe of the chunk reads and so stay cached: a
/// miss reads the tag word only, a hit the tag word and then its entry.
///
/// Layout for `skew` (`LbConfig::flow_cache_skew`: the kernel puts an array's values
/// after its header, which need not end on a 64-byte boundary, 312 bytes on 6.18):
/// - `skew + 4 * set`: the set's tag word, 0 halves for empty ways;
/// - `skew + TAG_BYTES + 64 * index`: entry `index` (ways `2 * set` and `2 * set + 1`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlowCacheChunk {
    pub words: [u64; FlowCacheChunk::WORDS],
}

impl FlowCacheChunk {
    pub const ENTRIES: u32 = 480;
    /// The tag words, whole lines.
    pub const TAG_BYTES: usize = Self::ENTRIES as usize * 2;
    /// The tags, the entries and one line's room for the skew.
    const WORDS: usize = (Self::TAG_BYTES + (Self::ENTRIES as usize + 1) * 64) / 8;
    /// The value's size in bytes.
    pub const BYTES: usize = Self::WORDS * 8;
    /// The largest offset of a set's first entry, for any skew.
    pub const LAST_SET_OFFSET: usize = Self::entry_offset(63, Self::ENTRIES - 2);
    /// The largest offset of a set's tag word, for any skew.
    pub const LAST_TAGS_OFFSET: usize = Self::tags_offset(63, Self::ENTRIES - 2);

    /// Byte offset of entry `index` in the value, for a value starting `skew` bytes
    /// (0..64) before a cache line.
    pub const fn entry_offset(skew: u32, index: u32) -> usize {
        (skew & 63) as usize + Self::TAG_BYTES + index as usize * 64
    }

    /// Byte offset of the tag word of the set whose first entry is `first`.
    pub const fn tags_offset(skew: u32, first: u32) -> usize {
        (skew & 63) as usize + (first as usize / 2) * 4
    }

    /// Entry `index` (below `ENTRIES`) of a chunk read out of the kernel, for `skew`.
    #[cfg(feature = "user")]
    pub fn entry(&self, skew: u32, index: u32) -> FlowCacheEntry {
        let offset = Self::entry_offset(skew, index.min(Self::ENTRIES - 1));
        let bytes = &self.as_bytes()[offset..offset + core::mem::size_of::<FlowCacheEntry>()];
        // SAFETY: 64 bytes in bounds; FlowCacheEntry is plain data valid for any bytes,
        // read unaligned.
        unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) }
    }

    /// The tag of entry `index` (below `ENTRIES`) of a chunk read out of the kernel.
    #[cfg(feature = "user")]
    pub fn tag(&self, skew: u32, index: u32) -> u16 {
        let index = index.min(Self::ENTRIES - 1);
        let offset = Self::tags_offset(skew, index) + 2 * (index as usize % 2);
        let bytes = &self.as_bytes()[offset..offset + 2];
        u16::from_ne_bytes([bytes[0], bytes[1]])
    }

    /// Writes entry `index` and its tag, as the datapath learns a flow (for tests).
    #[cfg(feature = "user")]
    pub fn set_entry(&mut self, skew: u32, index: u32, tag: u16, entry: &FlowCacheEntry) {
        let index = index.min(Self::ENTRIES - 1);
        let offset = Self::entry_offset(skew, index);
        // SAFETY: FlowCacheEntry is 64 bytes of plain data.
        let raw: [u8; 64] = unsafe { core::mem::transmute(*entry) };
        self.as_bytes_mut()[offset..offset + 64].copy_from_slice(&raw);
        let offset = Self::tags_offset(skew, index) + 2 * (index as usize % 2);
        self.as_bytes_mut()[offset..offset + 2].copy_from_slice(&tag.to_ne_bytes());
    }

    #[cfg(feature = "user")]
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: plain u64 words, viewed as their bytes.
        unsafe { core::slice::from_raw_parts(self.words.as_ptr().cast(), Self::BYTES) }
    }

    #[cfg(feature = "user")]
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_bytes`, exclusively borrowed.
        unsafe { core::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast(), Self::BYTES) }
    }
}
// The array's header (312 bytes on 6.18) and the value fit in 32 KiB: kmalloc's limit.
const _: () = assert!(FlowCacheChunk::BYTES + 1024 <= 32 * 1024);
const _: () = assert!(FlowCacheChunk::ENTRIES.is_multiple_of(2));
const _: () = assert!(FlowCacheChunk::TAG_BYTES.is_multiple_of(64));
const _: () = assert!(FlowCacheChunk::LAST_TAGS_OFFSET + 4 <= FlowCacheChunk::TAG_BYTES + 64);
const _: () = assert!(
    FlowCacheChunk::LAST_SET_OFFSET + 2 * core::mem::size_of::<FlowCacheEntry>()
        <= FlowCacheChunk::BYTES
);

/// See [`FlowCacheEntry::hits`]; a power of two.
pub const FLOW_CACHE_TOUCH_EVERY: u32 = 64;

/// Per-CPU cache of the kernel's route and neighbour answer for one backend, so the
/// per-packet path does not pay for `bpf_fib_lookup` (about 200 ns here).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub ifindex: u32,
    pub mtu: u16,
    pub flags: u16,
    pub backend_generation: u32,
    /// `jiffies` (`bpf_jiffies64()`) after which the entry is looked up again.
    pub expires_jiffies: u64,
}
const _: () = assert!(core::mem::size_of::<NextHop>() == 32);

/// Next-hop flag: the backend is an address of this host. The encapsulated packet goes up
/// this host's stack (XDP_PASS), where the backend-side TC program decapsulates it.
pub const NEXTHOP_F_LOCAL: u16 = 1;

/// A backend whose next hop has no resolved neighbour entry; the daemon asks the kernel to
/// resolve it. Keyed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NeighMiss {
    /// The next hop's address as the kernel's route lookup returned it (gateway or the
    /// backend itself when on-link).
    pub nexthop: Addr,
    pub family: u8,
    pub _pad: [u8; 3],
    pub ifindex: u32,
}
const _: () = assert!(core::mem::size_of::<NeighMiss>() == 24);

/// Global datapath settings, a one-element array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LbConfig {
    /// Outer source address of IPIP packets, network byte order.
    pub encap_src_v4: [u8; 4],
    pub flow_hash_seed: u32,
    /// How long a cached next hop is trusted before the kernel is asked again, in kernel
    /// ticks (`jiffies`, which the program reads with the inlined `bpf_jiffies64`).
    pub nexthop_ttl_jiffies: u64,
    pub flags: u32,
    /// Bumped by the map writer on every write of this element and after every flow purge:
    /// flow-cache entries made under another epoch are not followed (see
    /// [`FlowCacheEntry`]). The daemon's own value is 0; the writer sets it.
    pub flow_epoch: u32,
    /// Outer source address of IP6IP6 packets; valid when `CONFIG_F_V6_READY` is set.
    pub encap_src_v6: [u8; 16],
    /// ICMP answers (reject, too big) per second and per CPU; 0 sends none.
    pub icmp_rate_per_s: u16,
    /// ICMP answers a CPU may send back to back before the rate applies (at least 1).
    pub icmp_burst: u16,
    /// New flow-table entries a CPU may write per second (the new-flow insert budget);
    /// flows beyond it are forwarded by Maglev without an entry. 0: no limit.
    pub new_flow_rate_per_s: u32,
    /// Entries a CPU may write back to back before `new_flow_rate_per_s` applies.
    pub new_flow_burst: u32,
    /// VLAN ids whose tagged frames are balanced besides untagged ones (see
    /// [`VlanList`]); empty by default, so a tagged frame is passed untouched.
    pub allowed_vlans: VlanList,
    /// Bytes from the start of an array map's value to its first cache line boundary (see
    /// [`FlowCacheChunk`]): where flow-cache entries and flow-table sets
    /// ([`FlowSet`](crate::FlowSet)) start their lines. The map writer sets it from the
    /// kernel's BTF.
    pub flow_cache_skew: u32,
    /// Seed of the flow tables' hash (`FlowSlot::of`): random, chosen by the first map
    /// writer of the tables and kept by every later one (a new seed would strand every
    /// entry in the wrong set).
    pub flow_table_seed: u32,
    /// Sets of `LB_FLOWS` and `LB_UDP_FLOWS` (their arrays' sizes), which the program
    /// cannot ask the kernel for; the map writer sets them. 0: a table not yet sized,
    /// which records nothing.
    pub tcp_flow_sets: u32,
    pub udp_flow_sets: u32,
    /// Zero: no implicit padding.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<LbConfig>() == 88);

/// Most VLAN ids the datapath balances tagged frames of.
pub const MAX_ALLOWED_VLANS: usize = 8;

/// VLAN ids (1..=4094) whose tagged frames are balanced; unused entries are 0, which is
/// no VLAN id (a VID 0 tag only carries a priority and counts as untagged).
pub type VlanList = [u16; MAX_ALLOWED_VLANS];

/// Key of the fragment table: one fragmented datagram, as IPv4 (source, destination,
/// protocol, identification) and IPv6 (source, destination, fragment header
/// identification; the upper-layer protocol is the fragment header's next header) name
/// it for reassembly.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragmentKey {
    pub src: Addr,
    pub dst: Addr,
    /// IPv4: the 16-bit identification widened; IPv6: the 32-bit one. Network order
    /// bytes, as on the wire, in the low-address bytes.
    pub id_be: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FragmentKey>() == 40);

/// Where a datagram's first fragment went, so the fragments after it follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragmentValue {
    pub backend_id: u32,
    pub backend_generation: u32,
    /// The service the first fragment was counted for.
    pub service_id: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FragmentValue>() == 16);

/// The datapath forwards only when this flag is set, so a half-configured LB passes
/// traffic rather than sending it with a zero source address.
pub const CONFIG_F_READY: u32 = 1;
/// IPv6 services are forwarded only with this flag: it says `encap_src_v6` is set.
pub const CONFIG_F_V6_READY: u32 = 2;

/// Packet and byte counters; per CPU in the kernel, summed by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

/// Key of the backend-side VIP set: the TC program decapsulates only IPIP packets whose
/// inner destination is in it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: Addr,
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<VipKey>() == 20);

/// Key of the backend-side translation table: a frontend as the balancer received it and
/// the local endpoint it chose (the outer destination). The daemon on the endpoint's node
/// fills it, so the target port never travels on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BackendNatKey {
    pub frontend: Addr,
    pub endpoint: Addr,
    pub port_be: u16,
    pub proto: u8,
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<BackendNatKey>() == 36);

/// The port the endpoint listens on; the destination address becomes the endpoint's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendNatValue {
    pub target_port_be: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<BackendNatValue>() == 4);

/// Key of the reply translation LRU: a reply as the endpoint sends it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RevNatKey {
    pub client: Addr,
    pub endpoint: Addr,
    pub client_port_be: u16,
    pub target_port_be: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<RevNatKey>() == 40);

/// The frontend the client addressed, restored as the reply's source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RevNatValue {
    pub frontend: Addr,
    pub port_be: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<RevNatValue>() == 20);

/// Key of the socket reverse map: a socket (its cookie) and the endpoint its peer address
/// was rewritten to, as `recvmsg`/`getpeername` report it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SockRevKey {
    pub cookie: u64,
    pub endpoint: Addr,
    pub port_be: u16,
    pub family: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(core::mem::size_of::<SockRevKey>() == 32);

/// The frontend the socket addressed, reported back instead of the endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockRevValue {
    pub frontend: Addr,
    pub port_be: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SockRevValue>() == 20);

/// The data part of a source-range entry (the LPM trie's key after its prefix length).
/// One trie holds every service's ranges, both families: an entry's prefix length is
/// [`SOURCE_RANGE_ID_BITS`] plus the CIDR's length, so it matches the whole service id and
/// then the CIDR's bits of the address. Service ids are per frontend and a frontend has
/// one family, so IPv4 entries (the address in the first four bytes, like every other
/// map here) and IPv6 entries never share an id. The id's byte order does not matter: all
/// 32 bits are always matched.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SourceRangeKey {
    pub service_id: u32,
    pub addr: Addr,
}
const _: () = assert!(core::mem::size_of::<SourceRangeKey>() == 20);

/// Bits of a source-range key taken by the service id, before the address's.
pub const SOURCE_RANGE_ID_BITS: u32 = 32;

/// Value of a source-range entry: there is nothing to store beyond the key's presence.
pub const SOURCE_RANGE_ALLOWED: u32 = 1;
/// Key of the affinity maps: one client of one service. The XDP balancer's client is the
/// packet's source address; the socket programs' is the caller's network namespace, its
/// cookie in the first eight bytes of `client` (native order) and `family` zero, since a
/// pod's source address may not be chosen yet at `connect()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AffinityKey {
    pub client: Addr,
    pub service_id: u32,
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<AffinityKey>() == 24);

/// The endpoint a client keeps, and when it last used it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AffinityValue {
    /// CLOCK_MONOTONIC_COARSE (`bpf_ktime_get_coarse_ns`) at the last refresh; refreshed
    /// at most every [`affinity::refresh_ns`] so a busy client costs no write per packet.
    pub last_used_ns: u64,
    pub backend_id: u32,
    /// The backend's generation when recorded: an id given to a new address ends it.
    pub backend_generation: u32,
}
const _: () = assert!(core::mem::size_of::<AffinityValue>() == 16);

/// When an affinity entry counts as expired, shared by the datapath and `explain`.
pub mod affinity {
    const NS_PER_S: u64 = 1_000_000_000;

    /// How stale an entry's `last_used_ns` may get before a packet rewrites it: an eighth
    /// of the timeout, at most a second. Most packets of a busy client only read it.
    #[inline(always)]
    pub const fn refresh_ns(timeout_s: u32) -> u64 {
        let eighth = (timeout_s as u64 * NS_PER_S) >> 3;
        if eighth < NS_PER_S {
            eighth
        } else {
            NS_PER_S
        }
    }

    /// Whether an entry `age_ns` old has outlived `timeout_s` seconds without traffic.
    /// The stamp lags the client's last packet by less than [`refresh_ns`], so the entry
    /// is kept while `age <= timeout + refresh`: it ends at most one refresh interval
    /// after the timeout, never before it.
    #[inline(always)]
    pub const fn expired(age_ns: u64, timeout_s: u32) -> bool {
        age_ns > timeout_s as u64 * NS_PER_S + refresh_ns(timeout_s)
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    macro_rules! pod {
        ($($ty:ty),* $(,)?) => {$(
            // SAFETY: repr(C) plain data with explicit padding fields (sizes asserted
            // above), so every byte pattern is a valid value and no byte is implicit padding.
            unsafe impl aya::Pod for $ty {}
        )*};
    }

    pod!(
        ServiceKey,
        ServiceValue,
        BackendValue,
        FlowKey,
        FlowValue,
        FlowEntry,
        FlowPending,
        FlowSet,
        FlowCacheEntry,
        FlowCacheChunk,
        NextHop,
        NeighMiss,
        LbConfig,
        Counter,
        VipKey,
        FragmentKey,
        FragmentValue,
        BackendNatKey,
        BackendNatValue,
        RevNatKey,
        RevNatValue,
        SockRevKey,
        SockRevValue,
        SourceRangeKey,
        AffinityKey,
        AffinityValue,
    );
}

#[cfg(all(test, feature = "user"))]
mod flow_cache_chunk_tests {
    extern crate std;

    use super::*;

    fn entry(i: u32) -> FlowCacheEntry {
        FlowCacheEntry {
            key: FlowKey {
                src: v4_addr(i.to_be_bytes()),
                dst: [0xee; 16],
                sport_be: i as u16,
                dport_be: !(i as u16),
                proto: PROTO_TCP,
                family: FAMILY_V4,
                _pad: [0; 2],
            },
            backend_id: i,
            backend_generation: !i,
            epoch: i ^ 0x55,
            hits: i * 3,
            service_id: i * 7,
            _pad: 0,
        }
    }

    /// Every entry and every tag of a chunk has bytes of its own, for any skew: writing
    /// all of them reads all of them back.
    #[test]
    fn tags_and_entries_never_overlap() {
        for skew in 0..64 {
            let mut chunk = FlowCacheChunk {
                words: [0; FlowCacheChunk::BYTES / 8],
            };
            for i in 0..FlowCacheChunk::ENTRIES {
                chunk.set_entry(skew, i, (i as u16) | 0x8000, &entry(i));
            }
            for i in 0..FlowCacheChunk::ENTRIES {
                assert_eq!(chunk.entry(skew, i), entry(i), "entry {i}, skew {skew}");
                assert_eq!(
                    chunk.tag(skew, i),
                    (i as u16) | 0x8000,
                    "tag {i}, skew {skew}"
                );
            }
        }
    }

    /// A set's two tags share one aligned word (the datapath reads it in one load), and
    /// entries start on the line the skew names.
    #[test]
    fn a_sets_tags_are_one_aligned_word() {
        for skew in [0, 8, 56, 63] {
            for set in 0..FlowCacheChunk::ENTRIES / 2 {
                let offset = FlowCacheChunk::tags_offset(skew, 2 * set);
                assert_eq!(offset, FlowCacheChunk::tags_offset(skew, 2 * set + 1));
                assert_eq!((offset - skew as usize) % 4, 0);
                assert!(offset <= FlowCacheChunk::LAST_TAGS_OFFSET);
                let first = FlowCacheChunk::entry_offset(skew, 2 * set);
                assert_eq!((first - skew as usize) % 64, 0);
                assert!(first <= FlowCacheChunk::LAST_SET_OFFSET);
            }
        }
    }

    /// Every hash names a real set and a tag an empty way cannot have.
    #[test]
    fn slots_are_in_range_and_tags_never_empty() {
        let mut hash = 0x0123_4567_89ab_cdefu64;
        for _ in 0..100_000 {
            hash = hash.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
            let slot = FlowCacheEntry::slot(hash);
            assert!(slot.chunk < limits::FLOW_CACHE_CHUNKS_PER_CPU);
            assert!(slot.first + 1 < FlowCacheChunk::ENTRIES);
            assert_eq!(slot.first % 2, 0);
            assert_ne!(slot.tag, 0);
        }
        for hash in [0, u64::MAX] {
            assert_ne!(FlowCacheEntry::slot(hash).tag, 0);
        }
    }
}
