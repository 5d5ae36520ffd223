//! pkg/proxy/nftables/proxier_test.go, `TestNoEndpointsReject`: a LoadBalancer Service
//! with an ExternalIP and no endpoints at all rejects on every frontend, from pods and
//! from outside alike (rule 9).

use lb_kube::rules::KubeDesiredState;
use serde_json::json;

use crate::support::*;

const SVC_IP: &str = "198.18.30.41"; // upstream 172.30.0.41
const EXTERNAL_IP: &str = "198.18.99.11"; // upstream 192.168.99.11

fn state() -> KubeDesiredState {
    let svc = service(
        "ns1",
        "svc1",
        json!({"type": "LoadBalancer", "clusterIP": SVC_IP, "externalIPs": [EXTERNAL_IP],
               "ports": [node_port("p80", 80, "TCP", 3001)]}),
    );
    build(vec![with_ingress(svc, &[LB_IP1])], vec![])
}

// TestNoEndpointsReject: "pod to cluster IP with no endpoints"
#[test]
fn pod_to_cluster_ip_with_no_endpoints() {
    let packet = tcp(From::Pod(POD), SVC_IP, 80);
    expect(
        &state(),
        "pod to cluster IP with no endpoints",
        packet,
        Outcome::Reject,
    );
}

// TestNoEndpointsReject: "external to external IP with no endpoints"
#[test]
fn external_to_external_ip_with_no_endpoints() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), EXTERNAL_IP, 80);
    expect(
        &state(),
        "external to external IP with no endpoints",
        packet,
        Outcome::Reject,
    );
}

// TestNoEndpointsReject: "pod to NodePort with no endpoints"
#[test]
fn pod_to_node_port_with_no_endpoints() {
    let packet = tcp(From::Pod(POD), NODE_IP, 3001);
    expect(
        &state(),
        "pod to NodePort with no endpoints",
        packet,
        Outcome::Reject,
    );
}

// TestNoEndpointsReject: "external to NodePort with no endpoints"
#[test]
fn external_to_node_port_with_no_endpoints() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), NODE_IP, 3001);
    expect(
        &state(),
        "external to NodePort with no endpoints",
        packet,
        Outcome::Reject,
    );
}

// TestNoEndpointsReject: "pod to LoadBalancer IP with no endpoints"
#[test]
fn pod_to_load_balancer_ip_with_no_endpoints() {
    let packet = tcp(From::Pod(POD), LB_IP1, 80);
    expect(
        &state(),
        "pod to LoadBalancer IP with no endpoints",
        packet,
        Outcome::Reject,
    );
}

// TestNoEndpointsReject: "external to LoadBalancer IP with no endpoints"
#[test]
fn external_to_load_balancer_ip_with_no_endpoints() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), LB_IP1, 80);
    expect(
        &state(),
        "external to LoadBalancer IP with no endpoints",
        packet,
        Outcome::Reject,
    );
}
