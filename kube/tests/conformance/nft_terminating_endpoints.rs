//! pkg/proxy/nftables/proxier_test.go, `TestTerminatingEndpointsTrafficPolicyLocal` and
//! `TestTerminatingEndpointsTrafficPolicyCluster`: a LoadBalancer Service whose endpoints
//! are ready, serving-terminating, or neither, on this node and others. Ready endpoints
//! win; the serving-terminating fallback applies to the Cluster set and to the Local set
//! each on its own (rules 11, 12); with eTP Local and nothing usable here while a remote
//! endpoint is still serving, external traffic is dropped (rule 13); with nothing usable
//! anywhere, or after the slice is deleted, everything is rejected (rule 9).
//! Endpoints 10.0.1.X are 198.19.1.X here.

use lb_kube::rules::KubeDesiredState;
use serde_json::{json, Value};

use crate::support::*;

const SVC_IP: &str = "198.18.31.1"; // upstream 172.30.1.1

fn state(policy: &str, endpoints: Vec<Value>) -> KubeDesiredState {
    let svc = service(
        "ns1",
        "svc1",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": policy, "clusterIP": SVC_IP,
               "healthCheckNodePort": 30000,
               "ports": [{"name": "", "port": 80, "protocol": "TCP", "targetPort": 80}]}),
    );
    let slices = if endpoints.is_empty() {
        vec![]
    } else {
        vec![slice4("ns1", "svc1", slice_port("", 80, "TCP"), endpoints)]
    };
    build(vec![with_ingress(svc, &[LB_IP1])], slices)
}

/// Endpoint 198.19.1.`n` on `node` with (ready, serving, terminating).
fn e(n: u8, node: &str, ready: bool, serving: bool, terminating: bool) -> Value {
    on(
        cond(ep(&format!("198.19.1.{n}")), ready, serving, terminating),
        node,
    )
}

fn pod_to_cluster_ip() -> Packet<'static> {
    tcp(From::Pod(POD), SVC_IP, 80)
}

fn external_to_lb() -> Packet<'static> {
    tcp(From::External(EXTERNAL_CLIENT), LB_IP1, 80)
}

fn local_ready_endpoints_exist() -> KubeDesiredState {
    state(
        "Local",
        vec![
            e(1, NODE_NAME, true, true, false),
            e(2, NODE_NAME, true, true, false),
            e(3, NODE_NAME, false, true, true),
            e(4, NODE_NAME, false, false, true),
            e(5, "node-1", true, true, false),
        ],
    )
}

fn local_only_terminating_endpoints_exist() -> KubeDesiredState {
    state(
        "Local",
        vec![
            e(2, NODE_NAME, false, true, true),
            e(3, NODE_NAME, false, true, true),
            e(4, NODE_NAME, false, false, true),
            e(5, "node-1", true, true, false),
        ],
    )
}

fn terminating_endpoints_on_remote_node(policy: &str) -> KubeDesiredState {
    state(policy, vec![e(5, "node-1", false, true, true)])
}

fn no_usable_endpoints_on_any_node(policy: &str) -> KubeDesiredState {
    state(
        policy,
        vec![
            e(5, NODE_NAME, false, false, true),
            e(5, "node-1", false, false, true),
        ],
    )
}

fn cluster_ready_endpoints_exist() -> KubeDesiredState {
    state(
        "Cluster",
        vec![
            e(1, NODE_NAME, true, true, false),
            e(2, NODE_NAME, true, true, false),
            e(3, "another-node", false, true, true),
            e(4, "another-node", false, false, true),
            e(5, "another-node", true, true, false),
        ],
    )
}

fn cluster_only_terminating_endpoints_exist() -> KubeDesiredState {
    state(
        "Cluster",
        vec![
            e(2, NODE_NAME, false, true, true),
            e(3, NODE_NAME, false, true, true),
            e(4, "another-node", false, false, true),
            e(5, "another-node", false, true, true),
        ],
    )
}

// TestTerminatingEndpointsTrafficPolicyLocal "ready endpoints exist": "pod to clusterIP"
#[test]
fn local_ready_endpoints_exist_pod_to_cluster_ip() {
    let want = to("198.19.1.1:80, 198.19.1.2:80, 198.19.1.5:80");
    expect(
        &local_ready_endpoints_exist(),
        "pod to clusterIP",
        pod_to_cluster_ip(),
        want,
    );
}

// TestTerminatingEndpointsTrafficPolicyLocal "ready endpoints exist": "external to LB"
#[test]
fn local_ready_endpoints_exist_external_to_lb() {
    let want = to("198.19.1.1:80, 198.19.1.2:80");
    expect(
        &local_ready_endpoints_exist(),
        "external to LB",
        external_to_lb(),
        want,
    );
}

// TestTerminatingEndpointsTrafficPolicyLocal "only terminating endpoints exist": "pod to
// clusterIP"
#[test]
fn local_only_terminating_endpoints_exist_pod_to_cluster_ip() {
    let state = local_only_terminating_endpoints_exist();
    expect(
        &state,
        "pod to clusterIP",
        pod_to_cluster_ip(),
        to("198.19.1.5:80"),
    );
}

// TestTerminatingEndpointsTrafficPolicyLocal "only terminating endpoints exist": "external
// to LB"
#[test]
fn local_only_terminating_endpoints_exist_external_to_lb() {
    let state = local_only_terminating_endpoints_exist();
    let want = to("198.19.1.2:80, 198.19.1.3:80");
    expect(&state, "external to LB", external_to_lb(), want);
}

// TestTerminatingEndpointsTrafficPolicyLocal "terminating endpoints on remote node": "pod
// to clusterIP"
#[test]
fn local_terminating_endpoints_on_remote_node_pod_to_cluster_ip() {
    let state = terminating_endpoints_on_remote_node("Local");
    expect(
        &state,
        "pod to clusterIP",
        pod_to_cluster_ip(),
        to("198.19.1.5:80"),
    );
}

// TestTerminatingEndpointsTrafficPolicyLocal "terminating endpoints on remote node":
// "external to LB, no locally-usable endpoints"
#[test]
fn local_terminating_endpoints_on_remote_node_external_to_lb_drops() {
    let state = terminating_endpoints_on_remote_node("Local");
    let case = "external to LB, no locally-usable endpoints";
    expect(&state, case, external_to_lb(), Outcome::Drop);
}

// TestTerminatingEndpointsTrafficPolicyLocal "no usable endpoints on any node": "pod to
// clusterIP, no usable endpoints"
#[test]
fn local_no_usable_endpoints_pod_to_cluster_ip_rejects() {
    let state = no_usable_endpoints_on_any_node("Local");
    let case = "pod to clusterIP, no usable endpoints";
    expect(&state, case, pod_to_cluster_ip(), Outcome::Reject);
}

// TestTerminatingEndpointsTrafficPolicyLocal "no usable endpoints on any node": "external
// to LB, no usable endpoints"
#[test]
fn local_no_usable_endpoints_external_to_lb_rejects() {
    let state = no_usable_endpoints_on_any_node("Local");
    let case = "external to LB, no usable endpoints";
    expect(&state, case, external_to_lb(), Outcome::Reject);
}

// TestTerminatingEndpointsTrafficPolicyLocal, every case after `OnEndpointSliceDelete`:
// "pod to clusterIP after endpoints deleted"
#[test]
fn local_pod_to_cluster_ip_after_endpoints_deleted() {
    let case = "pod to clusterIP after endpoints deleted";
    expect(
        &state("Local", vec![]),
        case,
        pod_to_cluster_ip(),
        Outcome::Reject,
    );
}

// TestTerminatingEndpointsTrafficPolicyLocal, every case after `OnEndpointSliceDelete`:
// "external to LB after endpoints deleted"
#[test]
fn local_external_to_lb_after_endpoints_deleted() {
    let case = "external to LB after endpoints deleted";
    expect(
        &state("Local", vec![]),
        case,
        external_to_lb(),
        Outcome::Reject,
    );
}

// TestTerminatingEndpointsTrafficPolicyCluster "ready endpoints exist": "pod to clusterIP"
#[test]
fn cluster_ready_endpoints_exist_pod_to_cluster_ip() {
    let want = to("198.19.1.1:80, 198.19.1.2:80, 198.19.1.5:80");
    expect(
        &cluster_ready_endpoints_exist(),
        "pod to clusterIP",
        pod_to_cluster_ip(),
        want,
    );
}

// TestTerminatingEndpointsTrafficPolicyCluster "ready endpoints exist": "external to LB"
#[test]
fn cluster_ready_endpoints_exist_external_to_lb() {
    let want = to("198.19.1.1:80, 198.19.1.2:80, 198.19.1.5:80");
    expect(
        &cluster_ready_endpoints_exist(),
        "external to LB",
        external_to_lb(),
        want,
    );
}

// TestTerminatingEndpointsTrafficPolicyCluster "only terminating endpoints exist": "pod to
// clusterIP"
#[test]
fn cluster_only_terminating_endpoints_exist_pod_to_cluster_ip() {
    let state = cluster_only_terminating_endpoints_exist();
    let want = to("198.19.1.2:80, 198.19.1.3:80, 198.19.1.5:80");
    expect(&state, "pod to clusterIP", pod_to_cluster_ip(), want);
}

// TestTerminatingEndpointsTrafficPolicyCluster "only terminating endpoints exist":
// "external to LB"
#[test]
fn cluster_only_terminating_endpoints_exist_external_to_lb() {
    let state = cluster_only_terminating_endpoints_exist();
    let want = to("198.19.1.2:80, 198.19.1.3:80, 198.19.1.5:80");
    expect(&state, "external to LB", external_to_lb(), want);
}

// TestTerminatingEndpointsTrafficPolicyCluster "terminating endpoints on remote node":
// "pod to clusterIP"
#[test]
fn cluster_terminating_endpoints_on_remote_node_pod_to_cluster_ip() {
    let state = terminating_endpoints_on_remote_node("Cluster");
    expect(
        &state,
        "pod to clusterIP",
        pod_to_cluster_ip(),
        to("198.19.1.5:80"),
    );
}

// TestTerminatingEndpointsTrafficPolicyCluster "terminating endpoints on remote node":
// "external to LB"
#[test]
fn cluster_terminating_endpoints_on_remote_node_external_to_lb() {
    let state = terminating_endpoints_on_remote_node("Cluster");
    expect(
        &state,
        "external to LB",
        external_to_lb(),
        to("198.19.1.5:80"),
    );
}

// TestTerminatingEndpointsTrafficPolicyCluster "no usable endpoints on any node": "pod to
// clusterIP"
#[test]
fn cluster_no_usable_endpoints_pod_to_cluster_ip_rejects() {
    let state = no_usable_endpoints_on_any_node("Cluster");
    expect(
        &state,
        "pod to clusterIP",
        pod_to_cluster_ip(),
        Outcome::Reject,
    );
}

// TestTerminatingEndpointsTrafficPolicyCluster "no usable endpoints on any node":
// "external to LB"
#[test]
fn cluster_no_usable_endpoints_external_to_lb_rejects() {
    let state = no_usable_endpoints_on_any_node("Cluster");
    expect(&state, "external to LB", external_to_lb(), Outcome::Reject);
}

// TestTerminatingEndpointsTrafficPolicyCluster, every case after `OnEndpointSliceDelete`:
// "pod to clusterIP after endpoints deleted"
#[test]
fn cluster_pod_to_cluster_ip_after_endpoints_deleted() {
    let case = "pod to clusterIP after endpoints deleted";
    expect(
        &state("Cluster", vec![]),
        case,
        pod_to_cluster_ip(),
        Outcome::Reject,
    );
}

// TestTerminatingEndpointsTrafficPolicyCluster, every case after `OnEndpointSliceDelete`:
// "external to LB after endpoints deleted"
#[test]
fn cluster_external_to_lb_after_endpoints_deleted() {
    let case = "external to LB after endpoints deleted";
    expect(
        &state("Cluster", vec![]),
        case,
        external_to_lb(),
        Outcome::Reject,
    );
}
