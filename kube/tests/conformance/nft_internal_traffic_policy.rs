//! pkg/proxy/nftables/proxier_test.go, `TestInternalTrafficPolicy`: a ClusterIP Service
//! with ready endpoints on this and other nodes under each internal policy: with Local,
//! only this node's endpoints, and a drop when there are none here while others exist
//! (rule 14); once the endpoints are deleted, a reject (rule 9). Endpoints 10.0.1.X are
//! 198.19.1.X here.

use lb_kube::rules::KubeDesiredState;
use serde_json::json;

use crate::support::*;

const SVC_IP: &str = "198.18.31.1"; // upstream 172.30.1.1

/// The Service under `policy` with ready endpoints `(address, node)`.
fn state(policy: &str, endpoints: &[(&str, &str)]) -> KubeDesiredState {
    let svc = service(
        "ns1",
        "svc1",
        json!({"clusterIP": SVC_IP, "internalTrafficPolicy": policy,
               "selector": {"foo": "bar"}, "ports": [port("", 80, "TCP")]}),
    );
    let eps = endpoints
        .iter()
        .map(|(address, node)| on(ready_is(ep(address), true), node))
        .collect();
    let slice = slice4("ns1", "svc1", slice_port("", 80, "TCP"), eps);
    build(vec![svc], vec![slice])
}

fn pod_to_cluster_ip() -> Packet<'static> {
    tcp(From::Pod(POD), SVC_IP, 80)
}

const ONE_LOCAL: [(&str, &str); 3] = [
    ("198.19.1.1", NODE_NAME),
    ("198.19.1.2", "node1"),
    ("198.19.1.3", "node2"),
];
const TWO_LOCAL: [(&str, &str); 3] = [
    ("198.19.1.1", NODE_NAME),
    ("198.19.1.2", NODE_NAME),
    ("198.19.1.3", "node2"),
];
const NONE_LOCAL: [(&str, &str); 3] = [
    ("198.19.1.1", "node0"),
    ("198.19.1.2", "node1"),
    ("198.19.1.3", "node2"),
];

// TestInternalTrafficPolicy "internalTrafficPolicy is cluster": "pod to ClusterIP hits all
// endpoints"
#[test]
fn cluster_pod_to_cluster_ip_hits_all_endpoints() {
    let want = to("198.19.1.1:80, 198.19.1.2:80, 198.19.1.3:80");
    let state = state("Cluster", &ONE_LOCAL);
    expect(
        &state,
        "pod to ClusterIP hits all endpoints",
        pod_to_cluster_ip(),
        want,
    );
}

// TestInternalTrafficPolicy "internalTrafficPolicy is local and there is one local
// endpoint": "pod to ClusterIP hits only local endpoint"
#[test]
fn local_one_local_endpoint_pod_to_cluster_ip_hits_only_local_endpoint() {
    let state = state("Local", &ONE_LOCAL);
    let case = "pod to ClusterIP hits only local endpoint";
    expect(&state, case, pod_to_cluster_ip(), to("198.19.1.1:80"));
}

// TestInternalTrafficPolicy "internalTrafficPolicy is local and there are multiple local
// endpoints": "pod to ClusterIP hits all local endpoints"
#[test]
fn local_multiple_local_endpoints_pod_to_cluster_ip_hits_all_local_endpoints() {
    let state = state("Local", &TWO_LOCAL);
    let case = "pod to ClusterIP hits all local endpoints";
    expect(
        &state,
        case,
        pod_to_cluster_ip(),
        to("198.19.1.1:80, 198.19.1.2:80"),
    );
}

// TestInternalTrafficPolicy "internalTrafficPolicy is local and there are no local
// endpoints": "no endpoints"
#[test]
fn local_no_local_endpoints_drops() {
    let state = state("Local", &NONE_LOCAL);
    expect(&state, "no endpoints", pod_to_cluster_ip(), Outcome::Drop);
}

// TestInternalTrafficPolicy, each case after `OnEndpointSliceDelete`: "endpoints deleted"
#[test]
fn cluster_endpoints_deleted_rejects() {
    let state = state("Cluster", &[]);
    expect(
        &state,
        "endpoints deleted (cluster)",
        pod_to_cluster_ip(),
        Outcome::Reject,
    );
}

// TestInternalTrafficPolicy, the three Local cases after `OnEndpointSliceDelete`:
// "endpoints deleted" (the same Service, so one model state for the three).
#[test]
fn local_endpoints_deleted_rejects() {
    let state = state("Local", &[]);
    expect(
        &state,
        "endpoints deleted (local)",
        pod_to_cluster_ip(),
        Outcome::Reject,
    );
}
