//! Rule 18 (`loadBalancerSourceRanges`) from the Service JSON to the datapath state: which
//! frontends carry ranges, kube-proxy's allowance for the node's own VIP traffic, invalid
//! entries, and the projection's external-only programming.

mod common;

use std::net::IpAddr;

use common::{build, build_with, cfg, get, node_json, patch, ready, service_json, slice_json};
use lb_kube::{
    projection::{to_datapath, Unsupported},
    rules::{FrontendKind, KubeDesiredState},
};
use lb_model::{Frontend, Protocol, Scope, Settings};
use serde_json::json;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A dual-stack LoadBalancer Service with one ingress IP per family and `ranges`.
fn ranged(ranges: serde_json::Value) -> serde_json::Value {
    patch(
        service_json("lb", "198.18.100.30"),
        json!({"spec": {"type": "LoadBalancer",
                        "clusterIPs": ["198.18.100.30", "2001:db8:100::30"],
                        "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack",
                        "loadBalancerSourceRanges": ranges,
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30081}]},
               "status": {"loadBalancer": {"ingress": [{"ip": "198.18.70.1"}, {"ip": "2001:db8:70::1"}]}}}),
    )
}

fn endpoints() -> Vec<serde_json::Value> {
    vec![
        slice_json(
            "lb-4",
            "lb",
            "IPv4",
            8080,
            vec![ready("198.19.0.1", "node-b")],
        ),
        slice_json(
            "lb-6",
            "lb",
            "IPv6",
            8080,
            vec![ready("2001:db8:19::1", "node-b")],
        ),
    ]
}

fn ranges_on(state: &KubeDesiredState, address: &str) -> Vec<String> {
    let svc = get(state, "lb");
    let fe = svc.ports[0]
        .frontends
        .iter()
        .find(|f| f.address == ip(address))
        .unwrap();
    fe.source_ranges.iter().map(|r| r.to_string()).collect()
}

fn frontend(address: &str, scope: Scope) -> Frontend {
    Frontend {
        vip: ip(address),
        port: 80,
        protocol: Protocol::Tcp,
        scope,
    }
}

#[test]
fn rule_18_ranges_apply_to_load_balancer_ips_of_their_family_only() {
    let state = build(
        vec![ranged(json!(["203.0.113.0/24", "2001:db8:ff::/48"]))],
        endpoints(),
    );
    assert_eq!(ranges_on(&state, "198.18.70.1"), ["203.0.113.0/24"]);
    assert_eq!(ranges_on(&state, "2001:db8:70::1"), ["2001:db8:ff::/48"]);
    let svc = get(&state, "lb");
    for fe in &svc.ports[0].frontends {
        if fe.kind != FrontendKind::LoadBalancer {
            assert!(fe.source_ranges.is_empty(), "{fe:?}");
        }
    }
    // IPv4 ranges only: the IPv6 LB IP is not filtered at all.
    let state = build(vec![ranged(json!(["203.0.113.0/24"]))], endpoints());
    assert!(ranges_on(&state, "2001:db8:70::1").is_empty());
}

#[test]
fn rule_18_a_range_holding_the_node_ip_also_allows_the_load_balancer_ips() {
    // The default node's InternalIP is 198.18.0.10.
    let state = build(vec![ranged(json!(["198.18.0.0/24"]))], endpoints());
    assert_eq!(
        ranges_on(&state, "198.18.70.1"),
        ["198.18.0.0/24", "198.18.70.1/32"]
    );
    let state = build(vec![ranged(json!(["203.0.113.0/24"]))], endpoints());
    assert_eq!(ranges_on(&state, "198.18.70.1"), ["203.0.113.0/24"]);
    // kube-proxy's node IP is the first InternalIP, else the first ExternalIP, per family.
    let node = node_json(
        "node-a",
        &[
            ("ExternalIP", "203.0.113.50"),
            ("InternalIP", "2001:db8:0:1::10"),
        ],
        "zone-a",
    );
    let state = build_with(
        vec![ranged(json!(["203.0.113.0/24", "2001:db8:0:1::/64"]))],
        endpoints(),
        Some(node),
        &cfg(),
    );
    assert_eq!(
        ranges_on(&state, "198.18.70.1"),
        ["203.0.113.0/24", "198.18.70.1/32"]
    );
    assert_eq!(
        ranges_on(&state, "2001:db8:70::1"),
        ["2001:db8:0:1::/64", "2001:db8:70::1/128"]
    );
}

#[test]
fn rule_18_invalid_entries_are_reported_and_an_all_invalid_list_filters_nothing() {
    let state = build(
        vec![ranged(json!(["banana", "203.0.113.0/24"]))],
        endpoints(),
    );
    assert_eq!(ranges_on(&state, "198.18.70.1"), ["203.0.113.0/24"]);
    assert!(state
        .skipped
        .iter()
        .any(|s| s.problem.reason() == "bad_cidr"));
    // kube-proxy filters only when a valid range is left: otherwise every source is served.
    let state = build(vec![ranged(json!(["banana", "10.0.0.0/33"]))], endpoints());
    assert!(ranges_on(&state, "198.18.70.1").is_empty());
    assert_eq!(
        state
            .skipped
            .iter()
            .filter(|s| s.problem.reason() == "bad_cidr")
            .count(),
        2
    );
    let (desired, _) = to_datapath(&state, Settings::default());
    let spec = &desired.services[&frontend("198.18.70.1", Scope::External)];
    assert!(spec.source_ranges.is_empty());
}

#[test]
fn rule_18_projection_filters_the_external_scope_and_leaves_the_socket_out() {
    let state = build(vec![ranged(json!(["203.0.113.7/24"]))], endpoints());
    let (desired, report) = to_datapath(&state, Settings::default());
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let spec = &desired.services[&frontend("198.18.70.1", Scope::External)];
    // Canonical: the network address.
    let shown: Vec<String> = spec.source_ranges.iter().map(|r| r.to_string()).collect();
    assert_eq!(shown, ["203.0.113.0/24"]);
    assert_eq!(spec.backends.len(), 1);
    assert!(!desired
        .services
        .contains_key(&frontend("198.18.70.1", Scope::Internal)));
    // The ClusterIP is neither filtered nor left out of the socket.
    let cip = &desired.services[&frontend("198.18.100.30", Scope::Internal)];
    assert!(cip.source_ranges.is_empty());
    assert!(report
        .unsupported
        .iter()
        .any(|(s, what)| s.name == "lb" && *what == Unsupported::SourceRangesAtSocket));
    // Without any endpoint kube-proxy refuses every source alike: no filter then.
    let state = build(vec![ranged(json!(["203.0.113.0/24"]))], vec![]);
    let (desired, _) = to_datapath(&state, Settings::default());
    let spec = &desired.services[&frontend("198.18.70.1", Scope::External)];
    assert!(spec.source_ranges.is_empty() && spec.backends.is_empty());
}
