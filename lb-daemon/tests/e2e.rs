//! End-to-end tests in network namespaces: the daemon as a process, real XDP and TC
//! attachment, real TCP and UDP traffic from a client through the LB to three backends.

mod support;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use lb_lab::{
    traffic::{FlowResult, HeldConnection},
    wait_for, Binaries, Lab, CLIENT_ADDR, CLIENT_ADDR6, VIP, VIP6,
};
use support::{bins, require_root, ScratchDir};

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;

fn config(backends: &[&str]) -> String {
    support::tcp_and_udp_config(backends, TCP_PORT, UDP_PORT)
}

struct Setup {
    lab: Lab,
    bins: Binaries,
    work: ScratchDir,
    daemon: u32,
}

impl Setup {
    fn new(tag: &str) -> Self {
        let bins = bins();
        let mut lab = Lab::create(tag, 3).expect("lab");
        let work = ScratchDir::new(&format!("e2e-{tag}")).expect("scratch dir");
        lab.attach_pass(&bins).expect("pass program");
        lab.start_backends(&bins, TCP_PORT, UDP_PORT)
            .expect("backends");
        let lb = lab.lb.clone();
        lab.count_vip_replies(&lb, None)
            .expect("nft counter on the LB");
        let addrs: Vec<String> = lab.backends.iter().map(|b| b.addr.clone()).collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        support::replace_file(&work.0.join("config.yaml"), &config(&refs));
        let daemon = lab
            .start_daemon(
                &bins,
                &work.0.join("config.yaml"),
                &work.0.join("daemon.log"),
            )
            .expect("daemon");
        let mut setup = Self {
            lab,
            bins,
            work,
            daemon,
        };
        setup.synced(3);
        setup
    }

    /// `count` TCP connections to `target` from source port `first_sport` on; every one
    /// must be answered. Returns them and how many each backend answered.
    fn answered_tcp_flows(
        &self,
        target: &str,
        first_sport: u16,
        count: u16,
    ) -> (Vec<FlowResult>, BTreeMap<String, usize>) {
        let flows = self
            .lab
            .flows(&self.bins, "tcp", target, first_sport, count)
            .expect("tcp flows");
        let failed: Vec<&FlowResult> = flows.iter().filter(|f| f.backend.is_none()).collect();
        assert!(
            failed.is_empty(),
            "{} of {count} TCP connections to {target} failed, e.g. {:?}\ndaemon log:\n{}",
            failed.len(),
            failed.first(),
            self.log()
        );
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for f in &flows {
            *per.entry(f.backend.clone().unwrap()).or_default() += 1;
        }
        (flows, per)
    }

    /// `ferrolb explain --batch` over `tuples` (one per line), written to `file`.
    fn explain_batch(&self, file: &str, tuples: &str) -> Vec<serde_json::Value> {
        let batch = self.work.0.join(file);
        std::fs::write(&batch, tuples).unwrap();
        let out = lb_lab::run(
            self.bins.ferrolb.to_str().unwrap(),
            &[
                "--pin-dir",
                self.lab.lb_pin_dir.to_str().unwrap(),
                "explain",
                "--batch",
                batch.to_str().unwrap(),
                "-o",
                "json",
            ],
        )
        .expect("explain");
        serde_json::from_str(&out).unwrap()
    }

    fn config_path(&self) -> PathBuf {
        self.work.0.join("config.yaml")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.work.0.join("daemon.log")).unwrap_or_default()
    }

    fn synced(&mut self, backends: usize) {
        if let Err(e) = self
            .lab
            .wait_synced(&self.bins, &[(TCP_PORT, backends), (UDP_PORT, backends)])
        {
            panic!("{e}; daemon log:\n{}", self.log());
        }
    }

    fn backend_addr(&self, name: &str) -> IpAddr {
        self.lab
            .backends
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("unknown backend {name}"))
            .addr
            .parse()
            .unwrap()
    }

    /// Starts `hold` in the background; returns its pid, output file and stop file.
    fn hold(&mut self, sport: u16, count: u16) -> (u32, PathBuf, PathBuf) {
        let target = format!("{VIP}:{TCP_PORT}");
        let spec = support::hold::HoldSpec {
            target: &target,
            sport,
            count,
            max_ms: 60_000,
            interval_ms: 50,
            progress: false,
        };
        let run = support::hold::start(&mut self.lab, &self.bins, &self.work.0, &spec);
        (run.pid, run.out, run.stop)
    }

    fn finish_hold(&mut self, pid: u32, out: &Path, stop: &Path) -> Vec<HeldConnection> {
        std::fs::write(stop, b"stop").unwrap();
        self.lab
            .wait(pid, Duration::from_secs(30))
            .expect("hold exits");
        let text = std::fs::read_to_string(out).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("hold output {e}: {text}"))
    }
}

/// `ferrolb list -o json` with the traffic counters zeroed: what must not change while
/// traffic keeps flowing.
fn without_counters(mut list: serde_json::Value) -> serde_json::Value {
    for svc in list.as_array_mut().unwrap() {
        svc["packets"] = 0.into();
        svc["bytes"] = 0.into();
        for b in svc["backends"].as_array_mut().unwrap() {
            b["packets"] = 0.into();
            b["bytes"] = 0.into();
        }
    }
    list
}

#[test]
fn flows_spread_evenly_replies_bypass_the_lb_and_explain_agrees() {
    if !require_root("namespaced end-to-end test") {
        return;
    }
    let s = Setup::new("spread");
    let (flows, per) = s.answered_tcp_flows(&format!("{VIP}:{TCP_PORT}"), 20_000, 3000);
    assert_eq!(per.len(), 3, "{per:?}");
    let mean = 3000.0 / 3.0;
    for (backend, n) in &per {
        let dev = (*n as f64 - mean).abs() / mean;
        assert!(
            dev <= 0.15,
            "backend {backend} got {n} of 3000 flows ({:.1}% off the mean)",
            dev * 100.0
        );
    }

    let (_, at_lb) = s.lab.vip_reply_counts(&s.lab.lb.clone()).unwrap();
    assert_eq!(
        at_lb, 0,
        "the LB saw {at_lb} packets from the VIP: replies did not bypass it"
    );

    let udp_target = format!("{VIP}:{UDP_PORT}");
    let udp = s
        .lab
        .flows(&s.bins, "udp", &udp_target, 30000, 300)
        .expect("udp flows");
    assert!(
        udp.iter().all(|f| f.backend.is_some()),
        "UDP flows unanswered"
    );

    // explain must name, for every flow, the backend the kernel actually chose.
    let tuples: String = flows
        .iter()
        .map(|f| format!("tcp {CLIENT_ADDR}:{} {VIP}:{TCP_PORT}\n", f.sport))
        .collect();
    let explained = s.explain_batch("tuples.txt", &tuples);
    assert_eq!(explained.len(), flows.len());
    for (flow, e) in flows.iter().zip(&explained) {
        let chosen = s.backend_addr(flow.backend.as_ref().unwrap());
        assert_eq!(
            e["backend"].as_str(),
            Some(chosen.to_string().as_str()),
            "flow {}: {}",
            flow.sport,
            e["why"]
        );
        assert_eq!(
            e["maglev_backend"], e["backend"],
            "flow {}: no backend change happened, so Maglev agrees",
            flow.sport
        );
    }
}

#[test]
fn removing_a_backend_keeps_surviving_flows_and_bad_config_changes_nothing() {
    if !require_root("namespaced end-to-end test") {
        return;
    }
    let mut s = Setup::new("remove");
    let (pid, out, stop) = s.hold(40_000, 150);
    let before = s.lab.list_json(&s.bins).unwrap();

    // A broken file is rejected and the running state stays as it was.
    support::replace_file(
        &s.config_path(),
        "services:\n  - name: web\n    port: [oops\n",
    );
    wait_for(Duration::from_secs(10), "rejection in the log", || {
        s.log().contains("config rejected").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", s.log()));
    assert_eq!(
        without_counters(s.lab.list_json(&s.bins).unwrap()),
        without_counters(before),
        "state changed after a bad config"
    );
    assert!(
        s.log().contains("line"),
        "the rejection names the line:\n{}",
        s.log()
    );

    let survivors: Vec<String> = s.lab.backends[..2].iter().map(|b| b.addr.clone()).collect();
    let refs: Vec<&str> = survivors.iter().map(String::as_str).collect();
    support::replace_file(&s.config_path(), &config(&refs));
    s.synced(2);
    std::thread::sleep(Duration::from_millis(500));
    let held = s.finish_hold(pid, &out, &stop);

    let removed = &s.lab.backends[2].name;
    let surviving: Vec<&HeldConnection> = held
        .iter()
        .filter(|h| h.backend.as_ref().is_some_and(|b| b != removed))
        .collect();
    assert!(
        surviving.len() >= 50,
        "too few connections on surviving backends: {}",
        surviving.len()
    );
    for h in &surviving {
        assert!(
            h.failed == 0 && !h.moved && h.answered >= 10,
            "connection from port {} on {:?} was disturbed: {h:?}",
            h.sport,
            h.backend
        );
    }
    // The removed backend's connections existed too, so the test exercised a real removal.
    assert!(held
        .iter()
        .any(|h| h.backend.as_deref() == Some(removed.as_str())));
}

#[test]
fn restarting_the_daemon_under_traffic_loses_no_connection() {
    if !require_root("namespaced end-to-end test") {
        return;
    }
    let mut s = Setup::new("restart");
    let (pid, out, stop) = s.hold(45_000, 100);
    let before = s.lab.list_json(&s.bins).unwrap();

    s.lab.stop(s.daemon).expect("daemon was running");
    assert!(
        s.lab.lb_pin_dir.join("link_xdp").exists(),
        "the XDP link stays pinned"
    );
    std::thread::sleep(Duration::from_millis(500)); // traffic flows with no daemon at all
    let log = s.work.0.join("daemon2.log");
    s.daemon = s
        .lab
        .start_daemon(&s.bins, &s.config_path(), &log)
        .expect("restart");
    wait_for(Duration::from_secs(20), "restarted daemon to sync", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("synced").then_some(text)
    })
    .map(|text| {
        assert!(
            text.contains("adopted"),
            "restart adopts pinned state:\n{text}"
        )
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let held = s.finish_hold(pid, &out, &stop);
    for h in &held {
        assert!(
            h.failed == 0 && !h.moved && h.answered >= 10,
            "connection disturbed by the restart: {h:?}"
        );
    }
    let after = s.lab.list_json(&s.bins).unwrap();
    assert_eq!(
        without_counters(before),
        without_counters(after),
        "the restarted daemon rewrote the tables"
    );
}

#[test]
fn cleanup_and_lab_teardown_leave_nothing_behind() {
    if !require_root("namespaced end-to-end test") {
        return;
    }
    let mut s = Setup::new("clean");
    let prefix = s.lab.prefix.clone();
    let pin = s.lab.lb_pin_dir.clone();
    let lb = s.lab.lb.clone();
    // `cleanup` refuses while a daemon owns the datapath (hardening_e2e proves that and
    // `--force`); here the daemon has exited, leaving its pins for the next one to adopt.
    s.lab.stop(s.daemon).expect("daemon was running");
    let out = lb_lab::run(
        s.bins.ferrolb.to_str().unwrap(),
        &["--pin-dir", pin.to_str().unwrap(), "cleanup"],
    )
    .expect("cleanup");
    assert!(out.contains("link_xdp"), "{out}");
    assert!(!pin.exists(), "pin dir removed");
    let link = s
        .lab
        .exec(&lb, "ip", &["link", "show", "dev", "eth0"])
        .unwrap();
    assert!(!link.contains("xdp"), "XDP detached: {link}");
    let dirs = s.lab.pin_dirs();
    drop(s);
    let left: Vec<String> = lb_lab::run("ip", &["netns", "list"])
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    for dir in dirs {
        assert!(!dir.exists(), "{} left", dir.display());
    }
}

#[test]
fn next_hops_follow_a_backend_mac_change() {
    if !require_root("namespaced end-to-end test") {
        return;
    }
    let s = Setup::new("mac");
    let target = format!("{VIP}:{TCP_PORT}");
    let run_flows = |sport: u16| -> Vec<FlowResult> {
        s.lab
            .flows(&s.bins, "tcp", &target, sport, 150)
            .expect("tcp flows")
    };
    let before = run_flows(21000);
    assert!(before.iter().all(|f| f.backend.is_some()));

    // b1 gets a new MAC and announces it (arp_notify), as a replaced NIC or VM would.
    let b1 = s.lab.backends[0].netns.clone();
    s.lab
        .exec(&b1, "sysctl", &["-qw", "net.ipv4.conf.eth0.arp_notify=1"])
        .unwrap();
    s.lab
        .exec(
            &b1,
            "ip",
            &["link", "set", "eth0", "address", "02:00:5e:10:00:01"],
        )
        .unwrap();
    // The kernel accepts the announcement after its 1 s lock time; the datapath's cached
    // next hop expires after the 1 s TTL.
    std::thread::sleep(Duration::from_millis(2500));
    let after = run_flows(22000);
    let failed: Vec<&FlowResult> = after.iter().filter(|f| f.backend.is_none()).collect();
    assert!(
        failed.is_empty(),
        "{} flows failed after the MAC change: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        after.iter().any(|f| f.backend.as_deref() == Some("b1")),
        "b1 still serves"
    );
}

#[test]
fn ipv6_services_are_balanced_ip6ip6_and_answered_by_the_backends() {
    if !require_root("namespaced end-to-end test") {
        return;
    }
    let s = Setup::new("ipv6");
    let v4: Vec<String> = s.lab.backends.iter().map(|b| b.addr.clone()).collect();
    let v6: Vec<String> = s
        .lab
        .backends
        .iter()
        .map(|b| format!("'{}'", b.addr6))
        .collect();
    let list = |addrs: &[String]| {
        addrs
            .iter()
            .map(|a| format!("{{address: {a}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let v4_refs: Vec<&str> = v4.iter().map(String::as_str).collect();
    let text = format!(
        "{}  - {{name: web6, vip: '{VIP6}', port: {TCP_PORT}, protocol: tcp, backends: [{b6}]}}\n  - {{name: echo6, vip: '{VIP6}', port: {UDP_PORT}, protocol: udp, backends: [{b6}]}}\n",
        config(&v4_refs),
        b6 = list(&v6),
    );
    support::replace_file(&s.config_path(), &text);
    if let Err(e) = s.lab.wait_synced(
        &s.bins,
        &[(TCP_PORT, 3), (UDP_PORT, 3), (TCP_PORT, 3), (UDP_PORT, 3)],
    ) {
        panic!("{e}; daemon log:\n{}", s.log());
    }

    let (flows, per) = s.answered_tcp_flows(&format!("[{VIP6}]:{TCP_PORT}"), 40_000, 600);
    assert_eq!(per.len(), 3, "IPv6 connections per backend {per:?}");

    let udp_target = format!("[{VIP6}]:{UDP_PORT}");
    let udp = s
        .lab
        .flows(&s.bins, "udp", &udp_target, 41000, 100)
        .expect("udp flows");
    assert!(
        udp.iter().all(|f| f.backend.is_some()),
        "IPv6 UDP flows unanswered: {:?}",
        udp.iter().find(|f| f.backend.is_none())
    );

    // explain follows the IPv6 path too: it names the backend the kernel chose.
    let tuples: String = flows
        .iter()
        .map(|f| format!("tcp [{CLIENT_ADDR6}]:{} [{VIP6}]:{TCP_PORT}\n", f.sport))
        .collect();
    let explained = s.explain_batch("tuples6.txt", &tuples);
    for (flow, e) in flows.iter().zip(&explained) {
        let name = flow.backend.as_ref().unwrap();
        let addr6 = &s
            .lab
            .backends
            .iter()
            .find(|b| &b.name == name)
            .unwrap()
            .addr6;
        assert_eq!(
            e["backend"].as_str(),
            Some(addr6.as_str()),
            "flow {}",
            flow.sport
        );
    }
}
