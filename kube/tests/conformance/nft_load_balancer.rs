//! pkg/proxy/nftables/proxier_test.go, `TestLoadBalancer`: a LoadBalancer Service with two
//! ingress IPs and `loadBalancerSourceRanges` (one of them holding the node, one with a
//! leading blank): the ranges filter LB IPs only, whoever sends, and a range holding the
//! node also admits the node's requests SNATted to the VIP (rules 8, 18).

use lb_kube::rules::KubeDesiredState;
use serde_json::json;

use crate::support::*;

const SVC_IP: &str = "198.18.30.41"; // upstream 172.30.0.41
const EP: &str = "198.19.0.1:80"; // upstream 10.180.0.1:80

fn state() -> KubeDesiredState {
    let svc = service(
        "ns1",
        "svc1",
        json!({"type": "LoadBalancer", "clusterIP": SVC_IP,
               "ports": [node_port("p80", 80, "TCP", 3001)],
               // upstream "192.168.0.0/24" and " 203.0.113.0/25"
               "loadBalancerSourceRanges": ["198.18.0.0/24", " 198.18.203.0/25"]}),
    );
    let eps = slice4(
        "ns1",
        "svc1",
        slice_port("p80", 80, "TCP"),
        vec![ep("198.19.0.1")],
    );
    build(vec![with_ingress(svc, &[LB_IP1, LB_IP2])], vec![eps])
}

// TestLoadBalancer: "pod to cluster IP"
#[test]
fn pod_to_cluster_ip() {
    expect(
        &state(),
        "pod to cluster IP",
        tcp(From::Pod(POD), SVC_IP, 80),
        to(EP),
    );
}

// TestLoadBalancer: "external to nodePort"
#[test]
fn external_to_node_port() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), NODE_IP, 3001);
    expect(&state(), "external to nodePort", packet, to(EP));
}

// TestLoadBalancer: "nodePort bypasses LoadBalancerSourceRanges"
#[test]
fn node_port_bypasses_load_balancer_source_ranges() {
    let packet = tcp(From::External(EXTERNAL_CLIENT_BLOCKED), NODE_IP, 3001);
    let case = "nodePort bypasses LoadBalancerSourceRanges";
    expect(&state(), case, packet, to(EP));
}

// TestLoadBalancer: "accepted external to LB1"
#[test]
fn accepted_external_to_lb1() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), LB_IP1, 80);
    expect(&state(), "accepted external to LB1", packet, to(EP));
}

// TestLoadBalancer: "accepted external to LB2"
#[test]
fn accepted_external_to_lb2() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), LB_IP2, 80);
    expect(&state(), "accepted external to LB2", packet, to(EP));
}

// TestLoadBalancer: "blocked external to LB1"
#[test]
fn blocked_external_to_lb1() {
    let packet = tcp(From::External(EXTERNAL_CLIENT_BLOCKED), LB_IP1, 80);
    expect(&state(), "blocked external to LB1", packet, Outcome::Drop);
}

// TestLoadBalancer: "blocked external to LB2"
#[test]
fn blocked_external_to_lb2() {
    let packet = tcp(From::External(EXTERNAL_CLIENT_BLOCKED), LB_IP2, 80);
    expect(&state(), "blocked external to LB2", packet, Outcome::Drop);
}

// TestLoadBalancer: "pod to LB1 (blocked by LoadBalancerSourceRanges)"
#[test]
fn pod_to_lb1_blocked_by_load_balancer_source_ranges() {
    let packet = tcp(From::Pod(POD), LB_IP1, 80);
    let case = "pod to LB1 (blocked by LoadBalancerSourceRanges)";
    expect(&state(), case, packet, Outcome::Drop);
}

// TestLoadBalancer: "pod to LB2 (blocked by LoadBalancerSourceRanges)"
#[test]
fn pod_to_lb2_blocked_by_load_balancer_source_ranges() {
    let packet = tcp(From::Pod(POD), LB_IP2, 80);
    let case = "pod to LB2 (blocked by LoadBalancerSourceRanges)";
    expect(&state(), case, packet, Outcome::Drop);
}

// TestLoadBalancer: "node to LB1 (allowed by LoadBalancerSourceRanges)"
#[test]
fn node_to_lb1_allowed_by_load_balancer_source_ranges() {
    let packet = tcp(From::Node(NODE_IP), LB_IP1, 80);
    let case = "node to LB1 (allowed by LoadBalancerSourceRanges)";
    expect(&state(), case, packet, to(EP));
}

// TestLoadBalancer: "node to LB2 (allowed by LoadBalancerSourceRanges)"
#[test]
fn node_to_lb2_allowed_by_load_balancer_source_ranges() {
    let packet = tcp(From::Node(NODE_IP), LB_IP2, 80);
    let case = "node to LB2 (allowed by LoadBalancerSourceRanges)";
    expect(&state(), case, packet, to(EP));
}

// TestLoadBalancer: "same node to LB1, SNATted to LB1 (implicitly allowed)"
#[test]
fn same_node_to_lb1_snatted_to_lb1_implicitly_allowed() {
    let packet = tcp(From::Node(LB_IP1), LB_IP1, 80);
    let case = "same node to LB1, SNATted to LB1 (implicitly allowed)";
    expect(&state(), case, packet, to(EP));
}

// TestLoadBalancer: "same node to LB2, SNATted to LB2 (implicitly allowed)"
#[test]
fn same_node_to_lb2_snatted_to_lb2_implicitly_allowed() {
    let packet = tcp(From::Node(LB_IP2), LB_IP2, 80);
    let case = "same node to LB2, SNATted to LB2 (implicitly allowed)";
    expect(&state(), case, packet, to(EP));
}
