//! Every map the socket programs use, pinned by name. The balancer's service tables
//! (`LB_MAGLEV`, `LB_BACKENDS`), its config (the flow-hash seed) and its per-service
//! counters are the very pins the XDP object uses, so one sync engine programs both paths
//! and a socket-level selection counts for its service like a balanced packet.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    limits, maglev_words, AffinityKey, AffinityValue, BackendNatKey, BackendNatValue, BackendValue,
    Counter, LbConfig, ServiceKey, ServiceValue, SockReason, SockRevKey, SockRevValue, VipKey,
};

/// As for the balancer's service map: without prealloc a replaced value is freed after an
/// RCU grace period, so a lookup never sees it rewritten underneath it. The same flag
/// keeps the target table, which has a row per endpoint, from costing its whole capacity.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map(name = "LB_SOCK_SVCS")]
pub static SOCK_SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::pinned(limits::MAX_SERVICES, BPF_F_NO_PREALLOC);

#[map(name = "LB_SOCK_TGTS")]
pub static SOCK_TARGETS: HashMap<BackendNatKey, BackendNatValue> =
    HashMap::pinned(limits::SOCK_TARGETS, BPF_F_NO_PREALLOC);

#[map(name = "LB_SOCK_REV")]
pub static SOCK_REVNAT: LruHashMap<SockRevKey, SockRevValue> =
    LruHashMap::pinned(limits::SOCK_REVNATS, 0);

#[map(name = "LB_SOCK_STATS")]
pub static SOCK_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(SockReason::COUNT, 0);

#[map(name = "LB_BACKENDS")]
pub static BACKENDS: Array<BackendValue> = Array::pinned(limits::MAX_BACKENDS, 0);

#[map(name = "LB_MAGLEV")]
pub static MAGLEV: Array<u64> = Array::pinned(
    maglev_words::words(limits::MAGLEV_SLOTS),
    maglev_words::MAP_FLAGS,
);

#[map(name = "LB_CONFIG")]
pub static CONFIG: Array<LbConfig> = Array::pinned(1, 0);

/// Addresses (ClusterIPs) that refuse a (port, protocol) no frontend names; read only
/// after a service-map miss. The balancer's map, pinned beside it.
#[map(name = "LB_REJECT_ADDRS")]
pub static REJECT_ADDRS: HashMap<VipKey, u32> =
    HashMap::pinned(limits::REJECT_ADDRS, BPF_F_NO_PREALLOC);

#[map(name = "LB_SVC_STATS")]
pub static SERVICE_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(limits::MAX_SERVICES, 0);

/// `sessionAffinity: ClientIP` at the socket: the endpoint each network namespace keeps
/// per service (see `affinity`). The XDP object declares it too, so the daemon finds it.
#[map(name = "LB_SOCK_AFF")]
pub static SOCK_AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::pinned(limits::AFFINITY_ENTRIES, 0);
