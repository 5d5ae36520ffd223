//! The two-node cluster lab by itself (no ferrolb): pods reach each other across the
//! nodes in both families, processes land in their node's lab cgroup, and everything the
//! lab made is gone after it.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use lb_lab::{
    cgroup::cgroup_of,
    cluster::{Cluster, Place},
    netns_list,
    nft::{count_packets, packet_counts, Hook},
    require_root, wait_for,
};

const LAB_TOOLS: &str = env!("CARGO_BIN_EXE_ferrolb-lab");
const TCP_PORT: u16 = 9090;
const UDP_PORT: u16 = 5353;
const TIMEOUT: Duration = Duration::from_secs(2);

/// Two connections and two UDP queries from `from` to pod b2 at `to`: all answered by b2,
/// which saw the client at `seen_as`.
fn assert_reaches(cluster: &Cluster, from: &Place, to: IpAddr, seen_as: IpAddr) {
    let tools = Path::new(LAB_TOOLS);
    let tcp = cluster
        .connects(
            from,
            tools,
            SocketAddr::new(to, TCP_PORT),
            2,
            TIMEOUT,
            false,
        )
        .expect("connects");
    assert_eq!(tcp.answered, 2, "{} → {to}: {tcp:?}", from.netns);
    assert_eq!(tcp.backends.get("b2"), Some(&2), "{tcp:?}");
    assert_eq!(tcp.seen_as.get(&seen_as.to_string()), Some(&2), "{tcp:?}");
    let udp = cluster
        .udp_queries(from, tools, SocketAddr::new(to, UDP_PORT), 2, 1)
        .expect("udp queries");
    assert_eq!(udp.answered, 2, "{} → {to} (UDP): {udp:?}", from.netns);
    let source = SocketAddr::new(to, UDP_PORT).to_string();
    assert_eq!(udp.peers.get(&source), Some(&2), "{udp:?}");
}

#[test]
fn cluster_lab_routes_pods_across_nodes_and_places_processes_in_node_cgroups() {
    if !require_root("cluster lab test") {
        return;
    }
    let mut cluster = Cluster::create("clulb", 3).expect("cluster lab");
    let prefix = cluster.prefix.clone();
    let mut cgroups: Vec<_> = cluster
        .nodes
        .iter()
        .map(|n| n.cgroup().to_owned())
        .collect();
    cgroups.push(cluster.system_cgroup().to_owned());
    assert!(cgroups.iter().all(|c| c.is_dir()), "{cgroups:?}");
    let server = cluster
        .start_server(Path::new(LAB_TOOLS), "b2", TCP_PORT, UDP_PORT)
        .expect("server in b2");
    assert_eq!(cgroup_of(server), Some(format!("/{prefix}-nb")));

    let a1 = cluster.pod("a1").clone();
    let b2 = cluster.pod("b2").clone();
    let b3 = cluster.pod("b3").clone();
    // What node-b's uplink carries from a1 to b2: the counters labs use for evidence.
    let node_b_ns = cluster.node("node-b").netns.clone();
    let from_a1 = format!("ip saddr {} tcp dport {TCP_PORT}", a1.addr);
    count_packets(&node_b_ns, Hook::Ingress, "from_a1", &from_a1).expect("nft counter");
    let to_a1 = format!("ip daddr {} tcp sport {TCP_PORT}", a1.addr);
    count_packets(&node_b_ns, Hook::Egress, "to_a1", &to_a1).expect("nft counter");
    // Across the nodes, and within node-b.
    assert_reaches(&cluster, &a1.place, b2.addr.into(), a1.addr.into());
    assert_reaches(&cluster, &a1.place, b2.addr6.into(), a1.addr6.into());
    assert_reaches(&cluster, &b3.place, b2.addr.into(), b3.addr.into());
    let counts = packet_counts(&node_b_ns).expect("nft counters");
    // Two connections: SYN, ACK, data, FIN, ACK at least, each way.
    assert!(counts["from_a1"] >= 8 && counts["to_a1"] >= 8, "{counts:?}");
    // Host processes of both nodes.
    let node_a = cluster.node("node-a");
    let (host_a, node_a_addr6) = (node_a.host.clone(), node_a.addr6);
    let host_b = cluster.node("node-b").host.clone();
    assert_reaches(&cluster, &host_a, b2.addr6.into(), node_a_addr6.into());
    let gateway_b = cluster.node("node-b").pod_gateway;
    assert_reaches(&cluster, &host_b, b2.addr.into(), gateway_b.into());
    // The client has no route to pods: it reaches them only through the nodes' frontends.
    let refused = cluster
        .connects(
            &cluster.client.clone(),
            Path::new(LAB_TOOLS),
            SocketAddr::new(b2.addr.into(), TCP_PORT),
            1,
            Duration::from_millis(300),
            false,
        )
        .expect("client connects");
    assert_eq!(refused.answered, 0, "{refused:?}");

    // A pod's process is in its node's cgroup; a host's too.
    let out = cluster
        .exec(&a1.place, "cat", &["/proc/self/cgroup"])
        .expect("cat in a1");
    assert!(
        out.lines().any(|l| l == format!("0::/{prefix}-na")),
        "{out}"
    );
    let sleeper = cluster
        .spawn(&host_a, Path::new("/bin/sleep"), &["30"], None)
        .expect("sleep on node-a");
    wait_for(Duration::from_secs(5), "sleep in node-a's cgroup", || {
        (cgroup_of(sleeper) == Some(format!("/{prefix}-na"))).then_some(())
    })
    .expect("cgroup of the host process");

    let system = cluster.node("node-b").system.clone();
    let daemon = cluster
        .spawn(&system, Path::new("/bin/sleep"), &["30"], None)
        .expect("sleep as node-b's system process");
    wait_for(Duration::from_secs(5), "sleep in the system cgroup", || {
        (cgroup_of(daemon) == Some(format!("/{prefix}-sys"))).then_some(())
    })
    .expect("cgroup of the system process");

    drop(cluster);
    for pid in [server, sleeper, daemon] {
        assert!(cgroup_of(pid).is_none(), "process {pid} outlived the lab");
    }
    assert!(
        cgroups.iter().all(|c| !c.exists()),
        "cgroups left: {cgroups:?}"
    );
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}
