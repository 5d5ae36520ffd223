//! Desired state: what the maps should hold, as plain values. Pure, no I/O; shared by the
//! config-file and Kubernetes sources and the planner.

use std::{collections::BTreeSet, fmt, net::IpAddr, sync::Arc};

pub use ipnetwork::IpNetwork;
use lb_common::{ServiceKey, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => PROTO_TCP,
            Self::Udp => PROTO_UDP,
        }
    }

    pub fn from_number(number: u8) -> Option<Self> {
        match number {
            PROTO_TCP => Some(Self::Tcp),
            PROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// A service address as clients see it.
/// Where a frontend is balanced: which packets or calls meet it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Packets arriving from the network, balanced by the XDP program (`LB_SERVICES`).
    #[default]
    External,
    /// Pods and host processes of this node, balanced at `connect()`/`sendmsg()` by the
    /// socket programs (`LB_SOCK_SVCS`). kube-proxy gives such traffic its own endpoint
    /// set (the internal traffic policy for ClusterIPs, the Cluster set otherwise).
    Internal,
}

impl Scope {
    fn is_external(&self) -> bool {
        *self == Self::External
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Frontend {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Scope::is_external")]
    pub scope: Scope,
}

impl Frontend {
    pub fn key(&self) -> ServiceKey {
        let (addr, family) = addr_bytes(self.vip);
        ServiceKey {
            addr,
            port_be: self.port.to_be(),
            proto: self.protocol.number(),
            family,
        }
    }

    /// The external frontend a service map key names.
    pub fn from_key(key: &ServiceKey) -> Option<Self> {
        Self::from_scoped_key(key, Scope::External)
    }

    pub fn from_scoped_key(key: &ServiceKey, scope: Scope) -> Option<Self> {
        Some(Self {
            vip: addr_from_bytes(&key.addr, key.family)?,
            port: u16::from_be(key.port_be),
            protocol: Protocol::from_number(key.proto)?,
            scope,
        })
    }

    /// The same address, port and protocol, balanced in `scope`.
    pub fn in_scope(self, scope: Scope) -> Self {
        Self { scope, ..self }
    }
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.vip {
            IpAddr::V4(v4) => write!(f, "{v4}:{}/{}", self.port, self.protocol)?,
            IpAddr::V6(v6) => write!(f, "[{v6}]:{}/{}", self.port, self.protocol)?,
        }
        match self.scope {
            Scope::External => Ok(()),
            Scope::Internal => f.write_str(" (socket)"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSpec {
    pub address: IpAddr,
    /// Share of new flows relative to the service's other backends; 0 drains.
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    /// Sorted by address, so two specs with the same backends compare equal.
    pub backends: Vec<BackendSpec>,
    /// Maglev table size (a listed prime).
    pub table_size: u32,
    /// Without active backends the frontend refuses (kube-proxy's reject) instead of
    /// dropping.
    #[serde(default)]
    pub reject: bool,
    /// `loadBalancerSourceRanges`: only sources inside one of these open flows to the
    /// frontend (the XDP balancer; an internal-scope frontend carries none). Empty allows
    /// every source. Kept as [`source_ranges`] returns them, so equal lists compare equal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ranges: Vec<IpNetwork>,
    /// `sessionAffinity: ClientIP`: a client keeps its backend until it has sent nothing
    /// for this many seconds (1..=86400); `None`: every flow is balanced on its own.
    #[serde(default)]
    pub affinity_timeout_s: Option<u32>,
}

/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;
/// The largest timeout Kubernetes accepts (one day).
pub const MAX_AFFINITY_TIMEOUT_S: u32 = 86_400;

impl ServiceSpec {
    pub fn active_backends(&self) -> usize {
        self.backends.iter().filter(|b| b.weight > 0).count()
    }
}

/// Source ranges in their canonical form: each reduced to its network address (`10.1.2.3/8`
/// is `10.0.0.0/8`, the range the datapath matches), sorted, each once.
pub fn source_ranges(ranges: impl IntoIterator<Item = IpNetwork>) -> Vec<IpNetwork> {
    let mut out: Vec<IpNetwork> = ranges
        .into_iter()
        .map(|r| IpNetwork::new(r.network(), r.prefix()).expect("the prefix stays valid"))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Everything the datapath should serve.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// A persistent map of shared specs: a source publishes a new state for every change,
    /// and that must cost what the change touches, not a copy of every entry.
    pub services: imbl::OrdMap<Frontend, Arc<ServiceSpec>>,
    /// Addresses that refuse a (port, protocol) none of `services` names, in both scopes
    /// (kube-proxy rejects a ClusterIP's undefined ports): ICMP port unreachable from the
    /// balancer, ECONNREFUSED at the socket. Shared, as the specs are.
    pub rejecting: Arc<BTreeSet<IpAddr>>,
    pub settings: Settings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Seed of the per-packet flow hash; every LB node of a cluster must use the same.
    pub flow_hash_seed: u32,
    /// Seed of the Maglev permutations; every LB node of a cluster must use the same.
    pub maglev_seed: u32,
    /// Largest Maglev table the automatic size policy picks.
    pub max_table_size: u32,
    /// VLAN ids whose tagged frames the balancer serves besides untagged ones; unused
    /// entries 0. Empty by default: tagged frames are passed untouched.
    pub allowed_vlans: lb_common::VlanList,
}

/// Maglev table sizes the automatic policy picks from: every other listed prime from 1021
/// on, so each class spans a 4x range of backend counts (100 to 400 slots per backend) and
/// a service's size changes only when its active backend count crosses a class boundary
/// (10, 40, 163, 655, 2621). The floor, 1021, covers every service of up to 10 backends:
/// scaling such a service 3 -> 2 -> 3 keeps its table size, so Maglev moves only the flows
/// of the backend that left. With slots of at most 2 bytes it costs 2 KiB per distinct
/// backend set (4 KiB while the table is replaced); 10k distinct sets take 20 MiB.
pub const TABLE_SIZE_CLASSES: &[u32] = &[1021, 4093, 16381, 65521, 262139, 1_048_573];

/// Slots per active backend the policy keeps at least (the Maglev paper's rule of thumb
/// for small imbalance and disruption).
pub const SLOTS_PER_BACKEND: usize = 100;

impl Settings {
    /// The Maglev table size of a service with `active_backends` backends of weight above
    /// zero: the smallest class with [`SLOTS_PER_BACKEND`] slots for each, at most the
    /// largest listed size not above `max_table_size`. A function of the configuration
    /// alone (no history), so every LB node, restarted or joining late, picks the same.
    pub fn table_size_for(&self, active_backends: usize) -> u32 {
        let sizes = lb_hashing::maglev::TABLE_SIZES;
        let cap = sizes
            .iter()
            .copied()
            .rev()
            .find(|&s| s <= self.max_table_size)
            .unwrap_or(sizes[0]);
        let wanted = active_backends.max(1).saturating_mul(SLOTS_PER_BACKEND);
        TABLE_SIZE_CLASSES
            .iter()
            .copied()
            .find(|&s| s as usize >= wanted)
            .unwrap_or(cap)
            .min(cap)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            flow_hash_seed: 0x5eed_f10e,
            maglev_seed: lb_hashing::maglev::DEFAULT_SEED,
            max_table_size: 65_537,
            allowed_vlans: [0; lb_common::MAX_ALLOWED_VLANS],
        }
    }
}

pub fn addr_bytes(addr: IpAddr) -> ([u8; 16], u8) {
    match addr {
        IpAddr::V4(v4) => (lb_common::v4_addr(v4.octets()), FAMILY_V4),
        IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
    }
}

pub fn addr_from_bytes(addr: &[u8; 16], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::from([addr[0], addr[1], addr[2], addr[3]])),
        FAMILY_V6 => Some(IpAddr::from(*addr)),
        _ => None,
    }
}

/// An endpoint of a frontend and the port it listens on for that frontend, laid out in the
/// maps as `LB_BACKEND_NAT` entries. The frontend's scope says whose it is:
///
/// - external ([`LocalTranslation`]): the backend side. Packets of the frontend arriving
///   encapsulated for this local endpoint are delivered to its address and `target_port`
///   (replies get the frontend back as their source). The daemon on the endpoint's node
///   programs these, so the balancer needs no per-endpoint port and the endpoint no
///   frontend address on its loopback.
/// - internal ([`SocketTarget`]): the socket programs. A `connect()` to the frontend they
///   balance to this endpoint goes to `endpoint:target_port` (`LB_SOCK_TGTS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointPort {
    pub frontend: Frontend,
    pub endpoint: IpAddr,
    pub target_port: u16,
}

/// The backend side's translation to a local endpoint (an external-scope frontend).
pub type LocalTranslation = EndpointPort;
/// The socket programs' target port of an endpoint (an internal-scope frontend).
pub type SocketTarget = EndpointPort;

impl EndpointPort {
    pub fn key(&self) -> lb_common::BackendNatKey {
        let frontend = self.frontend.key();
        lb_common::BackendNatKey {
            frontend: frontend.addr,
            endpoint: addr_bytes(self.endpoint).0,
            port_be: frontend.port_be,
            proto: frontend.proto,
            family: frontend.family,
        }
    }

    pub fn value(&self) -> lb_common::BackendNatValue {
        lb_common::BackendNatValue {
            target_port_be: self.target_port.to_be(),
            _pad: 0,
        }
    }

    /// The entry a map of `scope`'s frontends holds; `None` when the key names no frontend
    /// or endpoint.
    pub fn from_entry(
        key: &lb_common::BackendNatKey,
        value: &lb_common::BackendNatValue,
        scope: Scope,
    ) -> Option<Self> {
        let service = ServiceKey {
            addr: key.frontend,
            port_be: key.port_be,
            proto: key.proto,
            family: key.family,
        };
        Some(Self {
            frontend: Frontend::from_scoped_key(&service, scope)?,
            endpoint: addr_from_bytes(&key.endpoint, key.family)?,
            target_port: u16::from_be(value.target_port_be),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges_are_reduced_to_networks_sorted_and_deduplicated() {
        let parsed: Vec<IpNetwork> = [
            "198.18.7.9/16",
            "2001:db8::5/32",
            "198.18.0.0/16",
            "10.0.0.1/32",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        let shown: Vec<String> = source_ranges(parsed)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(shown, ["10.0.0.1/32", "198.18.0.0/16", "2001:db8::/32"]);
    }

    #[test]
    fn table_size_classes_are_listed_primes_four_times_apart() {
        for pair in TABLE_SIZE_CLASSES.windows(2) {
            assert!(pair[1] / pair[0] >= 3, "{pair:?}");
        }
        for size in TABLE_SIZE_CLASSES {
            lb_hashing::maglev::validate_table_size(*size).unwrap();
        }
    }

    #[test]
    fn table_size_stays_put_within_a_class_and_respects_the_cap() {
        let s = Settings::default();
        for n in 0..=10 {
            assert_eq!(s.table_size_for(n), 1021, "{n} backends");
        }
        assert_eq!(s.table_size_for(11), 4093);
        assert_eq!(s.table_size_for(40), 4093);
        assert_eq!(s.table_size_for(41), 16381);
        assert_eq!(s.table_size_for(164), 65521);
        // Above the last class within the default cap: the cap.
        assert_eq!(s.table_size_for(1000), 65537);
        let small = Settings {
            max_table_size: 509,
            ..Settings::default()
        };
        assert_eq!(small.table_size_for(3), 509);
        let tiny = Settings {
            max_table_size: 10,
            ..Settings::default()
        };
        assert_eq!(tiny.table_size_for(3), 251);
        let huge = Settings {
            max_table_size: 1_048_573,
            ..Settings::default()
        };
        assert_eq!(huge.table_size_for(usize::MAX), 1_048_573);
    }
}
