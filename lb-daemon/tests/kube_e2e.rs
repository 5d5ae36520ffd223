//! The daemon in cluster mode (`ferrolb kube`, a process) driven by a fake Kubernetes API
//! server, in network namespaces: Services and EndpointSlices change on the server and real
//! TCP connections from the client to the ClusterIP must follow them (issue #4).
//!
//! The fake server runs on a thread inside the LB namespace, so the daemon reaches it on
//! that namespace's loopback; the test keeps a handle to change the objects.
//!
//! NodePort is not served through the datapath yet: IPIP DSR delivers packets unchanged,
//! so it cannot translate the node port to the endpoints' port. For NodePort the test
//! asserts that the frontend is skipped and reported, never programmed.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
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
/// The lab's name servers also answer UDP; the Service defines TCP only.
const LAB_UDP_PORT: u16 = 5353;
const NODE_PORT: u16 = 30080;
const NODE_NAME: &str = "lb-node";
const SERVICE: &str = "web";
const SLICE: &str = "web-7xk2p";
const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
// Only the daemon and the fake server (on an ephemeral port) listen inside the LB namespace
// the test made, so fixed ports cannot collide with anything.
const HEALTH_ADDR: &str = "127.0.0.1:10256";
const METRICS_ADDR: &str = "127.0.0.1:10249";
/// Longer than the lab's 5 s connect timeout, so a slow machine is not mistaken for a bug.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// A NodePort Service whose port equals its targetPort, so the ClusterIP frontend is one
/// IPIP DSR can serve; the NodePort frontend is not (30080 ≠ 8080).
fn web_service() -> Value {
    patch(
        service_json(SERVICE, VIP),
        json!({"spec": {
            "type": "NodePort",
            "externalTrafficPolicy": "Cluster",
            "ports": [{"name": "http", "protocol": "TCP", "port": SERVICE_PORT,
                       "targetPort": SERVICE_PORT, "nodePort": NODE_PORT}]
        }}),
    )
}

fn web_slice(endpoints: Vec<Value>) -> Value {
    slice_json(SLICE, SERVICE, "IPv4", i32::from(SERVICE_PORT), endpoints)
}

/// Frontend (address, port) → addresses of its active backends, as the kernel maps hold
/// them.
type Programmed = BTreeMap<(String, u16), BTreeSet<String>>;

fn programmed(entries: &[((&str, u16), &[&str])]) -> Programmed {
    entries
        .iter()
        .map(|((vip, port), backends)| {
            (
                (vip.to_string(), *port),
                backends.iter().map(|b| b.to_string()).collect(),
            )
        })
        .collect()
}

/// Fields drop in order: the lab first (it stops the daemon, removes namespaces and pins),
/// then the fake server, then the scratch directory with the log.
struct Setup {
    lab: Lab,
    // Held for its drop: the server lives as long as the setup.
    _api_server: NetnsServer,
    api: FakeApi,
    bins: Binaries,
    work: ScratchDir,
}

impl Setup {
    /// A lab with three backends, the fake server holding this node, the web Service and a
    /// slice with all three backends ready, and the daemon running in the LB namespace.
    fn new(tag: &str) -> Self {
        let bins = bins();
        let mut lab = Lab::create(tag, 3).expect("lab");
        let work = ScratchDir::new(&format!("kube-e2e-{tag}")).expect("scratch dir");
        lab.attach_pass(&bins).expect("pass program");
        lab.start_backends(&bins, SERVICE_PORT, LAB_UDP_PORT)
            .expect("backends");

        let api = FakeApi::new();
        api.apply(
            Resource::Nodes,
            node_json(NODE_NAME, &[("InternalIP", LB_ADDR)], "zone-a"),
        );
        api.apply(Resource::Services, web_service());
        let all: Vec<Value> = lab
            .backends
            .iter()
            .map(|b| ready(&b.addr, "node-b"))
            .collect();
        api.apply(Resource::EndpointSlices, web_slice(all));
        let api_server = api
            .serve_in_netns(&Path::new("/run/netns").join(&lab.lb))
            .expect("fake API server in the LB namespace");

        let kubeconfig = work.0.join("kubeconfig");
        std::fs::write(&kubeconfig, api_server.kubeconfig()).unwrap();
        let lb = lab.lb.clone();
        let pin_dir = lab.lb_pin_dir.display().to_string();
        lab.spawn(
            &lb,
            &bins.ferrolb,
            &[
                "--pin-dir",
                &pin_dir,
                "kube",
                "--iface",
                "eth0",
                "--node-name",
                NODE_NAME,
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--health-bind-address",
                HEALTH_ADDR,
                "--metrics-bind-address",
                METRICS_ADDR,
            ],
            Some(&work.0.join("daemon.log")),
        )
        .expect("daemon");
        Self {
            lab,
            _api_server: api_server,
            api,
            bins,
            work,
        }
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

    /// `count` new TCP connections (one source port each) from the client to the ClusterIP.
    fn flows(&self, first_sport: u16, count: u16) -> Vec<FlowResult> {
        let target = format!("{VIP}:{SERVICE_PORT}");
        self.lab
            .client(
                &self.bins,
                &[
                    "tcp-flows",
                    "--target",
                    &target,
                    "--sport",
                    &first_sport.to_string(),
                    "--count",
                    &count.to_string(),
                ],
            )
            .expect("tcp flows")
    }

    /// Every one of `count` new connections is answered, and together they reach exactly
    /// the backends named.
    fn assert_flows_reach(&self, what: &str, first_sport: u16, count: u16, backends: &[&str]) {
        let flows = self.flows(first_sport, count);
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
        let answered: Vec<FlowResult> = self
            .flows(first_sport, count)
            .into_iter()
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
        "the Service and its three endpoints",
        programmed(&[((VIP, SERVICE_PORT), &all)]),
    );

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

    // NodePort: skipped (the port cannot be translated) and reported, not programmed; the
    // exact map above already holds only the ClusterIP frontend.
    let kernel = s.read_programmed().expect("ferrolb list");
    assert!(
        kernel
            .keys()
            .all(|(addr, port)| *port != NODE_PORT && addr != LB_ADDR),
        "a NodePort frontend was programmed: {kernel:?}"
    );
    let metrics = s.metrics();
    assert!(
        metrics.contains("lb_kube_skipped_frontends_entries{reason=\"port_translation\"} 1"),
        "NodePort not reported as skipped:\n{metrics}"
    );
    assert!(
        metrics.contains("lb_projection_skipped_objects 1"),
        "{metrics}"
    );
    let log = s.log();
    assert!(
        log.contains("snapshot applied") && log.contains("skipped=1"),
        "the daemon's log does not report the skipped NodePort:\n{log}"
    );

    s.assert_flows_reach("three ready endpoints", 20_000, 300, &["b1", "b2", "b3"]);

    // Scale down to two endpoints.
    let (b1, b2) = (all[0], all[1]);
    s.set_endpoints(vec![ready(b1, "node-b"), ready(b2, "node-b")]);
    s.wait_programmed(
        "scaled to two",
        programmed(&[((VIP, SERVICE_PORT), &[b1, b2])]),
    );
    s.assert_flows_reach("scaled to two", 21_000, 200, &["b1", "b2"]);

    // One endpoint terminating while another is ready: only the ready one (rule 11).
    s.set_endpoints(vec![terminating(b1, "node-b"), ready(b2, "node-b")]);
    s.wait_programmed(
        "b1 terminating",
        programmed(&[((VIP, SERVICE_PORT), &[b2])]),
    );
    s.assert_flows_reach("b1 terminating, b2 ready", 22_000, 100, &["b2"]);

    // All terminating but serving: fall back to them rather than refuse (rule 11).
    s.set_endpoints(vec![terminating(b1, "node-b"), terminating(b2, "node-b")]);
    s.wait_programmed(
        "all terminating",
        programmed(&[((VIP, SERVICE_PORT), &[b1, b2])]),
    );
    s.assert_flows_reach("all terminating, serving", 23_000, 200, &["b1", "b2"]);

    // Slice gone: no usable endpoints. kube-proxy rejects; the datapath keeps the
    // ClusterIP frontend with no backends, which drops. The NodePort stays unprogrammed.
    s.api.delete(Resource::EndpointSlices, SLICE);
    s.wait_programmed("slice deleted", programmed(&[((VIP, SERVICE_PORT), &[])]));

    // Service gone: the frontend disappears, and the LB has no route for the ClusterIP.
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
    let serving = programmed(&[((VIP, SERVICE_PORT), &all)]);
    s.wait_programmed("the Service", serving.clone());
    s.assert_flows_reach("programmed", 25_000, 90, &["b1", "b2", "b3"]);

    // Another proxy owns the Service now (rule 2): the daemon's selector stops seeing it.
    s.api.apply(
        Resource::Services,
        patch(
            web_service(),
            json!({"metadata": {"labels": {PROXY_NAME_LABEL: "other"}}}),
        ),
    );
    s.wait_programmed("labelled for another proxy", Programmed::new());
    s.assert_flows_fail("labelled for another proxy", 26_000, 3);

    s.api.apply(Resource::Services, web_service());
    s.wait_programmed("label removed", serving);
    s.assert_flows_reach("label removed", 27_000, 90, &["b1", "b2", "b3"]);
}
