//! pkg/proxy/nftables/proxier_test.go, `TestOverallNFTablesRules`: upstream compares the
//! whole generated ruleset, which is not a verdict. These cases are the verdicts that
//! ruleset states for its six Services (a `no-endpoint-*` element's `drop` or
//! `reject-chain`, a `service-ips` element's endpoint chains, the firewall chain, the
//! affinity set's timeout, the health check port), asked of the model. Endpoints
//! 10.180.0.X are 198.19.0.X here.

use lb_kube::rules::KubeDesiredState;
use serde_json::json;

use crate::support::*;

const SVC1: &str = "198.18.30.41"; // upstream 172.30.0.41, ClusterIP
const SVC2: &str = "198.18.30.42"; // upstream 172.30.0.42, LoadBalancer eTP Local
const SVC2_EXTERNAL_IP: &str = "198.18.99.22"; // upstream 192.168.99.22
const SVC4_EXTERNAL_IP: &str = "198.18.99.33"; // upstream 192.168.99.33
const SVC6: &str = "198.18.30.46"; // upstream 172.30.0.46, no endpoints

fn state() -> KubeDesiredState {
    let p80 = || port("p80", 80, "TCP");
    let svc1 = service("ns1", "svc1", json!({"clusterIP": SVC1, "ports": [p80()]}));
    let svc2 = service(
        "ns2",
        "svc2",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "clusterIP": SVC2,
               "ports": [node_port("p80", 80, "TCP", 3001)],
               "externalIPs": [SVC2_EXTERNAL_IP], "healthCheckNodePort": 30000}),
    );
    let svc3 = service(
        "ns3",
        "svc3",
        json!({"type": "NodePort", "clusterIP": "198.18.30.43",
               "ports": [node_port("p80", 80, "TCP", 3003)]}),
    );
    let svc4 = service(
        "ns4",
        "svc4",
        json!({"type": "NodePort", "clusterIP": "198.18.30.44",
               "externalIPs": [SVC4_EXTERNAL_IP],
               "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 80}]}),
    );
    let svc5 = service(
        "ns5",
        "svc5",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
               "clusterIP": "198.18.30.45", "ports": [node_port("p80", 80, "TCP", 3002)],
               "healthCheckNodePort": 30000,
               "loadBalancerSourceRanges": [" 198.18.203.0/25"],
               "sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}}),
    );
    let svc6 = service(
        "ns6",
        "svc6",
        json!({"clusterIP": SVC6,
               "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 80}]}),
    );
    let p = || slice_port("p80", 80, "TCP");
    let slices = vec![
        slice4("ns1", "svc1", p(), vec![ep("198.19.0.1")]),
        // No node name: not local, so the eTP Local frontends have no endpoint here.
        slice4("ns2", "svc2", p(), vec![ep("198.19.0.2")]),
        slice4("ns3", "svc3", p(), vec![ep("198.19.0.3")]),
        slice4(
            "ns4",
            "svc4",
            p(),
            vec![ep("198.19.0.4"), local(ep("198.19.0.5"))],
        ),
        slice4("ns5", "svc5", p(), vec![ep("198.19.0.3")]),
    ];
    build(
        vec![
            svc1,
            with_ingress(svc2, &[LB_IP1]),
            svc3,
            svc4,
            with_ingress(svc5, &[LB_IP2]),
            svc6,
        ],
        slices,
    )
}

// TestOverallNFTablesRules, svc1: `service-ips { 172.30.0.41 . tcp . 80 }` → its one
// endpoint.
#[test]
fn svc1_cluster_ip_to_its_endpoint() {
    let packet = tcp(From::Pod(POD), SVC1, 80);
    expect(&state(), "svc1 ClusterIP", packet, to("198.19.0.1:80"));
}

// TestOverallNFTablesRules, svc2: the ClusterIP still reaches the (remote) endpoint.
#[test]
fn svc2_cluster_ip_to_remote_endpoint() {
    let packet = tcp(From::Pod(POD), SVC2, 80);
    expect(&state(), "svc2 ClusterIP", packet, to("198.19.0.2:80"));
}

// TestOverallNFTablesRules, svc2: `no-endpoint-nodeports { tcp . 3001 : drop }`.
#[test]
fn svc2_external_to_node_port_drops() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), NODE_IP, 3001);
    expect(
        &state(),
        "svc2 NodePort, no local endpoint",
        packet,
        Outcome::Drop,
    );
}

// TestOverallNFTablesRules, svc2: `no-endpoint-services { 1.2.3.4 . tcp . 80 : drop }`.
#[test]
fn svc2_external_to_lb_ip_drops() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), LB_IP1, 80);
    expect(
        &state(),
        "svc2 LB IP, no local endpoint",
        packet,
        Outcome::Drop,
    );
}

// TestOverallNFTablesRules, svc2: `no-endpoint-services { 192.168.99.22 . tcp . 80 : drop }`.
#[test]
fn svc2_external_to_external_ip_drops() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), SVC2_EXTERNAL_IP, 80);
    expect(
        &state(),
        "svc2 ExternalIP, no local endpoint",
        packet,
        Outcome::Drop,
    );
}

// TestOverallNFTablesRules, svc2: the external chain's "short-circuit pod traffic" rule
// sends a pod's packet to the LB IP to the service chain, i.e. the Cluster set.
#[test]
fn svc2_pod_to_lb_ip_short_circuits_to_the_cluster_set() {
    let packet = tcp(From::Pod(POD), LB_IP1, 80);
    expect(
        &state(),
        "svc2 LB IP from a pod",
        packet,
        to("198.19.0.2:80"),
    );
}

// TestOverallNFTablesRules, svc3: `service-nodeports { tcp . 3003 }` → its endpoint.
#[test]
fn svc3_external_to_node_port() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), NODE_IP, 3003);
    expect(&state(), "svc3 NodePort", packet, to("198.19.0.3:80"));
}

// TestOverallNFTablesRules, svc4: `service-ips { 192.168.99.33 . tcp . 80 }` → both
// endpoints.
#[test]
fn svc4_external_to_external_ip() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), SVC4_EXTERNAL_IP, 80);
    let want = to("198.19.0.4:80, 198.19.0.5:80");
    expect(&state(), "svc4 ExternalIP", packet, want);
}

// TestOverallNFTablesRules, svc5: the firewall chain lets 203.0.113.0/25 through.
#[test]
fn svc5_allowed_external_to_lb_ip() {
    let packet = tcp(From::External(EXTERNAL_CLIENT), LB_IP2, 80);
    expect(
        &state(),
        "svc5 LB IP, allowed source",
        packet,
        to("198.19.0.3:80"),
    );
}

// TestOverallNFTablesRules, svc5: `ip saddr != { 203.0.113.0/25 } drop`.
#[test]
fn svc5_blocked_external_to_lb_ip_drops() {
    let packet = tcp(From::External(EXTERNAL_CLIENT_BLOCKED), LB_IP2, 80);
    expect(
        &state(),
        "svc5 LB IP, blocked source",
        packet,
        Outcome::Drop,
    );
}

// TestOverallNFTablesRules, svc5: the affinity set's `timeout 10800s`.
#[test]
fn svc5_session_affinity_timeout() {
    let state = state();
    assert_eq!(
        service_of(&state, "ns5", "svc5").session_affinity_seconds,
        Some(10_800)
    );
    assert_eq!(
        service_of(&state, "ns1", "svc1").session_affinity_seconds,
        None
    );
}

// TestOverallNFTablesRules, svc6: `no-endpoint-services { 172.30.0.46 . tcp . 80 : goto
// reject-chain }`.
#[test]
fn svc6_cluster_ip_without_endpoints_rejects() {
    let packet = tcp(From::Pod(POD), SVC6, 80);
    expect(
        &state(),
        "svc6 ClusterIP, no endpoints",
        packet,
        Outcome::Reject,
    );
}

// TestOverallNFTablesRules: only svc2 (LoadBalancer, eTP Local) has a health check server
// on 30000, with no local endpoint; svc5's healthCheckNodePort under eTP Cluster is unused.
#[test]
fn health_check_node_port_only_for_etp_local() {
    let checks = state().health_checks();
    let got: Vec<(String, u16, usize)> = checks
        .iter()
        .map(|c| (c.service.to_string(), c.port, c.local_ready_endpoints))
        .collect();
    assert_eq!(got, [("ns2/svc2".to_owned(), 30000, 0)]);
}
