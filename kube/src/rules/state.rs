//! What the rules decide, as data: [`KubeDesiredState`] holds everything kube-proxy would
//! program on this node, per Service, service port and frontend address. The rule numbers
//! in the field comments are those of `docs/kube-proxy-semantics.md`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    sync::Arc,
};

use ipnetwork::IpNetwork;
use lb_telemetry::http::HealthCheck;
use serde::Serialize;

use super::{node::NodeInfo, Skipped};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl ServiceName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// An unset protocol is TCP.
    pub(crate) fn parse(value: Option<&str>) -> Option<Self> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub address: IpAddr,
    /// Target port on this endpoint (named target ports differ per endpoint, rule 4).
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node.
    pub local: bool,
}

/// The endpoints of one service port in one IP family (rules 11, 12, 16).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EndpointSets {
    pub cluster: Vec<Endpoint>,
    pub local: Vec<Endpoint>,
    /// Serving endpoints in neither set (terminating while others are ready, or outside
    /// the topology hints): no new flows, but established flows to them stay (rule 19).
    pub kept_for_flows: Vec<Endpoint>,
    /// How the ready endpoints of the Cluster set were narrowed by their hints (rule 16);
    /// `None` also when the set is the serving-terminating fallback.
    pub topology: TopologyMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum FrontendKind {
    ClusterIp,
    NodePort,
    ExternalIp,
    LoadBalancer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum EndpointSetKind {
    Cluster,
    Local,
}

/// What happens to a packet hitting a frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Verdict {
    /// Balance over this set of the frontend's family.
    Forward(EndpointSetKind),
    /// The policy's set is empty while the Service has endpoints elsewhere (rules 13, 14).
    Drop,
    /// The Service has no usable endpoints: ICMP unreachable / TCP RST (rule 9).
    Reject,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubeFrontend {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub kind: FrontendKind,
    /// For packets from outside the cluster arriving at this node.
    pub external: Verdict,
    /// For packets from pods and processes on this node (including the short-circuit of
    /// in-cluster traffic to external addresses, rule 13).
    pub internal: Verdict,
    /// The client's source address must reach the endpoint (eTP Local, rule 13).
    pub preserve_source: bool,
    /// Only for LoadBalancer frontends; empty allows every source (rule 18).
    pub source_ranges: Vec<IpNetwork>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubeServicePort {
    /// Port name; "" for an unnamed port.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
    pub endpoints: BTreeMap<IpFamily, EndpointSets>,
    pub frontends: Vec<KubeFrontend>,
}

impl KubeServicePort {
    pub fn endpoints_for(&self, family: IpFamily, set: EndpointSetKind) -> &[Endpoint] {
        match (self.endpoints.get(&family), set) {
            (Some(sets), EndpointSetKind::Cluster) => &sets.cluster,
            (Some(sets), EndpointSetKind::Local) => &sets.local,
            (None, _) => &[],
        }
    }
}

/// How the Cluster set was narrowed by topology hints (rule 16).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum TopologyMode {
    #[default]
    None,
    PreferSameZone,
    PreferSameNode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubeService {
    pub name: ServiceName,
    /// One per address family the Service has.
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<KubeServicePort>,
    /// `Some(timeout seconds)` for `sessionAffinity: ClientIP` (rule 17).
    pub session_affinity_seconds: Option<u32>,
    pub external_policy_local: bool,
    pub internal_policy_local: bool,
    /// Set for LoadBalancer Services with eTP Local (rule 15).
    pub health_check_node_port: Option<u16>,
    /// Distinct ready endpoints on this node, over all ports and families (rule 15).
    pub local_ready_endpoints: usize,
}

/// A healthCheckNodePort server this node must run (rule 15).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthCheckSpec {
    pub service: ServiceName,
    pub port: u16,
    pub local_ready_endpoints: usize,
}

impl HealthCheck for HealthCheckSpec {
    fn port(&self) -> u16 {
        self.port
    }
    fn namespace(&self) -> &str {
        &self.service.namespace
    }
    fn name(&self) -> &str {
        &self.service.name
    }
    fn local_ready_endpoints(&self) -> usize {
        self.local_ready_endpoints
    }
}

/// Everything kube-proxy would program on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KubeDesiredState {
    pub node: NodeInfo,
    /// A persistent map, names and results shared: a source publishes this state for
    /// every change, and a change must cost what it touches, not a copy of every entry.
    pub services: imbl::OrdMap<Arc<ServiceName>, Arc<KubeService>>,
    /// Everything skipped as invalid, in a stable order.
    pub skipped: Vec<Skipped>,
}

impl KubeDesiredState {
    /// healthCheckNodePort servers to run, sorted by port (rule 15).
    pub fn health_checks(&self) -> Vec<HealthCheckSpec> {
        let mut checks: Vec<HealthCheckSpec> = self
            .services
            .values()
            .filter_map(|svc| {
                svc.health_check_node_port.map(|port| HealthCheckSpec {
                    service: svc.name.clone(),
                    port,
                    local_ready_endpoints: svc.local_ready_endpoints,
                })
            })
            .collect();
        checks.sort_by_key(|c| c.port);
        checks
    }

    /// ClusterIPs on which traffic to any (port, protocol) without a frontend is rejected
    /// rather than forwarded (rule 9).
    pub fn reject_unknown_ports_on(&self) -> BTreeSet<IpAddr> {
        self.services
            .values()
            .flat_map(|svc| svc.cluster_ips.iter().copied())
            .collect()
    }

    /// Every frontend with its service and port.
    pub fn frontends(
        &self,
    ) -> impl Iterator<Item = (&KubeService, &KubeServicePort, &KubeFrontend)> + '_ {
        self.services.values().flat_map(|svc| {
            svc.ports
                .iter()
                .flat_map(move |port| port.frontends.iter().map(move |fe| (&**svc, port, fe)))
        })
    }

    pub fn endpoint_count(&self) -> usize {
        self.services
            .values()
            .flat_map(|svc| svc.ports.iter())
            .flat_map(|port| port.endpoints.values())
            .map(|sets| sets.cluster.len())
            .sum()
    }
}
