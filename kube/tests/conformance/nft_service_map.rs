//! pkg/proxy/nftables/proxier_test.go, `TestBuildServiceMapAddRemove`,
//! `TestBuildServiceMapServiceHeadless`, `TestBuildServiceMapServiceTypeExternalName` and
//! `TestBuildServiceMapServiceUpdate`: which Services and ports are served (rules 1, 4),
//! and which get a healthCheckNodePort server (rule 15). Upstream counts the entries of
//! its service-port map; here, the ports of the model's Services.

use lb_kube::rules::KubeDesiredState;
use serde_json::{json, Value};

use crate::support::*;

fn port_count(state: &KubeDesiredState) -> usize {
    state.services.values().map(|s| s.ports.len()).sum()
}

fn health_check_ports(state: &KubeDesiredState) -> Vec<(String, u16)> {
    state
        .health_checks()
        .into_iter()
        .map(|h| (h.service.to_string(), h.port))
        .collect()
}

fn cluster_ip_service() -> Value {
    service(
        "somewhere-else",
        "cluster-ip",
        json!({"clusterIP": "198.18.85.4", "ports": [
            test_port("something", "UDP", 1234, 4321, 0),
            test_port("somethingelse", "UDP", 1235, 5321, 0),
            test_port("sctpport", "SCTP", 1236, 6321, 0)
        ]}),
    )
}

fn add_remove_services() -> Vec<Value> {
    let node_port = service(
        "somewhere-else",
        "node-port",
        json!({"type": "NodePort", "clusterIP": "198.18.85.10", "ports": [
            test_port("blahblah", "UDP", 345, 678, 0),
            test_port("moreblahblah", "TCP", 344, 677, 0),
            test_port("muchmoreblah", "SCTP", 343, 676, 0)
        ]}),
    );
    let load_balancer = service(
        "somewhere",
        "load-balancer",
        json!({"type": "LoadBalancer", "clusterIP": "198.18.85.11",
               "loadBalancerIP": LB_IP1, "ports": [
            test_port("foobar", "UDP", 8675, 30061, 7000),
            test_port("baz", "UDP", 8676, 30062, 7001)
        ]}),
    );
    let only_local = service(
        "somewhere",
        "only-local-load-balancer",
        json!({"type": "LoadBalancer", "clusterIP": "198.18.85.12",
               "loadBalancerIP": LB_IP2, "externalTrafficPolicy": "Local",
               "healthCheckNodePort": 345, "ports": [
            test_port("foobar2", "UDP", 8677, 30063, 7002),
            test_port("baz", "UDP", 8678, 30064, 7003)
        ]}),
    );
    vec![
        cluster_ip_service(),
        node_port,
        with_ingress(load_balancer, &[LB_IP1]),
        with_ingress(only_local, &[LB_IP2]),
    ]
}

// TestBuildServiceMapAddRemove: four Services give 10 service ports and one health check
// port (345, the eTP Local LoadBalancer's).
#[test]
fn build_service_map_add_remove_added() {
    let state = build(add_remove_services(), vec![]);
    assert_eq!(port_count(&state), 10);
    assert_eq!(
        health_check_ports(&state),
        [("somewhere/only-local-load-balancer".to_owned(), 345)]
    );
}

// TestBuildServiceMapAddRemove: after the first Service loses a port and the others are
// deleted, one port and no health check port are left.
#[test]
fn build_service_map_add_remove_removed() {
    let one = service(
        "somewhere-else",
        "cluster-ip",
        json!({"clusterIP": "198.18.85.4", "ports": [test_port("somethingelse", "UDP", 1235, 5321, 0)]}),
    );
    let state = build(vec![one], vec![]);
    assert_eq!(port_count(&state), 1);
    assert!(health_check_ports(&state).is_empty());
}

// TestBuildServiceMapServiceHeadless: headless Services (with and without ports) are not
// served, and have no health check.
#[test]
fn build_service_map_service_headless() {
    let headless = service(
        "somewhere-else",
        "headless",
        json!({"clusterIP": "None", "ports": [test_port("rpc", "UDP", 1234, 0, 0)]}),
    );
    let without_port = service(
        "somewhere-else",
        "headless-without-port",
        json!({"clusterIP": "None"}),
    );
    let state = build(vec![headless, without_port], vec![]);
    assert_eq!(port_count(&state), 0);
    assert!(state.services.is_empty());
    assert!(health_check_ports(&state).is_empty());
}

// TestBuildServiceMapServiceTypeExternalName: an ExternalName Service is not served, even
// with a cluster IP.
#[test]
fn build_service_map_service_type_external_name() {
    let external_name = service(
        "somewhere-else",
        "external-name",
        json!({"type": "ExternalName", "clusterIP": "198.18.85.4",
               "externalName": "foo2.bar.com", "ports": [test_port("blah", "UDP", 1235, 5321, 0)]}),
    );
    let state = build(vec![external_name], vec![]);
    assert_eq!(port_count(&state), 0);
    assert!(health_check_ports(&state).is_empty());
}

fn update_v1() -> Value {
    service(
        "somewhere",
        "some-service",
        json!({"clusterIP": "198.18.85.4", "ports": [
            test_port("something", "UDP", 1234, 4321, 0),
            test_port("somethingelse", "TCP", 1235, 5321, 0)
        ]}),
    )
}

fn update_v2() -> Value {
    let svc = service(
        "somewhere",
        "some-service",
        json!({"type": "LoadBalancer", "clusterIP": "198.18.85.4", "loadBalancerIP": LB_IP1,
               "externalTrafficPolicy": "Local", "healthCheckNodePort": 345, "ports": [
            test_port("something", "UDP", 1234, 4321, 7002),
            test_port("somethingelse", "TCP", 1235, 5321, 7003)
        ]}),
    );
    with_ingress(svc, &[LB_IP1])
}

// TestBuildServiceMapServiceUpdate: as a ClusterIP Service, two ports and no health check
// port (also after changing back from LoadBalancer: the model is rebuilt from the object).
#[test]
fn build_service_map_service_update_cluster_ip() {
    let state = build(vec![update_v1()], vec![]);
    assert_eq!(port_count(&state), 2);
    assert!(health_check_ports(&state).is_empty());
}

// TestBuildServiceMapServiceUpdate: changed to an eTP Local LoadBalancer (and updated
// again unchanged): two ports and one health check port.
#[test]
fn build_service_map_service_update_load_balancer() {
    let state = build(vec![update_v2()], vec![]);
    assert_eq!(port_count(&state), 2);
    assert_eq!(
        health_check_ports(&state),
        [("somewhere/some-service".to_owned(), 345)]
    );
}
