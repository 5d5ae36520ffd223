//! The pin directory: on bpffs, and holding maps whose layouts this build can use.

use std::{ffi::CString, io, path::Path};

use aya::maps::MapData;
use lb_common::{
    limits, maglev_words, map_names, AffinityKey, AffinityValue, BackendNatKey, BackendNatValue,
    BackendValue, Counter, FlowEvent, FlowPending, FlowSet, FragmentKey, FragmentValue, LbConfig,
    NeighMiss, NextHop, RevNatKey, RevNatValue, ServiceKey, ServiceValue, SockReason, SockRevKey,
    SockRevValue, SourceRangeKey, TcReason, VipKey, XdpReason,
};

use super::{io_err, LoaderError};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub(super) fn statfs_type(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs is plain C data, for which all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string; statfs writes into the struct we own.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// Makes sure `pin_dir` exists on bpffs, mounting /sys/fs/bpf if the system has not.
pub fn prepare_pin_dir(pin_dir: &Path) -> Result<(), LoaderError> {
    let root = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(root) && statfs_type(root).map_err(io_err(root))? != BPF_FS_MAGIC {
        let src = CString::new("bpf").expect("no NUL");
        let target = CString::new("/sys/fs/bpf").expect("no NUL");
        // SAFETY: plain mount(2) call with valid C strings.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io_err(root)(io::Error::last_os_error()));
        }
    }
    std::fs::create_dir_all(pin_dir).map_err(io_err(pin_dir))?;
    if statfs_type(pin_dir).map_err(io_err(pin_dir))? != BPF_FS_MAGIC {
        return Err(LoaderError::NotBpfFs(pin_dir.to_path_buf()));
    }
    Ok(())
}

fn sizes<K, V>(entries: u32) -> (u32, u32, u32) {
    (
        std::mem::size_of::<K>() as u32,
        std::mem::size_of::<V>() as u32,
        entries,
    )
}

/// Capacities chosen at load time (the object's defaults otherwise). Arrays are
/// preallocated, so these are what the maps cost in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Maglev slots across all tables (one region per distinct table, one more for each
    /// table being replaced).
    pub maglev_slots: u32,
    /// TCP flow-table entries (whole sets of `FlowSet::WAYS`).
    pub flows: u32,
    /// UDP flow-table entries (whole sets).
    pub udp_flows: u32,
    /// Session-affinity entries of each scope's table (LRU; `LB_AFFINITY` and
    /// `LB_SOCK_AFF` alike).
    pub affinity: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            maglev_slots: limits::MAGLEV_SLOTS,
            flows: limits::DEFAULT_FLOWS,
            udp_flows: limits::DEFAULT_UDP_FLOWS,
            affinity: limits::AFFINITY_ENTRIES,
        }
    }
}

/// The possible CPUs (the flow cache holds a region per CPU).
pub(super) fn possible_cpus() -> Result<u32, LoaderError> {
    aya::util::nr_cpus()
        .map(|n| n as u32)
        .map_err(|(what, source)| LoaderError::Io {
            path: what.into(),
            source,
        })
}

/// Key size, value size and entries of every map this build reuses from the pin
/// directory (all it pins but the flow cache, which each load makes afresh).
pub(super) fn expected_layouts(map_sizes: &MapSizes) -> Vec<(&'static str, (u32, u32, u32))> {
    vec![
        (
            map_names::SERVICES,
            sizes::<ServiceKey, ServiceValue>(limits::MAX_SERVICES),
        ),
        (
            map_names::BACKENDS,
            sizes::<u32, BackendValue>(limits::MAX_BACKENDS),
        ),
        (
            map_names::MAGLEV,
            sizes::<u32, u64>(maglev_words::words(map_sizes.maglev_slots)),
        ),
        (
            map_names::FLOWS,
            sizes::<u32, FlowSet>(FlowSet::sets(map_sizes.flows)),
        ),
        (
            map_names::FLOW_FILTER,
            sizes::<u32, u64>(FlowSet::sets(map_sizes.flows)),
        ),
        (
            map_names::UDP_FLOWS,
            sizes::<u32, FlowSet>(FlowSet::sets(map_sizes.udp_flows)),
        ),
        (map_names::FLOW_BUDGET, sizes::<u32, u64>(1)),
        (map_names::FLOW_PENDING, sizes::<u32, FlowPending>(1)),
        (map_names::FLOW_STATS, sizes::<u32, u64>(FlowEvent::COUNT)),
        (
            map_names::NEXTHOPS,
            sizes::<u32, NextHop>(limits::MAX_BACKENDS),
        ),
        (
            map_names::NEIGH_MISSES,
            sizes::<u32, NeighMiss>(limits::NEIGH_MISSES),
        ),
        (map_names::CONFIG, sizes::<u32, LbConfig>(1)),
        (
            map_names::XDP_STATS,
            sizes::<u32, Counter>(XdpReason::COUNT),
        ),
        (
            map_names::SERVICE_STATS,
            sizes::<u32, Counter>(limits::MAX_SERVICES),
        ),
        (
            map_names::BACKEND_STATS,
            sizes::<u32, Counter>(limits::MAX_BACKENDS),
        ),
        (
            map_names::LOCAL_VIPS,
            sizes::<VipKey, u32>(limits::LOCAL_VIPS),
        ),
        (map_names::TC_STATS, sizes::<u32, Counter>(TcReason::COUNT)),
        (
            map_names::BACKEND_NAT,
            sizes::<BackendNatKey, BackendNatValue>(limits::BACKEND_NATS),
        ),
        (
            map_names::REV_NAT,
            sizes::<RevNatKey, RevNatValue>(limits::REV_NATS),
        ),
        (
            map_names::SOCK_SERVICES,
            sizes::<ServiceKey, ServiceValue>(limits::MAX_SERVICES),
        ),
        (
            map_names::SOCK_TARGETS,
            sizes::<BackendNatKey, BackendNatValue>(limits::SOCK_TARGETS),
        ),
        (
            map_names::LOCAL_ENDPOINTS,
            sizes::<VipKey, u32>(limits::LOCAL_ENDPOINTS),
        ),
        (
            map_names::SOCK_REVNAT,
            sizes::<SockRevKey, SockRevValue>(limits::SOCK_REVNATS),
        ),
        (
            map_names::SOCK_STATS,
            sizes::<u32, Counter>(SockReason::COUNT),
        ),
        (
            map_names::FRAGMENTS,
            sizes::<FragmentKey, FragmentValue>(limits::FRAGMENTS),
        ),
        (
            map_names::SOURCE_RANGES,
            sizes::<aya::maps::lpm_trie::Key<SourceRangeKey>, u32>(limits::SOURCE_RANGES),
        ),
        (
            map_names::REJECT_ADDRS,
            sizes::<VipKey, u32>(limits::REJECT_ADDRS),
        ),
        (map_names::ICMP_RATE, sizes::<u32, u64>(1)),
        (
            map_names::AFFINITY,
            sizes::<AffinityKey, AffinityValue>(map_sizes.affinity),
        ),
        (
            map_names::SOCK_AFFINITY,
            sizes::<AffinityKey, AffinityValue>(map_sizes.affinity),
        ),
    ]
}

/// The maps each object pins (one pin directory may hold both sides).
pub(super) const BALANCER_MAPS: &[&str] = &[
    map_names::SERVICES,
    map_names::BACKENDS,
    map_names::MAGLEV,
    map_names::FLOWS,
    map_names::FLOW_FILTER,
    map_names::UDP_FLOWS,
    map_names::FLOW_BUDGET,
    map_names::FLOW_PENDING,
    map_names::FLOW_STATS,
    map_names::FLOW_CACHE,
    map_names::NEXTHOPS,
    map_names::NEIGH_MISSES,
    map_names::CONFIG,
    map_names::XDP_STATS,
    map_names::SERVICE_STATS,
    map_names::BACKEND_STATS,
    // Written by the sync engine beside the services; read only by the socket programs.
    map_names::SOCK_SERVICES,
    map_names::SOCK_TARGETS,
    // Written from the backend side's translations; read by the balancer's next-hop step.
    map_names::LOCAL_ENDPOINTS,
    map_names::FRAGMENTS,
    map_names::SOURCE_RANGES,
    // Read by the balancer and by the socket programs after a service-map miss.
    map_names::REJECT_ADDRS,
    map_names::ICMP_RATE,
    // Session affinity of both scopes: the sync engine purges both from the balancer's pins.
    map_names::AFFINITY,
    map_names::SOCK_AFFINITY,
];
pub(super) const BACKEND_SIDE_MAPS: &[&str] = &[
    map_names::LOCAL_VIPS,
    map_names::TC_STATS,
    map_names::BACKEND_NAT,
    map_names::REV_NAT,
];

/// The socket programs share the balancer's tables, config and service counters.
pub(super) const SOCKET_MAPS: &[&str] = &[
    map_names::SOCK_SERVICES,
    map_names::SOCK_TARGETS,
    map_names::SOCK_REVNAT,
    map_names::SOCK_STATS,
    map_names::BACKENDS,
    map_names::MAGLEV,
    map_names::CONFIG,
    map_names::SERVICE_STATS,
    map_names::REJECT_ADDRS,
    map_names::SOCK_AFFINITY,
];

/// The capacities of the maps already pinned in `pin_dir` (defaults for those that are
/// not), so an object loaded beside an installed balancer expects what it finds.
pub(super) fn pinned_sizes(pin_dir: &Path) -> MapSizes {
    let entries = |name: &str| {
        MapData::from_pin(pin_dir.join(name))
            .and_then(|m| m.info())
            .ok()
            .map(|info| info.max_entries())
    };
    let default = MapSizes::default();
    MapSizes {
        maglev_slots: entries(map_names::MAGLEV).map_or(default.maglev_slots, |words| {
            words.saturating_mul(maglev_words::SLOTS_PER_WORD)
        }),
        flows: entries(map_names::FLOWS).map_or(default.flows, FlowSet::entries),
        udp_flows: entries(map_names::UDP_FLOWS).map_or(default.udp_flows, FlowSet::entries),
        affinity: entries(map_names::SOCK_AFFINITY)
            .or_else(|| entries(map_names::AFFINITY))
            .unwrap_or(default.affinity),
    }
}

/// Refuses to reuse pinned maps whose layout differs from this build's: the new programs
/// would misread them.
pub(super) fn check_pinned_layouts(
    pin_dir: &Path,
    sizes: &MapSizes,
    names: &[&str],
) -> Result<(), LoaderError> {
    for (name, expected) in expected_layouts(sizes) {
        if !names.contains(&name) {
            continue;
        }
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let Ok(info) = MapData::from_pin(&path).and_then(|m| m.info()) else {
            continue;
        };
        let found = (info.key_size(), info.value_size(), info.max_entries());
        if found != expected {
            return Err(LoaderError::IncompatibleMap {
                name,
                found,
                expected,
                dir: pin_dir.display().to_string(),
            });
        }
    }
    Ok(())
}
