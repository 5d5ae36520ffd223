//! The two-node cluster lab with one `ferrolb kube` per node, fed by the fake API server,
//! and what the cluster end-to-end tests ask of it: Services and EndpointSlices of pods,
//! probes from pods, hosts and the external client, and waits that follow the daemons.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use lb_kube::fake_api::{
    objects::{node_json, patch, ready, service_json, slice_json, terminating},
    FakeApi, NetnsServer, Resource,
};
use lb_lab::{
    cluster::{Cluster, Place},
    probe::Summary,
    wait_for, Binaries,
};
use serde_json::{json, Value};

use crate::support::{bins, ScratchDir};

/// The port pods listen on for TCP, and for UDP: every Service maps its ports to them.
pub const TCP_TARGET: u16 = 9090;
pub const UDP_TARGET: u16 = 5353;
/// The Services' ports.
pub const HTTP: u16 = 80;
pub const DNS: u16 = 53;
/// Pods per node: two or three.
const PODS: u8 = 3;
// Only the daemons listen on these, inside node namespaces the test made.
const HEALTH_ADDR: &str = "127.0.0.1:10256";
const METRICS_ADDR: &str = "127.0.0.1:10249";
/// Longer than a probe's timeouts, so a slow machine is not mistaken for a bug.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections a wait opens per try.
const PROBE_BATCH: u32 = 40;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// For connections expected to fail, or tries that may: a working path answers in
/// microseconds.
pub const QUICK_TIMEOUT: Duration = Duration::from_millis(300);

/// An endpoint's state in its slice.
#[derive(Clone, Copy, Debug)]
pub enum Cond {
    Ready,
    /// Shutting down but serving.
    Terminating,
}

/// The Kubernetes node of a lab pod (`a1` → `node-a`).
pub fn node_of(pod: &str) -> String {
    format!("node-{}", &pod[..1])
}

/// A Service with a ClusterIP per address given (one family each), TCP `http` 80 → 9090
/// and UDP `dns` 53 → 5353, with `extra` merged in (type, policies, node ports).
pub fn service(name: &str, cluster_ips: &[IpAddr], extra: Value) -> Value {
    let families: Vec<&str> = cluster_ips
        .iter()
        .map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" })
        .collect();
    let ips: Vec<String> = cluster_ips.iter().map(IpAddr::to_string).collect();
    let policy = if ips.len() > 1 {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    let base = patch(
        service_json(name, &ips[0]),
        json!({"spec": {
            "clusterIPs": ips,
            "ipFamilies": families,
            "ipFamilyPolicy": policy,
            "ports": [
                {"name": "http", "protocol": "TCP", "port": HTTP, "targetPort": TCP_TARGET},
                {"name": "dns", "protocol": "UDP", "port": DNS, "targetPort": UDP_TARGET}
            ]
        }}),
    );
    patch(base, extra)
}

/// Fields drop in order: the cluster first (it stops the daemons, removes namespaces,
/// cgroups and pins), then the fake servers, then the scratch directory with the logs.
pub struct Setup {
    pub cluster: Cluster,
    _api_servers: Vec<NetnsServer>,
    pub api: FakeApi,
    pub bins: Binaries,
    work: ScratchDir,
    /// TCP probes ask for ICMP errors (see `Cluster::connects`).
    pub probes_see_icmp_errors: bool,
}

impl Setup {
    /// The cluster with a server in every pod, the fake API holding both Nodes and
    /// `services` (each with its endpoints), and a daemon per node.
    pub fn new(tag: &str, services: Vec<(Value, Vec<(&str, Cond)>)>) -> Self {
        let bins = bins();
        let mut cluster = Cluster::create(tag, PODS).expect("cluster lab");
        let work = ScratchDir::new(&format!("cluster-e2e-{tag}")).expect("scratch dir");
        cluster.attach_pass(&bins.lab).expect("pass programs");
        let pods: Vec<String> = cluster.pods().map(|(_, p)| p.name.clone()).collect();
        for pod in &pods {
            cluster
                .start_server(&bins.lab, pod, TCP_TARGET, UDP_TARGET)
                .expect("pod server");
        }
        let api = FakeApi::new();
        for node in &cluster.nodes {
            let addresses = [
                ("InternalIP", node.addr.to_string()),
                ("InternalIP", node.addr6.to_string()),
            ];
            let addresses: Vec<(&str, &str)> =
                addresses.iter().map(|(t, a)| (*t, a.as_str())).collect();
            let cidrs = [&node.pod_cidr, &node.pod_cidr6];
            api.apply(
                Resource::Nodes,
                patch(
                    node_json(&node.name, &addresses, "zone-a"),
                    json!({"spec": {"podCIDR": node.pod_cidr, "podCIDRs": cidrs}}),
                ),
            );
        }
        let mut setup = Self {
            cluster,
            _api_servers: Vec::new(),
            api,
            bins,
            work,
            probes_see_icmp_errors: false,
        };
        for (svc, endpoints) in services {
            let name = svc["metadata"]["name"].as_str().unwrap().to_string();
            setup.api.apply(Resource::Services, svc);
            if !endpoints.is_empty() {
                setup.set_endpoints(&name, &endpoints);
            }
        }
        setup.start_daemons();
        setup
    }

    fn start_daemons(&mut self) {
        let nodes: Vec<(String, String, PathBuf, PathBuf)> = self
            .cluster
            .nodes
            .iter()
            .map(|n| {
                let cgroup = n.cgroup().to_owned();
                (n.name.clone(), n.netns.clone(), n.pin_dir.clone(), cgroup)
            })
            .collect();
        for (node, netns, pin_dir, cgroup) in nodes {
            let server = self
                .api
                .serve_in_netns(&Path::new("/run/netns").join(&netns))
                .expect("fake API server in the node's namespace");
            let kubeconfig = self.work.0.join(format!("kubeconfig-{node}"));
            std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
            self._api_servers.push(server);
            // The daemon runs in the node's namespace but outside its lab cgroup, as a
            // DaemonSet pod outside the workloads' cgroups.
            let place = self.cluster.node(&node).system.clone();
            let args = [
                "--pin-dir",
                &pin_dir.display().to_string(),
                "kube",
                "--iface",
                "eth0",
                "--node-name",
                &node,
                "--kubeconfig",
                &kubeconfig.display().to_string(),
                "--cgroup",
                &cgroup.display().to_string(),
                "--health-bind-address",
                HEALTH_ADDR,
                "--metrics-bind-address",
                METRICS_ADDR,
            ]
            .map(str::to_owned);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let log = self.log_path(&node);
            self.cluster
                .spawn(&place, &self.bins.ferrolb, &args, Some(&log))
                .expect("daemon");
        }
    }

    fn log_path(&self, node: &str) -> PathBuf {
        self.work.0.join(format!("daemon-{node}.log"))
    }

    /// The last lines of both daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.cluster.nodes {
            let text = std::fs::read_to_string(self.log_path(&node.name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            out.push_str(&format!(
                "--- {} daemon log (tail) ---\n{tail}\n",
                node.name
            ));
        }
        out
    }

    /// One slice per family with the pods given, each at its address of that family.
    pub fn set_endpoints(&self, service: &str, endpoints: &[(&str, Cond)]) {
        for (family, suffix) in [("IPv4", "v4"), ("IPv6", "v6")] {
            let entries: Vec<Value> = endpoints
                .iter()
                .map(|(pod, cond)| {
                    let p = self.cluster.pod(pod);
                    let addr = match family {
                        "IPv4" => p.addr.to_string(),
                        _ => p.addr6.to_string(),
                    };
                    match cond {
                        Cond::Ready => ready(&addr, &node_of(pod)),
                        Cond::Terminating => terminating(&addr, &node_of(pod)),
                    }
                })
                .collect();
            let slice = slice_json(
                &format!("{service}-{suffix}"),
                service,
                family,
                i32::from(TCP_TARGET),
                entries,
            );
            let ports = json!({"ports": [
                {"name": "http", "protocol": "TCP", "port": TCP_TARGET},
                {"name": "dns", "protocol": "UDP", "port": UDP_TARGET}
            ]});
            self.api
                .apply(Resource::EndpointSlices, patch(slice, ports));
        }
    }

    /// Deletes both slices of `service`.
    pub fn delete_endpoints(&self, service: &str) {
        for suffix in ["v4", "v6"] {
            self.api
                .delete(Resource::EndpointSlices, &format!("{service}-{suffix}"));
        }
    }

    pub fn pod(&self, name: &str) -> Place {
        self.cluster.pod(name).place.clone()
    }

    pub fn connects(&self, from: &Place, target: SocketAddr, count: u32) -> Summary {
        self.connects_within(from, target, count, CONNECT_TIMEOUT)
    }

    pub fn connects_within(
        &self,
        from: &Place,
        target: SocketAddr,
        count: u32,
        timeout: Duration,
    ) -> Summary {
        let icmp_errors = self.probes_see_icmp_errors;
        self.cluster
            .connects(from, &self.bins.lab, target, count, timeout, icmp_errors)
            .unwrap_or_else(|e| panic!("connects to {target}: {e}"))
    }

    /// DNS-style queries: `sockets` unconnected sockets, `per_socket` datagrams each.
    pub fn udp(&self, from: &Place, target: SocketAddr, sockets: u32, per_socket: u32) -> Summary {
        self.cluster
            .udp_queries(from, &self.bins.lab, target, sockets, per_socket)
            .unwrap_or_else(|e| panic!("UDP queries to {target}: {e}"))
    }

    /// Waits until a batch of connections from `from` to `target` is answered in full by
    /// exactly the pods named. Each try starts with a few connections given little time,
    /// so a path that does not work yet costs little.
    pub fn wait_reaches(&self, from: &Place, target: SocketAddr, pods: &[&str]) {
        let wanted: BTreeSet<&str> = pods.iter().copied().collect();
        let mut last = None;
        let done = wait_for(SYNC_TIMEOUT, "connections to reach the endpoints", || {
            let quick = self.connects_within(from, target, 3, QUICK_TIMEOUT);
            if quick.answered < 3 {
                last = Some(quick);
                return None;
            }
            let report = self.connects(from, target, PROBE_BATCH);
            let reached: BTreeSet<&str> = report.backends.keys().map(String::as_str).collect();
            let ok = report.answered == PROBE_BATCH && reached == wanted;
            last = Some(report);
            ok.then_some(())
        });
        if let Err(e) = done {
            panic!(
                "{e}: {} → {target}, expected {wanted:?}, last try {last:?}\n{}",
                from.netns,
                self.logs()
            );
        }
    }

    /// Waits until `connect()` from `from` to `target` is refused.
    pub fn wait_refused(&self, from: &Place, target: SocketAddr) {
        let mut last = None;
        let done = wait_for(SYNC_TIMEOUT, "connections to be refused", || {
            let report = self.connects(from, target, 3);
            let ok = report.errors.get("connect: ConnectionRefused") == Some(&3);
            last = Some(report);
            ok.then_some(())
        });
        if let Err(e) = done {
            panic!(
                "{e}: {} → {target}, last try {last:?}\n{}",
                from.netns,
                self.logs()
            );
        }
    }
}
