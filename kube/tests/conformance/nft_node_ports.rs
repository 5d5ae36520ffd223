//! pkg/proxy/nftables/proxier_test.go, `TestNodePorts`: a NodePort Service in each family,
//! with NodePorts on the primary node address only (the default) or on a list of
//! addresses that also holds the secondary one (kube-proxy's `--nodeport-addresses`
//! CIDRs, given here as the addresses they hold) (rules 6, 22). One endpoint has no node,
//! one is on this node.

use lb_kube::rules::{KubeDesiredState, NodeConfig};
use serde_json::json;

use crate::support::*;

struct Family {
    svc_ip: &'static str,
    eps: [&'static str; 2],
    address_type: &'static str,
    node_ip: &'static str,
    alt_node_ip: &'static str,
    pod: &'static str,
    client: &'static str,
    output: &'static str,
}

const V4: Family = Family {
    svc_ip: "198.18.30.41",            // upstream 172.30.0.41
    eps: ["198.19.0.1", "198.19.2.1"], // upstream 10.180.0.1, 10.180.2.1
    address_type: "IPv4",
    node_ip: NODE_IP,
    alt_node_ip: NODE_IP_ALT,
    pod: POD,
    client: EXTERNAL_CLIENT,
    output: "198.19.0.1:80, 198.19.2.1:80",
};

const V6: Family = Family {
    svc_ip: "2001:db8:172:30::41", // upstream fd00:172:30::41
    eps: ["2001:db8:10:180::1", "2001:db8:10:180::2:1"], // upstream fd00:10:180::1, ::2:1
    address_type: "IPv6",
    node_ip: NODE_IP6,
    alt_node_ip: NODE_IP6_ALT,
    pod: POD6,
    client: EXTERNAL_CLIENT6,
    output: "[2001:db8:10:180::1]:80, [2001:db8:10:180::2:1]:80",
};

/// `multiple`: NodePorts also on the secondary address of the family.
fn state(f: &Family, multiple: bool) -> KubeDesiredState {
    let svc = service(
        "ns1",
        "svc1",
        json!({"type": "NodePort", "clusterIP": f.svc_ip,
               "ports": [node_port("p80", 80, "TCP", 3001)]}),
    );
    let eps = slice(
        "ns1",
        "svc1",
        1,
        f.address_type,
        vec![slice_port("p80", 80, "TCP")],
        vec![ep(f.eps[0]), local(ep(f.eps[1]))],
    );
    let mut cfg = node_config();
    if multiple {
        // upstream 192.168.0.0/24, 192.168.1.0/24, 2001:db8::/64 (and 2001:db8:1::2/128)
        let mut addresses = vec![ip(NODE_IP), ip(NODE_IP_ALT), ip(NODE_IP6)];
        if f.address_type == "IPv6" {
            addresses.push(ip(NODE_IP6_ALT));
        }
        cfg = NodeConfig {
            node_port_addresses: Some(addresses),
            ..cfg
        };
    }
    build_on(vec![svc], vec![eps], this_node(None), &cfg)
}

fn check(f: &Family, multiple: bool, case: &str, packet: Packet<'_>, want: Outcome) {
    expect(&state(f, multiple), case, packet, want);
}

// TestNodePorts "ipv4": "pod to cluster IP"
#[test]
fn ipv4_pod_to_cluster_ip() {
    let packet = tcp(From::Pod(V4.pod), V4.svc_ip, 80);
    check(&V4, false, "ipv4: pod to cluster IP", packet, to(V4.output));
}

// TestNodePorts "ipv4": "external to nodePort"
#[test]
fn ipv4_external_to_node_port() {
    let packet = tcp(From::External(V4.client), V4.node_ip, 3001);
    check(
        &V4,
        false,
        "ipv4: external to nodePort",
        packet,
        to(V4.output),
    );
}

// TestNodePorts "ipv4": "node to nodePort"
#[test]
fn ipv4_node_to_node_port() {
    let packet = tcp(From::Node(V4.node_ip), V4.node_ip, 3001);
    check(&V4, false, "ipv4: node to nodePort", packet, to(V4.output));
}

// TestNodePorts "ipv4": "secondary nodeIP ignores NodePorts"
#[test]
fn ipv4_secondary_node_ip_ignores_node_ports() {
    let packet = tcp(From::External(V4.client), V4.alt_node_ip, 3001);
    let case = "ipv4: secondary nodeIP ignores NodePorts";
    check(&V4, false, case, packet, Outcome::NotAService);
}

// TestNodePorts "ipv4, multiple nodeport-addresses": "pod to cluster IP"
#[test]
fn ipv4_multiple_pod_to_cluster_ip() {
    let packet = tcp(From::Pod(V4.pod), V4.svc_ip, 80);
    check(
        &V4,
        true,
        "ipv4, multiple: pod to cluster IP",
        packet,
        to(V4.output),
    );
}

// TestNodePorts "ipv4, multiple nodeport-addresses": "external to nodePort"
#[test]
fn ipv4_multiple_external_to_node_port() {
    let packet = tcp(From::External(V4.client), V4.node_ip, 3001);
    check(
        &V4,
        true,
        "ipv4, multiple: external to nodePort",
        packet,
        to(V4.output),
    );
}

// TestNodePorts "ipv4, multiple nodeport-addresses": "node to nodePort"
#[test]
fn ipv4_multiple_node_to_node_port() {
    let packet = tcp(From::Node(V4.node_ip), V4.node_ip, 3001);
    check(
        &V4,
        true,
        "ipv4, multiple: node to nodePort",
        packet,
        to(V4.output),
    );
}

// TestNodePorts "ipv4, multiple nodeport-addresses": "external to nodePort on secondary IP"
#[test]
fn ipv4_multiple_external_to_node_port_on_secondary_ip() {
    let packet = tcp(From::External(V4.client), V4.alt_node_ip, 3001);
    let case = "ipv4, multiple: external to nodePort on secondary IP";
    check(&V4, true, case, packet, to(V4.output));
}

// TestNodePorts "ipv6": "pod to cluster IP"
#[test]
fn ipv6_pod_to_cluster_ip() {
    let packet = tcp(From::Pod(V6.pod), V6.svc_ip, 80);
    check(&V6, false, "ipv6: pod to cluster IP", packet, to(V6.output));
}

// TestNodePorts "ipv6": "external to nodePort"
#[test]
fn ipv6_external_to_node_port() {
    let packet = tcp(From::External(V6.client), V6.node_ip, 3001);
    check(
        &V6,
        false,
        "ipv6: external to nodePort",
        packet,
        to(V6.output),
    );
}

// TestNodePorts "ipv6": "node to nodePort"
#[test]
fn ipv6_node_to_node_port() {
    let packet = tcp(From::Node(V6.node_ip), V6.node_ip, 3001);
    check(&V6, false, "ipv6: node to nodePort", packet, to(V6.output));
}

// TestNodePorts "ipv6": "secondary nodeIP ignores NodePorts"
#[test]
fn ipv6_secondary_node_ip_ignores_node_ports() {
    let packet = tcp(From::External(V6.client), V6.alt_node_ip, 3001);
    let case = "ipv6: secondary nodeIP ignores NodePorts";
    check(&V6, false, case, packet, Outcome::NotAService);
}

// TestNodePorts "ipv6, multiple nodeport-addresses": "pod to cluster IP"
#[test]
fn ipv6_multiple_pod_to_cluster_ip() {
    let packet = tcp(From::Pod(V6.pod), V6.svc_ip, 80);
    check(
        &V6,
        true,
        "ipv6, multiple: pod to cluster IP",
        packet,
        to(V6.output),
    );
}

// TestNodePorts "ipv6, multiple nodeport-addresses": "external to nodePort"
#[test]
fn ipv6_multiple_external_to_node_port() {
    let packet = tcp(From::External(V6.client), V6.node_ip, 3001);
    check(
        &V6,
        true,
        "ipv6, multiple: external to nodePort",
        packet,
        to(V6.output),
    );
}

// TestNodePorts "ipv6, multiple nodeport-addresses": "node to nodePort"
#[test]
fn ipv6_multiple_node_to_node_port() {
    let packet = tcp(From::Node(V6.node_ip), V6.node_ip, 3001);
    check(
        &V6,
        true,
        "ipv6, multiple: node to nodePort",
        packet,
        to(V6.output),
    );
}

// TestNodePorts "ipv6, multiple nodeport-addresses": "external to nodePort on secondary IP"
#[test]
fn ipv6_multiple_external_to_node_port_on_secondary_ip() {
    let packet = tcp(From::External(V6.client), V6.alt_node_ip, 3001);
    let case = "ipv6, multiple: external to nodePort on secondary IP";
    check(&V6, true, case, packet, to(V6.output));
}
