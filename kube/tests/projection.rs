//! The projection onto the datapath's two scopes: per rule, which endpoints the internal
//! scope (this node's pods and processes, the socket programs) balances over and with
//! which verdict, and the socket side's target ports. Then the incremental projection
//! ([`Projector`]) against the whole one ([`to_datapath`]): on random sequences of Service
//! and EndpointSlice changes, fed only the Services that changed, it must give the same
//! datapath state and report, and name exactly the frontends whose spec changed.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use common::{build, endpoint, patch, ready, service_json, slice_json, NODE};
use lb_kube::{
    projection::{to_datapath, Projector},
    rules::{KubeDesiredState, ServiceName},
    socket_side::socket_targets,
};
use lb_model::{DesiredState, Frontend, Protocol, Scope, ServiceSpec, Settings};
use serde_json::{json, Value};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The spec of `address:port/tcp` in `scope`.
fn spec<'a>(desired: &'a DesiredState, address: &str, port: u16, scope: Scope) -> &'a ServiceSpec {
    let frontend = Frontend {
        vip: ip(address),
        port,
        protocol: Protocol::Tcp,
        scope,
    };
    desired
        .services
        .get(&frontend)
        .unwrap_or_else(|| panic!("{frontend} is not programmed"))
}

fn backends(spec: &ServiceSpec) -> Vec<IpAddr> {
    spec.backends.iter().map(|b| b.address).collect()
}

/// A Service `web` on 198.18.100.1:80 (target 8080) with `spec` patched in, and its
/// endpoints in one slice.
fn web(spec: Value, endpoints: Vec<Value>) -> KubeDesiredState {
    let svc = patch(service_json("web", "198.18.100.1"), json!({ "spec": spec }));
    build(
        vec![svc],
        vec![slice_json("web-a", "web", "IPv4", 8080, endpoints)],
    )
}

fn local_and_remote() -> Vec<Value> {
    vec![ready("198.19.0.1", NODE), ready("198.19.0.2", "node-b")]
}

#[test]
fn rule_14_internal_scope_cluster_ip_cluster_policy_uses_the_cluster_set() {
    let (desired, _) = to_datapath(&web(json!({}), local_and_remote()), Settings::default());
    let internal = spec(&desired, "198.18.100.1", 80, Scope::Internal);
    assert_eq!(backends(internal), [ip("198.19.0.1"), ip("198.19.0.2")]);
    assert!(!internal.reject);
    // The same set as the external scope: one shared table.
    assert_eq!(
        internal,
        spec(&desired, "198.18.100.1", 80, Scope::External)
    );
}

#[test]
fn rule_14_internal_scope_cluster_ip_local_policy_uses_this_nodes_endpoints() {
    let state = web(
        json!({"internalTrafficPolicy": "Local"}),
        local_and_remote(),
    );
    let (desired, _) = to_datapath(&state, Settings::default());
    let internal = spec(&desired, "198.18.100.1", 80, Scope::Internal);
    assert_eq!(backends(internal), [ip("198.19.0.1")]);
    assert_eq!(
        internal.table_size,
        Settings::default().table_size_for(1),
        "the table size policy of the external scope"
    );
}

#[test]
fn rule_14_internal_scope_cluster_ip_local_policy_without_local_endpoints_drops() {
    let state = web(
        json!({"internalTrafficPolicy": "Local"}),
        vec![ready("198.19.0.2", "node-b")],
    );
    let (desired, _) = to_datapath(&state, Settings::default());
    let internal = spec(&desired, "198.18.100.1", 80, Scope::Internal);
    assert!(internal.backends.is_empty());
    assert!(
        !internal.reject,
        "endpoints exist elsewhere: drop, not reject"
    );
}

#[test]
fn rule_13_internal_scope_node_port_with_local_policies_uses_the_cluster_set() {
    let svc = patch(
        service_json("np", "198.18.100.20"),
        json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local",
                        "internalTrafficPolicy": "Local",
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80,
                                   "targetPort": 8080, "nodePort": 30080}]}}),
    );
    let remote = slice_json(
        "np-a",
        "np",
        "IPv4",
        8080,
        vec![ready("198.19.0.2", "node-b")],
    );
    let (desired, _) = to_datapath(&build(vec![svc], vec![remote]), Settings::default());
    // From outside: no local endpoint, drop (rule 13). From this node: the Cluster set.
    let node_port = |scope| spec(&desired, "198.18.0.10", 30080, scope);
    assert!(node_port(Scope::External).backends.is_empty());
    assert_eq!(backends(node_port(Scope::Internal)), [ip("198.19.0.2")]);
    assert!(spec(&desired, "198.18.100.20", 80, Scope::Internal)
        .backends
        .is_empty());
}

#[test]
fn rule_09_without_endpoints_rejects_in_both_scopes() {
    let (desired, report) = to_datapath(&web(json!({}), vec![]), Settings::default());
    let internal = spec(&desired, "198.18.100.1", 80, Scope::Internal);
    assert!(internal.backends.is_empty());
    assert!(internal.reject, "the socket programs refuse");
    let external = spec(&desired, "198.18.100.1", 80, Scope::External);
    assert!(external.reject, "the XDP balancer answers port unreachable");
    assert!(report.unsupported.is_empty(), "{:?}", report.unsupported);
    assert_eq!(report.programmed, 1, "one frontend, in both scopes");
}

#[test]
fn rule_09_cluster_ips_reject_undefined_ports() {
    let (desired, _) = to_datapath(&web(json!({}), vec![]), Settings::default());
    assert_eq!(
        desired.rejecting.iter().copied().collect::<Vec<_>>(),
        [ip("198.18.100.1")]
    );
}

#[test]
fn rule_04_socket_targets_list_each_internal_endpoints_target_port() {
    // Named target port mid-rollout: the endpoints listen on different numbers.
    let svc = patch(
        service_json("web", "198.18.100.1"),
        json!({"spec": {"internalTrafficPolicy": "Local",
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web"}]}}),
    );
    let old = slice_json(
        "web-a",
        "web",
        "IPv4",
        8080,
        vec![ready("198.19.0.1", NODE)],
    );
    let new = slice_json(
        "web-b",
        "web",
        "IPv4",
        9090,
        vec![ready("198.19.0.3", NODE), ready("198.19.0.2", "node-b")],
    );
    let targets: Vec<(IpAddr, u16)> = socket_targets(&build(vec![svc], vec![old, new]))
        .into_iter()
        .map(|t| {
            assert_eq!(t.frontend.scope, Scope::Internal);
            assert_eq!((t.frontend.vip, t.frontend.port), (ip("198.18.100.1"), 80));
            (t.endpoint, t.target_port)
        })
        .collect();
    // The internal policy's set only: the remote endpoint is never picked from here.
    assert_eq!(
        targets,
        [(ip("198.19.0.1"), 8080), (ip("198.19.0.3"), 9090)]
    );
}

#[test]
fn socket_targets_follow_the_holder_of_a_frontend_claimed_twice() {
    let a = patch(
        service_json("a", "198.18.100.1"),
        json!({"spec": {"externalIPs": ["198.18.60.1"]}}),
    );
    let b = patch(
        service_json("b", "198.18.100.2"),
        json!({"spec": {"externalIPs": ["198.18.60.1"]}}),
    );
    let a_eps = slice_json("a-x", "a", "IPv4", 8080, vec![ready("198.19.0.1", NODE)]);
    let b_eps = slice_json("b-x", "b", "IPv4", 9090, vec![ready("198.19.0.1", NODE)]);
    let state = build(vec![a, b], vec![a_eps, b_eps]);
    let (desired, _) = to_datapath(&state, Settings::default());
    let targets = socket_targets(&state);
    let shared: Vec<u16> = targets
        .iter()
        .filter(|t| t.frontend.vip == ip("198.18.60.1"))
        .map(|t| t.target_port)
        .collect();
    assert_eq!(shared, [8080], "service a holds the external IP");
    // Every target belongs to a programmed internal frontend.
    assert!(targets
        .iter()
        .all(|t| desired.services.contains_key(&t.frontend)));
}

#[test]
fn external_only_projection_leaves_the_internal_scope_out() {
    let state = web(json!({}), local_and_remote());
    let mut projector = Projector::external_only(Settings::default());
    let name = ServiceName::new("default", "web");
    let changed = projector.update([(&name, state.services.get(&name).map(|s| &**s))]);
    let (whole, _) = to_datapath(&state, Settings::default());
    let external: imbl::OrdMap<Frontend, _> = whole
        .services
        .into_iter()
        .filter(|(f, _)| f.scope == Scope::External)
        .collect();
    assert_eq!(projector.desired().services, external);
    assert!(changed.iter().all(|f| f.scope == Scope::External));
}

/// xorshift64*: deterministic, so a failure is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A few addresses, ports and nodes, so Services collide on frontends (conflicts), need
/// port translation, have no endpoints, or none on this node.
fn random_service(rng: &mut Rng, name: &str) -> (Value, Value) {
    const IPS: [&str; 3] = ["198.18.1.1", "198.18.1.2", "198.18.1.3"];
    let ip = *rng.pick(&IPS);
    let port = *rng.pick(&[80, 81]);
    let target = if rng.below(4) == 0 { 8080 } else { port };
    let mut svc = patch(
        service_json(name, ip),
        json!({"spec": {"ports": [{"name": "http", "protocol": "TCP", "port": port, "targetPort": target}]}}),
    );
    if rng.below(3) == 0 {
        svc = patch(svc, json!({"spec": {"externalIPs": [*rng.pick(&IPS)]}}));
    }
    // The internal scope differs from the external one only under a Local policy.
    if rng.below(3) == 0 {
        svc = patch(svc, json!({"spec": {"internalTrafficPolicy": "Local"}}));
    }
    let endpoints: Vec<Value> = (0..rng.below(4))
        .map(|_| {
            let addr = format!("198.19.0.{}", 1 + rng.below(5));
            let ready = rng.below(4) != 0;
            let node = *rng.pick(&[NODE, "node-b"]);
            endpoint(&addr, node, ready, ready, false)
        })
        .collect();
    let slice = slice_json(&format!("{name}-x"), name, "IPv4", target, endpoints);
    (svc, slice)
}

#[test]
fn incremental_projection_equals_the_whole_one() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut objects: BTreeMap<String, (Value, Value)> = BTreeMap::new();
        let mut projector = Projector::new(Settings::default());
        let mut before = to_datapath(&build(vec![], vec![]), Settings::default()).0;
        for step in 0..15 {
            let mut touched = BTreeSet::new();
            for _ in 0..1 + rng.below(3) {
                let name = format!("s{}", rng.below(6));
                if rng.below(5) == 0 {
                    objects.remove(&name);
                } else {
                    objects.insert(name.clone(), random_service(&mut rng, &name));
                }
                touched.insert(ServiceName::new("default", name));
            }
            let state = build(
                objects.values().map(|(s, _)| s.clone()).collect(),
                objects.values().map(|(_, e)| e.clone()).collect(),
            );
            let changed = projector.update(
                touched
                    .iter()
                    .map(|name| (name, state.services.get(name).map(|s| &**s))),
            );
            let (desired, report) = to_datapath(&state, Settings::default());
            let what = format!("seed {seed} step {step}");
            assert_eq!(**projector.desired(), desired, "{what}: datapath state");
            assert_eq!(**projector.report(), report, "{what}: report");
            let expected: BTreeSet<Frontend> = before
                .services
                .keys()
                .chain(desired.services.keys())
                .filter(|f| before.services.get(*f) != desired.services.get(*f))
                .copied()
                .collect();
            assert_eq!(changed, expected, "{what}: changed frontends");
            before = desired;
        }
    }
}

#[test]
fn rule_17_session_affinity_timeout_is_programmed_in_both_scopes() {
    let state = web(
        json!({"sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}),
        local_and_remote(),
    );
    let (desired, report) = to_datapath(&state, Settings::default());
    for scope in [Scope::External, Scope::Internal] {
        assert_eq!(
            spec(&desired, "198.18.100.1", 80, scope).affinity_timeout_s,
            Some(30),
            "{scope:?}"
        );
    }
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let (plain, _) = to_datapath(&web(json!({}), local_and_remote()), Settings::default());
    assert_eq!(
        spec(&plain, "198.18.100.1", 80, Scope::External).affinity_timeout_s,
        None
    );
}
