//! Making the cluster lab's namespaces, links, addresses and routes.

use super::{
    Cluster, ClusterNode, Pod, CLIENT2_ADDR, CLIENT2_ADDR6, CLIENT_ADDR, CLIENT_ADDR6, CLIENT_MTU,
    CLIENT_MTU6, POD_GATEWAY6,
};
use crate::{bridge_port, nsexec, run, LabError};

/// Runs `ip ARGS` (or any tool) inside `netns`, discarding its output.
fn sh(netns: &str, program: &str, args: &[&str]) -> Result<(), LabError> {
    nsexec(netns, program, args).map(drop)
}

fn sysctls(netns: &str, keys: &[&str]) -> Result<(), LabError> {
    for key in keys {
        sh(netns, "sysctl", &["-qw", key])?;
    }
    Ok(())
}

/// Reverse-path filtering off (a pod's packets arrive from the fabric with sources the
/// node routes elsewhere, replies leave with a frontend as source), and no duplicate
/// address detection (addresses usable at once).
const QUIET: [&str; 5] = [
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.default.dad_transmits=0",
];

pub(super) fn build(cluster: &Cluster) -> Result<(), LabError> {
    let sw = &cluster.switch;
    run("ip", &["netns", "add", sw])?;
    sh(sw, "ip", &["link", "add", "br0", "type", "bridge"])?;
    sh(sw, "ip", &["link", "set", "br0", "up"])?;
    let clients = [
        (&cluster.client.netns, CLIENT_ADDR, CLIENT_ADDR6),
        (&cluster.client2.netns, CLIENT2_ADDR, CLIENT2_ADDR6),
    ];
    for (client, addr, addr6) in clients {
        let port = Cluster::switch_port(client);
        fabric_port(sw, client, &port, &addr.to_string(), &addr6.to_string())?;
    }
    for node in &cluster.nodes {
        let port = Cluster::switch_port(&node.netns);
        fabric_port(
            sw,
            &node.netns,
            &port,
            &node.addr.to_string(),
            &node.addr6.to_string(),
        )?;
        sysctls(
            &node.netns,
            &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
        )?;
        for pod in &node.pods {
            add_pod(node, pod)?;
        }
    }
    route_between_nodes(&cluster.nodes)?;
    for (client, _, _) in clients {
        route_client(client, &cluster.nodes)?;
    }
    Ok(())
}

/// A namespace with `eth0` on the fabric bridge, at `addr`/24 and `addr6`/64.
fn fabric_port(sw: &str, netns: &str, port: &str, addr: &str, addr6: &str) -> Result<(), LabError> {
    run("ip", &["netns", "add", netns])?;
    sysctls(netns, &QUIET)?;
    bridge_port(sw, netns, port, addr, addr6)?;
    sysctls(netns, &["net.ipv4.conf.eth0.rp_filter=0"])
}

/// A pod namespace behind a routed veth: the pod's /32 and /128 on its `eth0`, a default
/// route to the node; the node's host route to the pod through the veth.
fn add_pod(node: &ClusterNode, pod: &Pod) -> Result<(), LabError> {
    let (ns, veth) = (&pod.netns, &pod.host_veth);
    run("ip", &["netns", "add", ns])?;
    sysctls(ns, &QUIET)?;
    sh(
        &node.netns,
        "ip",
        &[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )?;
    let gateway = node.pod_gateway.to_string();
    let gateway6 = POD_GATEWAY6.to_string();
    // The same gateway address on every host-side veth, as routed CNIs do.
    sh(
        &node.netns,
        "ip",
        &["addr", "add", &format!("{gateway}/32"), "dev", veth],
    )?;
    sh(
        &node.netns,
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("{gateway6}/64"),
            "dev",
            veth,
            "nodad",
        ],
    )?;
    sh(&node.netns, "ip", &["link", "set", veth, "up"])?;
    let addr = pod.addr.to_string();
    let addr6 = pod.addr6.to_string();
    sh(
        &node.netns,
        "ip",
        &["route", "add", &format!("{addr}/32"), "dev", veth],
    )?;
    sh(
        &node.netns,
        "ip",
        &["-6", "route", "add", &format!("{addr6}/128"), "dev", veth],
    )?;

    sh(ns, "ip", &["link", "set", "lo", "up"])?;
    sh(
        ns,
        "ip",
        &["addr", "add", &format!("{addr}/32"), "dev", "eth0"],
    )?;
    sh(
        ns,
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("{addr6}/128"),
            "dev",
            "eth0",
            "nodad",
        ],
    )?;
    sh(ns, "ip", &["link", "set", "eth0", "up"])?;
    sh(
        ns,
        "ip",
        &[
            "route", "add", "default", "via", &gateway, "dev", "eth0", "onlink",
        ],
    )?;
    sh(
        ns,
        "ip",
        &[
            "-6", "route", "add", "default", "via", &gateway6, "dev", "eth0",
        ],
    )?;
    sysctls(ns, &["net.ipv4.conf.eth0.rp_filter=0"])?;
    sysctls(&node.netns, &[&format!("net.ipv4.conf.{veth}.rp_filter=0")])
}

/// Each node reaches the other nodes' pod CIDRs via their fabric addresses.
fn route_between_nodes(nodes: &[ClusterNode]) -> Result<(), LabError> {
    for node in nodes {
        for other in nodes.iter().filter(|o| o.name != node.name) {
            let via = other.addr.to_string();
            let via6 = other.addr6.to_string();
            sh(
                &node.netns,
                "ip",
                &["route", "add", &other.pod_cidr, "via", &via],
            )?;
            sh(
                &node.netns,
                "ip",
                &["-6", "route", "add", &other.pod_cidr6, "via", &via6],
            )?;
        }
    }
    Ok(())
}

/// The client's paths to the nodes leave room for the balancer's outer header, and its
/// frames carry full checksums: locally generated frames carry partial ones on veth, which
/// the receiving node would drop once XDP forwarded them.
fn route_client(client: &str, nodes: &[ClusterNode]) -> Result<(), LabError> {
    sh(client, "ethtool", &["-K", "eth0", "tx", "off"])?;
    for node in nodes {
        let addr = node.addr.to_string();
        let addr6 = node.addr6.to_string();
        sh(
            client,
            "ip",
            &["route", "add", &addr, "dev", "eth0", "mtu", CLIENT_MTU],
        )?;
        sh(
            client,
            "ip",
            &[
                "-6",
                "route",
                "add",
                &addr6,
                "dev",
                "eth0",
                "mtu",
                CLIENT_MTU6,
            ],
        )?;
    }
    Ok(())
}
