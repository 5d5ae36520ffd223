//! pkg/proxy/nftables/proxier_test.go, `TestExternalTrafficPolicyLocal` and
//! `TestExternalTrafficPolicyCluster`: a LoadBalancer Service with an ExternalIP, one
//! endpoint without a node and one on this node. With eTP Local, traffic from outside to
//! the external frontends reaches only the local endpoint, while pods reach every endpoint
//! through any frontend (rule 13); with eTP Cluster everything reaches both. (Upstream also
//! checks which flows are masqueraded; the model does not express masquerading.)

use lb_kube::rules::KubeDesiredState;
use serde_json::json;

use crate::support::*;

const SVC_IP: &str = "198.18.30.41"; // upstream 172.30.0.41
const EXTERNAL_IP: &str = "198.18.99.11"; // upstream 192.168.99.11
const BOTH: &str = "198.19.0.1:80, 198.19.2.1:80"; // upstream 10.180.0.1:80, 10.180.2.1:80
const LOCAL: &str = "198.19.2.1:80"; // upstream 10.180.2.1:80

fn state(policy: &str) -> KubeDesiredState {
    let svc = service(
        "ns1",
        "svc1",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": policy, "clusterIP": SVC_IP,
               "externalIPs": [EXTERNAL_IP], "healthCheckNodePort": 30000,
               "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001,
                          "targetPort": 80}]}),
    );
    let eps = slice4(
        "ns1",
        "svc1",
        slice_port("p80", 80, "TCP"),
        vec![ep("198.19.0.1"), local(ep("198.19.2.1"))],
    );
    build(vec![with_ingress(svc, &[LB_IP1])], vec![eps])
}

fn local_policy() -> KubeDesiredState {
    state("Local")
}

fn cluster_policy() -> KubeDesiredState {
    state("Cluster")
}

// TestExternalTrafficPolicyLocal: "pod to cluster IP hits both endpoints, unmasqueraded"
#[test]
fn local_pod_to_cluster_ip_hits_both_endpoints() {
    let case = "pod to cluster IP hits both endpoints, unmasqueraded";
    expect(
        &local_policy(),
        case,
        tcp(From::Pod(POD), SVC_IP, 80),
        to(BOTH),
    );
}

// TestExternalTrafficPolicyLocal: "pod to external IP hits both endpoints, unmasqueraded"
#[test]
fn local_pod_to_external_ip_hits_both_endpoints() {
    let case = "pod to external IP hits both endpoints, unmasqueraded";
    expect(
        &local_policy(),
        case,
        tcp(From::Pod(POD), EXTERNAL_IP, 80),
        to(BOTH),
    );
}

// TestExternalTrafficPolicyLocal: "external to external IP hits only local endpoint,
// unmasqueraded"
#[test]
fn local_external_to_external_ip_hits_only_local_endpoint() {
    let case = "external to external IP hits only local endpoint, unmasqueraded";
    let packet = tcp(From::External(EXTERNAL_CLIENT), EXTERNAL_IP, 80);
    expect(&local_policy(), case, packet, to(LOCAL));
}

// TestExternalTrafficPolicyLocal: "pod to LB IP hits only both endpoints, unmasqueraded"
#[test]
fn local_pod_to_lb_ip_hits_both_endpoints() {
    let case = "pod to LB IP hits only both endpoints, unmasqueraded";
    expect(
        &local_policy(),
        case,
        tcp(From::Pod(POD), LB_IP1, 80),
        to(BOTH),
    );
}

// TestExternalTrafficPolicyLocal: "external to LB IP hits only local endpoint, unmasqueraded"
#[test]
fn local_external_to_lb_ip_hits_only_local_endpoint() {
    let case = "external to LB IP hits only local endpoint, unmasqueraded";
    let packet = tcp(From::External(EXTERNAL_CLIENT), LB_IP1, 80);
    expect(&local_policy(), case, packet, to(LOCAL));
}

// TestExternalTrafficPolicyLocal: "pod to NodePort hits both endpoints, unmasqueraded"
#[test]
fn local_pod_to_node_port_hits_both_endpoints() {
    let case = "pod to NodePort hits both endpoints, unmasqueraded";
    expect(
        &local_policy(),
        case,
        tcp(From::Pod(POD), NODE_IP, 3001),
        to(BOTH),
    );
}

// TestExternalTrafficPolicyLocal: "external to NodePort hits only local endpoint,
// unmasqueraded"
#[test]
fn local_external_to_node_port_hits_only_local_endpoint() {
    let case = "external to NodePort hits only local endpoint, unmasqueraded";
    let packet = tcp(From::External(EXTERNAL_CLIENT), NODE_IP, 3001);
    expect(&local_policy(), case, packet, to(LOCAL));
}

// TestExternalTrafficPolicyCluster: "pod to cluster IP hits both endpoints, unmasqueraded"
#[test]
fn cluster_pod_to_cluster_ip_hits_both_endpoints() {
    let case = "pod to cluster IP hits both endpoints, unmasqueraded";
    expect(
        &cluster_policy(),
        case,
        tcp(From::Pod(POD), SVC_IP, 80),
        to(BOTH),
    );
}

// TestExternalTrafficPolicyCluster: "pod to external IP hits both endpoints, masqueraded"
#[test]
fn cluster_pod_to_external_ip_hits_both_endpoints() {
    let case = "pod to external IP hits both endpoints, masqueraded";
    expect(
        &cluster_policy(),
        case,
        tcp(From::Pod(POD), EXTERNAL_IP, 80),
        to(BOTH),
    );
}

// TestExternalTrafficPolicyCluster: "external to external IP hits both endpoints,
// masqueraded"
#[test]
fn cluster_external_to_external_ip_hits_both_endpoints() {
    let case = "external to external IP hits both endpoints, masqueraded";
    let packet = tcp(From::External(EXTERNAL_CLIENT), EXTERNAL_IP, 80);
    expect(&cluster_policy(), case, packet, to(BOTH));
}

// TestExternalTrafficPolicyCluster: "pod to LB IP hits both endpoints, masqueraded"
#[test]
fn cluster_pod_to_lb_ip_hits_both_endpoints() {
    let case = "pod to LB IP hits both endpoints, masqueraded";
    expect(
        &cluster_policy(),
        case,
        tcp(From::Pod(POD), LB_IP1, 80),
        to(BOTH),
    );
}

// TestExternalTrafficPolicyCluster: "external to LB IP hits both endpoints, masqueraded"
#[test]
fn cluster_external_to_lb_ip_hits_both_endpoints() {
    let case = "external to LB IP hits both endpoints, masqueraded";
    let packet = tcp(From::External(EXTERNAL_CLIENT), LB_IP1, 80);
    expect(&cluster_policy(), case, packet, to(BOTH));
}

// TestExternalTrafficPolicyCluster: "pod to NodePort hits both endpoints, masqueraded"
#[test]
fn cluster_pod_to_node_port_hits_both_endpoints() {
    let case = "pod to NodePort hits both endpoints, masqueraded";
    expect(
        &cluster_policy(),
        case,
        tcp(From::Pod(POD), NODE_IP, 3001),
        to(BOTH),
    );
}

// TestExternalTrafficPolicyCluster: "external to NodePort hits both endpoints, masqueraded"
#[test]
fn cluster_external_to_node_port_hits_both_endpoints() {
    let case = "external to NodePort hits both endpoints, masqueraded";
    let packet = tcp(From::External(EXTERNAL_CLIENT), NODE_IP, 3001);
    expect(&cluster_policy(), case, packet, to(BOTH));
}
