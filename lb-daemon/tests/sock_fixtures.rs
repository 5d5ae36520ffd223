//! Kernel tests of the socket programs (east-west balancing at `connect()`): real TCP and
//! UDP sockets, opened by `ferrolb-lab sock-probe` in a network namespace and a cgroup of
//! the test's own, against frontends the sync engine programmed as internal (socket)
//! scope. Endpoints listen on loopback addresses in the namespace; the frontends are on
//! no interface at all, so only the socket programs' rewrite can reach them.

mod support;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use aya::maps::{Map, MapData, PerCpuArray};
use lb_common::{map_names, Counter, SockReason};
use lb_daemon::{
    config, loader,
    maps::{BalancerMaps, SocketMaps},
    sync::{DatapathParams, SyncEngine},
};
use lb_lab::{cgroup::LabCgroup, probe::Probe, wait_for};
use lb_model::{DesiredState, Frontend, Protocol, Scope, SocketTarget};
use support::{require_root, PinDir};

const FRONTEND: &str = "198.18.200.1";
const FRONTEND6: &str = "2001:db8:200::1";
/// Frontends with `sessionAffinity: ClientIP` over the same endpoints.
const STICKY: &str = "198.18.200.2";
const STICKY6: &str = "2001:db8:200::2";
const ENDPOINTS: [&str; 3] = ["198.18.1.11", "198.18.1.12", "198.18.1.13"];
const ENDPOINTS6: [&str; 3] = ["2001:db8:1::11", "2001:db8:1::12", "2001:db8:1::13"];
/// Where the endpoints listen.
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
/// A frontend port whose endpoints listen on `TCP_PORT` (a target port).
const TRANSLATED_PORT: u16 = 80;
const REJECT_PORT: u16 = 81;
const DROP_PORT: u16 = 82;
const ECONNREFUSED: i32 = 111;
const EPERM: i32 = 1;

const PARAMS: DatapathParams = DatapathParams {
    encap_source: std::net::Ipv4Addr::new(198, 18, 0, 2),
    encap_source6: None,
    nexthop_ttl: Duration::from_secs(1),
    icmp_limit: lb_daemon::sync::IcmpLimit::DEFAULT,
    new_flow_budget: lb_daemon::sync::NewFlowBudget::DEFAULT,
};

/// The services, as the config file would give them; `desired` makes them internal.
fn config_yaml() -> String {
    let backends = |addrs: &[&str]| {
        let list: Vec<String> = addrs
            .iter()
            .map(|a| format!("{{address: \"{a}\"}}"))
            .collect();
        format!("[{}]", list.join(", "))
    };
    let (v4, v6) = (backends(&ENDPOINTS), backends(&ENDPOINTS6));
    format!(
        "
services:
  - {{name: web, vip: {FRONTEND}, port: {TCP_PORT}, protocol: tcp, backends: {v4}}}
  - {{name: dns, vip: {FRONTEND}, port: {UDP_PORT}, protocol: udp, backends: {v4}}}
  - {{name: translated, vip: {FRONTEND}, port: {TRANSLATED_PORT}, protocol: tcp, backends: {v4}}}
  - {{name: refused, vip: {FRONTEND}, port: {REJECT_PORT}, protocol: tcp, backends: []}}
  - {{name: refused-udp, vip: {FRONTEND}, port: {REJECT_PORT}, protocol: udp, backends: []}}
  - {{name: dropped, vip: {FRONTEND}, port: {DROP_PORT}, protocol: tcp, backends: []}}
  - {{name: web6, vip: \"{FRONTEND6}\", port: {TCP_PORT}, protocol: tcp, backends: {v6}}}
  - {{name: dns6, vip: \"{FRONTEND6}\", port: {UDP_PORT}, protocol: udp, backends: {v6}}}
  - {{name: sticky, vip: {STICKY}, port: {TCP_PORT}, protocol: tcp, backends: {v4},
     session_affinity: {{timeout_seconds: 60}}}}
  - {{name: sticky6, vip: \"{STICKY6}\", port: {TCP_PORT}, protocol: tcp, backends: {v6},
     session_affinity: {{timeout_seconds: 60}}}}
"
    )
}

/// Every service of the config as an internal (socket) frontend; the `refused` ones reject.
fn desired() -> DesiredState {
    let parsed = config::parse(&config_yaml()).expect("config");
    let services = parsed
        .services
        .into_iter()
        .map(|(frontend, mut spec)| {
            let reject = spec.name.starts_with("refused");
            Arc::make_mut(&mut spec).reject = reject;
            (frontend.in_scope(Scope::Internal), spec)
        })
        .collect();
    DesiredState {
        rejecting: Default::default(),
        services,
        settings: parsed.settings,
    }
}

fn frontend(vip: &str, port: u16, protocol: Protocol) -> Frontend {
    Frontend {
        vip: vip.parse().unwrap(),
        port,
        protocol,
        scope: Scope::Internal,
    }
}

/// A network namespace with the endpoints' addresses on its loopback, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create(tag: &str) -> Self {
        lb_lab::remove_stale(tag);
        let netns = Self {
            name: format!("flb{tag}{}", std::process::id()),
        };
        lb_lab::run("ip", &["netns", "add", &netns.name]).expect("ip netns add");
        netns.ip(&["link", "set", "lo", "up"]);
        for addr in ENDPOINTS {
            netns.ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
        }
        for addr in ENDPOINTS6 {
            netns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{addr}/128"),
                "dev",
                "lo",
                "nodad",
            ]);
        }
        netns
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        lb_lab::run("ip", &all).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = lb_lab::run("ip", &["netns", "del", &self.name]);
    }
}

/// Endpoint servers (`ferrolb-lab serve`), killed on drop.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Fixture {
    engine: SyncEngine,
    lab: std::path::PathBuf,
    // Dropped in this order: servers, then the namespace, the cgroup, the pins.
    _servers: Servers,
    netns: Netns,
    cgroup: LabCgroup,
    pin: PinDir,
}

impl Fixture {
    /// The balancer's maps filled by the sync engine, the socket programs attached to a
    /// fresh cgroup, endpoint servers listening in a fresh namespace.
    fn new(tag: &str) -> Self {
        let pin = PinDir::new(tag);
        loader::load_balancer(&pin.path).expect("load the balancer's maps");
        let maps = BalancerMaps::open(&pin.path).expect("open maps");
        let mut engine = SyncEngine::adopt(maps, &PARAMS).expect("adopt");
        engine.apply(&desired()).expect("apply");
        write_target_ports(&pin.path);
        let cgroup = LabCgroup::create(tag, "clients").expect("cgroup");
        let attached = loader::install_socket(&cgroup.path, &pin.path).expect("install");
        assert_eq!(attached, loader::Attachment::New);
        let netns = Netns::create(tag);
        let lab = support::bins().lab;
        let servers = start_servers(&lab, &netns.name);
        Self {
            engine,
            lab,
            _servers: servers,
            netns,
            cgroup,
            pin,
        }
    }

    /// `ferrolb-lab sock-probe` run inside the namespace and the cgroup.
    fn probe(&self, proto: &str, target: &str, count: u32, datagrams: u32) -> Vec<Probe> {
        let (count, datagrams) = (count.to_string(), datagrams.to_string());
        let args = [
            "sock-probe",
            "--proto",
            proto,
            "--target",
            target,
            "--count",
            &count,
            "--datagrams",
            &datagrams,
        ];
        let out = self
            .cgroup
            .command(&self.netns.name, &self.lab, &args)
            .stdin(Stdio::null())
            .output()
            .expect("run sock-probe");
        assert!(
            out.status.success(),
            "sock-probe {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("sock-probe JSON")
    }

    fn sock_counters(&self) -> Vec<u64> {
        let path = self.pin.path.join(map_names::SOCK_STATS);
        let map = Map::from_map_data(MapData::from_pin(path).unwrap()).unwrap();
        let stats: PerCpuArray<MapData, Counter> = map.try_into().unwrap();
        SockReason::ALL
            .iter()
            .map(|r| {
                let per_cpu = stats.get(&(*r as u32), 0).unwrap();
                per_cpu.iter().map(|c| c.packets).sum()
            })
            .collect()
    }

    fn service_packets(&self, frontend: &Frontend) -> u64 {
        let id = self.engine.state().services[frontend].service_id;
        self.engine.maps().service_counter(id).unwrap().packets
    }
}

/// The target port of `translated`: its endpoints listen on `TCP_PORT`.
// TODO(lead): write these through the engine's socket-target writer once it is on main.
/// Every endpoint listens on `TCP_PORT` for the frontend's `TRANSLATED_PORT`: written by
/// the daemon's socket-map writer, as `ferrolb kube` writes them.
fn write_target_ports(pin_dir: &std::path::Path) {
    let frontend = Frontend {
        vip: FRONTEND.parse().unwrap(),
        port: TRANSLATED_PORT,
        protocol: Protocol::Tcp,
        scope: Scope::Internal,
    };
    let targets: Vec<SocketTarget> = ENDPOINTS
        .iter()
        .map(|endpoint| SocketTarget {
            frontend,
            endpoint: endpoint.parse().unwrap(),
            target_port: TCP_PORT,
        })
        .collect();
    let mut maps = SocketMaps::open(pin_dir).unwrap();
    maps.set_targets(&targets).unwrap();
    maps.prune_targets().unwrap();
}

fn start_servers(lab: &std::path::Path, netns: &str) -> Servers {
    let mut servers = Servers(Vec::new());
    for (i, (v4, v6)) in ENDPOINTS.iter().zip(ENDPOINTS6).enumerate() {
        let name = format!("e{}", i + 1);
        for addr in [v4.parse::<IpAddr>().unwrap(), v6.parse().unwrap()] {
            let tcp = SocketAddr::new(addr, TCP_PORT).to_string();
            let udp = SocketAddr::new(addr, UDP_PORT).to_string();
            let child = Command::new("ip")
                .args(["netns", "exec", netns])
                .arg(lab)
                .args(["serve", "--name", &name, "--tcp", &tcp, "--udp", &udp])
                .stdin(Stdio::null())
                .spawn()
                .expect("start a server");
            servers.0.push(child);
        }
    }
    // Reachable directly (from outside the cgroup, so nothing is rewritten).
    for addr in ENDPOINTS.iter().chain(ENDPOINTS6.iter()) {
        let target = SocketAddr::new(addr.parse().unwrap(), TCP_PORT).to_string();
        wait_for(Duration::from_secs(10), "the servers", || {
            let out = Command::new("ip")
                .args(["netns", "exec", netns])
                .arg(lab)
                .args(["sock-probe", "--proto", "tcp", "--target", &target])
                .output()
                .ok()?;
            let probes: Vec<Probe> = serde_json::from_slice(&out.stdout).ok()?;
            probes.first()?.backend.as_ref().map(drop)
        })
        .expect("servers listen");
    }
    servers
}

/// Probes per endpoint name; panics on a probe that failed or saw another peer than
/// `peer`, or (UDP) whose replies came from more than one endpoint.
fn tally(what: &str, probes: &[Probe], peer: &str) -> BTreeMap<String, usize> {
    let peer: SocketAddr = peer.parse().unwrap();
    let mut per = BTreeMap::new();
    for p in probes {
        let backend = p
            .backend
            .clone()
            .unwrap_or_else(|| panic!("{what}: a probe failed: {p:?}"));
        assert_eq!(p.peer, Some(peer), "{what}: the socket's peer: {p:?}");
        assert!(!p.moved, "{what}: one socket, one endpoint: {p:?}");
        *per.entry(backend).or_default() += 1;
    }
    per
}

fn delta(before: &[u64], after: &[u64], reason: SockReason) -> u64 {
    after[reason as usize] - before[reason as usize]
}

#[test]
fn tcp_to_a_frontend_reaches_every_endpoint_and_getpeername_shows_the_frontend() {
    if !require_root("sock_fixtures") {
        return;
    }
    let fx = Fixture::new("sk1");
    let web = frontend(FRONTEND, TCP_PORT, Protocol::Tcp);
    let (counters, service) = (fx.sock_counters(), fx.service_packets(&web));

    let target = format!("{FRONTEND}:{TCP_PORT}");
    let probes = fx.probe("tcp", &target, 300, 1);
    let per = tally("tcp", &probes, &target);
    assert_eq!(per.len(), 3, "every endpoint is used: {per:?}");
    for (name, n) in &per {
        // 100 expected; 60 is far outside chance for Maglev over socket cookies.
        assert!(*n >= 60, "{name} got {n} of 300: {per:?}");
    }

    let after = fx.sock_counters();
    assert_eq!(delta(&counters, &after, SockReason::Selected), 300);
    assert_eq!(delta(&counters, &after, SockReason::Restored), 300);
    assert_eq!(
        fx.service_packets(&web) - service,
        300,
        "per-service counter"
    );

    // A target port: the endpoints listen elsewhere than the frontend's port.
    let target = format!("{FRONTEND}:{TRANSLATED_PORT}");
    let per = tally("target port", &fx.probe("tcp", &target, 30, 1), &target);
    assert_eq!(per.values().sum::<usize>(), 30);

    // IPv6, and IPv4 through a dual-stack socket (an IPv4-mapped address).
    let target = format!("[{FRONTEND6}]:{TCP_PORT}");
    let per = tally("tcp6", &fx.probe("tcp", &target, 60, 1), &target);
    assert_eq!(per.len(), 3, "every IPv6 endpoint is used: {per:?}");
    let target = format!("[::ffff:{FRONTEND}]:{TCP_PORT}");
    let per = tally("v4-mapped", &fx.probe("tcp", &target, 30, 1), &target);
    assert_eq!(per.values().sum::<usize>(), 30);

    // An address that is no frontend is left alone.
    let before = fx.sock_counters();
    let target = format!("{}:{TCP_PORT}", ENDPOINTS[0]);
    let per = tally("direct", &fx.probe("tcp", &target, 1, 1), &target);
    assert_eq!(per.keys().collect::<Vec<_>>(), ["e1"]);
    let after = fx.sock_counters();
    assert_eq!(delta(&before, &after, SockReason::PassNotService), 1);
    assert_eq!(delta(&before, &after, SockReason::PassNotRewritten), 1);
}

#[test]
fn udp_sendto_reaches_endpoints_and_replies_come_from_the_frontend() {
    if !require_root("sock_fixtures") {
        return;
    }
    let fx = Fixture::new("sk2");
    let dns = frontend(FRONTEND, UDP_PORT, Protocol::Udp);
    let (counters, service) = (fx.sock_counters(), fx.service_packets(&dns));

    let target = format!("{FRONTEND}:{UDP_PORT}");
    let probes = fx.probe("udp", &target, 90, 3);
    let per = tally("udp", &probes, &target);
    assert_eq!(per.len(), 3, "every endpoint is used: {per:?}");
    // Every datagram is a selection (a lost one is sent again, so at least).
    let after = fx.sock_counters();
    assert!(delta(&counters, &after, SockReason::Selected) >= 270);
    assert!(delta(&counters, &after, SockReason::Restored) >= 270);
    assert!(fx.service_packets(&dns) - service >= 270);

    let target = format!("[{FRONTEND6}]:{UDP_PORT}");
    let per = tally("udp6", &fx.probe("udp", &target, 60, 2), &target);
    assert_eq!(per.len(), 3, "every IPv6 endpoint is used: {per:?}");
    let target = format!("[::ffff:{FRONTEND}]:{UDP_PORT}");
    let per = tally("udp v4-mapped", &fx.probe("udp", &target, 20, 2), &target);
    assert_eq!(per.values().sum::<usize>(), 20);
}

/// Session affinity at the socket: every connection of the namespace (one client) gets
/// one endpoint where the frontend without affinity spreads them; the namespace keeps it
/// while the endpoint serves, and loses it when the endpoint leaves the service (still
/// serving `web`: the daemon's purge, not the generation, ends the entry).
#[test]
fn sockets_of_one_namespace_keep_one_endpoint_of_an_affine_frontend() {
    if !require_root("sock_fixtures") {
        return;
    }
    let mut fx = Fixture::new("sk-aff");
    for (sticky, endpoints) in [(STICKY, ENDPOINTS), (STICKY6, ENDPOINTS6)] {
        let target = SocketAddr::new(sticky.parse().unwrap(), TCP_PORT).to_string();
        let per = tally("sticky", &fx.probe("tcp", &target, 100, 1), &target);
        assert_eq!(per.len(), 1, "one endpoint for 100 connections: {per:?}");
        let entries = fx.engine.maps().affinity_entries(Scope::Internal).unwrap();
        assert!(
            !entries.is_empty(),
            "the namespace's entry is in LB_SOCK_AFF"
        );

        // The kept endpoint leaves `sticky` (it still serves `web`).
        let kept_name = per.keys().next().unwrap().clone();
        let kept = endpoints[kept_name[1..].parse::<usize>().unwrap() - 1];
        let mut changed = desired();
        let frontend = frontend(sticky, TCP_PORT, Protocol::Tcp);
        let spec = changed.services.get_mut(&frontend).unwrap();
        Arc::make_mut(spec)
            .backends
            .retain(|b| b.address != kept.parse::<IpAddr>().unwrap());
        fx.engine.apply(&changed).expect("apply");
        let per = tally("sticky after", &fx.probe("tcp", &target, 30, 1), &target);
        assert_eq!(per.len(), 1, "still one endpoint: {per:?}");
        assert!(!per.contains_key(&kept_name), "{kept} left: {per:?}");
        fx.engine.apply(&desired()).expect("restore");
    }
}

#[test]
fn a_frontend_without_endpoints_refuses_at_once_or_drops() {
    if !require_root("sock_fixtures") {
        return;
    }
    let fx = Fixture::new("sk3");
    let before = fx.sock_counters();

    let refused = fx.probe("tcp", &format!("{FRONTEND}:{REJECT_PORT}"), 5, 1);
    for p in &refused {
        assert_eq!(p.errno, Some(ECONNREFUSED), "refused: {p:?}");
    }
    let mut micros: Vec<u64> = refused.iter().map(|p| p.call_micros).collect();
    micros.sort_unstable();
    assert!(micros[2] < 10_000, "connect refused in {micros:?} µs");

    for p in fx.probe("udp", &format!("{FRONTEND}:{REJECT_PORT}"), 2, 1) {
        assert_eq!(p.errno, Some(ECONNREFUSED), "sendto refused: {p:?}");
    }
    for p in fx.probe("tcp", &format!("{FRONTEND}:{DROP_PORT}"), 5, 1) {
        assert_eq!(p.errno, Some(EPERM), "dropped: {p:?}");
    }

    let after = fx.sock_counters();
    assert_eq!(delta(&before, &after, SockReason::RejectNoBackend), 7);
    assert_eq!(delta(&before, &after, SockReason::DropNoBackend), 5);
    assert_eq!(delta(&before, &after, SockReason::Selected), 0);
}

#[test]
fn a_restarted_daemon_adopts_the_links_and_cleanup_removes_them() {
    if !require_root("sock_fixtures") {
        return;
    }
    let fx = Fixture::new("sk4");
    let target = format!("{FRONTEND}:{TCP_PORT}");

    // The same cgroup again: the pinned links get the new programs.
    let again = loader::install_socket(&fx.cgroup.path, &fx.pin.path).unwrap();
    assert_eq!(again, loader::Attachment::Replaced);
    let per = tally("after adoption", &fx.probe("tcp", &target, 10, 1), &target);
    assert_eq!(per.values().sum::<usize>(), 10);

    // Another cgroup: the links move there, the first cgroup is served no more.
    let other = LabCgroup::create("sk4", "other").unwrap();
    let moved = loader::install_socket(&other.path, &fx.pin.path).unwrap();
    assert_eq!(moved, loader::Attachment::New);
    let p = &fx.probe("tcp", &target, 1, 1)[0];
    assert!(p.backend.is_none(), "no longer rewritten: {p:?}");

    let removed = loader::uninstall(&fx.pin.path).unwrap();
    for (_, link) in loader::SOCK_LINKS {
        assert!(removed.links.iter().any(|l| l == link), "{link} removed");
    }
    for map in [map_names::SOCK_REVNAT, map_names::SOCK_STATS] {
        assert!(removed.maps.iter().any(|m| m == map), "{map} removed");
    }
}

#[test]
fn a_directory_outside_cgroup2_is_refused() {
    if !require_root("sock_fixtures") {
        return;
    }
    let pin = PinDir::new("sk5");
    let err = loader::install_socket(std::path::Path::new("/tmp"), &pin.path).unwrap_err();
    assert!(
        err.to_string().contains("not a cgroup v2 directory"),
        "{err}"
    );
}
