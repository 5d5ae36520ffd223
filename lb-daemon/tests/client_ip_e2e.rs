//! What a Service decides by the client's address, end to end in the two-node cluster lab
//! fed by the fake API server, both families (issue 12): `loadBalancerSourceRanges` lets
//! one external client through a LoadBalancer IP and drops another (node-a's XDP
//! balancer), and `sessionAffinity: ClientIP` keeps each client on one endpoint, from
//! outside (XDP) and from a pod (the socket programs), until the timeout passes.
//!
//! The two external clients sit on the fabric (`CLIENT_ADDR*`, `CLIENT2_ADDR*`) and reach
//! the Services' addresses through node-a, as a router's routes would send them.

// The cluster lab is shared with cluster_e2e, which uses all of it; this test only part.
#[allow(dead_code)]
mod cluster;
mod support;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use cluster::{service, Cond, Setup, HTTP, QUICK_TIMEOUT};
use lb_common::affinity::expired;
use lb_daemon::maps::BalancerMaps;
use lb_lab::{
    cluster::{Place, CLIENT2_ADDR, CLIENT2_ADDR6, CLIENT_ADDR, CLIENT_ADDR6},
    nsexec,
};
use lb_model::Scope;
use serde_json::{json, Value};
use support::require_root;

use Cond::Ready;

const ENDPOINTS: [(&str, Cond); 4] = [("a1", Ready), ("a2", Ready), ("b1", Ready), ("b2", Ready)];
const ENDPOINT_NAMES: [&str; 4] = ["a1", "a2", "b1", "b2"];
/// Connections per client and Service in the affinity test (the number).
const AFFINE_CONNECTIONS: u32 = 100;
/// Short enough to wait out, long enough that the checks after a batch of connections
/// still find the entry alive on a slow machine.
const AFFINITY_TIMEOUT_S: u64 = 8;
/// An entry ends at most an eighth of the timeout after it (see rule 17's known gap);
/// one more second for the machine.
const PAST_AFFINITY: Duration = Duration::from_secs(AFFINITY_TIMEOUT_S + 1 + 1);

fn cluster_ip4(last: u8) -> IpAddr {
    Ipv4Addr::new(198, 18, 100, last).into()
}

fn cluster_ip6(last: u16) -> IpAddr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, last).into()
}

const LB_IP4: Ipv4Addr = Ipv4Addr::new(198, 18, 102, 1);
const LB_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x102, 0, 0, 0, 0, 1);

fn at(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// Routes from both external clients to `addresses` via node-a, leaving room for the
/// balancer's outer header as the lab's routes to the nodes do.
fn route_clients_via_node_a(s: &Setup, addresses: &[IpAddr]) {
    let node_a = s.cluster.node("node-a");
    for client in [&s.cluster.client, &s.cluster.client2] {
        for addr in addresses {
            let (family, via, mtu) = match addr {
                IpAddr::V4(_) => ("-4", node_a.addr.to_string(), "1480"),
                IpAddr::V6(_) => ("-6", node_a.addr6.to_string(), "1440"),
            };
            let addr = addr.to_string();
            let args = [
                family, "route", "add", &addr, "via", &via, "dev", "eth0", "mtu", mtu,
            ];
            nsexec(&client.netns, "ip", &args).expect("client route");
        }
    }
}

/// The XDP balancer's counter `reason` on `node` (`ferrolb stats`).
fn xdp_counter(s: &Setup, node: &str, reason: &str) -> u64 {
    let pin_dir = &s.cluster.node(node).pin_dir;
    support::datapath_counter(&s.bins.ferrolb, pin_dir, "xdp", reason)
}

/// `ferrolb explain -o json` on node-a for a TCP connection from `client` to `target`.
fn explain_on_node_a(s: &Setup, client: IpAddr, target: SocketAddr) -> Value {
    let pin_dir = s.cluster.node("node-a").pin_dir.display().to_string();
    // A source port outside the ephemeral range: no probe's flow is in the flow table
    // (explain would report that flow's pin instead of the affinity entry).
    let tuple = format!("tcp {} {target}", at(client, 1));
    let ferrolb = s.bins.ferrolb.display().to_string();
    let out = lb_lab::run(
        &ferrolb,
        &["--pin-dir", &pin_dir, "explain", "-o", "json", &tuple],
    )
    .expect("ferrolb explain");
    let value: Value = serde_json::from_str(&out).expect("explain JSON");
    match value {
        Value::Array(mut list) if list.len() == 1 => list.remove(0),
        other => other,
    }
}

fn only(key: impl ToString, n: u32) -> BTreeMap<String, u32> {
    BTreeMap::from([(key.to_string(), n)])
}

#[test]
fn source_ranges_let_one_client_namespace_in_and_drop_another() {
    if !require_root("source ranges end-to-end test") {
        return;
    }
    let ranged = service(
        "ranged",
        &[cluster_ip4(70), cluster_ip6(70)],
        json!({
            "spec": {
                "type": "LoadBalancer",
                "allocateLoadBalancerNodePorts": false,
                "loadBalancerSourceRanges": [
                    format!("{CLIENT_ADDR}/32"),
                    format!("{CLIENT_ADDR6}/128")
                ]
            },
            "status": {"loadBalancer": {"ingress": [
                {"ip": LB_IP4.to_string(), "ipMode": "VIP"},
                {"ip": LB_IP6.to_string(), "ipMode": "VIP"}
            ]}}
        }),
    );
    let s = Setup::new("rj-src", vec![(ranged, ENDPOINTS.to_vec())]);
    route_clients_via_node_a(
        &s,
        &[
            LB_IP4.into(),
            LB_IP6.into(),
            cluster_ip4(70),
            cluster_ip6(70),
        ],
    );
    let (listed, other) = (s.cluster.client.clone(), s.cluster.client2.clone());
    for (lb, cluster_ip, listed_addr) in [
        (
            at(LB_IP4, HTTP),
            at(cluster_ip4(70), HTTP),
            IpAddr::from(CLIENT_ADDR),
        ),
        (
            at(LB_IP6, HTTP),
            at(cluster_ip6(70), HTTP),
            CLIENT_ADDR6.into(),
        ),
    ] {
        // The listed client: served through the LoadBalancer IP, its address kept.
        s.wait_reaches(&listed, lb, &ENDPOINT_NAMES);
        let served = s.connects(&listed, lb, 50);
        assert_eq!(served.answered, 50, "listed client → {lb}: {served:?}");
        assert_eq!(
            served.seen_as,
            only(listed_addr, 50),
            "listed client → {lb}"
        );

        // The other client: its SYNs dropped at node-a, each connect times out.
        let before = xdp_counter(&s, "node-a", "drop_source_range");
        let tries = 5;
        let dropped = s.connects_within(&other, lb, tries, QUICK_TIMEOUT);
        let timed_out: u32 = dropped
            .errors
            .iter()
            .filter(|(error, _)| error.starts_with("connect:") && error.contains("timed out"))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(timed_out, tries, "unlisted client → {lb}: {dropped:?}");
        let after = xdp_counter(&s, "node-a", "drop_source_range");
        assert!(
            after >= before + u64::from(tries),
            "drop_source_range on node-a went {before} → {after} for {tries} connects to {lb}"
        );
        // The ranges filter the LoadBalancer IP only: the same client reaches the
        // Service's ClusterIP through the same node.
        s.wait_reaches(&other, cluster_ip, &ENDPOINT_NAMES);
        eprintln!(
            "{lb}: listed client served 50/50, unlisted client dropped {tries}/{tries} \
             (drop_source_range {before} → {after}), unlisted client reaches {cluster_ip}"
        );
    }
}

/// The endpoints that answered `count` connections from `from` to `target`, every one
/// answered.
fn endpoints_of(s: &Setup, what: &str, from: &Place, target: SocketAddr) -> Vec<String> {
    let report = s.connects(from, target, AFFINE_CONNECTIONS);
    assert_eq!(
        report.answered, AFFINE_CONNECTIONS,
        "{what} → {target}: {report:?}"
    );
    eprintln!("{what} → {target}: {:?}", report.backends);
    report.backends.into_keys().collect()
}

/// Node-a's balancer holds a usable affinity entry for `client` at `target` (timeout as
/// set); `ferrolb explain` judges it as the datapath does.
fn assert_affine_entry(s: &Setup, client: IpAddr, target: SocketAddr, usable: bool) {
    let explained = explain_on_node_a(s, client, target);
    let entry = &explained["affinity_entry"];
    assert_eq!(
        entry["usable"], usable,
        "{client} → {target}: usable {usable} expected: {explained}"
    );
    assert_eq!(entry["timeout_s"], AFFINITY_TIMEOUT_S, "{explained}");
    if !usable {
        let why = explained["why"].as_str().unwrap_or_default();
        assert!(why.contains("expired"), "{explained}");
    }
}

/// The socket programs' affinity entries on node-a (pods' namespaces, by cookie): how
/// many, and how many the datapath would still use.
fn socket_entries_on_node_a(s: &Setup) -> (usize, usize) {
    let maps = BalancerMaps::open(&s.cluster.node("node-a").pin_dir).expect("node-a maps");
    let entries = maps
        .affinity_entries(Scope::Internal)
        .expect("socket entries");
    let now = monotonic_coarse_ns();
    let alive = entries
        .iter()
        .filter(|(_, v)| {
            let age = now.saturating_sub(v.last_used_ns);
            !expired(age, AFFINITY_TIMEOUT_S as u32)
        })
        .count();
    (entries.len(), alive)
}

/// The clock the datapath stamps affinity entries with (`bpf_ktime_get_coarse_ns`).
fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn affinity_keeps_each_client_on_one_endpoint_until_the_timeout() {
    if !require_root("session affinity end-to-end test") {
        return;
    }
    let affine = json!({"spec": {
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": AFFINITY_TIMEOUT_S}}
    }});
    let (sticky, plain) = (
        [cluster_ip4(60), cluster_ip6(60)],
        [cluster_ip4(61), cluster_ip6(61)],
    );
    let s = Setup::new(
        "rj-aff",
        vec![
            (service("sticky", &sticky, affine), ENDPOINTS.to_vec()),
            (service("plain", &plain, json!({})), ENDPOINTS.to_vec()),
        ],
    );
    let mut routed = sticky.to_vec();
    routed.extend(plain);
    route_clients_via_node_a(&s, &routed);
    let (first, second, pod) = (
        s.cluster.client.clone(),
        s.cluster.client2.clone(),
        s.pod("a3"),
    );
    let families = [
        (0, IpAddr::from(CLIENT_ADDR), IpAddr::from(CLIENT2_ADDR)),
        (1, CLIENT_ADDR6.into(), CLIENT2_ADDR6.into()),
    ];
    for (i, first_addr, second_addr) in families {
        let (sticky, plain) = (at(sticky[i], HTTP), at(plain[i], HTTP));
        // Without affinity each place spreads over the endpoints.
        s.wait_reaches(&first, plain, &ENDPOINT_NAMES);
        for (what, from) in [("client", &first), ("client 2", &second), ("pod a3", &pod)] {
            let spread = endpoints_of(&s, what, from, plain);
            assert!(spread.len() >= 2, "{what} → {plain} spreads: {spread:?}");
        }
        // With affinity every place keeps one endpoint for 100 connections: the first
        // client and the second each have their entry on node-a (from outside), the pod
        // its entry at the socket.
        for (what, from, addr) in [
            ("client", &first, Some(first_addr)),
            ("client 2", &second, Some(second_addr)),
            ("pod a3", &pod, None),
        ] {
            let kept = endpoints_of(&s, what, from, sticky);
            assert_eq!(
                kept.len(),
                1,
                "{what} → {sticky}: one endpoint, got {kept:?}"
            );
            if let Some(addr) = addr {
                assert_affine_entry(&s, addr, sticky, true);
            }
        }
        let (entries, alive) = socket_entries_on_node_a(&s);
        assert!(
            entries >= 1 && alive >= 1,
            "the pod's entry at the socket: {entries} entries, {alive} alive"
        );

        // Past the timeout without traffic, no entry is usable any more.
        std::thread::sleep(PAST_AFFINITY);
        for addr in [first_addr, second_addr] {
            assert_affine_entry(&s, addr, sticky, false);
        }
        let (entries, alive) = socket_entries_on_node_a(&s);
        assert_eq!(
            alive, 0,
            "socket entries after the timeout: {entries} entries, {alive} alive"
        );
        eprintln!("{sticky}: every entry expired after {PAST_AFFINITY:?} without traffic");
    }
}
