//! pkg/proxy/nftables/proxier_test.go, `TestClusterIPGeneral`: ClusterIP basics: one and
//! several endpoints, a target port, the same port number on TCP, UDP and SCTP (rule 4),
//! hairpin (rule 20), and the reject of ports and protocols a ClusterIP does not define
//! (rule 9). Endpoints 10.180.X.Y are 198.19.X.Y here.

use lb_kube::rules::KubeDesiredState;
use serde_json::json;

use crate::support::*;

const SVC1: &str = "198.18.30.41"; // upstream 172.30.0.41
const SVC2: &str = "198.18.30.42"; // upstream 172.30.0.42
const CLIENT: &str = "198.19.0.2"; // upstream 10.180.0.2, a pod on this node

fn state() -> KubeDesiredState {
    let svc1 = service(
        "ns1",
        "svc1",
        json!({"clusterIP": SVC1, "ports": [port("http", 80, "TCP")]}),
    );
    let svc2 = service(
        "ns2",
        "svc2",
        json!({"clusterIP": SVC2, "ports": [
            port("http", 80, "TCP"),
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443},
            port("dns-udp", 53, "UDP"),
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353},
            port("dns-sctp", 53, "SCTP")
        ]}),
    );
    let slice1 = slice4(
        "ns1",
        "svc1",
        slice_port("http", 80, "TCP"),
        vec![local(ep("198.19.0.1"))],
    );
    let slice2 = slice(
        "ns2",
        "svc2",
        1,
        "IPv4",
        vec![
            slice_port("http", 80, "TCP"),
            slice_port("https", 8443, "TCP"),
            slice_port("dns-udp", 53, "UDP"),
            slice_port("dns-tcp", 5353, "TCP"),
            slice_port("dns-sctp", 53, "SCTP"),
        ],
        vec![local(ep("198.19.0.1")), on(ep("198.19.2.1"), "node2")],
    );
    build(vec![svc1, svc2], vec![slice1, slice2])
}

// TestClusterIPGeneral: "simple clusterIP"
#[test]
fn simple_cluster_ip() {
    let packet = tcp(From::Pod(CLIENT), SVC1, 80);
    expect(&state(), "simple clusterIP", packet, to("198.19.0.1:80"));
}

// TestClusterIPGeneral: "hairpin to cluster IP" (the endpoint calling its own Service
// reaches itself; upstream also masquerades it, which the model does not express).
#[test]
fn hairpin_to_cluster_ip() {
    let packet = tcp(From::Pod("198.19.0.1"), SVC1, 80);
    expect(
        &state(),
        "hairpin to cluster IP",
        packet,
        to("198.19.0.1:80"),
    );
}

// TestClusterIPGeneral: "clusterIP with multiple endpoints"
#[test]
fn cluster_ip_with_multiple_endpoints() {
    let packet = tcp(From::Pod(CLIENT), SVC2, 80);
    let want = to("198.19.0.1:80, 198.19.2.1:80");
    expect(&state(), "clusterIP with multiple endpoints", packet, want);
}

// TestClusterIPGeneral: "clusterIP with TargetPort"
#[test]
fn cluster_ip_with_target_port() {
    let packet = tcp(From::Pod(CLIENT), SVC2, 443);
    let want = to("198.19.0.1:8443, 198.19.2.1:8443");
    expect(&state(), "clusterIP with TargetPort", packet, want);
}

// TestClusterIPGeneral: "clusterIP with TCP, UDP, and SCTP on same port (TCP)"
#[test]
fn cluster_ip_with_tcp_udp_and_sctp_on_same_port_tcp() {
    let packet = tcp(From::Pod(CLIENT), SVC2, 53);
    let want = to("198.19.0.1:5353, 198.19.2.1:5353");
    let case = "clusterIP with TCP, UDP, and SCTP on same port (TCP)";
    expect(&state(), case, packet, want);
}

// TestClusterIPGeneral: "clusterIP with TCP, UDP, and SCTP on same port (TCP)" — the
// second case of that name sends UDP.
#[test]
fn cluster_ip_with_tcp_udp_and_sctp_on_same_port_udp() {
    let packet = udp(From::Pod(CLIENT), SVC2, 53);
    let want = to("198.19.0.1:53, 198.19.2.1:53");
    let case = "clusterIP with TCP, UDP, and SCTP on same port (TCP) [UDP packet]";
    expect(&state(), case, packet, want);
}

// TestClusterIPGeneral: "clusterIP with TCP, UDP, and SCTP on same port (SCTP)" (the
// model's verdict; the datapath leaves SCTP frontends out and reports them).
#[test]
fn cluster_ip_with_tcp_udp_and_sctp_on_same_port_sctp() {
    let packet = sctp(From::Pod(CLIENT), SVC2, 53);
    let want = to("198.19.0.1:53, 198.19.2.1:53");
    let case = "clusterIP with TCP, UDP, and SCTP on same port (SCTP)";
    expect(&state(), case, packet, want);
}

// TestClusterIPGeneral: "TCP-only port does not match UDP traffic"
#[test]
fn tcp_only_port_does_not_match_udp_traffic() {
    let packet = udp(From::Pod(CLIENT), SVC2, 80);
    let case = "TCP-only port does not match UDP traffic";
    expect(&state(), case, packet, Outcome::Reject);
}

// TestClusterIPGeneral: "svc1 does not accept svc2's ports"
#[test]
fn svc1_does_not_accept_svc2s_ports() {
    let packet = tcp(From::Pod(CLIENT), SVC1, 443);
    expect(
        &state(),
        "svc1 does not accept svc2's ports",
        packet,
        Outcome::Reject,
    );
}
