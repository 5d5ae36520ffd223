//! pkg/proxy/topology_test.go, `TestCategorizeEndpoints` (the current version, where the
//! hints are followed without any Service annotation): per case, the Cluster set, the
//! Local set and whether the Service has any usable endpoint, for one port (rules 11, 12,
//! 16, and rule 9's "no usable endpoint anywhere", seen as the ClusterIP rejecting).
//! Upstream leaves a set `nil` when the Service never uses it; the model always computes
//! both, so only the sets upstream states are compared. "nodePort: 8080" in upstream's
//! service info makes the Service externally accessible: a NodePort Service here.
//! Endpoints 10.1.2.X are 198.19.12.X here, 10.0.0.X are 198.19.100.1X; "local"
//! endpoints are on this node, the others have no node, as upstream's.

use lb_kube::rules::{EndpointSetKind, FrontendKind, IpFamily, KubeService, Verdict};
use serde_json::{json, Value};

use crate::support::*;

/// The Service `ns1/svc1` (port p80) with these policies, its endpoints, on this node in
/// `zone` (`None`: no zone label).
fn categorize(
    zone: Option<&str>,
    itp: bool,
    etp: bool,
    node_port: bool,
    eps: Vec<Value>,
) -> KubeService {
    let policy = |local: bool| if local { "Local" } else { "Cluster" };
    let kind = if node_port { "NodePort" } else { "ClusterIP" };
    let port = if node_port {
        node_port_json()
    } else {
        port("p80", 80, "TCP")
    };
    let svc = service(
        "ns1",
        "svc1",
        json!({"type": kind, "clusterIP": "198.18.30.1",
               "internalTrafficPolicy": policy(itp), "externalTrafficPolicy": policy(etp),
               "ports": [port]}),
    );
    let slices = vec![slice4("ns1", "svc1", slice_port("p80", 80, "TCP"), eps)];
    let state = build_on(vec![svc], slices, this_node(zone), &node_config());
    service_of(&state, "ns1", "svc1").clone()
}

fn node_port_json() -> Value {
    node_port("p80", 80, "TCP", 8080)
}

/// A test endpoint: zone hints (none when empty), (ready, serving, terminating), local.
fn e(address: &str, zones: &[&str], conditions: (bool, bool, bool), local: bool) -> Value {
    let (ready, serving, terminating) = conditions;
    let mut ep = cond(ep(address), ready, serving, terminating);
    if !zones.is_empty() {
        ep = hints(ep, zones, &[]);
    }
    if local {
        ep = on(ep, NODE_NAME);
    }
    ep
}

const READY: (bool, bool, bool) = (true, true, false);
const NOT_READY: (bool, bool, bool) = (false, false, false);
const SERVING_TERMINATING: (bool, bool, bool) = (false, true, true);

fn check(svc: &KubeService, cluster: Option<&str>, local: Option<&str>, has_any: bool) {
    if let Some(cluster) = cluster {
        let got = set_of(svc, "p80", IpFamily::V4, EndpointSetKind::Cluster);
        assert_eq!(got, addrs(cluster), "Cluster set");
    }
    if let Some(local) = local {
        let got = set_of(svc, "p80", IpFamily::V4, EndpointSetKind::Local);
        assert_eq!(got, addrs(local), "Local set");
    }
    let cluster_ip = svc.ports[0]
        .frontends
        .iter()
        .find(|f| f.kind == FrontendKind::ClusterIp)
        .expect("a ClusterIP frontend");
    assert_eq!(
        cluster_ip.internal != Verdict::Reject,
        has_any,
        "hasAnyEndpoints (the ClusterIP rejects exactly without any)"
    );
}

// TestCategorizeEndpoints: "should use topology since all endpoints have hints, node has a zone label and and there are endpoints for the node's zone"
#[test]
fn should_use_topology_since_all_endpoints_have_hints_node_has_a_zone_label_and_and_there_are() {
    let eps = vec![
        e("198.19.12.3", &["zone-a"], READY, false),
        e("198.19.12.4", &["zone-b"], READY, false),
        e("198.19.12.5", &["zone-c"], READY, false),
        e("198.19.12.6", &["zone-a"], READY, false),
    ];
    let svc = categorize(Some("zone-a"), false, false, false, eps);
    check(&svc, Some("198.19.12.3:80, 198.19.12.6:80"), None, true);
}

// TestCategorizeEndpoints: "externalTrafficPolicy: Local, topology ignored for Local endpoints"
#[test]
fn externaltrafficpolicy_local_topology_ignored_for_local_endpoints() {
    let eps = vec![
        e("198.19.12.3", &["zone-a"], READY, true),
        e("198.19.12.4", &["zone-b"], READY, true),
        e("198.19.12.5", &["zone-c"], READY, false),
        e("198.19.12.6", &["zone-a"], READY, false),
    ];
    let svc = categorize(Some("zone-a"), false, true, true, eps);
    check(
        &svc,
        Some("198.19.12.3:80, 198.19.12.6:80"),
        Some("198.19.12.3:80, 198.19.12.4:80"),
        true,
    );
}

// TestCategorizeEndpoints: "internalTrafficPolicy: Local, topology ignored for Local endpoints"
#[test]
fn internaltrafficpolicy_local_topology_ignored_for_local_endpoints() {
    let eps = vec![
        e("198.19.12.3", &["zone-a"], READY, true),
        e("198.19.12.4", &["zone-b"], READY, true),
        e("198.19.12.5", &["zone-c"], READY, false),
        e("198.19.12.6", &["zone-a"], READY, false),
    ];
    let svc = categorize(Some("zone-a"), true, false, true, eps);
    check(
        &svc,
        Some("198.19.12.3:80, 198.19.12.6:80"),
        Some("198.19.12.3:80, 198.19.12.4:80"),
        true,
    );
}

// TestCategorizeEndpoints: "empty node labels"
#[test]
fn empty_node_labels() {
    let eps = vec![e("198.19.12.3", &["zone-a"], READY, false)];
    let svc = categorize(None, false, false, false, eps);
    check(&svc, Some("198.19.12.3:80"), None, true);
}

// TestCategorizeEndpoints: "empty zone label"
#[test]
fn empty_zone_label() {
    let eps = vec![e("198.19.12.3", &["zone-a"], READY, false)];
    let svc = categorize(Some(""), false, false, false, eps);
    check(&svc, Some("198.19.12.3:80"), None, true);
}

// TestCategorizeEndpoints: "node in different zone, no endpoint filtering"
#[test]
fn node_in_different_zone_no_endpoint_filtering() {
    let eps = vec![e("198.19.12.3", &["zone-a"], READY, false)];
    let svc = categorize(Some("zone-b"), false, false, false, eps);
    check(&svc, Some("198.19.12.3:80"), None, true);
}

// TestCategorizeEndpoints: "unready endpoint"
#[test]
fn unready_endpoint() {
    let eps = vec![
        e("198.19.12.3", &["zone-a"], READY, false),
        e("198.19.12.4", &["zone-b"], READY, false),
        e("198.19.12.5", &["zone-c"], READY, false),
        e("198.19.12.6", &["zone-a"], NOT_READY, false),
    ];
    let svc = categorize(Some("zone-a"), false, false, false, eps);
    check(&svc, Some("198.19.12.3:80"), None, true);
}

// TestCategorizeEndpoints: "only unready endpoints in same zone (should not filter)"
#[test]
fn only_unready_endpoints_in_same_zone_should_not_filter() {
    let eps = vec![
        e("198.19.12.3", &["zone-a"], NOT_READY, false),
        e("198.19.12.4", &["zone-b"], READY, false),
        e("198.19.12.5", &["zone-c"], READY, false),
        e("198.19.12.6", &["zone-a"], NOT_READY, false),
    ];
    let svc = categorize(Some("zone-a"), false, false, false, eps);
    check(&svc, Some("198.19.12.4:80, 198.19.12.5:80"), None, true);
}

// TestCategorizeEndpoints: "missing hints, no filtering applied"
#[test]
fn missing_hints_no_filtering_applied() {
    let eps = vec![
        e("198.19.12.3", &["zone-a"], READY, false),
        e("198.19.12.4", &["zone-b"], READY, false),
        e("198.19.12.5", &[], READY, false),
        e("198.19.12.6", &["zone-a"], READY, false),
    ];
    let svc = categorize(Some("zone-a"), false, false, false, eps);
    check(
        &svc,
        Some("198.19.12.3:80, 198.19.12.4:80, 198.19.12.5:80, 198.19.12.6:80"),
        None,
        true,
    );
}

// TestCategorizeEndpoints: "multiple hints per endpoint, filtering includes any endpoint with zone included"
#[test]
fn multiple_hints_per_endpoint_filtering_includes_any_endpoint_with_zone_included() {
    let eps = vec![
        e("198.19.12.3", &["zone-a", "zone-b", "zone-c"], READY, false),
        e("198.19.12.4", &["zone-b", "zone-c"], READY, false),
        e("198.19.12.5", &["zone-b", "zone-d"], READY, false),
        e("198.19.12.6", &["zone-c"], READY, false),
    ];
    let svc = categorize(Some("zone-c"), false, false, false, eps);
    check(
        &svc,
        Some("198.19.12.3:80, 198.19.12.4:80, 198.19.12.6:80"),
        None,
        true,
    );
}

// TestCategorizeEndpoints: "conflicting topology and localness require merging allEndpoints"
#[test]
fn conflicting_topology_and_localness_require_merging_allendpoints() {
    let eps = vec![
        e("198.19.100.10", &["zone-a"], READY, true),
        e("198.19.100.11", &["zone-b"], READY, true),
        e("198.19.100.12", &["zone-a"], READY, false),
        e("198.19.100.13", &["zone-b"], READY, false),
    ];
    let svc = categorize(Some("zone-a"), false, true, true, eps);
    check(
        &svc,
        Some("198.19.100.10:80, 198.19.100.12:80"),
        Some("198.19.100.10:80, 198.19.100.11:80"),
        true,
    );
}

// TestCategorizeEndpoints: "internalTrafficPolicy: Local, with empty endpoints"
#[test]
fn internaltrafficpolicy_local_with_empty_endpoints() {
    let eps = vec![];
    let svc = categorize(None, true, false, false, eps);
    check(&svc, None, Some(""), false);
}

// TestCategorizeEndpoints: "internalTrafficPolicy: Local, but all endpoints are remote"
#[test]
fn internaltrafficpolicy_local_but_all_endpoints_are_remote() {
    let eps = vec![
        e("198.19.100.10", &[], READY, false),
        e("198.19.100.11", &[], READY, false),
    ];
    let svc = categorize(None, true, false, false, eps);
    check(&svc, None, Some(""), true);
}

// TestCategorizeEndpoints: "internalTrafficPolicy: Local, all endpoints are local"
#[test]
fn internaltrafficpolicy_local_all_endpoints_are_local() {
    let eps = vec![
        e("198.19.100.10", &[], READY, true),
        e("198.19.100.11", &[], READY, true),
    ];
    let svc = categorize(None, true, false, false, eps);
    check(&svc, None, Some("198.19.100.10:80, 198.19.100.11:80"), true);
}

// TestCategorizeEndpoints: "internalTrafficPolicy: Local, some endpoints are local"
#[test]
fn internaltrafficpolicy_local_some_endpoints_are_local() {
    let eps = vec![
        e("198.19.100.10", &[], READY, true),
        e("198.19.100.11", &[], READY, false),
    ];
    let svc = categorize(None, true, false, false, eps);
    check(&svc, None, Some("198.19.100.10:80"), true);
}

// TestCategorizeEndpoints: "Cluster traffic policy, endpoints not Ready"
#[test]
fn cluster_traffic_policy_endpoints_not_ready() {
    let eps = vec![
        e("198.19.100.10", &[], NOT_READY, false),
        e("198.19.100.11", &[], NOT_READY, false),
    ];
    let svc = categorize(None, false, false, false, eps);
    check(&svc, Some(""), None, false);
}

// TestCategorizeEndpoints: "Cluster traffic policy, some endpoints are Ready"
#[test]
fn cluster_traffic_policy_some_endpoints_are_ready() {
    let eps = vec![
        e("198.19.100.10", &[], NOT_READY, false),
        e("198.19.100.11", &[], READY, false),
    ];
    let svc = categorize(None, false, false, false, eps);
    check(&svc, Some("198.19.100.11:80"), None, true);
}

// TestCategorizeEndpoints: "Cluster traffic policy, all endpoints are terminating"
#[test]
fn cluster_traffic_policy_all_endpoints_are_terminating() {
    let eps = vec![
        e("198.19.100.10", &[], SERVING_TERMINATING, true),
        e("198.19.100.11", &[], SERVING_TERMINATING, false),
    ];
    let svc = categorize(None, false, false, false, eps);
    check(&svc, Some("198.19.100.10:80, 198.19.100.11:80"), None, true);
}

// TestCategorizeEndpoints: "iTP: Local, eTP: Cluster, some endpoints local"
#[test]
fn itp_local_etp_cluster_some_endpoints_local() {
    let eps = vec![
        e("198.19.100.10", &[], READY, true),
        e("198.19.100.11", &[], READY, false),
    ];
    let svc = categorize(None, true, false, true, eps);
    check(
        &svc,
        Some("198.19.100.10:80, 198.19.100.11:80"),
        Some("198.19.100.10:80"),
        true,
    );
}

// TestCategorizeEndpoints: "iTP: Cluster, eTP: Local, some endpoints local"
#[test]
fn itp_cluster_etp_local_some_endpoints_local() {
    let eps = vec![
        e("198.19.100.10", &[], READY, true),
        e("198.19.100.11", &[], READY, false),
    ];
    let svc = categorize(None, false, true, true, eps);
    check(
        &svc,
        Some("198.19.100.10:80, 198.19.100.11:80"),
        Some("198.19.100.10:80"),
        true,
    );
}

// TestCategorizeEndpoints: "iTP: Local, eTP: Local, some endpoints local"
#[test]
fn itp_local_etp_local_some_endpoints_local() {
    let eps = vec![
        e("198.19.100.10", &[], READY, true),
        e("198.19.100.11", &[], READY, false),
    ];
    let svc = categorize(None, true, true, true, eps);
    check(
        &svc,
        Some("198.19.100.10:80, 198.19.100.11:80"),
        Some("198.19.100.10:80"),
        true,
    );
}

// TestCategorizeEndpoints: "iTP: Local, eTP: Local, all endpoints remote"
#[test]
fn itp_local_etp_local_all_endpoints_remote() {
    let eps = vec![
        e("198.19.100.10", &[], READY, false),
        e("198.19.100.11", &[], READY, false),
    ];
    let svc = categorize(None, true, true, true, eps);
    check(
        &svc,
        Some("198.19.100.10:80, 198.19.100.11:80"),
        Some(""),
        true,
    );
}

// TestCategorizeEndpoints: "iTP: Local, eTP: Local, all endpoints remote and terminating"
#[test]
fn itp_local_etp_local_all_endpoints_remote_and_terminating() {
    let eps = vec![
        e("198.19.100.10", &[], SERVING_TERMINATING, false),
        e("198.19.100.11", &[], SERVING_TERMINATING, false),
    ];
    let svc = categorize(None, true, true, true, eps);
    check(
        &svc,
        Some("198.19.100.10:80, 198.19.100.11:80"),
        Some(""),
        true,
    );
}

// TestCategorizeEndpoints: "iTP: Cluster, eTP: Local, with terminating endpoints"
#[test]
fn itp_cluster_etp_local_with_terminating_endpoints() {
    let eps = vec![
        e("198.19.100.10", &[], READY, false),
        e("198.19.100.11", &[], NOT_READY, true),
        e("198.19.100.12", &[], SERVING_TERMINATING, true),
        e("198.19.100.13", &[], SERVING_TERMINATING, false),
    ];
    let svc = categorize(None, false, true, true, eps);
    check(
        &svc,
        Some("198.19.100.10:80"),
        Some("198.19.100.12:80"),
        true,
    );
}

// TestCategorizeEndpoints: "externalTrafficPolicy ignored if not externally accessible"
#[test]
fn externaltrafficpolicy_ignored_if_not_externally_accessible() {
    let eps = vec![
        e("198.19.100.10", &[], READY, false),
        e("198.19.100.11", &[], READY, true),
    ];
    let svc = categorize(None, false, true, false, eps);
    check(&svc, Some("198.19.100.10:80, 198.19.100.11:80"), None, true);
}

// TestCategorizeEndpoints: "no cluster endpoints for iTP:Local internal-only service"
#[test]
fn no_cluster_endpoints_for_itp_local_internal_only_service() {
    let eps = vec![
        e("198.19.100.10", &[], READY, false),
        e("198.19.100.11", &[], READY, true),
    ];
    let svc = categorize(None, true, false, false, eps);
    check(&svc, None, Some("198.19.100.11:80"), true);
}
