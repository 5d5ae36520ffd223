//! The test driver of the conformance set: builds kube-proxy-shaped objects, runs the rules
//! (`lb_kube::rules::build`) and answers, for one packet, what the model does with it:
//! the endpoints it may reach, a drop, a reject, or "not a Service address" (left to
//! ordinary routing). Upstream expectations are written in the same terms.
//!
//! The fixture follows kube-proxy's fake proxier (`NewFakeProxier` in
//! pkg/proxy/nftables/proxier_test.go), with the addresses moved into this project's test
//! ranges:
//!
//! | upstream                       | here                                   |
//! |--------------------------------|----------------------------------------|
//! | node `test-node`, 192.168.0.2  | [`NODE_NAME`], [`NODE_IP`] 198.18.0.2  |
//! | second node IP 192.168.1.2     | [`NODE_IP_ALT`] 198.18.1.2             |
//! | node IPv6 2001:db8::1, alt     | unchanged (already documentation range)|
//! | ClusterIPs 172.30.A.B          | 198.18.(30+A).B                        |
//! | ExternalIPs 192.168.99.B       | 198.18.99.B                            |
//! | LB IPs 1.2.3.4, 5.6.7.8, 9.10.11.12 | 198.18.201.4, .8, .12             |
//! | external client 203.0.113.2, blocked .130, range 203.0.113.0/25 | 198.18.203.2, .130, 198.18.203.0/25 |
//! | a pod on this node 10.0.0.2    | [`POD`] 198.19.255.2                   |
//! | endpoints 10.x.y.z             | 198.19.y.z unless a file says otherwise|
//!
//! NodePorts answer on the node's primary address of each family only, as with the fake
//! proxier's `nodePortAddresses` (and the nftables mode's default).
#![allow(dead_code)]

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use lb_kube::rules::{
    self, EndpointSetKind, FrontendKind, IpFamily, KubeDesiredState, KubeService, NodeConfig,
    Protocol, ServiceName, Verdict,
};
use serde_json::{json, Value};

pub const NODE_NAME: &str = "test-node";
pub const NODE_IP: &str = "198.18.0.2";
pub const NODE_IP_ALT: &str = "198.18.1.2";
pub const NODE_IP6: &str = "2001:db8::1";
pub const NODE_IP6_ALT: &str = "2001:db8:1::2";
pub const POD: &str = "198.19.255.2";
pub const POD6: &str = "2001:db8:10::2";
pub const EXTERNAL_CLIENT: &str = "198.18.203.2";
pub const EXTERNAL_CLIENT_BLOCKED: &str = "198.18.203.130";
pub const EXTERNAL_CLIENT6: &str = "2001:db8:2600::1";
pub const LB_IP1: &str = "198.18.201.4";
pub const LB_IP2: &str = "198.18.201.8";
pub const LB_IP3: &str = "198.18.201.12";

pub fn ip(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|_| panic!("{text} is not an address"))
}

// ---------------------------------------------------------------- objects

/// A Service `ns/name` with `spec` (kube-proxy's `makeTestService`: no defaults beyond
/// what the API server would fill in for a ClusterIP Service).
pub fn service(ns: &str, name: &str, spec: Value) -> Value {
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "ClusterIP", "sessionAffinity": "None"},
        "status": {"loadBalancer": {}}
    });
    merge(&mut svc["spec"], spec);
    if let Some(cluster_ip) = svc["spec"]["clusterIP"].as_str().map(str::to_owned) {
        if svc["spec"].get("clusterIPs").is_none() && cluster_ip != "None" {
            svc["spec"]["clusterIPs"] = json!([cluster_ip]);
        }
    }
    svc
}

/// The Service with LoadBalancer ingress IPs in its status.
pub fn with_ingress(mut svc: Value, ips: &[&str]) -> Value {
    let ingress: Vec<Value> = ips.iter().map(|ip| json!({ "ip": ip })).collect();
    svc["status"] = json!({"loadBalancer": {"ingress": ingress}});
    svc
}

/// One service port: (name, port, protocol), no node port.
pub fn port(name: &str, number: u16, protocol: &str) -> Value {
    json!({"name": name, "port": number, "protocol": protocol})
}

/// One service port with a node port.
pub fn node_port(name: &str, number: u16, protocol: &str, node_port: u16) -> Value {
    json!({"name": name, "port": number, "protocol": protocol, "nodePort": node_port})
}

/// A service port as upstream's `addTestPort`: (name, protocol, port, nodePort, target).
pub fn test_port(name: &str, protocol: &str, number: u16, node_port: u16, target: u16) -> Value {
    json!({"name": name, "protocol": protocol, "port": number, "nodePort": node_port,
           "targetPort": target})
}

/// An endpoint as upstream's tests write most of them: an address, no conditions (so
/// ready, serving, not terminating), no node.
pub fn ep(address: &str) -> Value {
    json!({ "addresses": [address] })
}

/// The endpoint on node `node`.
pub fn on(mut ep: Value, node: &str) -> Value {
    ep["nodeName"] = json!(node);
    ep
}

/// The endpoint on this node.
pub fn local(ep: Value) -> Value {
    on(ep, NODE_NAME)
}

/// The endpoint with all three conditions set.
pub fn cond(mut ep: Value, ready: bool, serving: bool, terminating: bool) -> Value {
    ep["conditions"] = json!({"ready": ready, "serving": serving, "terminating": terminating});
    ep
}

/// The endpoint with only `ready` set.
pub fn ready_is(mut ep: Value, ready: bool) -> Value {
    ep["conditions"] = json!({ "ready": ready });
    ep
}

/// The endpoint with zone hints (and node hints when `nodes` is not empty).
pub fn hints(mut ep: Value, zones: &[&str], nodes: &[&str]) -> Value {
    let names =
        |list: &[&str]| -> Vec<Value> { list.iter().map(|n| json!({ "name": n })).collect() };
    let mut hints = json!({});
    if !zones.is_empty() {
        hints["forZones"] = json!(names(zones));
    }
    if !nodes.is_empty() {
        hints["forNodes"] = json!(names(nodes));
    }
    ep["hints"] = hints;
    ep
}

/// One slice port: (name, port, protocol).
pub fn slice_port(name: &str, number: u16, protocol: &str) -> Value {
    json!({"name": name, "port": number, "protocol": protocol})
}

/// EndpointSlice number `n` of Service `ns/service` (upstream's `makeTestEndpointSlice`).
pub fn slice(
    ns: &str,
    service: &str,
    n: u32,
    family: &str,
    ports: Vec<Value>,
    eps: Vec<Value>,
) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-{n}"),
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service}
        },
        "addressType": family,
        "endpoints": eps,
        "ports": ports
    })
}

/// An IPv4 slice with one port.
pub fn slice4(ns: &str, service: &str, port: Value, eps: Vec<Value>) -> Value {
    slice(ns, service, 1, "IPv4", vec![port], eps)
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(fields)) => {
            for (k, v) in fields {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, patch) => *base = patch,
    }
}

// ---------------------------------------------------------------- the node and the build

/// This node: [`NODE_NAME`] with both families' primary and secondary addresses, in
/// `zone` when given.
pub fn this_node(zone: Option<&str>) -> Value {
    let mut labels = json!({ "kubernetes.io/hostname": NODE_NAME });
    if let Some(zone) = zone {
        labels["topology.kubernetes.io/zone"] = json!(zone);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE_NAME, "labels": labels},
        "status": {"addresses": [
            {"type": "InternalIP", "address": NODE_IP},
            {"type": "InternalIP", "address": NODE_IP_ALT},
            {"type": "InternalIP", "address": NODE_IP6},
            {"type": "InternalIP", "address": NODE_IP6_ALT},
            {"type": "Hostname", "address": NODE_NAME}
        ]}
    })
}

/// The fake proxier's configuration: NodePorts on the primary address of each family.
pub fn node_config() -> NodeConfig {
    NodeConfig {
        node_name: NODE_NAME.into(),
        node_port_addresses: Some(vec![ip(NODE_IP), ip(NODE_IP6)]),
        ..NodeConfig::default()
    }
}

/// The model's state for these objects on this node (no zone).
pub fn build(services: Vec<Value>, slices: Vec<Value>) -> KubeDesiredState {
    build_on(services, slices, this_node(None), &node_config())
}

pub fn build_on(
    services: Vec<Value>,
    slices: Vec<Value>,
    node: Value,
    cfg: &NodeConfig,
) -> KubeDesiredState {
    let services: Vec<Service> = services
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("Service JSON"))
        .collect();
    let slices: Vec<EndpointSlice> = slices
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("EndpointSlice JSON"))
        .collect();
    let node: Node = serde_json::from_value(node).expect("Node JSON");
    let state = rules::build(&services, &slices, Some(&node), cfg);
    assert!(
        state.skipped.is_empty(),
        "valid objects must not be skipped: {:?}",
        state.skipped
    );
    state
}

pub fn service_of<'a>(state: &'a KubeDesiredState, ns: &str, name: &str) -> &'a KubeService {
    state
        .services
        .get(&ServiceName::new(ns, name))
        .unwrap_or_else(|| panic!("{ns}/{name} is not in the state"))
}

// ---------------------------------------------------------------- packets and verdicts

/// Where a packet comes from, as kube-proxy's packet tracer tells them apart.
#[derive(Clone, Copy, Debug)]
pub enum From<'a> {
    /// A pod on this node (upstream: a source in the pod CIDR).
    Pod(&'a str),
    /// A process on this node, with this source address (the node IP, or an LB IP the
    /// node's traffic was SNATted to).
    Node(&'a str),
    /// A client outside the cluster, or anything arriving from the network.
    External(&'a str),
}

impl From<'_> {
    fn address(self) -> IpAddr {
        match self {
            Self::Pod(a) | Self::Node(a) | Self::External(a) => ip(a),
        }
    }

    /// Packets from this node's pods and processes get the `internal` verdict (ferrolb's
    /// socket programs); packets from the network the `external` one (the XDP balancer).
    fn internal(self) -> bool {
        matches!(self, Self::Pod(_) | Self::Node(_))
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    pub from: From<'a>,
    pub dest: &'a str,
    pub port: u16,
    pub protocol: Protocol,
}

pub fn tcp<'a>(from: From<'a>, dest: &'a str, port: u16) -> Packet<'a> {
    Packet {
        from,
        dest,
        port,
        protocol: Protocol::Tcp,
    }
}

pub fn udp<'a>(from: From<'a>, dest: &'a str, port: u16) -> Packet<'a> {
    Packet {
        protocol: Protocol::Udp,
        ..tcp(from, dest, port)
    }
}

pub fn sctp<'a>(from: From<'a>, dest: &'a str, port: u16) -> Packet<'a> {
    Packet {
        protocol: Protocol::Sctp,
        ..tcp(from, dest, port)
    }
}

/// What happens to a packet: upstream's tracer output (`"ip:port, ..."`, `"DROP"`,
/// `"REJECT"`, or `""` when no rule matches).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// DNATed to one of these endpoints.
    To(BTreeSet<SocketAddr>),
    Drop,
    Reject,
    /// Not a frontend: ordinary routing.
    NotAService,
}

/// Upstream's endpoint list, `"a:p, b:p"` (IPv6 as `[a]:p`).
pub fn to(list: &str) -> Outcome {
    Outcome::To(
        list.split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{s} is not ip:port"))
            })
            .collect(),
    )
}

/// What the model does with `packet`.
pub fn trace(state: &KubeDesiredState, packet: Packet<'_>) -> Outcome {
    let dest = ip(packet.dest);
    let hit = state.frontends().find(|(_, _, fe)| {
        fe.address == dest && fe.port == packet.port && fe.protocol == packet.protocol
    });
    let Some((_, port, fe)) = hit else {
        // Rule 9: a ClusterIP rejects the ports and protocols its Service does not define.
        return if state.reject_unknown_ports_on().contains(&dest) {
            Outcome::Reject
        } else {
            Outcome::NotAService
        };
    };
    // Rule 18: LoadBalancerSourceRanges are checked before any balancing, whoever sends.
    if fe.kind == FrontendKind::LoadBalancer
        && !fe.source_ranges.is_empty()
        && !fe
            .source_ranges
            .iter()
            .any(|r| r.contains(packet.from.address()))
    {
        return Outcome::Drop;
    }
    let verdict = if packet.from.internal() {
        fe.internal
    } else {
        fe.external
    };
    match verdict {
        Verdict::Forward(set) => Outcome::To(
            port.endpoints_for(IpFamily::of(dest), set)
                .iter()
                .map(|e| SocketAddr::new(e.address, e.port))
                .collect(),
        ),
        Verdict::Drop => Outcome::Drop,
        Verdict::Reject => Outcome::Reject,
    }
}

/// Asserts the model's outcome for one upstream case, naming it on failure.
pub fn expect(state: &KubeDesiredState, case: &str, packet: Packet<'_>, want: Outcome) {
    let got = trace(state, packet);
    assert_eq!(got, want, "upstream case {case:?}: {packet:?}");
}

/// The endpoints (ip:port) of `set` for the port named `port_name` of a Service, in the
/// family of `family_of`.
pub fn set_of(
    svc: &KubeService,
    port_name: &str,
    family: IpFamily,
    set: EndpointSetKind,
) -> BTreeSet<SocketAddr> {
    let port = svc
        .ports
        .iter()
        .find(|p| p.name == port_name)
        .unwrap_or_else(|| panic!("{} has no port {port_name:?}", svc.name));
    port.endpoints_for(family, set)
        .iter()
        .map(|e| SocketAddr::new(e.address, e.port))
        .collect()
}

/// `"a:p, b:p"` as a set; `""` is the empty set.
pub fn addrs(list: &str) -> BTreeSet<SocketAddr> {
    if list.trim().is_empty() {
        return BTreeSet::new();
    }
    match to(list) {
        Outcome::To(set) => set,
        other => unreachable!("{other:?}"),
    }
}
