//! The endpoint node's translations: which (frontend, local endpoint) pairs this node
//! delivers to the endpoint's address and target port, from real Service/EndpointSlice JSON.

mod common;

use std::net::IpAddr;

use common::*;
use lb_kube::{backend_side::local_translations, rules::NodeConfig};
use lb_model::{Frontend, LocalTranslation, Protocol};
use serde_json::json;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn tcp(addr: &str, port: u16) -> Frontend {
    Frontend {
        vip: ip(addr),
        port,
        protocol: Protocol::Tcp,
        scope: lb_model::Scope::External,
    }
}

fn translation(frontend: Frontend, endpoint: &str, target_port: u16) -> LocalTranslation {
    LocalTranslation {
        frontend,
        endpoint: ip(endpoint),
        target_port,
    }
}

/// A NodePort Service, port 80 → targetPort 8080, one endpoint here and one elsewhere.
fn nodeport_web() -> (serde_json::Value, serde_json::Value) {
    let svc = patch(
        service_json("web", "198.18.100.1"),
        json!({"spec": {"type": "NodePort", "externalIPs": ["198.18.60.1"],
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80,
                                   "targetPort": 8080, "nodePort": 30080}]}}),
    );
    let slice = slice_json(
        "web-a",
        "web",
        "IPv4",
        8080,
        vec![ready("198.19.0.1", NODE), ready("198.19.0.2", "node-b")],
    );
    (svc, slice)
}

#[test]
fn every_frontend_kind_is_translated_for_local_endpoints_only() {
    let (svc, slice) = nodeport_web();
    let state = build(vec![svc], vec![slice]);
    assert_eq!(
        local_translations(&state),
        [
            // The NodePort, whichever node balanced it.
            translation(tcp("0.0.0.0", 30080), "198.19.0.1", 8080),
            translation(tcp("198.18.60.1", 80), "198.19.0.1", 8080),
            translation(tcp("198.18.100.1", 80), "198.19.0.1", 8080),
        ]
    );
}

#[test]
fn a_node_without_endpoints_translates_nothing() {
    let (svc, slice) = nodeport_web();
    let cfg = NodeConfig {
        node_name: "node-c".into(),
        ..NodeConfig::default()
    };
    let node = node_json("node-c", &[("InternalIP", "198.18.0.30")], "zone-a");
    let state = build_with(vec![svc], vec![slice], Some(node), &cfg);
    assert!(local_translations(&state).is_empty());
}

#[test]
fn terminating_local_endpoints_stay_translated_for_their_flows() {
    let svc = patch(
        service_json("web", "198.18.100.1"),
        json!({"spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}}),
    );
    // A ready endpoint elsewhere takes new flows; the terminating one here keeps its own.
    let slice = slice_json(
        "web-a",
        "web",
        "IPv4",
        8080,
        vec![
            endpoint("198.19.0.1", NODE, false, true, true),
            ready("198.19.0.2", "node-b"),
        ],
    );
    let state = build(vec![svc], vec![slice]);
    assert_eq!(
        local_translations(&state),
        [translation(tcp("198.18.100.1", 80), "198.19.0.1", 8080)]
    );
}

#[test]
fn named_target_ports_resolve_per_endpoint() {
    let svc = patch(
        service_json("web", "198.18.100.1"),
        json!({"spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http-alt"}]}}),
    );
    let a = slice_json(
        "web-a",
        "web",
        "IPv4",
        8080,
        vec![ready("198.19.0.1", NODE)],
    );
    let b = slice_json(
        "web-b",
        "web",
        "IPv4",
        9090,
        vec![ready("198.19.0.3", NODE)],
    );
    let state = build(vec![svc], vec![a, b]);
    assert_eq!(
        local_translations(&state),
        [
            translation(tcp("198.18.100.1", 80), "198.19.0.1", 8080),
            translation(tcp("198.18.100.1", 80), "198.19.0.3", 9090),
        ]
    );
}

#[test]
fn a_frontend_claimed_twice_keeps_the_first_services_port() {
    let a = patch(
        service_json("a", "198.18.100.1"),
        json!({"spec": {"externalIPs": ["198.18.60.1"],
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}}),
    );
    let b = patch(
        service_json("b", "198.18.100.2"),
        json!({"spec": {"externalIPs": ["198.18.60.1"],
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 9090}]}}),
    );
    let sa = slice_json("a-x", "a", "IPv4", 8080, vec![ready("198.19.0.1", NODE)]);
    let sb = slice_json("b-x", "b", "IPv4", 9090, vec![ready("198.19.0.1", NODE)]);
    let state = build(vec![a, b], vec![sa, sb]);
    let external: Vec<LocalTranslation> = local_translations(&state)
        .into_iter()
        .filter(|t| t.frontend.vip == ip("198.18.60.1"))
        .collect();
    assert_eq!(
        external,
        [translation(tcp("198.18.60.1", 80), "198.19.0.1", 8080)]
    );
}
