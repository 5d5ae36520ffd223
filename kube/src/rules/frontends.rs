//! The addresses a Service answers on and what each frontend does with a packet: ClusterIPs
//! (rules 5 and 22 of `docs/kube-proxy-semantics.md`), NodePorts on this node's addresses
//! (rule 6), external IPs (rule 7), LoadBalancer ingress IPs (rule 8) with their source
//! ranges (rule 18), and per frontend the verdict for external and internal traffic: forward
//! to the Cluster or Local set (rules 13, 14), drop, or reject (rule 9).

use std::{collections::BTreeSet, net::IpAddr};

use ipnetwork::IpNetwork;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};

use super::{
    invalid::Problems, node::NodeInfo, EndpointSetKind, FrontendKind, InvalidObject, IpFamily,
    KubeFrontend, KubeServicePort, Verdict,
};

/// The addresses of a Service, each of the family of one of its ClusterIPs.
pub(crate) struct Addresses {
    /// One per family (rules 5 and 22).
    pub(crate) cluster_ips: Vec<IpAddr>,
    pub(crate) external_ips: Vec<IpAddr>,
    pub(crate) load_balancer_ips: Vec<IpAddr>,
    /// Kept per family with the LoadBalancer frontends; empty allows every source.
    pub(crate) source_ranges: Vec<IpNetwork>,
}

impl Addresses {
    /// `None` when the Service has no usable ClusterIP: then nothing is programmed.
    pub(crate) fn read(svc: &Service, spec: &ServiceSpec, problems: &mut Problems) -> Option<Self> {
        let cluster_ips = cluster_ips(spec, problems);
        if cluster_ips.is_empty() {
            return None;
        }
        let families = families(&cluster_ips);
        let load_balancer = is_load_balancer(spec);
        // Rule 7: external IPs, same family as a ClusterIP only.
        let external_ips = spec
            .external_ips
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, text)| {
                usable_address(text, &format!("spec.externalIPs[{i}]"), problems)
            })
            .filter(|ip| families.contains(&IpFamily::of(*ip)))
            .collect();
        let load_balancer_ips = if load_balancer {
            ingress_ips(svc, problems)
                .filter(|ip| families.contains(&IpFamily::of(*ip)))
                .collect()
        } else {
            Vec::new()
        };
        let source_ranges = if load_balancer {
            source_ranges(spec, problems)
        } else {
            Vec::new()
        };
        Some(Self {
            cluster_ips,
            external_ips,
            load_balancer_ips,
            source_ranges,
        })
    }

    pub(crate) fn families(&self) -> BTreeSet<IpFamily> {
        families(&self.cluster_ips)
    }
}

fn families(ips: &[IpAddr]) -> BTreeSet<IpFamily> {
    ips.iter().map(|ip| IpFamily::of(*ip)).collect()
}

fn is_load_balancer(spec: &ServiceSpec) -> bool {
    spec.type_.as_deref() == Some("LoadBalancer")
}

/// An address a frontend can have; anything else is reported at `field`.
fn usable_address(text: &str, field: &str, problems: &mut Problems) -> Option<IpAddr> {
    match text.parse::<IpAddr>() {
        Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => Some(ip),
        _ => {
            problems.skip(InvalidObject::BadAddress {
                field: field.to_owned(),
                value: text.to_owned(),
            });
            None
        }
    }
}

/// Rules 5 and 22: one ClusterIP per family; `clusterIPs` supersedes `clusterIP`.
fn cluster_ips(spec: &ServiceSpec, problems: &mut Problems) -> Vec<IpAddr> {
    let listed: Vec<String> = match spec.cluster_ips.as_ref().filter(|ips| !ips.is_empty()) {
        Some(ips) => ips.clone(),
        None => vec![spec.cluster_ip.clone().unwrap_or_default()],
    };
    let mut cluster_ips: Vec<IpAddr> = Vec::new();
    for (i, text) in listed.iter().enumerate() {
        let Some(ip) = usable_address(text, &format!("spec.clusterIPs[{i}]"), problems) else {
            continue;
        };
        if !cluster_ips
            .iter()
            .any(|c| IpFamily::of(*c) == IpFamily::of(ip))
        {
            cluster_ips.push(ip);
        }
    }
    cluster_ips
}

/// Rule 8: LB ingress IPs unless the LB proxies itself (`ipMode: Proxy`).
fn ingress_ips<'a>(
    svc: &'a Service,
    problems: &'a mut Problems,
) -> impl Iterator<Item = IpAddr> + 'a {
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    ingress
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, ing)| ing.ip_mode.as_deref().is_none_or(|m| m == "VIP"))
        .filter_map(move |(i, ing)| {
            let text = ing.ip.as_deref().filter(|t| !t.is_empty())?;
            usable_address(
                text,
                &format!("status.loadBalancer.ingress[{i}].ip"),
                problems,
            )
        })
}

/// Rule 18: `loadBalancerSourceRanges`; invalid entries are reported and dropped.
fn source_ranges(spec: &ServiceSpec, problems: &mut Problems) -> Vec<IpNetwork> {
    let mut ranges = Vec::new();
    for (i, text) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        match parse_cidr(text) {
            Some(cidr) => ranges.push(cidr),
            None => problems.skip(InvalidObject::BadCidr {
                field: format!("spec.loadBalancerSourceRanges[{i}]"),
                value: text.clone(),
            }),
        }
    }
    ranges
}

/// `address/prefix-length`, surrounding blanks ignored. `ipnetwork` also reads a bare
/// address or an IPv4 netmask after the slash; the API accepts neither, so neither do we.
fn parse_cidr(text: &str) -> Option<IpNetwork> {
    let text = text.trim();
    let (_, prefix_len) = text.split_once('/')?;
    if prefix_len.is_empty() || !prefix_len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Who may reach the Service from where, and which set serves them (rules 13, 14).
pub(crate) struct TrafficPolicy {
    pub(crate) load_balancer: bool,
    /// `externalTrafficPolicy: Local` on a Service reachable from outside (a NodePort,
    /// LoadBalancer or external IP); always false for others, where the field is ignored.
    pub(crate) external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub(crate) internal_local: bool,
}

impl TrafficPolicy {
    pub(crate) fn of(spec: &ServiceSpec) -> Self {
        let load_balancer = is_load_balancer(spec);
        let externally_accessible = load_balancer
            || spec.type_.as_deref() == Some("NodePort")
            || spec.external_ips.as_ref().is_some_and(|e| !e.is_empty());
        Self {
            load_balancer,
            external_local: externally_accessible
                && spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        }
    }

    fn set(local: bool) -> EndpointSetKind {
        if local {
            EndpointSetKind::Local
        } else {
            EndpointSetKind::Cluster
        }
    }

    fn internal_set(&self) -> EndpointSetKind {
        Self::set(self.internal_local)
    }

    fn external_set(&self) -> EndpointSetKind {
        Self::set(self.external_local)
    }

    /// Rule 9 vs rules 13/14: a frontend forwards over `set` when it has endpoints; when
    /// only that set is empty (a `Local` policy, endpoints on other nodes) it drops; it
    /// rejects only when the Service has no usable endpoint anywhere, which is exactly when
    /// the Cluster set is empty (rule 11: ready endpoints, else serving terminating ones;
    /// topology hints never empty it).
    fn verdict(port: &KubeServicePort, family: IpFamily, set: EndpointSetKind) -> Verdict {
        let has = |s| !port.endpoints_for(family, s).is_empty();
        if has(set) {
            Verdict::Forward(set)
        } else if has(EndpointSetKind::Cluster) {
            Verdict::Drop
        } else {
            Verdict::Reject
        }
    }
}

/// Rule 18: the Service's source ranges of `family` for its LoadBalancer frontends. When
/// one holds the node's own address of the family, the LoadBalancer IPs of the family are
/// allowed as sources too: a request from the node to a VIP it holds locally loops back
/// with the VIP as its source (kube-proxy's `allowFromNode`).
fn ranges_of_family(addresses: &Addresses, node: &NodeInfo, family: IpFamily) -> Vec<IpNetwork> {
    let mut ranges: Vec<IpNetwork> = addresses
        .source_ranges
        .iter()
        .filter(|c| IpFamily::of(c.ip()) == family)
        .copied()
        .collect();
    let from_node = node
        .primary_ips
        .iter()
        .any(|ip| ranges.iter().any(|r| r.contains(*ip)));
    if from_node {
        let vips = addresses
            .load_balancer_ips
            .iter()
            .filter(|ip| IpFamily::of(**ip) == family);
        ranges.extend(vips.map(|ip| IpNetwork::from(*ip)));
    }
    ranges
}

/// Every frontend of one service port, in a stable order: ClusterIPs, NodePorts, external
/// IPs, LoadBalancer IPs.
pub(crate) fn frontends_for(
    port: &KubeServicePort,
    addresses: &Addresses,
    node: &NodeInfo,
    policy: &TrafficPolicy,
) -> Vec<KubeFrontend> {
    let frontend = |address: IpAddr, number: u16, kind: FrontendKind| {
        let family = IpFamily::of(address);
        // ClusterIP traffic follows the internal policy wherever it comes from (rule 14);
        // traffic from this node's pods and processes to an external frontend takes
        // kube-proxy's short cut to the Cluster set, whatever the policies (rule 13).
        let (internal, external, preserve_source) = if kind == FrontendKind::ClusterIp {
            let verdict = TrafficPolicy::verdict(port, family, policy.internal_set());
            (verdict, verdict, false)
        } else {
            (
                TrafficPolicy::verdict(port, family, EndpointSetKind::Cluster),
                TrafficPolicy::verdict(port, family, policy.external_set()),
                policy.external_local,
            )
        };
        let source_ranges = if kind == FrontendKind::LoadBalancer {
            ranges_of_family(addresses, node, family)
        } else {
            Vec::new()
        };
        KubeFrontend {
            address,
            port: number,
            protocol: port.protocol,
            kind,
            external,
            internal,
            preserve_source,
            source_ranges,
        }
    };
    let families = addresses.families();
    let mut frontends = Vec::new();
    for ip in &addresses.cluster_ips {
        frontends.push(frontend(*ip, port.port, FrontendKind::ClusterIp));
    }
    if let Some(node_port) = port.node_port {
        for addr in &node.node_port_addresses {
            if families.contains(&IpFamily::of(*addr)) {
                frontends.push(frontend(*addr, node_port, FrontendKind::NodePort));
            }
        }
    }
    for ip in &addresses.external_ips {
        frontends.push(frontend(*ip, port.port, FrontendKind::ExternalIp));
    }
    for ip in &addresses.load_balancer_ips {
        frontends.push(frontend(*ip, port.port, FrontendKind::LoadBalancer));
    }
    frontends
}
