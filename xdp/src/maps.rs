//! Every map the balancer uses. Layouts, names and sizes come from `lb-common`; all maps are
//! pinned by name so the datapath keeps forwarding while the daemon restarts.

use aya_ebpf::{
    btf_maps::{self, ArrayOfMaps},
    macros::{btf_map, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use lb_common::{
    limits, maglev_words, AffinityKey, AffinityValue, BackendNatKey, BackendNatValue, BackendValue,
    Counter, FlowCacheChunk, FlowEvent, FlowPending, FlowSet, FragmentKey, FragmentValue, LbConfig,
    NeighMiss, NextHop, ServiceKey, ServiceValue, SourceRangeKey, VipKey, XdpReason,
};

/// Updates of prealloc hash maps recycle the old element at once; without prealloc the
/// old value is freed after an RCU grace period, so a packet that just read a service never
/// sees it rewritten underneath it.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map(name = "LB_SERVICES")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::pinned(limits::MAX_SERVICES, BPF_F_NO_PREALLOC);

#[map(name = "LB_BACKENDS")]
pub static BACKENDS: Array<BackendValue> = Array::pinned(limits::MAX_BACKENDS, 0);

#[map(name = "LB_MAGLEV")]
pub static MAGLEV: Array<u64> = Array::pinned(
    maglev_words::words(limits::MAGLEV_SLOTS),
    maglev_words::MAP_FLAGS,
);

/// TCP flows, set-associative (see `lb_common::FlowSet` and `flow`). UDP flows live in
/// their own table (`UDP_FLOWS`): a burst of new UDP flows must not push idle established
/// TCP connections out (see `flow`).
#[map(name = "LB_FLOWS")]
pub static FLOWS: Array<FlowSet> = Array::pinned(FlowSet::sets(limits::DEFAULT_FLOWS), 0);

/// The SYN filter of `FLOWS`, a word per set (see `lb_common::SynFilter`).
#[map(name = "LB_FLOW_FILTER")]
pub static FLOW_FILTER: Array<u64> = Array::pinned(FlowSet::sets(limits::DEFAULT_FLOWS), 0);

#[map(name = "LB_UDP_FLOWS")]
pub static UDP_FLOWS: Array<FlowSet> = Array::pinned(FlowSet::sets(limits::DEFAULT_UDP_FLOWS), 0);

/// The flow-table write the slow path leaves for after its packet, per CPU (see `flow`).
#[map(name = "LB_FLOW_PENDING")]
pub static FLOW_PENDING: PerCpuArray<FlowPending> = PerCpuArray::pinned(1, 0);

/// The new-flow insert budget's state, per CPU (see `rate`).
#[map(name = "LB_FLOW_BUDGET")]
pub static FLOW_BUDGET: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

/// Flow-table events by `FlowEvent`, per CPU.
#[map(name = "LB_FLOW_STATS")]
pub static FLOW_STATS: PerCpuArray<u64> = PerCpuArray::pinned(FlowEvent::COUNT, 0);

/// The flow cache (`fastpath`): `FLOW_CACHE_CHUNKS_PER_CPU` chunks per CPU, CPU `c`'s
/// from index `c * FLOW_CACHE_CHUNKS_PER_CPU` (the loader sizes the outer array for the
/// possible CPUs and fills it with one small array per chunk, see `FlowCacheChunk`). A
/// chunk's inner array has one value, the chunk; an empty outer slot is a cache miss.
#[btf_map(name = "LB_FLOW_CACHE")]
pub static FLOW_CACHE: ArrayOfMaps<
    btf_maps::Array<FlowCacheChunk, 1>,
    { limits::FLOW_CACHE_CHUNKS_PER_CPU as usize },
> = ArrayOfMaps::new();

#[map(name = "LB_NEXTHOPS")]
pub static NEXTHOPS: PerCpuArray<NextHop> = PerCpuArray::pinned(limits::MAX_BACKENDS, 0);

#[map(name = "LB_NEIGH_MISS")]
pub static NEIGH_MISSES: HashMap<u32, NeighMiss> = HashMap::pinned(limits::NEIGH_MISSES, 0);

#[map(name = "LB_CONFIG")]
pub static CONFIG: Array<LbConfig> = Array::pinned(1, 0);

#[map(name = "LB_XDP_STATS")]
pub static XDP_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(XdpReason::COUNT, 0);

#[map(name = "LB_SVC_STATS")]
pub static SERVICE_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(limits::MAX_SERVICES, 0);

#[map(name = "LB_BE_STATS")]
pub static BACKEND_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(limits::MAX_BACKENDS, 0);

// The socket programs' frontends and target ports. The balancer never reads them, but the
// sync engine writes them beside `LB_SERVICES` (their tables share `LB_MAGLEV`), so they
// are created and pinned with the balancer's maps: the engine finds them whether or not the
// socket programs are installed. Flags and sizes as the socket object declares them.
#[map(name = "LB_SOCK_SVCS")]
pub static SOCK_SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::pinned(limits::MAX_SERVICES, BPF_F_NO_PREALLOC);

#[map(name = "LB_SOCK_TGTS")]
pub static SOCK_TARGETS: HashMap<BackendNatKey, BackendNatValue> =
    HashMap::pinned(limits::SOCK_TARGETS, BPF_F_NO_PREALLOC);

/// This node's endpoints (written by the daemon in cluster mode from the backend side's
/// translations); read only when a next hop is resolved, not per packet.
#[map(name = "LB_LOCAL_EPS")]
pub static LOCAL_ENDPOINTS: HashMap<VipKey, u32> =
    HashMap::pinned(limits::LOCAL_ENDPOINTS, BPF_F_NO_PREALLOC);

/// Fragmented datagrams whose first fragment was balanced: their later fragments follow it.
#[map(name = "LB_FRAGMENTS")]
pub static FRAGMENTS: LruHashMap<FragmentKey, FragmentValue> =
    LruHashMap::pinned(limits::FRAGMENTS, 0);
/// Every external service's source ranges (`source_range`); the trie is allocated per
/// entry (aya adds `BPF_F_NO_PREALLOC`, which the kernel requires).
#[map(name = "LB_SRC_RANGES")]
pub static SOURCE_RANGES: LpmTrie<SourceRangeKey, u32> = LpmTrie::pinned(limits::SOURCE_RANGES, 0);
/// `sessionAffinity: ClientIP`: the endpoint each client of a service keeps (see
/// `affinity`). An LRU, so a flood of new clients evicts the stalest entries first.
#[map(name = "LB_AFFINITY")]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::pinned(limits::AFFINITY_ENTRIES, 0);

// The socket programs' affinity entries: declared here for the reason `LB_SOCK_SVCS` is,
// so the sync engine can purge them whether or not the socket programs are installed.
#[map(name = "LB_SOCK_AFF")]
pub static SOCK_AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::pinned(limits::AFFINITY_ENTRIES, 0);
/// Addresses (a cluster's ClusterIPs) that refuse a (port, protocol) no frontend names;
/// read only after a service-map miss.
#[map(name = "LB_REJECT_ADDRS")]
pub static REJECT_ADDRS: HashMap<VipKey, u32> =
    HashMap::pinned(limits::REJECT_ADDRS, BPF_F_NO_PREALLOC);

/// The ICMP answer rate limit's state, per CPU: the time the next answer is due at the
/// configured rate (GCRA's theoretical arrival time), in `bpf_ktime_get_ns` nanoseconds.
#[map(name = "LB_ICMP_RATE")]
pub static ICMP_RATE: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);
