//! pkg/proxy/endpointslicecache_test.go, `TestEndpointsMapFromESC` and
//! `TestEndpointInfoByServicePort`: the per-port endpoint map built from a Service's
//! slices (rules 3, 4, 10). Upstream checks the whole map with each endpoint's conditions;
//! the model keeps the sets the map implies, so each case is checked as the Cluster set
//! (the ready endpoints, or the serving-terminating ones when none is ready; rule 11) with
//! each endpoint's address, port and locality. Two slices of the same name are one slice
//! updated, as in upstream's cache: the model is given the final one. Upstream's
//! `generateEndpointSlice` is rebuilt in [`generated`]; endpoints 10.0.X.Y are 198.19.X.Y
//! here, and upstream's node "host1" is this node.

use std::collections::BTreeSet;

use lb_kube::rules::{EndpointSetKind, IpFamily, KubeDesiredState};
use serde_json::{json, Value};

use crate::support::*;

/// Upstream's `generateEndpointSliceWithOffset`: `count` endpoints 198.19.`offset`.i; i
/// divisible by `unready_mod` is not serving, by `terminating_mod` terminating (ready only
/// when serving and not terminating); node `hosts[i % len]` ("host1" is this node); one
/// TCP port "port-k" per entry of `ports` (a `None` port has no number).
#[allow(clippy::too_many_arguments)]
fn generated(
    service: &str,
    ns: &str,
    slice_num: u32,
    offset: u32,
    count: u32,
    unready_mod: u32,
    terminating_mod: u32,
    hosts: &[&str],
    ports: &[Option<u16>],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .enumerate()
        .map(|(k, number)| match number {
            Some(n) => json!({"name": format!("port-{k}"), "port": n, "protocol": "TCP"}),
            None => json!({"name": format!("port-{k}"), "protocol": "TCP"}),
        })
        .collect();
    let eps = (1..=count)
        .map(|i| {
            let serving = i % unready_mod != 0;
            let terminating = i % terminating_mod == 0;
            let mut e = cond(
                ep(&format!("198.19.{offset}.{i}")),
                serving && !terminating,
                serving,
                terminating,
            );
            if !hosts.is_empty() {
                let host = hosts[(i as usize) % hosts.len()];
                e = on(e, if host == "host1" { NODE_NAME } else { host });
            }
            e
        })
        .collect();
    slice(ns, service, slice_num, "IPv4", ports, eps)
}

/// Upstream's `generateEndpointSlice`: the offset is the slice number.
#[allow(clippy::too_many_arguments)]
fn generated_at(
    service: &str,
    ns: &str,
    slice_num: u32,
    count: u32,
    unready_mod: u32,
    terminating_mod: u32,
    hosts: &[&str],
    ports: &[Option<u16>],
) -> Value {
    let (u, t) = (unready_mod, terminating_mod);
    generated(service, ns, slice_num, slice_num, count, u, t, hosts, ports)
}

/// `ns1/svc1` with TCP ports port-0 (80) and port-1 (443).
fn svc1() -> Value {
    service(
        "ns1",
        "svc1",
        json!({"clusterIP": "198.18.30.1",
               "ports": [port("port-0", 80, "TCP"), port("port-1", 443, "TCP")]}),
    )
}

/// The Cluster set of `ns1/svc1`'s `port` as (ip:port, local).
fn cluster(state: &KubeDesiredState, port: &str) -> BTreeSet<(String, bool)> {
    let svc = service_of(state, "ns1", "svc1");
    svc.ports
        .iter()
        .find(|p| p.name == port)
        .expect("port")
        .endpoints_for(IpFamily::V4, EndpointSetKind::Cluster)
        .iter()
        .map(|e| (format!("{}:{}", e.address, e.port), e.local))
        .collect()
}

fn set(entries: &[(&str, bool)]) -> BTreeSet<(String, bool)> {
    entries.iter().map(|(a, l)| (a.to_string(), *l)).collect()
}

const NO_MOD: u32 = 999;

// TestEndpointsMapFromESC: "1 slice, 2 hosts, ports 80,443"
#[test]
fn one_slice_two_hosts_ports_80_443() {
    let hosts = ["host1", "host2"];
    let s = generated_at(
        "svc1",
        "ns1",
        1,
        3,
        NO_MOD,
        NO_MOD,
        &hosts,
        &[Some(80), Some(443)],
    );
    let state = build(vec![svc1()], vec![s]);
    for (port, number) in [("port-0", 80), ("port-1", 443)] {
        let want = [
            (format!("198.19.1.1:{number}"), false),
            (format!("198.19.1.2:{number}"), true),
            (format!("198.19.1.3:{number}"), false),
        ];
        let want: Vec<(&str, bool)> = want.iter().map(|(a, l)| (a.as_str(), *l)).collect();
        assert_eq!(cluster(&state, port), set(&want), "{port}");
    }
}

// TestEndpointsMapFromESC: "2 slices, same port"
#[test]
fn two_slices_same_port() {
    let slices = vec![
        generated_at("svc1", "ns1", 1, 3, NO_MOD, NO_MOD, &[], &[Some(80)]),
        generated_at("svc1", "ns1", 2, 3, NO_MOD, NO_MOD, &[], &[Some(80)]),
    ];
    let state = build(vec![svc1()], slices);
    let want = [
        ("198.19.1.1:80", false),
        ("198.19.1.2:80", false),
        ("198.19.1.3:80", false),
        ("198.19.2.1:80", false),
        ("198.19.2.2:80", false),
        ("198.19.2.3:80", false),
    ];
    assert_eq!(cluster(&state, "port-0"), set(&want));
}

// TestEndpointsMapFromESC: "2 overlapping slices, same port" (both named svc1-1: the second
// replaces the first)
#[test]
fn two_overlapping_slices_same_port() {
    let s = generated_at("svc1", "ns1", 1, 4, NO_MOD, NO_MOD, &[], &[Some(80)]);
    let state = build(vec![svc1()], vec![s]);
    let want = [
        ("198.19.1.1:80", false),
        ("198.19.1.2:80", false),
        ("198.19.1.3:80", false),
        ("198.19.1.4:80", false),
    ];
    assert_eq!(cluster(&state, "port-0"), set(&want));
}

// TestEndpointsMapFromESC: "2 slices, overlapping endpoints, some endpoints unready in 1 or
// both" (the final slice: every sixth endpoint unready)
#[test]
fn two_slices_overlapping_endpoints_some_unready_in_1_or_both() {
    let s = generated_at("svc1", "ns1", 1, 10, 6, NO_MOD, &[], &[Some(80)]);
    let state = build(vec![svc1()], vec![s]);
    let want: Vec<String> = (1..=10)
        .filter(|i| *i != 6)
        .map(|i| format!("198.19.1.{i}:80"))
        .collect();
    let want: Vec<(&str, bool)> = want.iter().map(|a| (a.as_str(), false)).collect();
    assert_eq!(cluster(&state, "port-0"), set(&want));
}

// TestEndpointsMapFromESC: "2 slices, overlapping endpoints, some endpoints unready and some
// endpoints terminating" (5 and 10 serving-terminating, 6 unready: the ready rest is the
// Cluster set)
#[test]
fn two_slices_overlapping_endpoints_some_unready_and_some_terminating() {
    let s = generated_at("svc1", "ns1", 1, 10, 6, 5, &[], &[Some(80)]);
    let state = build(vec![svc1()], vec![s]);
    let want: Vec<String> = [1, 2, 3, 4, 7, 8, 9]
        .iter()
        .map(|i| format!("198.19.1.{i}:80"))
        .collect();
    let want: Vec<(&str, bool)> = want.iter().map(|a| (a.as_str(), false)).collect();
    assert_eq!(cluster(&state, "port-0"), set(&want));
    let kept: BTreeSet<String> = service_of(&state, "ns1", "svc1").ports[0].endpoints
        [&IpFamily::V4]
        .kept_for_flows
        .iter()
        .map(|e| format!("{}:{}", e.address, e.port))
        .collect();
    let want_kept: BTreeSet<String> = ["198.19.1.10:80", "198.19.1.5:80"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        kept, want_kept,
        "serving-terminating endpoints keep their flows"
    );
}

// TestEndpointsMapFromESC: "2 slices, overlapping endpoints, all unready"
#[test]
fn two_slices_overlapping_endpoints_all_unready() {
    let s = generated_at("svc1", "ns1", 1, 10, 1, NO_MOD, &[], &[Some(80)]);
    let state = build(vec![svc1()], vec![s]);
    assert!(cluster(&state, "port-0").is_empty());
}

// TestEndpointsMapFromESC: "3 slices with different services and namespaces"
#[test]
fn three_slices_with_different_services_and_namespaces() {
    let slices = vec![
        generated_at("svc1", "ns1", 1, 3, NO_MOD, NO_MOD, &[], &[Some(80)]),
        generated_at("svc2", "ns1", 2, 3, NO_MOD, NO_MOD, &[], &[Some(80)]),
        generated_at("svc1", "ns2", 3, 3, NO_MOD, NO_MOD, &[], &[Some(80)]),
    ];
    let state = build(vec![svc1()], slices);
    let want = [
        ("198.19.1.1:80", false),
        ("198.19.1.2:80", false),
        ("198.19.1.3:80", false),
    ];
    assert_eq!(cluster(&state, "port-0"), set(&want));
}

// TestEndpointsMapFromESC: "Nil port should not break anything" (and is not counted as
// invalid: `build` asserts nothing was skipped)
#[test]
fn nil_port_should_not_break_anything() {
    let hosts = ["host1", "host2"];
    let s = generated_at("svc1", "ns1", 1, 3, NO_MOD, NO_MOD, &hosts, &[None]);
    let state = build(vec![svc1()], vec![s]);
    assert!(cluster(&state, "port-0").is_empty());
    assert!(cluster(&state, "port-1").is_empty());
}

fn duplicate_ips() -> KubeDesiredState {
    let hosts = ["host1", "host2"];
    let slices = vec![
        generated("svc1", "ns1", 1, 1, 2, NO_MOD, NO_MOD, &hosts, &[Some(80)]),
        generated(
            "svc1",
            "ns1",
            2,
            1,
            2,
            NO_MOD,
            NO_MOD,
            &hosts,
            &[Some(8080)],
        ),
    ];
    build(vec![svc1()], slices)
}

// TestEndpointsMapFromESC: "Different endpoints with duplicate IPs should not be filtered"
#[test]
fn different_endpoints_with_duplicate_ips_should_not_be_filtered() {
    let want = [
        ("198.19.1.1:80", false),
        ("198.19.1.1:8080", false),
        ("198.19.1.2:80", true),
        ("198.19.1.2:8080", true),
    ];
    assert_eq!(cluster(&duplicate_ips(), "port-0"), set(&want));
}

// TestEndpointInfoByServicePort: "simple use case with 3 endpoints"
#[test]
fn endpoint_info_simple_use_case_with_3_endpoints() {
    let hosts = ["host1", "host2"];
    let s = generated_at("svc1", "ns1", 1, 3, NO_MOD, NO_MOD, &hosts, &[Some(80)]);
    let state = build(vec![svc1()], vec![s]);
    let want = [
        ("198.19.1.1:80", false),
        ("198.19.1.2:80", true),
        ("198.19.1.3:80", false),
    ];
    assert_eq!(cluster(&state, "port-0"), set(&want));
}

// TestEndpointInfoByServicePort: "4 different slices with duplicate IPs"
#[test]
fn endpoint_info_4_different_slices_with_duplicate_ips() {
    let svc = service_of(&duplicate_ips(), "ns1", "svc1").clone();
    let local: Vec<bool> = svc.ports[0]
        .endpoints_for(IpFamily::V4, EndpointSetKind::Cluster)
        .iter()
        .map(|e| e.local)
        .collect();
    assert_eq!(local.len(), 4);
    // The two slices' copies of an address are distinct endpoints (their ports differ).
    assert_eq!(
        svc.local_ready_endpoints, 1,
        "one local address, counted once"
    );
}
