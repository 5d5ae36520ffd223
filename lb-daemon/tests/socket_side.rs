//! The daemon's side of the socket programs, with the programs loaded against the
//! balancer's maps but attached to no cgroup: internal-scope frontends written by the sync
//! engine, then listed and explained by scope; target ports written make-before-break by
//! `SocketMaps`.

mod support;

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use lb_daemon::{
    inspect::{self, Tuple},
    loader,
    maps::{BalancerMaps, SocketMaps},
    sync::{DatapathParams, SyncEngine},
};
use lb_model::{BackendSpec, DesiredState, Frontend, Protocol, Scope, ServiceSpec, SocketTarget};
use support::{require_root, PinDir};

const PARAMS: DatapathParams = DatapathParams {
    encap_source: std::net::Ipv4Addr::new(198, 18, 0, 2),
    encap_source6: None,
    nexthop_ttl: std::time::Duration::from_secs(1),
    icmp_limit: lb_daemon::sync::IcmpLimit::DEFAULT,
    new_flow_budget: lb_daemon::sync::NewFlowBudget::DEFAULT,
};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn frontend(vip: &str, scope: Scope) -> Frontend {
    Frontend {
        vip: ip(vip),
        port: 80,
        protocol: Protocol::Tcp,
        scope,
    }
}

fn spec(name: &str, backends: &[&str], reject: bool) -> Arc<ServiceSpec> {
    Arc::new(ServiceSpec {
        name: name.to_owned(),
        backends: backends
            .iter()
            .map(|a| BackendSpec {
                address: ip(a),
                weight: 1,
            })
            .collect(),
        table_size: 251,
        reject,
        source_ranges: Vec::new(),
        affinity_timeout_s: None,
    })
}

fn target(vip: &str, endpoint: &str, target_port: u16) -> SocketTarget {
    SocketTarget {
        frontend: frontend(vip, Scope::Internal),
        endpoint: ip(endpoint),
        target_port,
    }
}

struct Fixture {
    engine: SyncEngine,
    socket: SocketMaps,
    _programs: (aya::Ebpf, aya::Ebpf),
    // Dropped last: removes the pins.
    pin: PinDir,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        let pin = PinDir::new(tag);
        let balancer = loader::load_balancer(&pin.path).expect("load balancer");
        let socket_programs = loader::load_socket(&pin.path).expect("load socket programs");
        let maps = BalancerMaps::open(&pin.path).expect("open maps");
        Self {
            engine: SyncEngine::adopt(maps, &PARAMS).unwrap(),
            socket: SocketMaps::open(&pin.path).expect("open socket maps"),
            _programs: (balancer, socket_programs),
            pin,
        }
    }
}

fn tuple(dst: &str) -> Tuple {
    format!("tcp 10.244.1.7:40000 {dst}:80").parse().unwrap()
}

#[test]
fn internal_frontends_are_listed_and_explained_by_scope() {
    if !require_root("socket side") {
        return;
    }
    let mut f = Fixture::new("sock-list");
    let mut services = BTreeMap::new();
    // A ClusterIP with iTP Local: the network sees both endpoints, this node's pods one.
    let both = ["198.19.0.1", "198.19.0.2"];
    services.insert(
        frontend("198.18.100.1", Scope::External),
        spec("web", &both, false),
    );
    services.insert(
        frontend("198.18.100.1", Scope::Internal),
        spec("web", &["198.19.0.1"], true),
    );
    // No endpoint anywhere: refused; none usable from here: dropped.
    services.insert(
        frontend("198.18.100.2", Scope::Internal),
        spec("gone", &[], true),
    );
    services.insert(
        frontend("198.18.100.3", Scope::Internal),
        spec("away", &[], false),
    );
    let desired = DesiredState {
        rejecting: Default::default(),
        services: services.into(),
        settings: Default::default(),
    };
    f.engine.apply(&desired).unwrap();
    f.socket
        .set_targets(&[target("198.18.100.1", "198.19.0.1", 8080)])
        .unwrap();

    let listed: Vec<(String, Scope, bool, usize)> = inspect::list_services(f.engine.maps())
        .unwrap()
        .into_iter()
        .map(|s| (s.frontend, s.scope, s.reject, s.backends.len()))
        .collect();
    assert_eq!(
        listed,
        [
            ("198.18.100.1:80/tcp".into(), Scope::External, false, 2),
            (
                "198.18.100.1:80/tcp (socket)".into(),
                Scope::Internal,
                true,
                1
            ),
            (
                "198.18.100.2:80/tcp (socket)".into(),
                Scope::Internal,
                true,
                0
            ),
            (
                "198.18.100.3:80/tcp (socket)".into(),
                Scope::Internal,
                false,
                0
            ),
        ]
    );

    let targets = f.socket.targets().unwrap();
    let explain = |dst| inspect::socket::explain(f.engine.maps(), &targets, tuple(dst)).unwrap();
    let web = explain("198.18.100.1");
    assert_eq!(web.verdict, "selected");
    let endpoints: Vec<(Option<IpAddr>, u16, u32)> = web
        .endpoints
        .iter()
        .map(|e| (e.address, e.target_port, e.slots))
        .collect();
    assert_eq!(endpoints, [(Some(ip("198.19.0.1")), 8080, 251)]);
    assert_eq!(explain("198.18.100.2").verdict, "reject_no_backend");
    assert_eq!(explain("198.18.100.3").verdict, "drop_no_backend");
    assert_eq!(explain("198.18.100.9").verdict, "pass_not_service");
    // The XDP balancer does not serve an internal-only frontend.
    let from_network = inspect::explain(f.engine.maps(), tuple("198.18.100.2")).unwrap();
    assert_eq!(from_network.verdict, "pass_not_service");
}

#[test]
fn socket_targets_are_written_before_and_pruned_after() {
    if !require_root("socket side") {
        return;
    }
    let mut f = Fixture::new("sock-targets");
    let first = [
        target("198.18.100.1", "198.19.0.1", 8080),
        target("198.18.100.1", "198.19.0.2", 8080),
    ];
    assert_eq!(f.socket.set_targets(&first).unwrap(), 2);
    f.socket.prune_targets().unwrap();
    assert_eq!(f.socket.targets().unwrap(), first);

    // 198.19.0.1 leaves, 198.19.0.2 moves to 9090, 198.19.0.3 arrives.
    let second = [
        target("198.18.100.1", "198.19.0.2", 9090),
        target("198.18.100.1", "198.19.0.3", 8080),
    ];
    assert_eq!(f.socket.set_targets(&second).unwrap(), 2);
    // Until the snapshot is applied, the leaving endpoint keeps its port.
    let mut during = vec![first[0]];
    during.extend(second);
    assert_eq!(f.socket.targets().unwrap(), during);
    assert_eq!(f.socket.prune_targets().unwrap(), 1);
    assert_eq!(f.socket.targets().unwrap(), second);

    // A restarted daemon reads what the map holds and writes nothing new.
    let mut reopened = SocketMaps::open(&f.pin.path).unwrap();
    assert_eq!(reopened.set_targets(&second).unwrap(), 0);
    assert_eq!(reopened.prune_targets().unwrap(), 0);
}
