//! This node: the addresses its NodePorts answer on (rule 6 of
//! `docs/kube-proxy-semantics.md`), its zone for topology hints (rule 16) and whether it
//! should receive traffic at all (rule 21).

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Node;
use serde::Serialize;

use super::invalid::{object_id, InvalidObject, Skipped};

/// Node label holding the node's zone (rule 16).
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// Taint the cluster autoscaler sets on a node it is about to delete (rule 21).
pub const TAINT_TO_BE_DELETED: &str = "ToBeDeletedByClusterAutoscaler";

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

/// What the rules take from this node's Node object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub zone: Option<String>,
    /// Addresses NodePorts answer on, sorted.
    pub node_port_addresses: Vec<IpAddr>,
    /// The node's primary address of each family, as kube-proxy picks its node IP: the
    /// first InternalIP of the family, else its first ExternalIP (rule 18 asks whether a
    /// source range holds it).
    pub primary_ips: Vec<IpAddr>,
    /// False while the node is being deleted or tainted for deletion: `/healthz` then fails
    /// so load balancers move traffic away (rule 21).
    pub eligible: bool,
}

/// The node facts the rules need (rules 6, 16, 21).
pub fn node_info(node: Option<&Node>, cfg: &NodeConfig, skipped: &mut Vec<Skipped>) -> NodeInfo {
    let mut node_addresses = Vec::new();
    let mut typed_addresses: Vec<(bool, IpAddr)> = Vec::new();
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
                Ok(ip) => {
                    node_addresses.push(ip);
                    typed_addresses.push((a.type_ == "InternalIP", ip));
                }
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
        primary_ips: primary_ips(&typed_addresses),
        name: cfg.node_name.clone(),
        zone: cfg.zone.clone().or(zone),
        node_port_addresses,
        eligible,
    }
}

/// Per family, the first InternalIP, else the first ExternalIP, of (is internal, address).
fn primary_ips(addresses: &[(bool, IpAddr)]) -> Vec<IpAddr> {
    let mut primary = Vec::new();
    for v4 in [true, false] {
        let of_family = || addresses.iter().filter(move |(_, ip)| ip.is_ipv4() == v4);
        if let Some((_, ip)) = of_family()
            .find(|(internal, _)| *internal)
            .or_else(|| of_family().next())
        {
            primary.push(*ip);
        }
    }
    primary
}
