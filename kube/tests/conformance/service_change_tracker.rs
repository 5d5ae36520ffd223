//! pkg/proxy/servicechangetracker_test.go, `TestServiceToServiceMap` (and its
//! `TestServiceMapUpdateHeadless` / `TestUpdateServiceTypeExternalName`): what kube-proxy
//! keeps of a Service per port: the ClusterIP, port and protocol, the healthCheckNodePort,
//! and, per IP family, the ExternalIPs, LoadBalancer VIPs (not for `ipMode: Proxy`) and
//! source ranges (rules 1, 4, 5, 7, 8, 15, 18, 22). kube-proxy runs one tracker per
//! family; the model is dual-stack, so "under IPv4 mode" reads as "the model's IPv4
//! frontends".
//!
//! Addresses: ClusterIPs 172.16.55.X are 198.18.55.X, 10.0.0.1 is 198.18.30.1; LB VIPs
//! 10.1.2.X are 198.18.202.X; the external IP 8.8.8.8 is 198.18.88.8; the IPv6 addresses
//! are upstream's (documentation range); the source ranges 0.0.0.0/1, 10.1.2.0/28 and
//! 2001:db8::/32 are 198.18.128.0/17, 198.18.202.0/28 and 2001:db8:85a3::/48 (none holds
//! this node, whose own requests would otherwise add the VIPs, rule 18).
//!
//! Upstream's family cases give no `type` and still carry LB VIPs and source ranges:
//! kube-proxy reads them whatever the type. The model reads them for LoadBalancer
//! Services only (the API server and load-balancer controllers set them for no other), so
//! those cases are written with `type: LoadBalancer`.

use std::net::IpAddr;

use lb_kube::rules::{FrontendKind, IpFamily, KubeDesiredState, KubeService, Protocol};
use serde_json::{json, Value};

use crate::support::*;

const CLUSTER_V4: &str = "198.18.30.1"; // upstream testClusterIPv4 10.0.0.1
const EXTERNAL_V4: &str = "198.18.88.8"; // upstream testExternalIPv4 8.8.8.8
const RANGE_V4: &str = "198.18.128.0/17"; // upstream testSourceRangeIPv4 0.0.0.0/1
const CLUSTER_V6: &str = "2001:db8:85a3::8a2e:370:7334";
const EXTERNAL_V6: &str = "2001:db8:85a3::8a2e:370:7335";
const RANGE_V6: &str = "2001:db8:85a3::/48"; // upstream testSourceRangeIPv6 2001:db8::/32

/// What upstream's expected `BaseServicePortInfo` holds, for one port in one family.
struct Expected<'a> {
    port_name: &'a str,
    port: u16,
    protocol: Protocol,
    cluster_ip: &'a str,
    health_check_node_port: Option<u16>,
    external_ips: &'a [&'a str],
    load_balancer_vips: &'a [&'a str],
    source_ranges: &'a [&'a str],
}

impl<'a> Expected<'a> {
    fn port(port_name: &'a str, port: u16, protocol: Protocol, cluster_ip: &'a str) -> Self {
        Self {
            port_name,
            port,
            protocol,
            cluster_ip,
            health_check_node_port: None,
            external_ips: &[],
            load_balancer_vips: &[],
            source_ranges: &[],
        }
    }
}

fn addresses(svc: &KubeService, port: &str, kind: FrontendKind, family: IpFamily) -> Vec<IpAddr> {
    let port = svc.ports.iter().find(|p| p.name == port).expect("port");
    let mut out: Vec<IpAddr> = port
        .frontends
        .iter()
        .filter(|f| f.kind == kind && IpFamily::of(f.address) == family)
        .map(|f| f.address)
        .collect();
    out.dedup();
    out
}

/// The one Service of `state` holds exactly `expected`'s ports, each as upstream expects
/// in `family`.
fn check(state: &KubeDesiredState, family: IpFamily, expected: &[Expected<'_>]) {
    assert_eq!(state.services.len(), 1, "one Service");
    let svc = state.services.values().next().expect("a Service");
    let names: Vec<&str> = svc.ports.iter().map(|p| p.name.as_str()).collect();
    let want_names: Vec<&str> = expected.iter().map(|e| e.port_name).collect();
    assert_eq!(names, want_names, "ports");
    let family_ips: Vec<IpAddr> = svc
        .cluster_ips
        .iter()
        .copied()
        .filter(|a| IpFamily::of(*a) == family)
        .collect();
    for e in expected {
        let port = svc
            .ports
            .iter()
            .find(|p| p.name == e.port_name)
            .expect("port");
        assert_eq!(
            (port.port, port.protocol),
            (e.port, e.protocol),
            "{}",
            e.port_name
        );
        assert_eq!(family_ips, [ip(e.cluster_ip)], "ClusterIP");
        assert_eq!(svc.health_check_node_port, e.health_check_node_port);
        let ext = addresses(svc, e.port_name, FrontendKind::ExternalIp, family);
        let want: Vec<IpAddr> = e.external_ips.iter().map(|a| ip(a)).collect();
        assert_eq!(ext, want, "externalIPs");
        let vips = addresses(svc, e.port_name, FrontendKind::LoadBalancer, family);
        let want: Vec<IpAddr> = e.load_balancer_vips.iter().map(|a| ip(a)).collect();
        assert_eq!(vips, want, "loadBalancerVIPs");
        for fe in port
            .frontends
            .iter()
            .filter(|f| f.kind == FrontendKind::LoadBalancer)
        {
            let ranges: Vec<String> = fe.source_ranges.iter().map(|r| r.to_string()).collect();
            assert_eq!(ranges, e.source_ranges, "loadBalancerSourceRanges");
        }
    }
}

fn none_served(services: Vec<Value>) {
    let state = build(services, vec![]);
    assert!(
        state.services.is_empty(),
        "{:?}",
        state.services.keys().collect::<Vec<_>>()
    );
    assert!(state.health_checks().is_empty());
}

// TestServiceToServiceMap: "nothing"
#[test]
fn nothing() {
    none_served(vec![]);
}

// TestServiceToServiceMap: "headless service" (also TestServiceMapUpdateHeadless)
#[test]
fn headless_service() {
    let svc = service(
        "ns2",
        "headless",
        json!({"clusterIP": "None", "ports": [test_port("rpc", "UDP", 1234, 0, 0)]}),
    );
    none_served(vec![svc]);
}

// TestServiceToServiceMap: "headless sctp service"
#[test]
fn headless_sctp_service() {
    let svc = service(
        "ns2",
        "headless",
        json!({"clusterIP": "None", "ports": [test_port("sip", "SCTP", 7777, 0, 0)]}),
    );
    none_served(vec![svc]);
}

// TestServiceToServiceMap: "headless service without port"
#[test]
fn headless_service_without_port() {
    none_served(vec![service(
        "ns2",
        "headless-without-port",
        json!({"clusterIP": "None"}),
    )]);
}

// TestServiceToServiceMap: "cluster ip service"
#[test]
fn cluster_ip_service() {
    let svc = service(
        "ns2",
        "cluster-ip",
        json!({"clusterIP": "198.18.55.4", "ports": [
            test_port("p1", "UDP", 1234, 4321, 0), test_port("p2", "UDP", 1235, 5321, 0)]}),
    );
    let state = build(vec![svc], vec![]);
    check(
        &state,
        IpFamily::V4,
        &[
            Expected::port("p1", 1234, Protocol::Udp, "198.18.55.4"),
            Expected::port("p2", 1235, Protocol::Udp, "198.18.55.4"),
        ],
    );
}

// TestServiceToServiceMap: "nodeport service"
#[test]
fn nodeport_service() {
    let svc = service(
        "ns2",
        "node-port",
        json!({"type": "NodePort", "clusterIP": "198.18.55.10", "ports": [
            test_port("port1", "UDP", 345, 678, 0), test_port("port2", "TCP", 344, 677, 0)]}),
    );
    let state = build(vec![svc], vec![]);
    check(
        &state,
        IpFamily::V4,
        &[
            Expected::port("port1", 345, Protocol::Udp, "198.18.55.10"),
            Expected::port("port2", 344, Protocol::Tcp, "198.18.55.10"),
        ],
    );
}

/// Upstream's "load-balancer" Service with one ingress entry (`ip_mode` when given).
fn load_balancer(ip_mode: Option<&str>) -> KubeDesiredState {
    let mut svc = service(
        "ns1",
        "load-balancer",
        json!({"type": "LoadBalancer", "clusterIP": "198.18.55.11", "loadBalancerIP": LB_IP2,
               "ports": [test_port("port3", "UDP", 8675, 30061, 7000), test_port("port4", "UDP", 8676, 30062, 7001)]}),
    );
    let mut ingress = json!({"ip": "198.18.202.4"});
    if let Some(mode) = ip_mode {
        ingress["ipMode"] = json!(mode);
    }
    svc["status"] = json!({"loadBalancer": {"ingress": [ingress]}});
    build(vec![svc], vec![])
}

fn load_balancer_ports<'a>(vips: &'a [&'a str]) -> [Expected<'a>; 2] {
    [
        Expected {
            load_balancer_vips: vips,
            ..Expected::port("port3", 8675, Protocol::Udp, "198.18.55.11")
        },
        Expected {
            load_balancer_vips: vips,
            ..Expected::port("port4", 8676, Protocol::Udp, "198.18.55.11")
        },
    ]
}

// TestServiceToServiceMap: "load balancer service"
#[test]
fn load_balancer_service() {
    check(
        &load_balancer(None),
        IpFamily::V4,
        &load_balancer_ports(&["198.18.202.4"]),
    );
}

// TestServiceToServiceMap: "load balancer service ipMode VIP feature gate disable"
#[test]
fn load_balancer_service_ip_mode_vip_feature_gate_disable() {
    check(
        &load_balancer(Some("VIP")),
        IpFamily::V4,
        &load_balancer_ports(&["198.18.202.4"]),
    );
}

// TestServiceToServiceMap: "load balancer service ipMode VIP feature gate enabled"
#[test]
fn load_balancer_service_ip_mode_vip_feature_gate_enabled() {
    check(
        &load_balancer(Some("VIP")),
        IpFamily::V4,
        &load_balancer_ports(&["198.18.202.4"]),
    );
}

// TestServiceToServiceMap: "load balancer service ipMode Proxy feature gate enabled"
#[test]
fn load_balancer_service_ip_mode_proxy_feature_gate_enabled() {
    check(
        &load_balancer(Some("Proxy")),
        IpFamily::V4,
        &load_balancer_ports(&[]),
    );
}

// TestServiceToServiceMap: "load balancer service with only local traffic policy"
#[test]
fn load_balancer_service_with_only_local_traffic_policy() {
    let svc = service(
        "ns1",
        "only-local-load-balancer",
        json!({"type": "LoadBalancer", "clusterIP": "198.18.55.12", "loadBalancerIP": LB_IP2,
               "externalTrafficPolicy": "Local", "healthCheckNodePort": 345,
               "ports": [test_port("portx", "UDP", 8677, 30063, 7002), test_port("porty", "UDP", 8678, 30064, 7003)]}),
    );
    let state = build(vec![with_ingress(svc, &["198.18.202.3"])], vec![]);
    let vips = ["198.18.202.3"];
    let local = |name, port| Expected {
        health_check_node_port: Some(345),
        load_balancer_vips: &vips,
        ..Expected::port(name, port, Protocol::Udp, "198.18.55.12")
    };
    check(
        &state,
        IpFamily::V4,
        &[local("portx", 8677), local("porty", 8678)],
    );
}

// TestServiceToServiceMap: "external name service" (also TestUpdateServiceTypeExternalName)
#[test]
fn external_name_service() {
    let svc = service(
        "ns2",
        "external-name",
        json!({"type": "ExternalName", "clusterIP": "198.18.55.4", "externalName": "foo2.bar.com",
               "ports": [test_port("portz", "UDP", 1235, 5321, 0)]}),
    );
    none_served(vec![svc]);
}

/// A Service with one TCP port "testPort" 12345, LB ingress of both families.
fn family_service(
    name: &str,
    cluster_ip: &str,
    external_ips: &[&str],
    ranges: &[&str],
) -> KubeDesiredState {
    let svc = service(
        "test",
        name,
        json!({"type": "LoadBalancer", "clusterIP": cluster_ip, "externalIPs": external_ips,
               "loadBalancerSourceRanges": ranges,
               "ports": [{"name": "testPort", "port": 12345, "protocol": "TCP"}]}),
    );
    build(vec![with_ingress(svc, &[EXTERNAL_V4, EXTERNAL_V6])], vec![])
}

fn no_frontend_of(state: &KubeDesiredState, family: IpFamily) {
    let any = state
        .frontends()
        .any(|(_, _, f)| IpFamily::of(f.address) == family);
    assert!(!any, "no {family:?} frontend");
}

// TestServiceToServiceMap: "service with ipv6 clusterIP under ipv4 mode, service should be
// filtered"
#[test]
fn service_with_ipv6_cluster_ip_under_ipv4_mode_is_filtered() {
    no_frontend_of(
        &family_service("invalidIPv6InIPV4Mode", CLUSTER_V6, &[], &[]),
        IpFamily::V4,
    );
}

// TestServiceToServiceMap: "service with ipv4 clusterIP under ipv6 mode, service should be
// filtered"
#[test]
fn service_with_ipv4_cluster_ip_under_ipv6_mode_is_filtered() {
    no_frontend_of(
        &family_service("invalidIPv4InIPV6Mode", CLUSTER_V4, &[], &[]),
        IpFamily::V6,
    );
}

fn family_port<'a>(
    cluster_ip: &'a str,
    external: &'a [&'a str],
    ranges: &'a [&'a str],
) -> Expected<'a> {
    Expected {
        external_ips: external,
        load_balancer_vips: external,
        source_ranges: ranges,
        ..Expected::port("testPort", 12345, Protocol::Tcp, cluster_ip)
    }
}

// TestServiceToServiceMap: "service with ipv4 configurations under ipv4 mode"
#[test]
fn service_with_ipv4_configurations_under_ipv4_mode() {
    let state = family_service("validIPv4", CLUSTER_V4, &[EXTERNAL_V4], &[RANGE_V4]);
    check(
        &state,
        IpFamily::V4,
        &[family_port(CLUSTER_V4, &[EXTERNAL_V4], &[RANGE_V4])],
    );
}

// TestServiceToServiceMap: "service with ipv6 configurations under ipv6 mode"
#[test]
fn service_with_ipv6_configurations_under_ipv6_mode() {
    let state = family_service("validIPv6", CLUSTER_V6, &[EXTERNAL_V6], &[RANGE_V6]);
    check(
        &state,
        IpFamily::V6,
        &[family_port(CLUSTER_V6, &[EXTERNAL_V6], &[RANGE_V6])],
    );
}

// TestServiceToServiceMap: "service with both ipv4 and ipv6 configurations under ipv4 mode,
// ipv6 fields should be filtered"
#[test]
fn service_with_both_families_under_ipv4_mode_filters_ipv6_fields() {
    let state = family_service(
        "filterIPv6InIPV4Mode",
        CLUSTER_V4,
        &[EXTERNAL_V4, EXTERNAL_V6],
        &[RANGE_V4, RANGE_V6],
    );
    check(
        &state,
        IpFamily::V4,
        &[family_port(CLUSTER_V4, &[EXTERNAL_V4], &[RANGE_V4])],
    );
}

// TestServiceToServiceMap: "service with both ipv4 and ipv6 configurations under ipv6 mode,
// ipv4 fields should be filtered"
#[test]
fn service_with_both_families_under_ipv6_mode_filters_ipv4_fields() {
    let state = family_service(
        "filterIPv4InIPV6Mode",
        CLUSTER_V6,
        &[EXTERNAL_V4, EXTERNAL_V6],
        &[RANGE_V4, RANGE_V6],
    );
    check(
        &state,
        IpFamily::V6,
        &[family_port(CLUSTER_V6, &[EXTERNAL_V6], &[RANGE_V6])],
    );
}

// TestServiceToServiceMap: "service with extra space in LoadBalancerSourceRanges"
#[test]
fn service_with_extra_space_in_load_balancer_source_ranges() {
    let svc = service(
        "test",
        "extra-space",
        json!({"type": "LoadBalancer", "clusterIP": CLUSTER_V4,
               "loadBalancerSourceRanges": [" 198.18.202.0/28"],
               "ports": [{"name": "testPort", "port": 12345, "protocol": "TCP"}]}),
    );
    let state = build(vec![with_ingress(svc, &[LB_IP1])], vec![]);
    let vips = [LB_IP1];
    let want = Expected {
        load_balancer_vips: &vips,
        source_ranges: &["198.18.202.0/28"],
        ..Expected::port("testPort", 12345, Protocol::Tcp, CLUSTER_V4)
    };
    check(&state, IpFamily::V4, &[want]);
}
