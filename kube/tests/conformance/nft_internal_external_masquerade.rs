//! pkg/proxy/nftables/proxier_test.go, `TestInternalExternalMasquerade`, the "base" case
//! (a working local-traffic detector, no masquerade-all): three LoadBalancer Services, one
//! plain, one with eTP Local, one with iTP Local, each with an endpoint here and one on
//! another node, reached from a pod, the node and outside through the ClusterIP, the
//! NodePort and the LB IP. eTP applies only to external traffic to external frontends;
//! iTP only to ClusterIP traffic, from anywhere; pods and the node reach external
//! frontends over the Cluster set (rules 13, 14). Upstream's "masq" column and its
//! other sub-cases (no local-traffic detector, masquerade-all) are not expressible (see
//! the module docs of `main.rs`). Endpoints 10.180.X.Y are 198.19.X.Y here.

use lb_kube::rules::KubeDesiredState;
use serde_json::json;

use crate::support::*;

const SVC1: &str = "198.18.30.41"; // upstream 172.30.0.41
const SVC2: &str = "198.18.30.42"; // upstream 172.30.0.42, eTP Local
const SVC3: &str = "198.18.30.43"; // upstream 172.30.0.43, iTP Local

fn lb(
    ns: &str,
    name: &str,
    cluster_ip: &str,
    node_port: u16,
    extra: serde_json::Value,
    lb_ip: &str,
    n: u8,
) -> (serde_json::Value, serde_json::Value) {
    let mut spec = json!({"type": "LoadBalancer", "clusterIP": cluster_ip,
                          "healthCheckNodePort": 30000 + u32::from(n),
                          "ports": [node_port_of("p80", 80, node_port)]});
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let svc = with_ingress(service(ns, name, spec), &[lb_ip]);
    let eps = slice4(
        ns,
        name,
        slice_port("p80", 80, "TCP"),
        vec![
            local(ep(&format!("198.19.0.{n}"))),
            on(ep(&format!("198.19.1.{n}")), "remote"),
        ],
    );
    (svc, eps)
}

fn node_port_of(name: &str, number: u16, node_port_number: u16) -> serde_json::Value {
    node_port(name, number, "TCP", node_port_number)
}

fn state() -> KubeDesiredState {
    let (s1, e1) = lb("ns1", "svc1", SVC1, 3001, json!({}), LB_IP1, 1);
    let (s2, e2) = lb(
        "ns2",
        "svc2",
        SVC2,
        3002,
        json!({"externalTrafficPolicy": "Local"}),
        LB_IP2,
        2,
    );
    let (s3, e3) = lb(
        "ns3",
        "svc3",
        SVC3,
        3003,
        json!({"internalTrafficPolicy": "Local"}),
        LB_IP3,
        3,
    );
    build(vec![s1, s2, s3], vec![e1, e2, e3])
}

// TestInternalExternalMasquerade "base": "pod to ClusterIP"
#[test]
fn pod_to_clusterip() {
    let packet = tcp(From::Pod(POD), SVC1, 80);
    expect(
        &state(),
        "pod to ClusterIP",
        packet,
        to("198.19.0.1:80, 198.19.1.1:80"),
    );
}

// TestInternalExternalMasquerade "base": "pod to NodePort"
#[test]
fn pod_to_nodeport() {
    let packet = tcp(From::Pod(POD), NODE_IP, 3001);
    expect(
        &state(),
        "pod to NodePort",
        packet,
        to("198.19.0.1:80, 198.19.1.1:80"),
    );
}

// TestInternalExternalMasquerade "base": "pod to LB"
#[test]
fn pod_to_lb() {
    let packet = tcp(From::Pod(POD), LB_IP1, 80);
    expect(
        &state(),
        "pod to LB",
        packet,
        to("198.19.0.1:80, 198.19.1.1:80"),
    );
}

// TestInternalExternalMasquerade "base": "node to ClusterIP"
#[test]
fn node_to_clusterip() {
    let packet = tcp(From::Node(NODE_IP), SVC1, 80);
    expect(
        &state(),
        "node to ClusterIP",
        packet,
        to("198.19.0.1:80, 198.19.1.1:80"),
    );
}

// TestInternalExternalMasquerade "base": "node to NodePort"
#[test]
fn node_to_nodeport() {
    let packet = tcp(From::Node(NODE_IP), NODE_IP, 3001);
    expect(
        &state(),
        "node to NodePort",
        packet,
        to("198.19.0.1:80, 198.19.1.1:80"),
    );
}

// TestInternalExternalMasquerade "base": "node to LB"
#[test]
fn node_to_lb() {
    let packet = tcp(From::Node(NODE_IP), LB_IP1, 80);
    expect(
        &state(),
        "node to LB",
        packet,
        to("198.19.0.1:80, 198.19.1.1:80"),
    );
}

// TestInternalExternalMasquerade "base": "external to ClusterIP"
#[test]
fn external_to_clusterip() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), SVC1, 80);
    expect(
        &state(),
        "external to ClusterIP",
        packet,
        to("198.19.0.1:80, 198.19.1.1:80"),
    );
}

// TestInternalExternalMasquerade "base": "external to NodePort"
#[test]
fn external_to_nodeport() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), NODE_IP, 3001);
    expect(
        &state(),
        "external to NodePort",
        packet,
        to("198.19.0.1:80, 198.19.1.1:80"),
    );
}

// TestInternalExternalMasquerade "base": "external to LB"
#[test]
fn external_to_lb() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), LB_IP1, 80);
    expect(
        &state(),
        "external to LB",
        packet,
        to("198.19.0.1:80, 198.19.1.1:80"),
    );
}

// TestInternalExternalMasquerade "base": "pod to ClusterIP with eTP:Local"
#[test]
fn pod_to_clusterip_with_etp_local() {
    let packet = tcp(From::Pod(POD), SVC2, 80);
    expect(
        &state(),
        "pod to ClusterIP with eTP:Local",
        packet,
        to("198.19.0.2:80, 198.19.1.2:80"),
    );
}

// TestInternalExternalMasquerade "base": "pod to NodePort with eTP:Local"
#[test]
fn pod_to_nodeport_with_etp_local() {
    let packet = tcp(From::Pod(POD), NODE_IP, 3002);
    expect(
        &state(),
        "pod to NodePort with eTP:Local",
        packet,
        to("198.19.0.2:80, 198.19.1.2:80"),
    );
}

// TestInternalExternalMasquerade "base": "pod to LB with eTP:Local"
#[test]
fn pod_to_lb_with_etp_local() {
    let packet = tcp(From::Pod(POD), LB_IP2, 80);
    expect(
        &state(),
        "pod to LB with eTP:Local",
        packet,
        to("198.19.0.2:80, 198.19.1.2:80"),
    );
}

// TestInternalExternalMasquerade "base": "node to ClusterIP with eTP:Local"
#[test]
fn node_to_clusterip_with_etp_local() {
    let packet = tcp(From::Node(NODE_IP), SVC2, 80);
    expect(
        &state(),
        "node to ClusterIP with eTP:Local",
        packet,
        to("198.19.0.2:80, 198.19.1.2:80"),
    );
}

// TestInternalExternalMasquerade "base": "node to NodePort with eTP:Local"
// Upstream sends this one to svc1's NodePort (3001), as written there.
#[test]
fn node_to_nodeport_with_etp_local() {
    let packet = tcp(From::Node(NODE_IP), NODE_IP, 3001);
    expect(
        &state(),
        "node to NodePort with eTP:Local",
        packet,
        to("198.19.0.1:80, 198.19.1.1:80"),
    );
}

// TestInternalExternalMasquerade "base": "node to LB with eTP:Local"
#[test]
fn node_to_lb_with_etp_local() {
    let packet = tcp(From::Node(NODE_IP), LB_IP2, 80);
    expect(
        &state(),
        "node to LB with eTP:Local",
        packet,
        to("198.19.0.2:80, 198.19.1.2:80"),
    );
}

// TestInternalExternalMasquerade "base": "external to ClusterIP with eTP:Local"
#[test]
fn external_to_clusterip_with_etp_local() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), SVC2, 80);
    expect(
        &state(),
        "external to ClusterIP with eTP:Local",
        packet,
        to("198.19.0.2:80, 198.19.1.2:80"),
    );
}

// TestInternalExternalMasquerade "base": "external to NodePort with eTP:Local"
#[test]
fn external_to_nodeport_with_etp_local() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), NODE_IP, 3002);
    expect(
        &state(),
        "external to NodePort with eTP:Local",
        packet,
        to("198.19.0.2:80"),
    );
}

// TestInternalExternalMasquerade "base": "external to LB with eTP:Local"
#[test]
fn external_to_lb_with_etp_local() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), LB_IP2, 80);
    expect(
        &state(),
        "external to LB with eTP:Local",
        packet,
        to("198.19.0.2:80"),
    );
}

// TestInternalExternalMasquerade "base": "pod to ClusterIP with iTP:Local"
#[test]
fn pod_to_clusterip_with_itp_local() {
    let packet = tcp(From::Pod(POD), SVC3, 80);
    expect(
        &state(),
        "pod to ClusterIP with iTP:Local",
        packet,
        to("198.19.0.3:80"),
    );
}

// TestInternalExternalMasquerade "base": "pod to NodePort with iTP:Local"
#[test]
fn pod_to_nodeport_with_itp_local() {
    let packet = tcp(From::Pod(POD), NODE_IP, 3003);
    expect(
        &state(),
        "pod to NodePort with iTP:Local",
        packet,
        to("198.19.0.3:80, 198.19.1.3:80"),
    );
}

// TestInternalExternalMasquerade "base": "pod to LB with iTP:Local"
#[test]
fn pod_to_lb_with_itp_local() {
    let packet = tcp(From::Pod(POD), LB_IP3, 80);
    expect(
        &state(),
        "pod to LB with iTP:Local",
        packet,
        to("198.19.0.3:80, 198.19.1.3:80"),
    );
}

// TestInternalExternalMasquerade "base": "node to ClusterIP with iTP:Local"
#[test]
fn node_to_clusterip_with_itp_local() {
    let packet = tcp(From::Node(NODE_IP), SVC3, 80);
    expect(
        &state(),
        "node to ClusterIP with iTP:Local",
        packet,
        to("198.19.0.3:80"),
    );
}

// TestInternalExternalMasquerade "base": "node to NodePort with iTP:Local"
#[test]
fn node_to_nodeport_with_itp_local() {
    let packet = tcp(From::Node(NODE_IP), NODE_IP, 3003);
    expect(
        &state(),
        "node to NodePort with iTP:Local",
        packet,
        to("198.19.0.3:80, 198.19.1.3:80"),
    );
}

// TestInternalExternalMasquerade "base": "node to LB with iTP:Local"
#[test]
fn node_to_lb_with_itp_local() {
    let packet = tcp(From::Node(NODE_IP), LB_IP3, 80);
    expect(
        &state(),
        "node to LB with iTP:Local",
        packet,
        to("198.19.0.3:80, 198.19.1.3:80"),
    );
}

// TestInternalExternalMasquerade "base": "external to ClusterIP with iTP:Local"
#[test]
fn external_to_clusterip_with_itp_local() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), SVC3, 80);
    expect(
        &state(),
        "external to ClusterIP with iTP:Local",
        packet,
        to("198.19.0.3:80"),
    );
}

// TestInternalExternalMasquerade "base": "external to NodePort with iTP:Local"
#[test]
fn external_to_nodeport_with_itp_local() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), NODE_IP, 3003);
    expect(
        &state(),
        "external to NodePort with iTP:Local",
        packet,
        to("198.19.0.3:80, 198.19.1.3:80"),
    );
}

// TestInternalExternalMasquerade "base": "external to LB with iTP:Local"
#[test]
fn external_to_lb_with_itp_local() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), LB_IP3, 80);
    expect(
        &state(),
        "external to LB with iTP:Local",
        packet,
        to("198.19.0.3:80, 198.19.1.3:80"),
    );
}
