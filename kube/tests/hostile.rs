//! Invalid or hostile objects are skipped with a recorded reason and never disturb other
//! Services; nothing panics. Plus the datapath projection's limits.

mod common;

use std::net::IpAddr;

use common::*;
use lb_kube::{
    projection::to_datapath,
    rules::{EndpointSetKind, IpFamily, KubeDesiredState},
};
use lb_model::{Frontend, Protocol as DpProtocol, Settings};
use serde_json::json;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn reasons(state: &KubeDesiredState) -> Vec<&'static str> {
    state.skipped.iter().map(|s| s.problem.reason()).collect()
}

/// A healthy neighbour Service every hostile test also builds: it must come out intact.
fn neighbour() -> (serde_json::Value, serde_json::Value) {
    (
        service_json("good", "198.18.100.99"),
        slice_json(
            "good-a",
            "good",
            "IPv4",
            8080,
            vec![ready("198.19.9.1", "node-b")],
        ),
    )
}

fn assert_neighbour_intact(state: &KubeDesiredState) {
    let good = get(state, "good");
    assert_eq!(good.ports.len(), 1);
    assert_eq!(
        good.ports[0].endpoints_for(IpFamily::V4, EndpointSetKind::Cluster)[0].address,
        ip("198.19.9.1")
    );
}

#[test]
fn hostile_bad_ips_are_skipped_and_counted() {
    let (good, good_slice) = neighbour();
    // An unusable ClusterIP skips the Service before its other fields are read.
    let bad_cluster_ip = patch(
        service_json("bad", "198.18.100.300"),
        json!({"spec": {"clusterIPs": ["198.18.100.300"], "externalIPs": ["not-an-ip", "0.0.0.0"]}}),
    );
    let half_bad = patch(
        service_json("half", "198.18.100.5"),
        json!({"spec": {"externalIPs": ["198.18.60.300", "198.18.60.5"]}}),
    );
    let bad_eps = slice_json(
        "half-a",
        "half",
        "IPv4",
        8080,
        vec![
            ready("198.19.0.999", NODE),
            ready("224.0.0.1", NODE),
            ready("198.19.0.5", NODE),
        ],
    );
    let state = build(
        vec![bad_cluster_ip, half_bad, good],
        vec![bad_eps, good_slice],
    );
    assert!(!state.services.keys().any(|n| n.name == "bad"));
    let half = get(&state, "half");
    assert_eq!(
        half.ports[0].frontends.len(),
        2,
        "ClusterIP + the one valid external IP"
    );
    assert_eq!(
        half.ports[0]
            .endpoints_for(IpFamily::V4, EndpointSetKind::Cluster)
            .len(),
        1
    );
    let r = reasons(&state);
    assert_eq!(
        r.iter().filter(|r| **r == "bad_address").count(),
        4,
        "{:?}",
        state.skipped
    );
    assert_neighbour_intact(&state);
}

#[test]
fn slice_port_without_a_number_is_ignored_not_counted_as_invalid() {
    // The API allows an EndpointSlice port without `port` (meaning "all ports"): a valid
    // object kube-proxy ignores, so it must not be counted as skipped.
    let svc = service_json("web", "198.18.100.7");
    let s = patch(
        slice_json(
            "web-a",
            "web",
            "IPv4",
            8080,
            vec![ready("198.19.0.7", NODE)],
        ),
        json!({"ports": [{"name": "http", "protocol": "TCP"}]}),
    );
    let state = build(vec![svc], vec![s]);
    assert!(state.skipped.is_empty(), "{:?}", state.skipped);
    assert!(get(&state, "web").ports[0]
        .endpoints_for(IpFamily::V4, EndpointSetKind::Cluster)
        .is_empty());
}

#[test]
fn hostile_ports_0_and_65536_are_skipped() {
    let (good, good_slice) = neighbour();
    let svc = patch(
        service_json("ports", "198.18.100.6"),
        json!({"spec": {"type": "NodePort", "ports": [
            {"name": "zero", "protocol": "TCP", "port": 0, "targetPort": 80},
            {"name": "big", "protocol": "TCP", "port": 65536, "targetPort": 80},
            {"name": "neg", "protocol": "TCP", "port": -1, "targetPort": 80},
            {"name": "ok", "protocol": "TCP", "port": 80, "targetPort": 80, "nodePort": 70000},
            {"name": "sctp", "protocol": "SCTP", "port": 81, "targetPort": 81},
            {"name": "icmp", "protocol": "ICMP", "port": 82, "targetPort": 82}
        ], "healthCheckNodePort": 0}}),
    );
    let bad_slice = patch(
        slice_json(
            "ports-a",
            "ports",
            "IPv4",
            80,
            vec![ready("198.19.0.6", NODE)],
        ),
        json!({"ports": [{"name": "ok", "protocol": "TCP", "port": 65536}]}),
    );
    let state = build(vec![svc, good], vec![bad_slice, good_slice]);
    let svc = get(&state, "ports");
    let names: Vec<&str> = svc.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["ok", "sctp"]);
    assert_eq!(
        svc.ports[0].node_port, None,
        "nodePort 70000 dropped, the port kept"
    );
    assert!(svc.ports[0]
        .endpoints_for(IpFamily::V4, EndpointSetKind::Cluster)
        .is_empty());
    let r = reasons(&state);
    assert_eq!(
        r.iter().filter(|r| **r == "bad_port").count(),
        5,
        "{:?}",
        state.skipped
    );
    assert_eq!(r.iter().filter(|r| **r == "bad_protocol").count(), 1);
    assert_neighbour_intact(&state);
}

#[test]
fn hostile_duplicate_ports_keep_the_first() {
    let (good, good_slice) = neighbour();
    let svc = patch(
        service_json("dup", "198.18.100.7"),
        json!({"spec": {"ports": [
            {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
            {"name": "http", "protocol": "TCP", "port": 81, "targetPort": 8081},
            {"name": "other", "protocol": "TCP", "port": 80, "targetPort": 8082},
            {"name": "http", "protocol": "UDP", "port": 80, "targetPort": 8080}
        ]}}),
    );
    let state = build(vec![svc, good], vec![good_slice]);
    let ports: Vec<(String, u16)> = get(&state, "dup")
        .ports
        .iter()
        .map(|p| (format!("{}/{}", p.name, p.protocol), p.port))
        .collect();
    assert_eq!(
        ports,
        [("http/TCP".to_owned(), 80), ("http/UDP".to_owned(), 80)]
    );
    assert_eq!(reasons(&state), ["duplicate_port", "duplicate_port"]);
    assert_neighbour_intact(&state);
}

#[test]
fn hostile_huge_slices_are_skipped_without_disturbing_others() {
    let (good, good_slice) = neighbour();
    // 100 000 endpoints in one slice (the API allows 1000), as raw JSON text.
    let mut text = String::from(
        r#"{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"huge-a","namespace":"default","labels":{"kubernetes.io/service-name":"huge"}},"addressType":"IPv4","ports":[{"name":"http","protocol":"TCP","port":8080}],"endpoints":["#,
    );
    for i in 0..100_000u32 {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            r#"{{"addresses":["198.19.{}.{}"]}}"#,
            (i >> 8) & 0xff,
            i & 0xff
        ));
    }
    text.push_str("]}");
    let huge: serde_json::Value = serde_json::from_str(&text).unwrap();
    let state = build(
        vec![service_json("huge", "198.18.100.8"), good.clone()],
        vec![huge, good_slice.clone()],
    );
    assert!(get(&state, "huge").ports[0]
        .endpoints_for(IpFamily::V4, EndpointSetKind::Cluster)
        .is_empty());
    assert_eq!(reasons(&state), ["too_many_endpoints"]);
    assert_neighbour_intact(&state);

    // Many legal slices that add up to more than the datapath could ever hold: the
    // Service is skipped as a whole.
    let slices: Vec<serde_json::Value> = (0..66)
        .map(|s| {
            let eps = (0..1000u32)
                .map(|i| json!({"addresses": [format!("198.19.{}.{}", (s * 1000 + i) >> 8 & 0xff, i & 0xff)]}))
                .collect();
            slice_json(&format!("many-{s}"), "many", "IPv4", 8080, eps)
        })
        .chain(std::iter::once(good_slice))
        .collect();
    let state = build(vec![service_json("many", "198.18.100.9"), good], slices);
    assert!(!state.services.keys().any(|n| n.name == "many"));
    assert_eq!(reasons(&state), ["too_many_endpoints"]);
    assert_neighbour_intact(&state);
}

#[test]
fn hostile_unknown_fields_are_ignored() {
    let (good, good_slice) = neighbour();
    let svc = patch(
        service_json("web", "198.18.100.1"),
        json!({"spec": {"futureFeature": {"enabled": true}, "ports": [
            {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "newKnob": 3}]},
               "surprise": [1, 2, 3]}),
    );
    let s = patch(
        slice_json(
            "web-a",
            "web",
            "IPv4",
            8080,
            vec![ready("198.19.0.1", NODE)],
        ),
        json!({"experimental": "yes"}),
    );
    let with_extra = build(vec![svc, good.clone()], vec![s, good_slice.clone()]);
    let plain = build(
        vec![service_json("web", "198.18.100.1"), good],
        vec![
            slice_json(
                "web-a",
                "web",
                "IPv4",
                8080,
                vec![ready("198.19.0.1", NODE)],
            ),
            good_slice,
        ],
    );
    assert_eq!(with_extra, plain);
    assert!(with_extra.skipped.is_empty());
}

#[test]
fn hostile_bad_cidrs_timeouts_and_address_types_are_skipped() {
    let (good, good_slice) = neighbour();
    let svc = patch(
        service_json("odd", "198.18.100.11"),
        json!({"spec": {"type": "LoadBalancer",
                        "loadBalancerSourceRanges": ["198.51.100.0/33", "banana", "198.51.100.0/24"],
                        "sessionAffinity": "ClientIP",
                        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 999999}}},
               "status": {"loadBalancer": {"ingress": [{"ip": "198.18.70.11"}]}}}),
    );
    let weird_slice = slice_json(
        "odd-a",
        "odd",
        "IPv5",
        8080,
        vec![ready("198.19.0.1", NODE)],
    );
    let state = build(vec![svc, good], vec![weird_slice, good_slice]);
    let odd = get(&state, "odd");
    assert_eq!(odd.session_affinity_seconds, Some(10_800));
    let mut r = reasons(&state);
    r.sort();
    assert_eq!(
        r,
        [
            "bad_affinity_timeout",
            "bad_cidr",
            "bad_cidr",
            "unsupported_address_type"
        ]
    );
    assert_neighbour_intact(&state);
}

#[test]
fn hostile_objects_without_names_are_skipped() {
    let (good, good_slice) = neighbour();
    let unnamed = patch(
        service_json("x", "198.18.100.12"),
        json!({"metadata": {"name": null}}),
    );
    let state = build(vec![unnamed, good], vec![good_slice]);
    assert_eq!(reasons(&state), ["unnamed"]);
    assert_neighbour_intact(&state);
}

// The projection onto today's datapath.

#[test]
fn projection_programs_same_port_ipv4_frontends_with_weight_one() {
    let svc = patch(
        service_json("web", "198.18.100.1"),
        json!({"spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 8080, "targetPort": 8080}]}}),
    );
    let s = slice_json(
        "web-a",
        "web",
        "IPv4",
        8080,
        vec![ready("198.19.0.2", "node-b"), ready("198.19.0.1", NODE)],
    );
    let state = build(vec![svc], vec![s]);
    let (desired, report) = to_datapath(&state, Settings::default());
    let fe = Frontend {
        vip: ip("198.18.100.1"),
        port: 8080,
        protocol: DpProtocol::Tcp,
        scope: lb_model::Scope::External,
    };
    let spec = &desired.services[&fe];
    assert_eq!(spec.name, "default/web:http");
    let backends: Vec<(IpAddr, u32)> = spec
        .backends
        .iter()
        .map(|b| (b.address, b.weight))
        .collect();
    assert_eq!(backends, [(ip("198.19.0.1"), 1), (ip("198.19.0.2"), 1)]);
    assert_eq!(spec.table_size, Settings::default().table_size_for(2));
    assert_eq!(report.programmed, 1);
    assert!(report.skipped.is_empty());
}

#[test]
fn projection_skips_sctp_and_programs_source_ranges_translated_and_ipv6_ports() {
    // targetPort 8080 ≠ port 80: the endpoint's node translates, so it is programmed.
    let translate = service_json("translate", "198.18.100.1");
    let translate_slice = slice_json(
        "translate-a",
        "translate",
        "IPv4",
        8080,
        vec![ready("198.19.0.1", NODE)],
    );
    let v6 = patch(
        service_json("v6", "2001:db8:100::1"),
        json!({"spec": {"ipFamilies": ["IPv6"], "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 80}]}}),
    );
    let sctp = patch(
        service_json("sctp", "198.18.100.2"),
        json!({"spec": {"ports": [{"name": "s", "protocol": "SCTP", "port": 80, "targetPort": 80}]}}),
    );
    let ranged = patch(
        service_json("ranged", "198.18.100.3"),
        json!({"spec": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["198.51.100.0/24"],
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 80}]},
               "status": {"loadBalancer": {"ingress": [{"ip": "198.18.70.3"}]}}}),
    );
    let state = build(vec![translate, v6, sctp, ranged], vec![translate_slice]);
    let (desired, report) = to_datapath(&state, Settings::default());
    let mut reasons: Vec<(String, &'static str)> = report
        .skipped
        .iter()
        .map(|s| (s.service.name.clone(), s.reason.reason()))
        .collect();
    reasons.sort();
    assert_eq!(reasons, [("sctp".to_owned(), "protocol")]);
    // IPv6 is programmed like IPv4, over the IPv6 endpoints (none here: empty, drops).
    let v6_frontend = Frontend {
        vip: ip("2001:db8:100::1"),
        port: 80,
        protocol: DpProtocol::Tcp,
        scope: lb_model::Scope::External,
    };
    assert!(desired.services[&v6_frontend].backends.is_empty());
    let translated = Frontend {
        vip: ip("198.18.100.1"),
        port: 80,
        protocol: DpProtocol::Tcp,
        scope: lb_model::Scope::External,
    };
    let backends: Vec<IpAddr> = desired.services[&translated]
        .backends
        .iter()
        .map(|b| b.address)
        .collect();
    assert_eq!(backends, [ip("198.19.0.1")]);
    // The ranged Service's ClusterIP has no source filter and no endpoints: programmed
    // empty and rejecting (rule 9), its ClusterIP refusing undefined ports.
    let cip = Frontend {
        vip: ip("198.18.100.3"),
        port: 80,
        protocol: DpProtocol::Tcp,
        scope: lb_model::Scope::External,
    };
    assert!(desired.services[&cip].backends.is_empty());
    assert!(desired.services[&cip].reject);
    assert!(desired.rejecting.contains(&ip("198.18.100.3")));
    assert!(!report.unsupported.iter().any(|(s, _)| s.name == "ranged"));
}

#[test]
fn projection_carries_affinity_and_reports_conflicting_frontends() {
    let a = patch(
        service_json("a", "198.18.100.1"),
        json!({"spec": {"sessionAffinity": "ClientIP", "externalIPs": ["198.18.60.1"],
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 80}]}}),
    );
    let b = patch(
        service_json("b", "198.18.100.2"),
        json!({"spec": {"externalIPs": ["198.18.60.1"],
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 80}]}}),
    );
    let state = build(vec![a, b], vec![]);
    let (desired, report) = to_datapath(&state, Settings::default());
    // Session affinity is served now: the timeout travels with the frontend's spec, and
    // nothing is reported as lacking for it.
    let held = desired
        .services
        .iter()
        .find(|(f, _)| f.vip == "198.18.60.1".parse::<IpAddr>().unwrap())
        .map(|(_, spec)| spec)
        .unwrap();
    assert_eq!(held.affinity_timeout_s, Some(10_800));
    let conflict = report
        .skipped
        .iter()
        .find(|s| s.reason.reason() == "conflict")
        .unwrap();
    assert_eq!(conflict.service.name, "b");
    assert_eq!(report.skipped_by_reason()["conflict"], 1);
}
