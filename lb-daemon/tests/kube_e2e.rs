//! The daemon in cluster mode (`ferrolb kube`, a process per node) driven by a fake
//! Kubernetes API server, in network namespaces: Services and EndpointSlices change on the
//! server and real TCP connections from the client to the ClusterIP and to the NodePort
//! must follow them (issue #4).
//!
//! Every node runs the daemon, as the DaemonSet does: the LB node balances (XDP, IPIP DSR),
//! each backend node decapsulates what is sent to its endpoints and translates it to the
//! endpoint's address and target port (tc ingress), and restores the frontend as the
//! source of the replies (tc egress). The endpoints listen on the target port only, on
//! their own address: nothing answers unless the translation happened.
//!
//! The fake server runs on a thread inside each node's namespace (one shared object
//! store), so each daemon reaches it on its loopback; the test keeps a handle to change
//! the objects.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use lb_kube::fake_api::{
    enter_netns,
    objects::{node_json, patch, ready, service_json, slice_json, terminating},
    FakeApi, NetnsServer, Resource,
};
use lb_lab::{traffic::FlowResult, wait_for, Binaries, Lab, LB_ADDR, VIP};
use serde_json::{json, Value};
use support::{bins, require_root, ScratchDir};

const SERVICE_PORT: u16 = 8080;
/// The endpoints' port: differs from the service port, so every frontend needs translation.
const TARGET_PORT: u16 = 9090;
/// The lab's name servers also answer UDP; the Service defines TCP only.
const LAB_UDP_PORT: u16 = 5353;
const NODE_PORT: u16 = 30080;
const NODE_NAME: &str = "lb-node";
const SERVICE: &str = "web";
const SLICE: &str = "web-7xk2p";
const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
// Only the daemons and the fake servers (on ephemeral ports) listen inside the namespaces
// the test made, so fixed ports cannot collide with anything.
const HEALTH_ADDR: &str = "127.0.0.1:10256";
const METRICS_ADDR: &str = "127.0.0.1:10249";
/// Longer than the lab's 5 s connect timeout, so a slow machine is not mistaken for a bug.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// A NodePort Service whose endpoints listen on another port than the Service's.
fn web_service() -> Value {
    patch(
        service_json(SERVICE, VIP),
        json!({"spec": {
            "type": "NodePort",
            "externalTrafficPolicy": "Cluster",
            "ports": [{"name": "http", "protocol": "TCP", "port": SERVICE_PORT,
                       "targetPort": TARGET_PORT, "nodePort": NODE_PORT}]
        }}),
    )
}

fn web_slice(endpoints: Vec<Value>) -> Value {
    slice_json(SLICE, SERVICE, "IPv4", i32::from(TARGET_PORT), endpoints)
}

/// The Kubernetes node a lab backend stands for.
fn node_of(backend: &str) -> String {
    format!("node-{backend}")
}

/// Frontend (address, port) → addresses of its active backends, as the kernel maps hold
/// them.
type Programmed = BTreeMap<(String, u16), BTreeSet<String>>;

/// The ClusterIP and the NodePort on the LB node, both balancing over `backends`.
fn both_frontends(backends: &[&str]) -> Programmed {
    [(VIP, SERVICE_PORT), (LB_ADDR, NODE_PORT)]
        .into_iter()
        .map(|(addr, port)| {
            (
                (addr.to_string(), port),
                backends.iter().map(|b| b.to_string()).collect(),
            )
        })
        .collect()
}

/// Fields drop in order: the lab first (it stops the daemons, removes namespaces and
/// pins), then the fake servers, then the scratch directory with the logs.
struct Setup {
    lab: Lab,
    // Held for their drop: the servers live as long as the setup.
    _api_servers: Vec<NetnsServer>,
    api: FakeApi,
    bins: Binaries,
    work: ScratchDir,
}

impl Setup {
    /// A lab with three backends, the fake server holding the nodes, the web Service and a
    /// slice with all three backends ready, and a daemon running on every node.
    fn new(tag: &str) -> Self {
        let bins = bins();
        let mut lab = Lab::create(tag, 3).expect("lab");
        let work = ScratchDir::new(&format!("kube-e2e-{tag}")).expect("scratch dir");
        lab.attach_pass(&bins).expect("pass program");
        lab.start_servers(&bins, "0.0.0.0", TARGET_PORT, LAB_UDP_PORT)
            .expect("endpoint servers");
        // The NodePort is reached on the LB node's own subnet address; leave room for the
        // outer header on that path too.
        let client = lab.client.clone();
        lab.exec(
            &client,
            "ip",
            &["route", "add", LB_ADDR, "dev", "eth0", "mtu", "1480"],
        )
        .expect("client route to the node");

        let api = FakeApi::new();
        api.apply(
            Resource::Nodes,
            node_json(NODE_NAME, &[("InternalIP", LB_ADDR)], "zone-a"),
        );
        for b in &lab.backends {
            api.apply(
                Resource::Nodes,
                node_json(&node_of(&b.name), &[("InternalIP", &b.addr)], "zone-a"),
            );
        }
        api.apply(Resource::Services, web_service());
        let all: Vec<Value> = lab
            .backends
            .iter()
            .map(|b| ready(&b.addr, &node_of(&b.name)))
            .collect();
        api.apply(Resource::EndpointSlices, web_slice(all));

        // (namespace, node name, pin dir, log) of every node.
        let mut nodes = vec![(
            lab.lb.clone(),
            NODE_NAME.to_string(),
            lab.lb_pin_dir.clone(),
            work.0.join("daemon.log"),
        )];
        for b in &lab.backends {
            nodes.push((
                b.netns.clone(),
                node_of(&b.name),
                b.pin_dir.clone(),
                work.0.join(format!("daemon-{}.log", b.name)),
            ));
        }
        let mut servers = Vec::new();
        for (netns, node, pin_dir, log) in nodes {
            let server = api
                .serve_in_netns(&Path::new("/run/netns").join(&netns))
                .expect("fake API server in the node's namespace");
            let kubeconfig = work.0.join(format!("kubeconfig-{node}"));
            std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
            servers.push(server);
            lab.spawn(
                &netns,
                &bins.ferrolb,
                &[
                    "--pin-dir",
                    &pin_dir.display().to_string(),
                    "kube",
                    "--iface",
                    "eth0",
                    "--node-name",
                    &node,
                    "--kubeconfig",
                    kubeconfig.to_str().unwrap(),
                    "--health-bind-address",
                    HEALTH_ADDR,
                    "--metrics-bind-address",
                    METRICS_ADDR,
                    // The lab has no cgroup of its own: the socket programs must not
                    // attach to the machine's root cgroup.
                    "--no-socket-lb",
                ],
                Some(&log),
            )
            .expect("daemon");
        }
        Self {
            lab,
            _api_servers: servers,
            api,
            bins,
            work,
        }
    }

    fn backend_pin_dirs(&self) -> Vec<(String, PathBuf)> {
        self.lab
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.pin_dir.clone()))
            .collect()
    }

    /// `ferrolb nat -o json` on one backend node: the translations its kernel holds, as
    /// (frontend, endpoint, target port).
    fn translations(&self, pin_dir: &Path) -> Option<BTreeSet<(String, String, u16)>> {
        let out = lb_lab::run(
            &self.bins.ferrolb.display().to_string(),
            &[
                "--pin-dir",
                &pin_dir.display().to_string(),
                "nat",
                "-o",
                "json",
            ],
        )
        .ok()?;
        let list: Value = serde_json::from_str(&out).ok()?;
        list.as_array()?
            .iter()
            .map(|t| {
                Some((
                    t["frontend"].as_str()?.to_string(),
                    t["endpoint"].as_str()?.to_string(),
                    t["target_port"].as_u64()? as u16,
                ))
            })
            .collect()
    }

    /// Waits until every backend node holds the ClusterIP and NodePort translations for
    /// its own endpoint, or none when `present` is false.
    fn wait_translations(&self, what: &str, present: bool) {
        for (name, pin_dir) in self.backend_pin_dirs() {
            let addr = self.backend_addrs(&[&name]).remove(0);
            let expected: BTreeSet<(String, String, u16)> = if present {
                [
                    format!("{VIP}:{SERVICE_PORT}/tcp"),
                    format!("0.0.0.0:{NODE_PORT}/tcp"),
                ]
                .into_iter()
                .map(|fe| (fe, addr.clone(), TARGET_PORT))
                .collect()
            } else {
                BTreeSet::new()
            };
            let mut last = None;
            if let Err(e) = wait_for(SYNC_TIMEOUT, what, || {
                last = self.translations(&pin_dir);
                (last.as_ref() == Some(&expected)).then_some(())
            }) {
                panic!(
                    "{e}: {name} holds {last:?}, expected {expected:?}\n{}",
                    self.node_log(&name)
                );
            }
        }
    }

    fn node_log(&self, backend: &str) -> String {
        std::fs::read_to_string(self.work.0.join(format!("daemon-{backend}.log")))
            .unwrap_or_default()
    }

    /// The backend side's counter `reason` on one backend node.
    fn tc_counter(&self, pin_dir: &Path, reason: &str) -> u64 {
        support::datapath_counter(&self.bins.ferrolb, pin_dir, "tc", reason)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.work.0.join("daemon.log")).unwrap_or_default()
    }

    fn backend_addrs(&self, names: &[&str]) -> Vec<String> {
        names
            .iter()
            .map(|name| {
                self.lab
                    .backends
                    .iter()
                    .find(|b| b.name == *name)
                    .unwrap_or_else(|| panic!("unknown backend {name}"))
                    .addr
                    .clone()
            })
            .collect()
    }

    fn set_endpoints(&self, endpoints: Vec<Value>) {
        self.api
            .apply(Resource::EndpointSlices, web_slice(endpoints));
    }

    fn read_programmed(&self) -> Option<Programmed> {
        let list = self.lab.list_json(&self.bins).ok()?;
        let mut out = Programmed::new();
        for svc in list.as_array()? {
            let frontend = (
                svc["vip"].as_str()?.to_string(),
                svc["port"].as_u64()? as u16,
            );
            let active = svc["backends"]
                .as_array()?
                .iter()
                .filter(|b| b["active"] == true)
                .filter_map(|b| b["address"].as_str().map(str::to_string))
                .collect();
            out.insert(frontend, active);
        }
        Some(out)
    }

    /// Waits until the kernel maps hold exactly `expected`.
    fn wait_programmed(&self, what: &str, expected: Programmed) {
        let mut last = None;
        let done = wait_for(SYNC_TIMEOUT, what, || {
            last = self.read_programmed();
            (last.as_ref() == Some(&expected)).then_some(())
        });
        if let Err(e) = done {
            panic!(
                "{e}\nexpected {expected:?}\nkernel maps {last:?}\ndaemon log:\n{}",
                self.log()
            );
        }
    }

    /// `count` new TCP connections (one source port each) from the client to `target`.
    fn flows(&self, target: &str, first_sport: u16, count: u16) -> Vec<FlowResult> {
        self.lab
            .flows(&self.bins, "tcp", target, first_sport, count)
            .expect("tcp flows")
    }

    /// Every one of `count` new connections to the ClusterIP and as many to the NodePort
    /// is answered, and each frontend's connections together reach exactly the backends
    /// named.
    fn assert_flows_reach(&self, what: &str, first_sport: u16, count: u16, backends: &[&str]) {
        for (frontend, target, sport) in [
            ("ClusterIP", format!("{VIP}:{SERVICE_PORT}"), first_sport),
            (
                "NodePort",
                format!("{LB_ADDR}:{NODE_PORT}"),
                first_sport + count,
            ),
        ] {
            let what = format!("{what} ({frontend})");
            self.assert_target_reaches(&what, &target, sport, count, backends);
        }
    }

    fn assert_target_reaches(
        &self,
        what: &str,
        target: &str,
        first_sport: u16,
        count: u16,
        backends: &[&str],
    ) {
        let flows = self.flows(target, first_sport, count);
        let failed: Vec<&FlowResult> = flows.iter().filter(|f| f.backend.is_none()).collect();
        assert!(
            failed.is_empty(),
            "{what}: {} of {count} connections failed, e.g. {:?}",
            failed.len(),
            failed.first()
        );
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for f in &flows {
            *per.entry(f.backend.clone().unwrap_or_default())
                .or_default() += 1;
        }
        let reached: BTreeSet<&str> = per.keys().map(String::as_str).collect();
        let wanted: BTreeSet<&str> = backends.iter().copied().collect();
        assert_eq!(reached, wanted, "{what}: connections per backend {per:?}");
    }

    fn assert_flows_fail(&self, what: &str, first_sport: u16, count: u16) {
        let answered: Vec<FlowResult> = [
            format!("{VIP}:{SERVICE_PORT}"),
            format!("{LB_ADDR}:{NODE_PORT}"),
        ]
        .iter()
        .enumerate()
        .flat_map(|(i, target)| self.flows(target, first_sport + i as u16 * count, count))
        .filter(|f| f.backend.is_some())
        .collect();
        assert!(
            answered.is_empty(),
            "{what}: connections still answered: {answered:?}"
        );
    }

    /// `GET path` on `addr` inside the LB namespace: (status, body).
    fn get_in_lb(&self, addr: &str, path: &str) -> std::io::Result<(u16, String)> {
        http_get_in_netns(&Path::new("/run/netns").join(&self.lab.lb), addr, path)
    }

    fn metrics(&self) -> String {
        match self.get_in_lb(METRICS_ADDR, "/metrics") {
            Ok((200, body)) => body,
            other => panic!("metrics: {other:?}\ndaemon log:\n{}", self.log()),
        }
    }
}

/// A one-shot HTTP/1.1 GET from a thread that entered the namespace at `netns` (the test
/// process itself stays where it is). Bounded by socket timeouts.
fn http_get_in_netns(netns: &Path, addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let netns = netns.to_owned();
    let addr: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let path = path.to_owned();
    std::thread::spawn(move || {
        enter_netns(&netns)?;
        let timeout = Duration::from_secs(5);
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.take(1 << 20).read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad response {response:?}")))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        Ok((status, body))
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("HTTP client thread panicked")))
}

#[test]
fn kube_traffic_follows_create_scale_terminating_and_delete() {
    if !require_root("namespaced end-to-end test") {
        return;
    }
    let s = Setup::new("kflow");
    let all = s.backend_addrs(&["b1", "b2", "b3"]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    s.wait_programmed(
        "the ClusterIP and the NodePort with three endpoints",
        both_frontends(&all),
    );
    s.wait_translations("each backend node translates for its endpoint", true);

    // Health after the first sync (rule 21).
    let health = wait_for(SYNC_TIMEOUT, "/healthz 200", || {
        s.get_in_lb(HEALTH_ADDR, "/healthz")
            .ok()
            .filter(|(status, _)| *status == 200)
    })
    .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", s.log()));
    assert!(
        health.1.contains("\"nodeEligible\":true"),
        "healthz body {}",
        health.1
    );
    assert_eq!(
        s.get_in_lb(HEALTH_ADDR, "/livez").expect("livez").0,
        200,
        "livez"
    );
    let metrics = s.metrics();
    assert!(
        metrics.contains("lb_projection_skipped_objects 0"),
        "nothing is skipped any more:\n{metrics}"
    );
    assert!(
        metrics.contains("lb_maps_occupancy_entries{map=\"services\"} 2"),
        "{metrics}"
    );

    let translated_before: u64 = s
        .backend_pin_dirs()
        .iter()
        .map(|(_, pin)| s.tc_counter(pin, "decapsulated_translated"))
        .sum();
    s.assert_flows_reach("three ready endpoints", 20_000, 150, &["b1", "b2", "b3"]);
    // Every connection went through the translation both ways on the backends.
    let (translated, restored): (u64, u64) = s
        .backend_pin_dirs()
        .iter()
        .map(|(_, pin)| {
            (
                s.tc_counter(pin, "decapsulated_translated"),
                s.tc_counter(pin, "reply_restored"),
            )
        })
        .fold((0, 0), |acc, c| (acc.0 + c.0, acc.1 + c.1));
    assert!(
        translated - translated_before >= 300 && restored >= 300,
        "translated {} packets, restored {restored} replies for 300 connections",
        translated - translated_before
    );

    // Scale down to two endpoints.
    let (b1, b2) = (all[0], all[1]);
    let (n1, n2) = (node_of("b1"), node_of("b2"));
    s.set_endpoints(vec![ready(b1, &n1), ready(b2, &n2)]);
    s.wait_programmed("scaled to two", both_frontends(&[b1, b2]));
    s.assert_flows_reach("scaled to two", 21_000, 100, &["b1", "b2"]);

    // One endpoint terminating while another is ready: only the ready one (rule 11).
    s.set_endpoints(vec![terminating(b1, &n1), ready(b2, &n2)]);
    s.wait_programmed("b1 terminating", both_frontends(&[b2]));
    s.assert_flows_reach("b1 terminating, b2 ready", 22_000, 50, &["b2"]);

    // All terminating but serving: fall back to them rather than refuse (rule 11).
    s.set_endpoints(vec![terminating(b1, &n1), terminating(b2, &n2)]);
    s.wait_programmed("all terminating", both_frontends(&[b1, b2]));
    s.assert_flows_reach("all terminating, serving", 23_000, 100, &["b1", "b2"]);

    // Slice gone: no usable endpoints. kube-proxy rejects; the datapath keeps both
    // frontends with no backends, which drops, and the backend nodes stop translating.
    s.api.delete(Resource::EndpointSlices, SLICE);
    s.wait_programmed("slice deleted", both_frontends(&[]));
    s.wait_translations("slice deleted", false);

    // Service gone: the frontends disappear.
    s.api.delete(Resource::Services, SERVICE);
    s.wait_programmed("service deleted", Programmed::new());
    s.assert_flows_fail("service deleted", 24_000, 3);
}

#[test]
fn kube_service_proxy_name_label_turns_programming_off_and_on() {
    if !require_root("namespaced end-to-end test") {
        return;
    }
    let s = Setup::new("klabel");
    let all = s.backend_addrs(&["b1", "b2", "b3"]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let serving = both_frontends(&all);
    s.wait_programmed("the Service", serving.clone());
    s.wait_translations("the Service", true);
    s.assert_flows_reach("programmed", 25_000, 60, &["b1", "b2", "b3"]);

    // Another proxy owns the Service now (rule 2): the daemons' selector stops seeing it.
    s.api.apply(
        Resource::Services,
        patch(
            web_service(),
            json!({"metadata": {"labels": {PROXY_NAME_LABEL: "other"}}}),
        ),
    );
    s.wait_programmed("labelled for another proxy", Programmed::new());
    s.wait_translations("labelled for another proxy", false);
    s.assert_flows_fail("labelled for another proxy", 26_000, 3);

    s.api.apply(Resource::Services, web_service());
    s.wait_programmed("label removed", serving);
    s.wait_translations("label removed", true);
    s.assert_flows_reach("label removed", 27_000, 60, &["b1", "b2", "b3"]);
}

/// `ferrolb explain -o json` on the LB node for a connection from the lab's client.
fn explain_on_lb(s: &Setup, sport: u16) -> Value {
    let tuple = format!("tcp {}:{sport} {VIP}:{SERVICE_PORT}", lb_lab::CLIENT_ADDR);
    let out = lb_lab::run(
        &s.bins.ferrolb.display().to_string(),
        &[
            "--pin-dir",
            &s.lab.lb_pin_dir.display().to_string(),
            "explain",
            "-o",
            "json",
            &tuple,
        ],
    )
    .expect("ferrolb explain");
    let value: Value = serde_json::from_str(&out).expect("explain JSON");
    // A batch-shaped answer holds one explanation.
    match value {
        Value::Array(mut list) if list.len() == 1 => list.remove(0),
        other => other,
    }
}

/// Rule 17 end to end: the client's connections to the ClusterIP spread over the
/// endpoints; with `sessionAffinity: ClientIP` (timeout 3 s) 100 new connections land on
/// one endpoint and the client's entry is in the LB node's affinity map; 3 s without
/// traffic later the entry has expired.
#[test]
fn kube_session_affinity_keeps_a_client_on_one_endpoint_until_the_timeout() {
    if !require_root("namespaced end-to-end test") {
        return;
    }
    let s = Setup::new("aff");
    let all = s.backend_addrs(&["b1", "b2", "b3"]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    s.wait_programmed("three endpoints", both_frontends(&all));
    s.wait_translations("each backend node translates for its endpoint", true);
    let target = format!("{VIP}:{SERVICE_PORT}");
    let spread = s.flows(&target, 20_000, 100);
    let spread: BTreeSet<String> = spread.into_iter().filter_map(|f| f.backend).collect();
    assert!(
        spread.len() >= 2,
        "without affinity Maglev spreads: {spread:?}"
    );

    let sticky = patch(
        web_service(),
        json!({"spec": {"sessionAffinity": "ClientIP",
                        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 3}}}}),
    );
    s.api.apply(Resource::Services, sticky);
    wait_for(SYNC_TIMEOUT, "the ClusterIP with affinity", || {
        let why = explain_on_lb(&s, 1)["why"].as_str()?.to_string();
        why.contains("session affinity").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", s.log()));

    let flows = s.flows(&target, 21_000, 100);
    assert!(
        flows.iter().all(|f| f.backend.is_some()),
        "every connection answered: {flows:?}"
    );
    let kept: BTreeSet<String> = flows.into_iter().filter_map(|f| f.backend).collect();
    assert_eq!(
        kept.len(),
        1,
        "100 connections of one client, one endpoint: {kept:?}"
    );
    let entry = explain_on_lb(&s, 22_000)["affinity_entry"].clone();
    assert_eq!(entry["usable"], true, "the client's entry: {entry}");
    assert_eq!(entry["timeout_s"], 3);

    // 3 s timeout, ends at most 3/8 s later: 4 s without traffic is past it.
    std::thread::sleep(Duration::from_secs(4));
    let expired = explain_on_lb(&s, 22_000);
    assert_eq!(
        expired["affinity_entry"]["usable"], false,
        "expired after the timeout: {expired}"
    );
    assert!(
        expired["why"].as_str().unwrap().contains("expired"),
        "{expired}"
    );
}
