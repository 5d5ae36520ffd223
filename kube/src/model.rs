//! The pure model: (Services, EndpointSlices, this node's Node, [`NodeConfig`]) → the rich
//! desired state kube-proxy would program on this node ([`KubeDesiredState`]). No I/O.
//!
//! Rule numbers in comments refer to `shared/kube-proxy-semantics.md`. Objects (or parts of
//! objects) that are invalid are skipped and recorded as [`Skipped`] entries; they never
//! affect other services.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use serde::Serialize;

/// Label that hands a Service (and its slices) to another proxy (rule 2).
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label the EndpointSlice controller puts on slices of headless Services (rule 2).
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Label joining an EndpointSlice to its Service (rule 3).
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Node label holding the node's zone (rule 16).
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// Taint the cluster autoscaler sets on a node it is about to delete (rule 21).
pub const TAINT_TO_BE_DELETED: &str = "ToBeDeletedByClusterAutoscaler";
/// Annotation enabling topology-aware routing before `trafficDistribution` existed.
pub const ANNOTATION_TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";
const ANNOTATION_TOPOLOGY_HINTS_DEPRECATED: &str = "service.kubernetes.io/topology-aware-hints";

/// The API server refuses slices with more endpoints than this; a bigger one is hostile.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 1000;
/// More endpoints than the datapath's backend map holds cannot be served by any node.
pub const MAX_ENDPOINTS_PER_SERVICE: usize = 65_536;
/// Kubernetes' default and upper bound for `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;
pub const MAX_AFFINITY_TIMEOUT_SECONDS: u32 = 86_400;

/// Why (part of) an object was skipped. One variant per reason, so the metrics can count
/// by [`InvalidObject::reason`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum InvalidObject {
    #[error("{field}: {value:?} is not an IP address")]
    BadAddress { field: String, value: String },
    #[error("{field}: {value} is not a port (1-65535)")]
    BadPort { field: String, value: i64 },
    #[error("{field}: protocol {value:?} is not TCP, UDP or SCTP")]
    BadProtocol { field: String, value: String },
    #[error("{field}: port {key} is defined twice")]
    DuplicatePort { field: String, key: String },
    #[error("{field}: {value:?} is not a CIDR")]
    BadCidr { field: String, value: String },
    #[error("{field}: {value} is out of range, using {used}")]
    BadAffinityTimeout {
        field: String,
        value: i64,
        used: u32,
    },
    #[error("{count} endpoints exceed the limit of {max}")]
    TooManyEndpoints { count: usize, max: usize },
    #[error("addressType {value:?} is not IPv4 or IPv6")]
    UnsupportedAddressType { value: String },
    #[error("{field}: {value} does not match the slice's addressType {address_type}")]
    WrongFamily {
        field: String,
        value: IpAddr,
        address_type: String,
    },
    #[error("object without a name")]
    Unnamed,
    #[error("object does not parse: {error}")]
    Malformed { error: String },
}

impl InvalidObject {
    /// Stable label for metrics (`reason="..."`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadAddress { .. } => "bad_address",
            Self::BadPort { .. } => "bad_port",
            Self::BadProtocol { .. } => "bad_protocol",
            Self::DuplicatePort { .. } => "duplicate_port",
            Self::BadCidr { .. } => "bad_cidr",
            Self::BadAffinityTimeout { .. } => "bad_affinity_timeout",
            Self::TooManyEndpoints { .. } => "too_many_endpoints",
            Self::UnsupportedAddressType { .. } => "unsupported_address_type",
            Self::WrongFamily { .. } => "wrong_family",
            Self::Unnamed => "unnamed",
            Self::Malformed { .. } => "malformed",
        }
    }
}

/// One skipped object or part of one, with the object it came from (`Kind ns/name`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub object: String,
    pub problem: InvalidObject,
}

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
    fn parse(value: Option<&str>) -> Option<Self> {
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

/// An IP prefix, for `loadBalancerSourceRanges`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, len) = text.trim().split_once('/')?;
        let address: IpAddr = addr.parse().ok()?;
        let prefix_len: u8 = len.parse().ok()?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Self {
            address,
            prefix_len,
        })
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.address, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// How this node takes part, given by the daemon's flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's name (`spec.nodeName` of its pods), for Local endpoints and node hints.
    pub node_name: String,
    /// Addresses NodePorts answer on, like kube-proxy's `nodePortAddresses`; `None` means the
    /// node's InternalIP and ExternalIP addresses.
    pub node_port_addresses: Option<Vec<IpAddr>>,
    /// Also serve NodePorts on 127.0.0.1 (kube-proxy's `route_localnet` behaviour).
    pub node_port_on_loopback: bool,
    /// Overrides the node's `topology.kubernetes.io/zone` label.
    pub zone: Option<String>,
    /// `None`: serve Services without the service-proxy-name label (kube-proxy's default).
    /// `Some(name)`: serve only Services labelled with this proxy name.
    pub service_proxy_name: Option<String>,
}

/// What the model takes from this node's Node object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub zone: Option<String>,
    /// Addresses NodePorts answer on, sorted.
    pub node_port_addresses: Vec<IpAddr>,
    /// False while the node is being deleted or tainted for deletion: `/healthz` then fails
    /// so load balancers move traffic away (rule 21).
    pub eligible: bool,
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
    pub source_ranges: Vec<Cidr>,
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

/// How the Cluster set was narrowed by topology (rule 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TopologyMode {
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
    pub topology: TopologyMode,
}

/// A healthCheckNodePort server this node must run (rule 15).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthCheckSpec {
    pub service: ServiceName,
    pub port: u16,
    pub local_ready_endpoints: usize,
}

/// Everything kube-proxy would program on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KubeDesiredState {
    pub node: NodeInfo,
    /// Names shared too: a source publishes this state for every change, and copying the
    /// map must not copy every name.
    pub services: BTreeMap<Arc<ServiceName>, Arc<KubeService>>,
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

/// `Kind ns/name`, for warnings.
fn object_id(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    format!(
        "{kind} {}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// Whether an object carrying these labels is ours to program (rule 2). The watch's label
/// selector says the same; checking again keeps the model correct on its own.
pub fn labels_select(
    labels: Option<&BTreeMap<String, String>>,
    service_proxy_name: Option<&str>,
) -> bool {
    let get = |key: &str| labels.and_then(|l| l.get(key));
    if get(LABEL_HEADLESS).is_some() {
        return false;
    }
    match (get(LABEL_SERVICE_PROXY_NAME), service_proxy_name) {
        (None, None) => true,
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => false,
    }
}

/// The node facts the model needs (rules 6, 16, 21).
pub fn node_info(node: Option<&Node>, cfg: &NodeConfig, skipped: &mut Vec<Skipped>) -> NodeInfo {
    let mut node_addresses = Vec::new();
    let mut zone = None;
    let mut eligible = true;
    if let Some(node) = node {
        let id = object_id("Node", &node.metadata);
        zone = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_ZONE))
            .cloned();
        let tainted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|taints| taints.iter().any(|t| t.key == TAINT_TO_BE_DELETED));
        eligible = node.metadata.deletion_timestamp.is_none() && !tainted;
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for (i, a) in addresses.into_iter().flatten().enumerate() {
            if a.type_ != "InternalIP" && a.type_ != "ExternalIP" {
                continue;
            }
            match a.address.parse::<IpAddr>() {
                Ok(ip) => node_addresses.push(ip),
                Err(_) => skipped.push(Skipped {
                    object: id.clone(),
                    problem: InvalidObject::BadAddress {
                        field: format!("status.addresses[{i}].address"),
                        value: a.address.clone(),
                    },
                }),
            }
        }
    }
    let mut node_port_addresses: Vec<IpAddr> = cfg
        .node_port_addresses
        .clone()
        .unwrap_or(node_addresses)
        .into_iter()
        .filter(|a| !a.is_loopback() && !a.is_unspecified() && !a.is_multicast())
        .collect();
    if cfg.node_port_on_loopback {
        // Only IPv4 loopback: the kernel never routes ::1 off the host (kube-proxy likewise).
        node_port_addresses.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    node_port_addresses.sort();
    node_port_addresses.dedup();
    NodeInfo {
        name: cfg.node_name.clone(),
        zone: cfg.zone.clone().or(zone),
        node_port_addresses,
        eligible,
    }
}

/// Builds the whole desired state. Slices are matched to Services here; the watch keeps a
/// per-service cache and calls [`build_service`] only for what changed.
pub fn build(
    services: &[Service],
    slices: &[EndpointSlice],
    node: Option<&Node>,
    cfg: &NodeConfig,
) -> KubeDesiredState {
    let mut skipped = Vec::new();
    let node = node_info(node, cfg, &mut skipped);
    let mut by_service: BTreeMap<ServiceName, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if let Some(name) = slice_service(slice) {
            by_service.entry(name).or_default().push(slice);
        }
    }
    let mut state = KubeDesiredState {
        node,
        services: BTreeMap::new(),
        skipped,
    };
    for svc in services {
        let Some(name) = service_name(svc) else {
            state.skipped.push(Skipped {
                object: object_id("Service", &svc.metadata),
                problem: InvalidObject::Unnamed,
            });
            continue;
        };
        let slices = by_service.get(&name).map(Vec::as_slice).unwrap_or(&[]);
        let built = build_service(svc, slices, &state.node, cfg);
        state.skipped.extend(built.skipped);
        if let Some(service) = built.service {
            state.services.insert(Arc::new(name), Arc::new(service));
        }
    }
    sort_skipped(&mut state.skipped);
    state
}

/// The canonical order of [`KubeDesiredState::skipped`], so states built in different
/// orders compare equal.
pub fn sort_skipped(skipped: &mut [Skipped]) {
    skipped.sort_by_cached_key(|s| (s.object.clone(), s.problem.to_string()));
}

pub fn service_name(svc: &Service) -> Option<ServiceName> {
    Some(ServiceName::new(
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().filter(|n| !n.is_empty())?,
    ))
}

/// The Service a slice belongs to, by its `kubernetes.io/service-name` label (rule 3).
pub fn slice_service(slice: &EndpointSlice) -> Option<ServiceName> {
    let name = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    if name.is_empty() {
        return None;
    }
    Some(ServiceName::new(
        slice.metadata.namespace.clone().unwrap_or_default(),
        name.clone(),
    ))
}

/// One Service's result: `service` is `None` when the Service is not ours to program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuiltService {
    pub service: Option<KubeService>,
    pub skipped: Vec<Skipped>,
}

/// An endpoint as read from a slice, before the sets are chosen.
#[derive(Clone, Debug)]
struct SliceEndpoint {
    address: IpAddr,
    port: u16,
    ready: bool,
    serving: bool,
    terminating: bool,
    node_name: Option<String>,
    zone_hints: Option<Vec<String>>,
    node_hints: Option<Vec<String>>,
}

/// Builds one Service from its object and its slices.
pub fn build_service(
    svc: &Service,
    slices: &[&EndpointSlice],
    node: &NodeInfo,
    cfg: &NodeConfig,
) -> BuiltService {
    let mut out = BuiltService::default();
    let Some(name) = service_name(svc) else {
        return out;
    };
    let id = format!("Service {name}");
    let Some(spec) = svc.spec.as_ref() else {
        return out;
    };
    // Rule 2: labels hand the Service to another proxy or mark it headless.
    if !labels_select(
        svc.metadata.labels.as_ref(),
        cfg.service_proxy_name.as_deref(),
    ) {
        return out;
    }
    // Rule 1: headless and ExternalName Services have nothing to proxy.
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if service_type == "ExternalName" {
        return out;
    }
    let primary = spec.cluster_ip.as_deref().unwrap_or("");
    if primary.is_empty() || primary == "None" {
        return out;
    }
    let skip = |out: &mut BuiltService, problem| {
        out.skipped.push(Skipped {
            object: id.clone(),
            problem,
        })
    };

    // Rule 5 and 22: one ClusterIP per family; `clusterIPs` supersedes `clusterIP`.
    let listed: Vec<String> = match spec.cluster_ips.as_ref().filter(|ips| !ips.is_empty()) {
        Some(ips) => ips.clone(),
        None => vec![primary.to_owned()],
    };
    let mut cluster_ips: Vec<IpAddr> = Vec::new();
    for (i, text) in listed.iter().enumerate() {
        match text.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => {
                if !cluster_ips
                    .iter()
                    .any(|c| IpFamily::of(*c) == IpFamily::of(ip))
                {
                    cluster_ips.push(ip);
                }
            }
            _ => skip(
                &mut out,
                InvalidObject::BadAddress {
                    field: format!("spec.clusterIPs[{i}]"),
                    value: text.clone(),
                },
            ),
        }
    }
    if cluster_ips.is_empty() {
        return out;
    }
    let families: BTreeSet<IpFamily> = cluster_ips.iter().map(|ip| IpFamily::of(*ip)).collect();

    let is_lb = service_type == "LoadBalancer";
    let externally_accessible = is_lb
        || service_type == "NodePort"
        || spec.external_ips.as_ref().is_some_and(|e| !e.is_empty());
    let external_policy_local =
        externally_accessible && spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_policy_local = spec.internal_traffic_policy.as_deref() == Some("Local");

    // Rule 7: external IPs, same family as a ClusterIP only.
    let mut external_ips = Vec::new();
    for (i, text) in spec.external_ips.iter().flatten().enumerate() {
        match text.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => {
                if families.contains(&IpFamily::of(ip)) {
                    external_ips.push(ip);
                }
            }
            _ => skip(
                &mut out,
                InvalidObject::BadAddress {
                    field: format!("spec.externalIPs[{i}]"),
                    value: text.clone(),
                },
            ),
        }
    }
    // Rule 8: LB ingress IPs unless the LB proxies itself (`ipMode: Proxy`).
    let mut lb_ips = Vec::new();
    if is_lb {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for (i, ing) in ingress.into_iter().flatten().enumerate() {
            let Some(text) = ing.ip.as_deref().filter(|t| !t.is_empty()) else {
                continue;
            };
            if ing.ip_mode.as_deref().is_some_and(|m| m != "VIP") {
                continue;
            }
            match text.parse::<IpAddr>() {
                Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => {
                    if families.contains(&IpFamily::of(ip)) {
                        lb_ips.push(ip);
                    }
                }
                _ => skip(
                    &mut out,
                    InvalidObject::BadAddress {
                        field: format!("status.loadBalancer.ingress[{i}].ip"),
                        value: text.to_owned(),
                    },
                ),
            }
        }
    }
    // Rule 18: source ranges, kept per family with the frontend; invalid entries dropped.
    let mut source_ranges = Vec::new();
    if is_lb {
        for (i, text) in spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .enumerate()
        {
            match Cidr::parse(text) {
                Some(cidr) => source_ranges.push(cidr),
                None => skip(
                    &mut out,
                    InvalidObject::BadCidr {
                        field: format!("spec.loadBalancerSourceRanges[{i}]"),
                        value: text.clone(),
                    },
                ),
            }
        }
    }
    // Rule 17.
    let session_affinity_seconds =
        (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            let configured = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            match configured {
                None => DEFAULT_AFFINITY_TIMEOUT_SECONDS,
                Some(t) if t > 0 && t as u32 <= MAX_AFFINITY_TIMEOUT_SECONDS => t as u32,
                Some(t) => {
                    skip(
                        &mut out,
                        InvalidObject::BadAffinityTimeout {
                            field: "spec.sessionAffinityConfig.clientIP.timeoutSeconds".into(),
                            value: i64::from(t),
                            used: DEFAULT_AFFINITY_TIMEOUT_SECONDS,
                        },
                    );
                    DEFAULT_AFFINITY_TIMEOUT_SECONDS
                }
            }
        });
    let health_check_node_port = if is_lb && external_policy_local {
        match spec.health_check_node_port {
            None | Some(0) => None,
            Some(p) => match u16::try_from(p).ok().filter(|p| *p != 0) {
                Some(p) => Some(p),
                None => {
                    skip(
                        &mut out,
                        InvalidObject::BadPort {
                            field: "spec.healthCheckNodePort".into(),
                            value: i64::from(p),
                        },
                    );
                    None
                }
            },
        }
    } else {
        None
    };

    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let topology = topology_mode(svc);

    // Endpoints, keyed by the slice port (name, protocol) they serve (rules 3, 4).
    let mut slice_endpoints: BTreeMap<(String, Protocol), Vec<SliceEndpoint>> = BTreeMap::new();
    let mut total = 0usize;
    let mut sorted_slices: Vec<&EndpointSlice> = slices
        .iter()
        .copied()
        .filter(|s| {
            labels_select(
                s.metadata.labels.as_ref(),
                cfg.service_proxy_name.as_deref(),
            )
        })
        .collect();
    sorted_slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for slice in sorted_slices {
        total += read_slice(
            slice,
            publish_not_ready,
            &families,
            &mut slice_endpoints,
            &mut out.skipped,
        );
    }
    if total > MAX_ENDPOINTS_PER_SERVICE {
        skip(
            &mut out,
            InvalidObject::TooManyEndpoints {
                count: total,
                max: MAX_ENDPOINTS_PER_SERVICE,
            },
        );
        return out;
    }

    // Ports (rule 4): (name, protocol) identifies a port; a duplicate key or a duplicate
    // (port, protocol) is skipped, keeping the first.
    let mut ports = Vec::new();
    let mut seen_keys = BTreeSet::new();
    let mut seen_numbers = BTreeSet::new();
    let mut local_ready: BTreeSet<IpAddr> = BTreeSet::new();
    for (i, sp) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{i}]");
        let Some(protocol) = Protocol::parse(sp.protocol.as_deref()) else {
            skip(
                &mut out,
                InvalidObject::BadProtocol {
                    field: format!("{field}.protocol"),
                    value: sp.protocol.clone().unwrap_or_default(),
                },
            );
            continue;
        };
        let Some(port) = valid_port(i64::from(sp.port)) else {
            skip(
                &mut out,
                InvalidObject::BadPort {
                    field: format!("{field}.port"),
                    value: i64::from(sp.port),
                },
            );
            continue;
        };
        let port_name = sp.name.clone().unwrap_or_default();
        if !seen_keys.insert((port_name.clone(), protocol))
            || !seen_numbers.insert((port, protocol))
        {
            skip(
                &mut out,
                InvalidObject::DuplicatePort {
                    field: field.clone(),
                    key: format!("{port_name:?} {port}/{protocol}"),
                },
            );
            continue;
        }
        let node_port = match sp.node_port {
            None | Some(0) => None,
            Some(np) => match valid_port(i64::from(np)) {
                Some(np) => Some(np),
                None => {
                    skip(
                        &mut out,
                        InvalidObject::BadPort {
                            field: format!("{field}.nodePort"),
                            value: i64::from(np),
                        },
                    );
                    None
                }
            },
        };

        let raw = slice_endpoints
            .get(&(port_name.clone(), protocol))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut endpoints = BTreeMap::new();
        for family in &families {
            let of_family: Vec<&SliceEndpoint> = raw
                .iter()
                .filter(|e| IpFamily::of(e.address) == *family)
                .collect();
            let sets = choose_sets(&of_family, topology, node);
            local_ready.extend(sets.local.iter().filter(|e| e.ready).map(|e| e.address));
            endpoints.insert(*family, sets);
        }

        let mut port_state = KubeServicePort {
            name: port_name,
            protocol,
            port,
            node_port,
            endpoints,
            frontends: Vec::new(),
        };
        port_state.frontends = frontends_for(
            &port_state,
            &cluster_ips,
            &external_ips,
            &lb_ips,
            node,
            &source_ranges,
            external_policy_local,
            internal_policy_local,
            externally_accessible,
        );
        ports.push(port_state);
    }

    out.service = Some(KubeService {
        name,
        cluster_ips,
        ports,
        session_affinity_seconds,
        external_policy_local,
        internal_policy_local,
        health_check_node_port,
        local_ready_endpoints: local_ready.len(),
        topology,
    });
    out
}

fn valid_port(value: i64) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}

fn topology_mode(svc: &Service) -> TopologyMode {
    let spec = svc.spec.as_ref();
    match spec.and_then(|s| s.traffic_distribution.as_deref()) {
        Some("PreferSameNode") => return TopologyMode::PreferSameNode,
        Some("PreferClose" | "PreferSameZone") => return TopologyMode::PreferSameZone,
        _ => {}
    }
    let annotations = svc.metadata.annotations.as_ref();
    let annotated = [
        ANNOTATION_TOPOLOGY_MODE,
        ANNOTATION_TOPOLOGY_HINTS_DEPRECATED,
    ]
    .iter()
    .filter_map(|key| annotations.and_then(|a| a.get(*key)))
    .any(|v| v.eq_ignore_ascii_case("auto"));
    if annotated {
        TopologyMode::PreferSameZone
    } else {
        TopologyMode::None
    }
}

fn read_slice(
    slice: &EndpointSlice,
    publish_not_ready: bool,
    families: &BTreeSet<IpFamily>,
    into: &mut BTreeMap<(String, Protocol), Vec<SliceEndpoint>>,
    skipped: &mut Vec<Skipped>,
) -> usize {
    let id = object_id("EndpointSlice", &slice.metadata);
    let mut skip = |problem| {
        skipped.push(Skipped {
            object: id.clone(),
            problem,
        })
    };
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        // FQDN slices are for DNS-only Services: nothing to proxy, not an error.
        "FQDN" => return 0,
        other => {
            skip(InvalidObject::UnsupportedAddressType {
                value: other.to_owned(),
            });
            return 0;
        }
    };
    let endpoints = slice.endpoints.as_deref().unwrap_or(&[]);
    if endpoints.len() > MAX_ENDPOINTS_PER_SLICE {
        skip(InvalidObject::TooManyEndpoints {
            count: endpoints.len(),
            max: MAX_ENDPOINTS_PER_SLICE,
        });
        return 0;
    }
    if !families.contains(&family) {
        return 0;
    }
    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            skip(InvalidObject::BadProtocol {
                field: format!("ports[{i}].protocol"),
                value: p.protocol.clone().unwrap_or_default(),
            });
            continue;
        };
        let Some(number) = p.port.and_then(|n| valid_port(i64::from(n))) else {
            skip(InvalidObject::BadPort {
                field: format!("ports[{i}].port"),
                value: p.port.map_or(0, i64::from),
            });
            continue;
        };
        ports.push((p.name.clone().unwrap_or_default(), protocol, number));
    }
    for (i, ep) in endpoints.iter().enumerate() {
        // Rule 3: the first address is the endpoint's; the others are ignored by design.
        let Some(text) = ep.addresses.first() else {
            continue;
        };
        let address = match text.parse::<IpAddr>() {
            Ok(a) if !a.is_unspecified() && !a.is_multicast() => a,
            _ => {
                skip(InvalidObject::BadAddress {
                    field: format!("endpoints[{i}].addresses[0]"),
                    value: text.clone(),
                });
                continue;
            }
        };
        if IpFamily::of(address) != family {
            skip(InvalidObject::WrongFamily {
                field: format!("endpoints[{i}].addresses[0]"),
                value: address,
                address_type: slice.address_type.clone(),
            });
            continue;
        }
        // Rule 10: unset `ready` means ready; unset `serving` follows `ready`.
        let conditions = ep.conditions.as_ref();
        let ready_condition = conditions.and_then(|c| c.ready).unwrap_or(true);
        let serving = conditions
            .and_then(|c| c.serving)
            .unwrap_or(ready_condition);
        let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        let hints = ep.hints.as_ref();
        for (name, protocol, number) in &ports {
            into.entry((name.clone(), *protocol))
                .or_default()
                .push(SliceEndpoint {
                    address,
                    port: *number,
                    ready: publish_not_ready || ready_condition,
                    serving,
                    terminating,
                    node_name: ep.node_name.clone(),
                    zone_hints: hints
                        .and_then(|h| h.for_zones.as_ref())
                        .map(|z| z.iter().map(|z| z.name.clone()).collect()),
                    node_hints: hints
                        .and_then(|h| h.for_nodes.as_ref())
                        .map(|n| n.iter().map(|n| n.name.clone()).collect()),
                });
        }
    }
    endpoints.len()
}

/// Rules 11, 12 and 16 for one port and family.
fn choose_sets(raw: &[&SliceEndpoint], topology: TopologyMode, node: &NodeInfo) -> EndpointSets {
    // Rule 3: the same endpoint in several slices counts once; if the copies disagree, the
    // most available reading wins, so a stale slice cannot take a live endpoint away.
    let mut merged: BTreeMap<(IpAddr, u16), SliceEndpoint> = BTreeMap::new();
    for ep in raw {
        merged
            .entry((ep.address, ep.port))
            .and_modify(|seen| {
                seen.ready |= ep.ready;
                seen.serving |= ep.serving;
                seen.terminating &= ep.terminating;
            })
            .or_insert_with(|| (*ep).clone());
    }
    let all: Vec<&SliceEndpoint> = merged.values().collect();
    let is_local = |e: &SliceEndpoint| e.node_name.as_deref() == Some(node.name.as_str());

    let ready: Vec<&SliceEndpoint> = all.iter().copied().filter(|e| e.ready).collect();
    let cluster = if ready.is_empty() {
        all.iter()
            .copied()
            .filter(|e| e.serving && e.terminating)
            .collect()
    } else {
        filter_by_topology(ready, topology, node)
    };
    let local_ready: Vec<&SliceEndpoint> = all
        .iter()
        .copied()
        .filter(|e| e.ready && is_local(e))
        .collect();
    let local = if local_ready.is_empty() {
        all.iter()
            .copied()
            .filter(|e| e.serving && e.terminating && is_local(e))
            .collect()
    } else {
        local_ready
    };
    let finish = |set: Vec<&SliceEndpoint>| -> Vec<Endpoint> {
        set.into_iter()
            .map(|e| Endpoint {
                address: e.address,
                port: e.port,
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
                local: is_local(e),
            })
            .collect()
    };
    let in_sets: BTreeSet<(IpAddr, u16)> = cluster
        .iter()
        .chain(local.iter())
        .map(|e| (e.address, e.port))
        .collect();
    let kept: Vec<&SliceEndpoint> = all
        .iter()
        .copied()
        .filter(|e| e.serving && !in_sets.contains(&(e.address, e.port)))
        .collect();
    EndpointSets {
        cluster: finish(cluster),
        local: finish(local),
        kept_for_flows: finish(kept),
    }
}

/// Rule 16: narrow the ready endpoints to this node's (or zone's) when every endpoint
/// carries hints and one matches; otherwise hints are ignored.
fn filter_by_topology<'a>(
    ready: Vec<&'a SliceEndpoint>,
    mode: TopologyMode,
    node: &NodeInfo,
) -> Vec<&'a SliceEndpoint> {
    let narrow = |hints: fn(&SliceEndpoint) -> Option<&Vec<String>>, want: &str| {
        let all_hinted = ready
            .iter()
            .all(|e| hints(e).is_some_and(|h| !h.is_empty()));
        if !all_hinted {
            return None;
        }
        let matching: Vec<&'a SliceEndpoint> = ready
            .iter()
            .copied()
            .filter(|e| hints(e).is_some_and(|h| h.iter().any(|z| z == want)))
            .collect();
        (!matching.is_empty()).then_some(matching)
    };
    if mode == TopologyMode::PreferSameNode {
        if let Some(set) = narrow(|e| e.node_hints.as_ref(), &node.name) {
            return set;
        }
    }
    if mode != TopologyMode::None {
        if let Some(zone) = node.zone.as_deref() {
            if let Some(set) = narrow(|e| e.zone_hints.as_ref(), zone) {
                return set;
            }
        }
    }
    ready
}

#[allow(clippy::too_many_arguments)]
fn frontends_for(
    port: &KubeServicePort,
    cluster_ips: &[IpAddr],
    external_ips: &[IpAddr],
    lb_ips: &[IpAddr],
    node: &NodeInfo,
    source_ranges: &[Cidr],
    external_policy_local: bool,
    internal_policy_local: bool,
    externally_accessible: bool,
) -> Vec<KubeFrontend> {
    let internal_set = if internal_policy_local {
        EndpointSetKind::Local
    } else {
        EndpointSetKind::Cluster
    };
    let external_set = if external_policy_local {
        EndpointSetKind::Local
    } else {
        EndpointSetKind::Cluster
    };
    // Rule 9 vs rules 13/14: kube-proxy rejects when no set the Service uses has an
    // endpoint, and drops when only the policy's (Local) set is empty.
    let verdict = |family: IpFamily, set: EndpointSetKind| {
        let has = |s| !port.endpoints_for(family, s).is_empty();
        let any_used = has(internal_set) || (externally_accessible && has(external_set));
        if has(set) {
            Verdict::Forward(set)
        } else if any_used {
            Verdict::Drop
        } else {
            Verdict::Reject
        }
    };
    let mut frontends = Vec::new();
    let mut push = |address: IpAddr, number: u16, kind: FrontendKind| {
        let family = IpFamily::of(address);
        let (external, preserve_source) = if kind == FrontendKind::ClusterIp {
            (verdict(family, internal_set), false)
        } else {
            (verdict(family, external_set), external_policy_local)
        };
        let ranges = if kind == FrontendKind::LoadBalancer {
            source_ranges
                .iter()
                .filter(|c| IpFamily::of(c.address) == family)
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        frontends.push(KubeFrontend {
            address,
            port: number,
            protocol: port.protocol,
            kind,
            external,
            internal: verdict(family, internal_set),
            preserve_source,
            source_ranges: ranges,
        });
    };
    for ip in cluster_ips {
        push(*ip, port.port, FrontendKind::ClusterIp);
    }
    if let Some(node_port) = port.node_port {
        let families: BTreeSet<IpFamily> = cluster_ips.iter().map(|ip| IpFamily::of(*ip)).collect();
        for addr in &node.node_port_addresses {
            if families.contains(&IpFamily::of(*addr)) {
                push(*addr, node_port, FrontendKind::NodePort);
            }
        }
    }
    for ip in external_ips {
        push(*ip, port.port, FrontendKind::ExternalIp);
    }
    for ip in lb_ips {
        push(*ip, port.port, FrontendKind::LoadBalancer);
    }
    frontends
}

/// Rule 19: (UDP frontend address, port, endpoint) triples whose endpoint was in use
/// before and is no longer serving the frontend after; the datapath should forget flows on
/// them (kube-proxy clears their conntrack entries) so clients do not keep sending into a
/// hole. Endpoints that are still serving (e.g. terminating) keep their flows.
pub fn stale_udp_endpoints(
    before: &KubeDesiredState,
    after: &KubeDesiredState,
) -> Vec<(IpAddr, u16, IpAddr)> {
    type ByFrontend = BTreeMap<(IpAddr, u16), BTreeSet<IpAddr>>;
    let mut used: ByFrontend = BTreeMap::new();
    for (_, port, fe) in before.frontends() {
        if fe.protocol != Protocol::Udp {
            continue;
        }
        let entry = used.entry((fe.address, fe.port)).or_default();
        for verdict in [fe.external, fe.internal] {
            if let Verdict::Forward(set) = verdict {
                entry.extend(
                    port.endpoints_for(IpFamily::of(fe.address), set)
                        .iter()
                        .map(|e| e.address),
                );
            }
        }
    }
    let mut serving: ByFrontend = BTreeMap::new();
    for (_, port, fe) in after.frontends() {
        if fe.protocol != Protocol::Udp {
            continue;
        }
        if let Some(sets) = port.endpoints.get(&IpFamily::of(fe.address)) {
            serving.entry((fe.address, fe.port)).or_default().extend(
                sets.cluster
                    .iter()
                    .chain(&sets.local)
                    .chain(&sets.kept_for_flows)
                    .filter(|e| e.serving)
                    .map(|e| e.address),
            );
        }
    }
    let mut stale = Vec::new();
    for ((addr, port), endpoints) in used {
        let still = serving.get(&(addr, port));
        for ep in endpoints {
            if !still.is_some_and(|s| s.contains(&ep)) {
                stale.push((addr, port, ep));
            }
        }
    }
    stale
}
