//! One or more tests per numbered rule of `docs/kube-proxy-semantics.md`, fed real
//! Kubernetes JSON through k8s-openapi's types.

mod common;

use std::net::IpAddr;

use common::*;
use lb_kube::rules::{
    stale_udp_endpoints, EndpointSetKind, FrontendKind, IpFamily, KubeFrontend, KubeService,
    NodeConfig, Protocol, TopologyMode, Verdict,
};
use serde_json::json;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn frontend<'a>(svc: &'a KubeService, kind: FrontendKind, address: &str) -> &'a KubeFrontend {
    svc.ports
        .iter()
        .flat_map(|p| p.frontends.iter())
        .find(|f| f.kind == kind && f.address == ip(address))
        .unwrap_or_else(|| panic!("no {kind:?} frontend on {address}"))
}

fn cluster_addrs(svc: &KubeService, family: IpFamily) -> Vec<IpAddr> {
    svc.ports[0]
        .endpoints_for(family, EndpointSetKind::Cluster)
        .iter()
        .map(|e| e.address)
        .collect()
}

fn local_addrs(svc: &KubeService) -> Vec<IpAddr> {
    svc.ports[0]
        .endpoints_for(IpFamily::V4, EndpointSetKind::Local)
        .iter()
        .map(|e| e.address)
        .collect()
}

fn web_slice(endpoints: Vec<serde_json::Value>) -> serde_json::Value {
    slice_json("web-abc12", "web", "IPv4", 8080, endpoints)
}

#[test]
fn rule_01_skips_headless_and_external_name_services() {
    let headless = patch(
        service_json("headless", "None"),
        json!({"spec": {"clusterIPs": ["None"]}}),
    );
    let empty = patch(
        service_json("empty", ""),
        json!({"spec": {"clusterIPs": null}}),
    );
    let external_name = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ext", "namespace": "default", "resourceVersion": "5"},
        "spec": {"type": "ExternalName", "externalName": "db.example.com", "sessionAffinity": "None"}
    });
    let state = build(
        vec![
            headless,
            empty,
            external_name,
            service_json("web", "198.18.100.1"),
        ],
        vec![],
    );
    let names: Vec<&str> = state.services.keys().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["web"]);
    assert!(
        state.skipped.is_empty(),
        "skipping by rule is not an error: {:?}",
        state.skipped
    );
}

#[test]
fn rule_02_skips_services_of_other_proxies_and_headless_label() {
    let other = patch(
        service_json("other", "198.18.100.2"),
        json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": "cilium"}}}),
    );
    let headless_label = patch(
        service_json("hl", "198.18.100.3"),
        json!({"metadata": {"labels": {"service.kubernetes.io/headless": ""}}}),
    );
    let web = service_json("web", "198.18.100.1");
    let state = build(vec![other.clone(), headless_label, web.clone()], vec![]);
    let names: Vec<&str> = state.services.keys().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["web"]);

    // Configured with a proxy name, only Services naming it are ours.
    let ours = patch(
        service_json("ours", "198.18.100.4"),
        json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": "ferrolb"}}}),
    );
    let cfg = NodeConfig {
        service_proxy_name: Some("ferrolb".into()),
        ..cfg()
    };
    let state = build_with(vec![other, web, ours], vec![], Some(default_node()), &cfg);
    let names: Vec<&str> = state.services.keys().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["ours"]);
}

#[test]
fn rule_02_selector_matches_kube_proxy() {
    assert_eq!(
        lb_kube::watch::label_selector(None),
        "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"
    );
    assert_eq!(
        lb_kube::watch::label_selector(Some("ferrolb")),
        "!service.kubernetes.io/headless,service.kubernetes.io/service-proxy-name=ferrolb"
    );
}

#[test]
fn rule_03_merges_slices_of_a_service_and_dedupes_endpoints() {
    let a = slice_json(
        "web-a",
        "web",
        "IPv4",
        8080,
        vec![ready("198.19.0.1", NODE), ready("198.19.0.2", "node-b")],
    );
    let b = slice_json(
        "web-b",
        "web",
        "IPv4",
        8080,
        vec![ready("198.19.0.2", "node-b"), ready("198.19.0.3", "node-c")],
    );
    // A slice of another Service, and one without the service-name label, must not join.
    let other = slice_json("db-a", "db", "IPv4", 8080, vec![ready("198.19.9.9", NODE)]);
    let orphan = patch(
        slice_json(
            "orphan",
            "web",
            "IPv4",
            8080,
            vec![ready("198.19.8.8", NODE)],
        ),
        json!({"metadata": {"labels": {"kubernetes.io/service-name": null}}}),
    );
    let state = build(
        vec![service_json("web", "198.18.100.1")],
        vec![a, b, other, orphan],
    );
    assert_eq!(
        cluster_addrs(get(&state, "web"), IpFamily::V4),
        [ip("198.19.0.1"), ip("198.19.0.2"), ip("198.19.0.3")]
    );
}

#[test]
fn rule_03_takes_the_first_address_and_drops_the_other_family() {
    let mut two = ready("198.19.0.1", NODE);
    two["addresses"] = json!(["198.19.0.1", "198.19.0.99"]);
    let v6_in_v4_slice = ready("2001:db8::5", NODE);
    let s = web_slice(vec![two, v6_in_v4_slice]);
    let state = build(vec![service_json("web", "198.18.100.1")], vec![s]);
    assert_eq!(
        cluster_addrs(get(&state, "web"), IpFamily::V4),
        [ip("198.19.0.1")]
    );
    // A v6 slice for a v4-only Service is not used at all.
    let s6 = slice_json(
        "web-v6",
        "web",
        "IPv6",
        8080,
        vec![ready("2001:db8::7", NODE)],
    );
    let state = build(vec![service_json("web", "198.18.100.1")], vec![s6]);
    assert!(!get(&state, "web").ports[0]
        .endpoints
        .contains_key(&IpFamily::V6));
}

#[test]
fn rule_04_named_target_port_resolves_per_endpoint() {
    let svc = patch(
        service_json("web", "198.18.100.1"),
        json!({"spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web"}]}}),
    );
    // Two pod templates mid-rollout name the port differently: two slices, two numbers.
    let old = slice_json(
        "web-old",
        "web",
        "IPv4",
        8080,
        vec![ready("198.19.0.1", NODE)],
    );
    let new = slice_json(
        "web-new",
        "web",
        "IPv4",
        9090,
        vec![ready("198.19.0.2", NODE)],
    );
    let state = build(vec![svc], vec![old, new]);
    let eps = get(&state, "web").ports[0].endpoints_for(IpFamily::V4, EndpointSetKind::Cluster);
    let pairs: Vec<(IpAddr, u16)> = eps.iter().map(|e| (e.address, e.port)).collect();
    assert_eq!(pairs, [(ip("198.19.0.1"), 8080), (ip("198.19.0.2"), 9090)]);
}

#[test]
fn rule_04_same_port_on_tcp_and_udp_are_independent() {
    let svc = patch(
        service_json("dns", "198.18.100.10"),
        json!({"spec": {"ports": [
            {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53},
            {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": 53}
        ]}}),
    );
    let s = patch(
        slice_json("dns-a", "dns", "IPv4", 53, vec![ready("198.19.0.53", NODE)]),
        json!({"ports": [{"name": "dns", "protocol": "UDP", "port": 53}]}),
    );
    let state = build(vec![svc], vec![s]);
    let dns = get(&state, "dns");
    assert_eq!(dns.ports.len(), 2);
    let udp = dns
        .ports
        .iter()
        .find(|p| p.protocol == Protocol::Udp)
        .unwrap();
    let tcp = dns
        .ports
        .iter()
        .find(|p| p.protocol == Protocol::Tcp)
        .unwrap();
    assert_eq!(
        udp.endpoints_for(IpFamily::V4, EndpointSetKind::Cluster)
            .len(),
        1
    );
    assert!(tcp
        .endpoints_for(IpFamily::V4, EndpointSetKind::Cluster)
        .is_empty());
    assert_eq!(tcp.frontends[0].external, Verdict::Reject);
}

#[test]
fn rule_05_cluster_ips_one_per_family() {
    let svc = patch(
        service_json("web", "198.18.100.1"),
        json!({"spec": {"clusterIPs": ["198.18.100.1", "2001:db8:100::1"],
                        "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}}),
    );
    let state = build(vec![svc], vec![]);
    let web = get(&state, "web");
    assert_eq!(web.cluster_ips, [ip("198.18.100.1"), ip("2001:db8:100::1")]);
    let kinds: Vec<(FrontendKind, IpAddr, u16)> = web.ports[0]
        .frontends
        .iter()
        .map(|f| (f.kind, f.address, f.port))
        .collect();
    assert_eq!(
        kinds,
        [
            (FrontendKind::ClusterIp, ip("198.18.100.1"), 80),
            (FrontendKind::ClusterIp, ip("2001:db8:100::1"), 80)
        ]
    );
}

fn node_port_service() -> serde_json::Value {
    patch(
        service_json("np", "198.18.100.20"),
        json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Cluster",
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}]}}),
    )
}

#[test]
fn rule_06_node_port_on_node_addresses_not_loopback() {
    let n = node_json(
        NODE,
        &[
            ("InternalIP", "198.18.0.10"),
            ("ExternalIP", "198.18.50.10"),
            ("InternalIP", "127.0.0.1"),
        ],
        "zone-a",
    );
    let state = build_with(vec![node_port_service()], vec![], Some(n.clone()), &cfg());
    let np = get(&state, "np");
    let addrs: Vec<IpAddr> = np.ports[0]
        .frontends
        .iter()
        .filter(|f| f.kind == FrontendKind::NodePort)
        .map(|f| f.address)
        .collect();
    assert_eq!(addrs, [ip("198.18.0.10"), ip("198.18.50.10")]);
    assert!(np.ports[0]
        .frontends
        .iter()
        .filter(|f| f.kind == FrontendKind::NodePort)
        .all(|f| f.port == 30080));

    let with_loopback = NodeConfig {
        node_port_on_loopback: true,
        ..cfg()
    };
    let state = build_with(
        vec![node_port_service()],
        vec![],
        Some(n.clone()),
        &with_loopback,
    );
    assert!(frontend(get(&state, "np"), FrontendKind::NodePort, "127.0.0.1").port == 30080);

    let configured = NodeConfig {
        node_port_addresses: Some(vec![ip("198.18.0.99")]),
        ..cfg()
    };
    let state = build_with(vec![node_port_service()], vec![], Some(n), &configured);
    assert_eq!(state.node.node_port_addresses, [ip("198.18.0.99")]);
}

#[test]
fn rule_07_external_ips_of_the_same_family_only() {
    let svc = patch(
        service_json("web", "198.18.100.1"),
        json!({"spec": {"externalIPs": ["198.18.60.1", "2001:db8:60::1"]}}),
    );
    let state = build(vec![svc], vec![]);
    let ext: Vec<IpAddr> = get(&state, "web").ports[0]
        .frontends
        .iter()
        .filter(|f| f.kind == FrontendKind::ExternalIp)
        .map(|f| f.address)
        .collect();
    assert_eq!(ext, [ip("198.18.60.1")]);
}

fn lb_service(name: &str, etp: &str) -> serde_json::Value {
    patch(
        service_json(name, "198.18.100.30"),
        json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": etp,
                        "allocateLoadBalancerNodePorts": true,
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30081}]},
               "status": {"loadBalancer": {"ingress": [{"ip": "198.18.70.1", "ipMode": "VIP"}]}}}),
    )
}

#[test]
fn rule_08_load_balancer_ingress_unless_ip_mode_proxy() {
    let svc = patch(
        lb_service("lb", "Cluster"),
        json!({"status": {"loadBalancer": {"ingress": [
            {"ip": "198.18.70.1", "ipMode": "VIP"},
            {"ip": "198.18.70.2"},
            {"ip": "198.18.70.3", "ipMode": "Proxy"},
            {"hostname": "lb.example.com"}
        ]}}}),
    );
    let state = build(vec![svc], vec![]);
    let lbs: Vec<IpAddr> = get(&state, "lb").ports[0]
        .frontends
        .iter()
        .filter(|f| f.kind == FrontendKind::LoadBalancer)
        .map(|f| f.address)
        .collect();
    assert_eq!(lbs, [ip("198.18.70.1"), ip("198.18.70.2")]);
}

#[test]
fn rule_09_rejects_without_endpoints_and_on_unknown_ports() {
    let state = build(
        vec![service_json("web", "198.18.100.1")],
        vec![web_slice(vec![])],
    );
    let web = get(&state, "web");
    assert_eq!(web.ports[0].frontends[0].external, Verdict::Reject);
    assert_eq!(web.ports[0].frontends[0].internal, Verdict::Reject);
    assert!(state
        .reject_unknown_ports_on()
        .contains(&ip("198.18.100.1")));
    // With an endpoint the same frontend forwards.
    let state = build(
        vec![service_json("web", "198.18.100.1")],
        vec![web_slice(vec![ready("198.19.0.1", "node-b")])],
    );
    assert_eq!(
        get(&state, "web").ports[0].frontends[0].external,
        Verdict::Forward(EndpointSetKind::Cluster)
    );
}

#[test]
fn rule_10_ready_condition_unset_means_ready_and_publish_not_ready() {
    let mut unset = ready("198.19.0.1", NODE);
    unset["conditions"] = json!({});
    let not_ready = endpoint("198.19.0.2", NODE, false, false, false);
    let state = build(
        vec![service_json("web", "198.18.100.1")],
        vec![web_slice(vec![unset.clone(), not_ready.clone()])],
    );
    assert_eq!(
        cluster_addrs(get(&state, "web"), IpFamily::V4),
        [ip("198.19.0.1")]
    );
    let publish = patch(
        service_json("web", "198.18.100.1"),
        json!({"spec": {"publishNotReadyAddresses": true}}),
    );
    let state = build(vec![publish], vec![web_slice(vec![unset, not_ready])]);
    assert_eq!(
        cluster_addrs(get(&state, "web"), IpFamily::V4),
        [ip("198.19.0.1"), ip("198.19.0.2")]
    );
}

#[test]
fn rule_11_falls_back_to_serving_terminating() {
    let draining = endpoint("198.19.0.1", "node-b", false, true, true);
    let dead = endpoint("198.19.0.2", "node-b", false, false, true);
    let starting = endpoint("198.19.0.3", "node-b", false, false, false);
    let state = build(
        vec![service_json("web", "198.18.100.1")],
        vec![web_slice(vec![draining.clone(), dead, starting])],
    );
    let web = get(&state, "web");
    assert_eq!(cluster_addrs(web, IpFamily::V4), [ip("198.19.0.1")]);
    assert_eq!(
        web.ports[0].frontends[0].external,
        Verdict::Forward(EndpointSetKind::Cluster)
    );
    // Once any endpoint is ready, terminating ones are no longer used.
    let state = build(
        vec![service_json("web", "198.18.100.1")],
        vec![web_slice(vec![draining, ready("198.19.0.4", "node-b")])],
    );
    assert_eq!(
        cluster_addrs(get(&state, "web"), IpFamily::V4),
        [ip("198.19.0.4")]
    );
}

#[test]
fn rule_12_local_set_is_this_nodes_ready_else_serving_terminating() {
    let state = build(
        vec![service_json("web", "198.18.100.1")],
        vec![web_slice(vec![
            ready("198.19.0.1", NODE),
            ready("198.19.0.2", "node-b"),
            endpoint("198.19.0.3", NODE, false, true, true),
        ])],
    );
    assert_eq!(local_addrs(get(&state, "web")), [ip("198.19.0.1")]);
    let state = build(
        vec![service_json("web", "198.18.100.1")],
        vec![web_slice(vec![
            ready("198.19.0.2", "node-b"),
            endpoint("198.19.0.3", NODE, false, true, true),
        ])],
    );
    let web = get(&state, "web");
    // Cluster-wide there is a ready endpoint; locally only the draining one.
    assert_eq!(local_addrs(web), [ip("198.19.0.3")]);
    assert_eq!(cluster_addrs(web, IpFamily::V4), [ip("198.19.0.2")]);
}

#[test]
fn rule_13_external_traffic_policy_local() {
    let only_remote = slice_json(
        "lb-a",
        "lb",
        "IPv4",
        8080,
        vec![ready("198.19.0.2", "node-b")],
    );
    let lb = |name: &str| {
        patch(
            lb_service(name, "Local"),
            json!({"metadata": {"name": name}}),
        )
    };
    let state = build(vec![lb("lb")], vec![only_remote]);
    let svc = get(&state, "lb");
    assert!(svc.external_policy_local);
    let lb_fe = frontend(svc, FrontendKind::LoadBalancer, "198.18.70.1");
    assert_eq!(
        lb_fe.external,
        Verdict::Drop,
        "no local endpoint: drop, not reject"
    );
    assert_eq!(
        lb_fe.internal,
        Verdict::Forward(EndpointSetKind::Cluster),
        "in-cluster uses Cluster"
    );
    assert!(lb_fe.preserve_source);
    let np_fe = frontend(svc, FrontendKind::NodePort, "198.18.0.10");
    assert_eq!(np_fe.external, Verdict::Drop);
    let cip = frontend(svc, FrontendKind::ClusterIp, "198.18.100.30");
    assert_eq!(cip.external, Verdict::Forward(EndpointSetKind::Cluster));
    assert!(!cip.preserve_source);

    let with_local = slice_json(
        "lb-a",
        "lb",
        "IPv4",
        8080,
        vec![ready("198.19.0.1", NODE), ready("198.19.0.2", "node-b")],
    );
    let state = build(vec![lb("lb")], vec![with_local]);
    let svc = get(&state, "lb");
    assert_eq!(
        frontend(svc, FrontendKind::LoadBalancer, "198.18.70.1").external,
        Verdict::Forward(EndpointSetKind::Local)
    );
    assert_eq!(local_addrs(svc), [ip("198.19.0.1")]);
}

#[test]
fn rule_14_internal_traffic_policy_local() {
    let svc = patch(
        service_json("web", "198.18.100.1"),
        json!({"spec": {"internalTrafficPolicy": "Local"}}),
    );
    let state = build(
        vec![svc.clone()],
        vec![web_slice(vec![ready("198.19.0.2", "node-b")])],
    );
    let fe = &get(&state, "web").ports[0].frontends[0];
    // The Service has a usable endpoint, just none on this node: kube-proxy drops (its
    // "has no local endpoints" rule); reject is only for no usable endpoint anywhere.
    assert_eq!(fe.internal, Verdict::Drop);
    assert_eq!(fe.external, Verdict::Drop);
    let state = build(vec![svc.clone()], vec![web_slice(vec![])]);
    assert_eq!(
        get(&state, "web").ports[0].frontends[0].internal,
        Verdict::Reject
    );
    let state = build(
        vec![svc],
        vec![web_slice(vec![
            ready("198.19.0.1", NODE),
            ready("198.19.0.2", "node-b"),
        ])],
    );
    let web = get(&state, "web");
    assert_eq!(
        web.ports[0].frontends[0].internal,
        Verdict::Forward(EndpointSetKind::Local)
    );
    assert_eq!(local_addrs(web), [ip("198.19.0.1")]);

    // eTP Cluster + iTP Local on an externally reachable Service: the node port still has
    // the Cluster set, so a pod here with no local endpoint is dropped, not rejected.
    let np = patch(
        node_port_service(),
        json!({"spec": {"internalTrafficPolicy": "Local"}}),
    );
    let s = slice_json(
        "np-a",
        "np",
        "IPv4",
        8080,
        vec![ready("198.19.0.2", "node-b")],
    );
    let state = build(vec![np], vec![s]);
    let np = get(&state, "np");
    assert_eq!(
        frontend(np, FrontendKind::ClusterIp, "198.18.100.20").internal,
        Verdict::Drop
    );
    assert_eq!(
        frontend(np, FrontendKind::NodePort, "198.18.0.10").external,
        Verdict::Forward(EndpointSetKind::Cluster)
    );
    // ... and this node's pods reach the node port over the Cluster set too: the internal
    // policy never applies to it.
    assert_eq!(
        frontend(np, FrontendKind::NodePort, "198.18.0.10").internal,
        Verdict::Forward(EndpointSetKind::Cluster)
    );
}

#[test]
fn rule_14_internal_policy_never_applies_to_external_frontends() {
    // Both policies Local, endpoints only on another node: from outside, the node port and
    // the LB IP drop (rule 13); from this node's pods, the ClusterIP drops (rule 14) while
    // the node port and the LB IP take the short cut to the Cluster set.
    let svc = patch(
        lb_service("lb", "Local"),
        json!({"spec": {"internalTrafficPolicy": "Local"}}),
    );
    let s = slice_json(
        "lb-a",
        "lb",
        "IPv4",
        8080,
        vec![ready("198.19.0.2", "node-b")],
    );
    let state = build(vec![svc], vec![s]);
    let lb = get(&state, "lb");
    let cip = frontend(lb, FrontendKind::ClusterIp, "198.18.100.30");
    assert_eq!((cip.external, cip.internal), (Verdict::Drop, Verdict::Drop));
    for (kind, address) in [
        (FrontendKind::NodePort, "198.18.0.10"),
        (FrontendKind::LoadBalancer, "198.18.70.1"),
    ] {
        let fe = frontend(lb, kind, address);
        assert_eq!(fe.external, Verdict::Drop, "{kind:?} from outside");
        assert_eq!(
            fe.internal,
            Verdict::Forward(EndpointSetKind::Cluster),
            "{kind:?} from inside"
        );
    }
}

#[test]
fn rule_15_health_check_node_port_counts_local_ready_endpoints() {
    let svc = patch(
        lb_service("lb", "Local"),
        json!({"spec": {"healthCheckNodePort": 32000}}),
    );
    let s = slice_json(
        "lb-a",
        "lb",
        "IPv4",
        8080,
        vec![
            ready("198.19.0.1", NODE),
            ready("198.19.0.2", "node-b"),
            endpoint("198.19.0.3", NODE, false, true, true),
        ],
    );
    let state = build(vec![svc.clone()], vec![s]);
    let checks = state.health_checks();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].port, 32000);
    assert_eq!(checks[0].service.to_string(), "default/lb");
    assert_eq!(checks[0].local_ready_endpoints, 1);
    // All local pods terminating: still serving through the fallback, but the check fails.
    let s = slice_json(
        "lb-a",
        "lb",
        "IPv4",
        8080,
        vec![endpoint("198.19.0.3", NODE, false, true, true)],
    );
    let state = build(vec![svc], vec![s]);
    assert_eq!(state.health_checks()[0].local_ready_endpoints, 0);
    assert_eq!(local_addrs(get(&state, "lb")), [ip("198.19.0.3")]);
    // eTP Cluster: no health check server.
    let cluster = patch(
        lb_service("lb", "Cluster"),
        json!({"spec": {"healthCheckNodePort": 32000}}),
    );
    assert!(build(vec![cluster], vec![]).health_checks().is_empty());
}

fn hinted(address: &str, node: &str, zones: &[&str], nodes: Option<&[&str]>) -> serde_json::Value {
    let mut ep = ready(address, node);
    let mut hints =
        json!({"forZones": zones.iter().map(|z| json!({"name": z})).collect::<Vec<_>>()});
    if let Some(nodes) = nodes {
        hints["forNodes"] = json!(nodes.iter().map(|n| json!({"name": n})).collect::<Vec<_>>());
    }
    ep["hints"] = hints;
    ep
}

fn topology(svc: &KubeService) -> TopologyMode {
    svc.ports[0].endpoints[&IpFamily::V4].topology
}

#[test]
fn rule_16_topology_uses_zone_hints_when_complete() {
    let svc = patch(
        service_json("web", "198.18.100.1"),
        json!({"spec": {"trafficDistribution": "PreferClose"}}),
    );
    let eps = vec![
        hinted("198.19.0.1", "node-b", &["zone-a"], None),
        hinted("198.19.0.2", "node-c", &["zone-b"], None),
    ];
    let state = build(vec![svc.clone()], vec![web_slice(eps.clone())]);
    let web = get(&state, "web");
    assert_eq!(topology(web), TopologyMode::PreferSameZone);
    assert_eq!(cluster_addrs(web, IpFamily::V4), [ip("198.19.0.1")]);

    // One ready endpoint without hints: hints are ignored.
    let state = build(
        vec![svc.clone()],
        vec![web_slice(vec![
            eps[0].clone(),
            eps[1].clone(),
            ready("198.19.0.3", "node-d"),
        ])],
    );
    assert_eq!(cluster_addrs(get(&state, "web"), IpFamily::V4).len(), 3);
    assert_eq!(topology(get(&state, "web")), TopologyMode::None);
    // ... but a not-ready endpoint without hints does not count.
    let state = build(
        vec![svc.clone()],
        vec![web_slice(vec![
            eps[0].clone(),
            eps[1].clone(),
            endpoint("198.19.0.3", "node-d", false, false, false),
        ])],
    );
    assert_eq!(
        cluster_addrs(get(&state, "web"), IpFamily::V4),
        [ip("198.19.0.1")]
    );
    // No hint for this zone: ignored.
    let state = build(
        vec![svc],
        vec![web_slice(vec![hinted(
            "198.19.0.2",
            "node-c",
            &["zone-b"],
            None,
        )])],
    );
    assert_eq!(
        cluster_addrs(get(&state, "web"), IpFamily::V4),
        [ip("198.19.0.2")]
    );
}

#[test]
fn rule_16_hints_are_followed_whatever_the_service_asks() {
    // kube-proxy reads only the hints: a Service without trafficDistribution, with the old
    // annotation set to "disabled", or asking for PreferSameNode while only zone hints
    // exist, is narrowed all the same (the model once required trafficDistribution).
    let eps = vec![
        hinted("198.19.0.1", "node-b", &["zone-a"], None),
        hinted("198.19.0.2", "node-c", &["zone-b"], None),
    ];
    let plain = service_json("web", "198.18.100.1");
    let disabled = patch(
        plain.clone(),
        json!({"metadata": {"annotations": {"service.kubernetes.io/topology-mode": "disabled",
                                            "service.kubernetes.io/topology-aware-hints": "disabled"}}}),
    );
    let same_node = patch(
        plain.clone(),
        json!({"spec": {"trafficDistribution": "PreferSameNode"}}),
    );
    for svc in [plain, disabled, same_node] {
        let state = build(vec![svc], vec![web_slice(eps.clone())]);
        let web = get(&state, "web");
        assert_eq!(topology(web), TopologyMode::PreferSameZone);
        assert_eq!(cluster_addrs(web, IpFamily::V4), [ip("198.19.0.1")]);
    }
}

#[test]
fn rule_16_node_hints_before_zone_hints_whatever_the_service_asks() {
    let eps = vec![
        hinted("198.19.0.1", NODE, &["zone-a"], Some(&[NODE])),
        hinted("198.19.0.2", "node-b", &["zone-a"], Some(&["node-b"])),
        hinted("198.19.0.3", "node-c", &["zone-b"], Some(&["node-c"])),
    ];
    for svc in [
        service_json("web", "198.18.100.1"),
        patch(
            service_json("web", "198.18.100.1"),
            json!({"spec": {"trafficDistribution": "PreferSameZone"}}),
        ),
    ] {
        let state = build(vec![svc.clone()], vec![web_slice(eps.clone())]);
        let web = get(&state, "web");
        assert_eq!(topology(web), TopologyMode::PreferSameNode);
        assert_eq!(cluster_addrs(web, IpFamily::V4), [ip("198.19.0.1")]);
        // No endpoint for this node: fall back to the zone hints.
        let state = build(vec![svc], vec![web_slice(eps[1..].to_vec())]);
        let web = get(&state, "web");
        assert_eq!(topology(web), TopologyMode::PreferSameZone);
        assert_eq!(cluster_addrs(web, IpFamily::V4), [ip("198.19.0.2")]);
    }
}

#[test]
fn rule_16_node_without_zone_ignores_zone_hints_and_local_set_is_not_narrowed() {
    let eps = vec![
        hinted("198.19.0.1", NODE, &["zone-b"], None),
        hinted("198.19.0.2", "node-b", &["zone-a"], None),
    ];
    let mut no_zone = default_node();
    no_zone["metadata"]["labels"] = json!({"kubernetes.io/hostname": NODE});
    let state = build_with(
        vec![service_json("web", "198.18.100.1")],
        vec![web_slice(eps.clone())],
        Some(no_zone),
        &cfg(),
    );
    let web = get(&state, "web");
    assert_eq!(topology(web), TopologyMode::None);
    assert_eq!(cluster_addrs(web, IpFamily::V4).len(), 2);
    // With a zone, the Cluster set is narrowed but the Local set keeps this node's
    // endpoint hinted for another zone.
    let state = build(
        vec![service_json("web", "198.18.100.1")],
        vec![web_slice(eps)],
    );
    let web = get(&state, "web");
    assert_eq!(cluster_addrs(web, IpFamily::V4), [ip("198.19.0.2")]);
    assert_eq!(local_addrs(web), [ip("198.19.0.1")]);
}

#[test]
fn rule_17_session_affinity_client_ip_with_timeout() {
    let default_timeout = patch(
        service_json("a", "198.18.100.1"),
        json!({"spec": {"sessionAffinity": "ClientIP"}}),
    );
    let explicit = patch(
        service_json("b", "198.18.100.2"),
        json!({"spec": {"sessionAffinity": "ClientIP",
                        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}}),
    );
    let none = service_json("c", "198.18.100.3");
    let state = build(vec![default_timeout, explicit, none], vec![]);
    assert_eq!(get(&state, "a").session_affinity_seconds, Some(10_800));
    assert_eq!(get(&state, "b").session_affinity_seconds, Some(600));
    assert_eq!(get(&state, "c").session_affinity_seconds, None);
}

#[test]
fn rule_18_load_balancer_source_ranges_per_family() {
    let svc = patch(
        lb_service("lb", "Cluster"),
        json!({"spec": {"loadBalancerSourceRanges": ["198.51.100.0/24", " 203.0.113.7/32", "2001:db8:ff::/48"]}}),
    );
    let state = build(vec![svc], vec![]);
    let svc = get(&state, "lb");
    let lb = frontend(svc, FrontendKind::LoadBalancer, "198.18.70.1");
    let ranges: Vec<String> = lb.source_ranges.iter().map(|c| c.to_string()).collect();
    assert_eq!(ranges, ["198.51.100.0/24", "203.0.113.7/32"]);
    assert!(lb.source_ranges[0].contains(ip("198.51.100.200")));
    assert!(!lb
        .source_ranges
        .iter()
        .any(|c| c.contains(ip("198.51.101.1"))));
    // Only LB frontends are filtered.
    assert!(frontend(svc, FrontendKind::NodePort, "198.18.0.10")
        .source_ranges
        .is_empty());
    // No ranges: every source allowed.
    let state = build(vec![lb_service("lb", "Cluster")], vec![]);
    assert!(
        frontend(get(&state, "lb"), FrontendKind::LoadBalancer, "198.18.70.1")
            .source_ranges
            .is_empty()
    );
}

#[test]
fn rule_18_ranges_holding_the_node_also_accept_its_load_balancer_ips() {
    // The node (198.18.0.10) is inside a range: its own requests to the VIP, which leave
    // with the VIP as source, are accepted too; the other family gains nothing.
    let svc = patch(
        lb_service("lb", "Cluster"),
        json!({"spec": {"loadBalancerSourceRanges": ["198.18.0.0/24", "2001:db8:ff::/48"]}}),
    );
    let state = build(vec![svc], vec![]);
    let lb = frontend(get(&state, "lb"), FrontendKind::LoadBalancer, "198.18.70.1");
    let ranges: Vec<String> = lb.source_ranges.iter().map(|c| c.to_string()).collect();
    assert_eq!(ranges, ["198.18.0.0/24", "198.18.70.1/32"]);
    // A range without the node: the VIP is not added.
    let svc = patch(
        lb_service("lb", "Cluster"),
        json!({"spec": {"loadBalancerSourceRanges": ["198.51.100.0/24"]}}),
    );
    let state = build(vec![svc], vec![]);
    let lb = frontend(get(&state, "lb"), FrontendKind::LoadBalancer, "198.18.70.1");
    assert_eq!(lb.source_ranges.len(), 1);
}

#[test]
fn rule_19_flows_keep_serving_endpoints_and_stale_udp_is_reported() {
    let svc = patch(
        service_json("dns", "198.18.100.10"),
        json!({"spec": {"ports": [{"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53}]}}),
    );
    let s = |eps| {
        patch(
            slice_json("dns-a", "dns", "IPv4", 53, eps),
            json!({"ports": [{"name": "dns", "protocol": "UDP", "port": 53}]}),
        )
    };
    let before = build(
        vec![svc.clone()],
        vec![s(vec![
            ready("198.19.0.1", "node-b"),
            ready("198.19.0.2", "node-b"),
        ])],
    );
    // .1 starts terminating while another endpoint is ready: it leaves the set for new flows
    // but stays serving, so its flows are kept; .2 is gone: its flows must be cleared.
    let after = build(
        vec![svc],
        vec![s(vec![
            endpoint("198.19.0.1", "node-b", false, true, true),
            ready("198.19.0.3", "node-b"),
        ])],
    );
    let stale = stale_udp_endpoints(&before, &after);
    assert_eq!(stale, [(ip("198.18.100.10"), 53, ip("198.19.0.2"))]);
    let dns = get(&after, "dns");
    assert_eq!(cluster_addrs(dns, IpFamily::V4), [ip("198.19.0.3")]);
    let kept: Vec<IpAddr> = dns.ports[0].endpoints[&IpFamily::V4]
        .kept_for_flows
        .iter()
        .map(|e| e.address)
        .collect();
    assert_eq!(kept, [ip("198.19.0.1")]);
}

#[test]
fn rule_20_hairpin_local_endpoint_stays_in_both_sets() {
    // A pod on this node calling its own Service must be able to land on itself: the rules
    // never exclude the caller (the datapath handles the hairpin return path).
    let state = build(
        vec![service_json("web", "198.18.100.1")],
        vec![web_slice(vec![ready("198.19.0.1", NODE)])],
    );
    let web = get(&state, "web");
    assert_eq!(cluster_addrs(web, IpFamily::V4), [ip("198.19.0.1")]);
    assert_eq!(local_addrs(web), [ip("198.19.0.1")]);
    assert!(web.ports[0].endpoints_for(IpFamily::V4, EndpointSetKind::Cluster)[0].local);
}

#[test]
fn rule_21_node_being_deleted_or_tainted_is_not_eligible() {
    let state = build(vec![], vec![]);
    assert!(state.node.eligible);
    let tainted = patch(
        default_node(),
        json!({"spec": {"taints": [{"key": "ToBeDeletedByClusterAutoscaler", "value": "1714557600", "effect": "NoSchedule"}]}}),
    );
    let state = build_with(vec![], vec![], Some(tainted), &cfg());
    assert!(!state.node.eligible);
    let deleting = patch(
        default_node(),
        json!({"metadata": {"deletionTimestamp": "2026-05-01T10:05:00Z"}}),
    );
    let state = build_with(vec![], vec![], Some(deleting), &cfg());
    assert!(!state.node.eligible);
}

#[test]
fn rule_22_dual_stack_every_rule_per_family() {
    let svc = patch(
        service_json("web", "198.18.100.1"),
        json!({"spec": {"clusterIPs": ["198.18.100.1", "2001:db8:100::1"],
                        "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"}}),
    );
    let v4 = slice_json(
        "web-v4",
        "web",
        "IPv4",
        8080,
        vec![ready("198.19.0.1", "node-b")],
    );
    // IPv6 has only a draining endpoint: the v6 fallback applies on its own.
    let v6 = slice_json(
        "web-v6",
        "web",
        "IPv6",
        8080,
        vec![endpoint("2001:db8:19::1", "node-b", false, true, true)],
    );
    let state = build(vec![svc.clone()], vec![v4.clone(), v6]);
    let web = get(&state, "web");
    assert_eq!(cluster_addrs(web, IpFamily::V4), [ip("198.19.0.1")]);
    assert_eq!(cluster_addrs(web, IpFamily::V6), [ip("2001:db8:19::1")]);
    // No v6 endpoints at all: v6 ClusterIP rejects while v4 forwards.
    let state = build(vec![svc], vec![v4]);
    let web = get(&state, "web");
    let verdicts: Vec<Verdict> = web.ports[0].frontends.iter().map(|f| f.external).collect();
    assert_eq!(
        verdicts,
        [Verdict::Forward(EndpointSetKind::Cluster), Verdict::Reject]
    );
}
