//! pkg/proxy/nftables/proxier_test.go, `TestUpdateEndpointsMap` and
//! `TestHealthCheckNodePortWhenTerminating`: how slices merge into per-port endpoints
//! (rules 3, 4): several slices and ports, endpoints on this node and elsewhere, renamed
//! and renumbered ports; and the count of this node's ready endpoints per Service (rule
//! 15). Each upstream case is checked on its final slices ("currentEndpoints"), with the
//! Services defining the ports its expectation names (upstream's endpoints map does not
//! need them). Whether a conntrack clean-up is required is not expressible (see
//! `main.rs`). Endpoints 10.A.B.C are 198.19.(10A+B).C here (10.1.1.1 is 198.19.11.1).

use lb_kube::rules::{EndpointSetKind, IpFamily, KubeDesiredState};
use serde_json::{json, Value};

use crate::support::*;

/// Endpoint at `address` (on this node when `local`).
fn e(address: &str, local_ep: bool) -> Value {
    if local_ep {
        local(ep(address))
    } else {
        ep(address)
    }
}

fn udp_port(name: &str, number: u16) -> Value {
    slice_port(name, number, "UDP")
}

/// Slice `n` of `ns/name`.
fn s(ns: &str, name: &str, n: u32, ports: Vec<Value>, eps: Vec<Value>) -> Value {
    slice(ns, name, n, "IPv4", ports, eps)
}

/// Service `ns/name` (ClusterIP 198.18.30.`index`) with UDP ports (name, number).
fn svc(ns: &str, name: &str, index: u8, ports: &[(&str, u16)]) -> Value {
    let ports: Vec<Value> = ports.iter().map(|(n, p)| port(n, *p, "UDP")).collect();
    service(
        ns,
        name,
        json!({"clusterIP": format!("198.18.30.{index}"), "ports": ports}),
    )
}

/// A port's expected endpoints: (namespace, service, port name, [(ip:port, local)]).
type PortEndpoints<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, bool)]);

/// Every port of every Service holds exactly `expected` (ns, name, port) → [(ip:port,
/// local)], nothing for a port not listed; and this node's ready endpoints per Service
/// are `local_counts` (0 for a Service not listed).
fn check(
    state: &KubeDesiredState,
    expected: &[PortEndpoints<'_>],
    local_counts: &[(&str, &str, usize)],
) {
    for svc in state.services.values() {
        for port in &svc.ports {
            let got: Vec<(String, bool)> = port
                .endpoints_for(IpFamily::V4, EndpointSetKind::Cluster)
                .iter()
                .map(|e| (format!("{}:{}", e.address, e.port), e.local))
                .collect();
            let mut want: Vec<(String, bool)> = expected
                .iter()
                .filter(|(ns, name, p, _)| {
                    svc.name.namespace == *ns && svc.name.name == *name && port.name == *p
                })
                .flat_map(|(_, _, _, eps)| eps.iter().map(|(a, l)| (a.to_string(), *l)))
                .collect();
            let mut got_sorted = got.clone();
            got_sorted.sort();
            want.sort();
            assert_eq!(got_sorted, want, "{}:{}", svc.name, port.name);
        }
        let count = local_counts
            .iter()
            .find(|(ns, name, _)| svc.name.namespace == *ns && svc.name.name == *name)
            .map_or(0, |(_, _, c)| *c);
        assert_eq!(svc.local_ready_endpoints, count, "{} local ready", svc.name);
    }
}

fn named_port_local() -> Vec<Value> {
    vec![s(
        "ns1",
        "ep1",
        1,
        vec![udp_port("p11", 11)],
        vec![e("198.19.11.1", true)],
    )]
}

fn named_port() -> Vec<Value> {
    vec![s(
        "ns1",
        "ep1",
        1,
        vec![udp_port("p11", 11)],
        vec![e("198.19.11.1", false)],
    )]
}

fn ep1(ports: &[(&str, u16)]) -> Value {
    svc("ns1", "ep1", 1, ports)
}

// TestUpdateEndpointsMap: "nothing"
#[test]
fn nothing() {
    let state = build(vec![ep1(&[("p11", 11)])], vec![]);
    check(&state, &[], &[]);
}

// TestUpdateEndpointsMap: "no change, named port, local"
#[test]
fn no_change_named_port_local() {
    let state = build(vec![ep1(&[("p11", 11)])], named_port_local());
    check(
        &state,
        &[("ns1", "ep1", "p11", &[("198.19.11.1:11", true)])],
        &[("ns1", "ep1", 1)],
    );
}

// TestUpdateEndpointsMap: "no change, multiple subsets"
#[test]
fn no_change_multiple_subsets() {
    let slices = vec![
        s(
            "ns1",
            "ep1",
            1,
            vec![udp_port("p11", 11)],
            vec![e("198.19.11.1", false)],
        ),
        s(
            "ns1",
            "ep1",
            2,
            vec![udp_port("p12", 12)],
            vec![e("198.19.11.2", false)],
        ),
    ];
    let state = build(vec![ep1(&[("p11", 11), ("p12", 12)])], slices);
    check(
        &state,
        &[
            ("ns1", "ep1", "p11", &[("198.19.11.1:11", false)]),
            ("ns1", "ep1", "p12", &[("198.19.11.2:12", false)]),
        ],
        &[],
    );
}

// TestUpdateEndpointsMap: "no change, multiple subsets, multiple ports, local"
#[test]
fn no_change_multiple_subsets_multiple_ports_local() {
    let slices = vec![
        s(
            "ns1",
            "ep1",
            1,
            vec![udp_port("p11", 11), udp_port("p12", 12)],
            vec![e("198.19.11.1", true)],
        ),
        s(
            "ns1",
            "ep1",
            2,
            vec![udp_port("p13", 13)],
            vec![e("198.19.11.3", false)],
        ),
    ];
    let state = build(vec![ep1(&[("p11", 11), ("p12", 12), ("p13", 13)])], slices);
    check(
        &state,
        &[
            ("ns1", "ep1", "p11", &[("198.19.11.1:11", true)]),
            ("ns1", "ep1", "p12", &[("198.19.11.1:12", true)]),
            ("ns1", "ep1", "p13", &[("198.19.11.3:13", false)]),
        ],
        &[("ns1", "ep1", 1)],
    );
}

// TestUpdateEndpointsMap: "no change, multiple endpoints, subsets, IPs, and ports"
#[test]
fn no_change_multiple_endpoints_subsets_ips_and_ports() {
    let slices = vec![
        s(
            "ns1",
            "ep1",
            1,
            vec![udp_port("p11", 11), udp_port("p12", 12)],
            vec![e("198.19.11.1", false), e("198.19.11.2", true)],
        ),
        s(
            "ns1",
            "ep1",
            2,
            vec![udp_port("p13", 13), udp_port("p14", 14)],
            vec![e("198.19.11.3", false), e("198.19.11.4", true)],
        ),
        s(
            "ns2",
            "ep2",
            1,
            vec![udp_port("p21", 21), udp_port("p22", 22)],
            vec![e("198.19.22.1", false), e("198.19.22.2", true)],
        ),
    ];
    let services = vec![
        ep1(&[("p11", 11), ("p12", 12), ("p13", 13), ("p14", 14)]),
        svc("ns2", "ep2", 2, &[("p21", 21), ("p22", 22)]),
    ];
    let state = build(services, slices);
    check(
        &state,
        &[
            (
                "ns1",
                "ep1",
                "p11",
                &[("198.19.11.1:11", false), ("198.19.11.2:11", true)],
            ),
            (
                "ns1",
                "ep1",
                "p12",
                &[("198.19.11.1:12", false), ("198.19.11.2:12", true)],
            ),
            (
                "ns1",
                "ep1",
                "p13",
                &[("198.19.11.3:13", false), ("198.19.11.4:13", true)],
            ),
            (
                "ns1",
                "ep1",
                "p14",
                &[("198.19.11.3:14", false), ("198.19.11.4:14", true)],
            ),
            (
                "ns2",
                "ep2",
                "p21",
                &[("198.19.22.1:21", false), ("198.19.22.2:21", true)],
            ),
            (
                "ns2",
                "ep2",
                "p22",
                &[("198.19.22.1:22", false), ("198.19.22.2:22", true)],
            ),
        ],
        &[("ns1", "ep1", 2), ("ns2", "ep2", 1)],
    );
}

// TestUpdateEndpointsMap: "add an Endpoints"
#[test]
fn add_an_endpoints() {
    let state = build(vec![ep1(&[("p11", 11)])], named_port_local());
    check(
        &state,
        &[("ns1", "ep1", "p11", &[("198.19.11.1:11", true)])],
        &[("ns1", "ep1", 1)],
    );
}

// TestUpdateEndpointsMap: "remove an Endpoints"
#[test]
fn remove_an_endpoints() {
    let state = build(vec![ep1(&[("p11", 11)])], vec![]);
    check(&state, &[], &[]);
}

// TestUpdateEndpointsMap: "add an IP and port"
#[test]
fn add_an_ip_and_port() {
    let slices = vec![s(
        "ns1",
        "ep1",
        1,
        vec![udp_port("p11", 11), udp_port("p12", 12)],
        vec![e("198.19.11.1", false), e("198.19.11.2", true)],
    )];
    let state = build(vec![ep1(&[("p11", 11), ("p12", 12)])], slices);
    check(
        &state,
        &[
            (
                "ns1",
                "ep1",
                "p11",
                &[("198.19.11.1:11", false), ("198.19.11.2:11", true)],
            ),
            (
                "ns1",
                "ep1",
                "p12",
                &[("198.19.11.1:12", false), ("198.19.11.2:12", true)],
            ),
        ],
        &[("ns1", "ep1", 1)],
    );
}

// TestUpdateEndpointsMap: "remove an IP and port"
#[test]
fn remove_an_ip_and_port() {
    let state = build(vec![ep1(&[("p11", 11), ("p12", 12)])], named_port());
    check(
        &state,
        &[("ns1", "ep1", "p11", &[("198.19.11.1:11", false)])],
        &[],
    );
}

// TestUpdateEndpointsMap: "add a subset"
#[test]
fn add_a_subset() {
    let slices = vec![
        s(
            "ns1",
            "ep1",
            1,
            vec![udp_port("p11", 11)],
            vec![e("198.19.11.1", false)],
        ),
        s(
            "ns1",
            "ep1",
            2,
            vec![udp_port("p12", 12)],
            vec![e("198.19.11.2", true)],
        ),
    ];
    let state = build(vec![ep1(&[("p11", 11), ("p12", 12)])], slices);
    check(
        &state,
        &[
            ("ns1", "ep1", "p11", &[("198.19.11.1:11", false)]),
            ("ns1", "ep1", "p12", &[("198.19.11.2:12", true)]),
        ],
        &[("ns1", "ep1", 1)],
    );
}

// TestUpdateEndpointsMap: "remove a subset"
#[test]
fn remove_a_subset() {
    let state = build(vec![ep1(&[("p11", 11), ("p12", 12)])], named_port());
    check(
        &state,
        &[("ns1", "ep1", "p11", &[("198.19.11.1:11", false)])],
        &[],
    );
}

// TestUpdateEndpointsMap: "rename a port"
#[test]
fn rename_a_port() {
    let slices = vec![s(
        "ns1",
        "ep1",
        1,
        vec![udp_port("p11-2", 11)],
        vec![e("198.19.11.1", false)],
    )];
    let state = build(vec![ep1(&[("p11", 11), ("p11-2", 1011)])], slices);
    check(
        &state,
        &[("ns1", "ep1", "p11-2", &[("198.19.11.1:11", false)])],
        &[],
    );
}

// TestUpdateEndpointsMap: "renumber a port"
#[test]
fn renumber_a_port() {
    let slices = vec![s(
        "ns1",
        "ep1",
        1,
        vec![udp_port("p11", 22)],
        vec![e("198.19.11.1", false)],
    )];
    let state = build(vec![ep1(&[("p11", 11)])], slices);
    check(
        &state,
        &[("ns1", "ep1", "p11", &[("198.19.11.1:22", false)])],
        &[],
    );
}

// TestUpdateEndpointsMap: "complex add and remove"
#[test]
fn complex_add_and_remove() {
    let slices = vec![
        s(
            "ns1",
            "ep1",
            1,
            vec![udp_port("p11", 11)],
            vec![e("198.19.11.1", false), e("198.19.11.11", false)],
        ),
        s(
            "ns1",
            "ep1",
            2,
            vec![udp_port("p12", 12), udp_port("p122", 122)],
            vec![e("198.19.11.2", false)],
        ),
        s(
            "ns3",
            "ep3",
            1,
            vec![udp_port("p33", 33)],
            vec![e("198.19.33.3", false)],
        ),
        s(
            "ns4",
            "ep4",
            1,
            vec![udp_port("p44", 44)],
            vec![e("198.19.44.4", true)],
        ),
    ];
    let services = vec![
        ep1(&[("p11", 11), ("p12", 12), ("p122", 122)]),
        svc("ns2", "ep2", 2, &[("p22", 22), ("p23", 23)]),
        svc("ns3", "ep3", 3, &[("p33", 33)]),
        svc("ns4", "ep4", 4, &[("p44", 44), ("p45", 45)]),
    ];
    let state = build(services, slices);
    check(
        &state,
        &[
            (
                "ns1",
                "ep1",
                "p11",
                &[("198.19.11.11:11", false), ("198.19.11.1:11", false)],
            ),
            ("ns1", "ep1", "p12", &[("198.19.11.2:12", false)]),
            ("ns1", "ep1", "p122", &[("198.19.11.2:122", false)]),
            ("ns3", "ep3", "p33", &[("198.19.33.3:33", false)]),
            ("ns4", "ep4", "p44", &[("198.19.44.4:44", true)]),
        ],
        &[("ns4", "ep4", 1)],
    );
}

// TestUpdateEndpointsMap: "change from 0 endpoint address to 1 unnamed port"
#[test]
fn change_from_0_endpoint_address_to_1_unnamed_port() {
    let state = build(vec![ep1(&[("p11", 11)])], named_port());
    check(
        &state,
        &[("ns1", "ep1", "p11", &[("198.19.11.1:11", false)])],
        &[],
    );
}

fn terminating_svc() -> Value {
    service(
        "ns1",
        "svc1",
        json!({"clusterIP": "198.18.31.1", "selector": {"foo": "bar"},
               "ports": [{"name": "", "port": 80, "protocol": "TCP", "targetPort": 80}]}),
    )
}

fn terminating_slice(eps: Vec<Value>) -> Value {
    slice4("ns1", "svc1", slice_port("", 80, "TCP"), eps)
}

// TestHealthCheckNodePortWhenTerminating: three ready local endpoints (and one not ready)
// count as local ready endpoints: upstream expects a count for the one Service.
#[test]
fn health_check_node_port_when_terminating_ready_endpoints_count() {
    let eps = vec![
        local(ready_is(ep("198.19.1.1"), true)),
        local(ready_is(ep("198.19.1.2"), true)),
        local(ready_is(ep("198.19.1.3"), true)),
        local(ready_is(ep("198.19.1.4"), false)),
    ];
    let state = build(vec![terminating_svc()], vec![terminating_slice(eps)]);
    let svc = service_of(&state, "ns1", "svc1");
    // Upstream counts Services with local ready endpoints (1); the model counts their
    // endpoints (3 ready here, the not-ready one excluded).
    assert_eq!(svc.local_ready_endpoints, 3);
}

// TestHealthCheckNodePortWhenTerminating: all local endpoints not ready (serving, some
// terminating): no local ready endpoint is counted.
#[test]
fn health_check_node_port_when_terminating_all_terminating_counts_none() {
    let eps = vec![
        local(cond(ep("198.19.1.1"), false, true, false)),
        local(cond(ep("198.19.1.2"), false, true, true)),
        local(cond(ep("198.19.1.3"), false, true, true)),
        local(cond(ep("198.19.1.4"), false, false, true)),
    ];
    let state = build(vec![terminating_svc()], vec![terminating_slice(eps)]);
    assert_eq!(service_of(&state, "ns1", "svc1").local_ready_endpoints, 0);
}
