//! Runs the whole suite on a tiny configuration (one service, two runs, short bursts) and
//! checks the outputs: files, structure, and delivered counts that are non-zero and
//! consistent with what was offered and what the datapath says it forwarded, for IPv4 and
//! IPv6 alike (every peer measured in both families, the IPv6 cost classes), established
//! flows (replayed ACKs) delivered by every peer (at least 90 %); for the TCP layer,
//! completed requests and connections that are non-zero, within the run's bound and at
//! most what was attempted, one latency sample per completion; the same for every
//! east-west (pod → ClusterIP) peer, whose cgroup is removed with everything else.

use std::path::PathBuf;

use lb_perf_lab::{
    control::Tool,
    cost::PacketClass,
    eastwest::EwPeerKind,
    peers::PeerKind,
    plot::rate_plot_file,
    rate::FlowKind,
    report::Results,
    services::Family,
    suite::{self, Plan},
    tcp::{TcpLoad, TcpPlan, TcpResult, PERCENTILES},
};

use lb_lab::require_root;

struct OutDir(PathBuf);

impl Drop for OutDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn our_namespaces() -> Vec<String> {
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let prefix = format!("{}{}-", lb_perf_lab::netns::PREFIX, std::process::id());
    listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// The trivial external peer: XDP_PASS (the object written to a file, as a user's would
/// be) and routes for the VIPs towards the sink, so the DUT's kernel forwards every frame;
/// its fill command keeps a copy of the service file it was given.
const EXTERNAL: &str = "test-pass-route";

struct ExternalFiles {
    filled: PathBuf,
}

fn register_external(dir: &std::path::Path) -> ExternalFiles {
    std::fs::create_dir_all(dir).unwrap();
    let object = dir.join("pass.o");
    std::fs::write(&object, lb_daemon::objects::XDP_PASS).unwrap();
    let filled = dir.join("filled.json");
    let peer = lb_perf_lab::external::ExternalPeer {
        name: EXTERNAL.into(),
        xdp: Some(lb_perf_lab::external::ExternalXdp {
            object,
            program: None,
            fill: Some(format!(
                "test -d \"$PERF_LAB_MAPS\" && cp \"$PERF_LAB_SERVICES\" {}",
                filled.display()
            )),
        }),
        setup: Some(
            "ip route add 198.19.0.0/16 via \"$PERF_LAB_SINK4\" && \
             ip -6 route add 2001:db8:19::/64 via \"$PERF_LAB_SINK6\""
                .into(),
        ),
        teardown: Some("ip route del 198.19.0.0/16 && ip -6 route del 2001:db8:19::/64".into()),
    };
    let reserved: Vec<&str> = PeerKind::ALL.iter().map(|p| p.name()).collect();
    lb_perf_lab::external::register(vec![peer], &reserved).unwrap();
    ExternalFiles { filled }
}

#[test]
fn tiny_run_writes_a_consistent_report_and_cleans_up() {
    if !require_root("perf-lab tiny run") {
        return;
    }
    let out = OutDir(std::env::temp_dir().join(format!("perf-lab-test-{}", std::process::id())));
    let ext_dir = register_external(&out.0);
    let plan = Plan::tiny();
    assert!(plan.peers.iter().any(|p| p.name() == EXTERNAL));
    assert_eq!(
        plan.families,
        Family::ALL.to_vec(),
        "tiny runs both families"
    );
    let own_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let returned = suite::run(&plan, &out.0).expect("tiny run");

    let rate_plots: Vec<String> = Family::ALL
        .iter()
        .flat_map(|&family| FlowKind::ALL.map(|flows| rate_plot_file(family, flows)))
        .collect();
    assert!(rate_plots.contains(&"rate-new-ipv6.svg".to_string()));
    for file in rate_plots.iter().map(String::as_str).chain([
        "results.json",
        "report.md",
        "program-cost.svg",
        "control-plane.svg",
        "tcp-rr-latency-1svc.svg",
        "tcp-rr1-latency-1svc.svg",
        "tcp-connect-latency-1svc.svg",
    ]) {
        let len = std::fs::metadata(out.0.join(file))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 0, "{file} written");
    }
    let json = std::fs::read_to_string(out.0.join("results.json")).unwrap();
    let results: Results = serde_json::from_str(&json).expect("results.json parses");
    assert_eq!(results.rate.len(), returned.rate.len());
    assert_eq!(results.meta.runs, plan.runs);
    assert_eq!(results.meta.service_counts, plan.service_counts);

    // Packet rate: every peer x family x flow kind once per service count, every run
    // recorded.
    assert_eq!(
        results.rate.len(),
        plan.service_counts.len() * PeerKind::all().len() * Family::ALL.len() * FlowKind::ALL.len()
    );
    let cells = plan.service_counts.iter().flat_map(|&services| {
        Family::ALL.into_iter().flat_map(move |family| {
            PeerKind::all()
                .into_iter()
                .flat_map(move |peer| FlowKind::ALL.map(|flows| (services, family, peer, flows)))
        })
    });
    for (services, family, peer, flows) in cells {
        let cell: Vec<_> = results
            .rate
            .iter()
            .filter(|r| {
                r.peer == peer && r.family == family && r.flows == flows && r.services == services
            })
            .collect();
        let name = format!(
            "{} {} {} {services} svc",
            family.name(),
            peer.name(),
            flows.name()
        );
        assert_eq!(cell.len(), 1, "{name}");
        let r = cell[0];
        assert!(r.unsupported.is_none(), "{name}: {:?}", r.unsupported);
        assert_eq!(r.samples.len(), plan.runs, "{name}: runs");
        for s in &r.samples {
            assert!(s.offered > 0, "{name}: offered");
            assert!(s.delivered > 0, "{name}: nothing delivered");
            assert!(s.delivered <= s.offered, "{name}: delivered {s:?}");
            assert!(s.seconds > 0.0, "{name}: duration");
            if peer == PeerKind::FerrolbDsr {
                let forwarded = s.datapath_forwarded.expect("ferrolb counts");
                assert!(
                    s.delivered <= forwarded && forwarded <= s.offered,
                    "{name}: sink {} vs datapath {forwarded} vs offered {}",
                    s.delivered,
                    s.offered
                );
            } else {
                assert!(s.datapath_forwarded.is_none());
            }
        }
        let fraction = r.delivered_fraction.as_ref().expect("fraction");
        eprintln!(
            "{name}: delivered fraction {:.3}..{:.3}",
            fraction.min, fraction.max
        );
        assert!(
            fraction.min > 0.0 && fraction.max <= 1.0,
            "{name}: {fraction:?}"
        );
        // Established frames are ACKs of connections the peer never saw open: conntrack
        // must take them up (loose pickup) rather than drop them as invalid, and ferrolb
        // must forward them all.
        if flows == FlowKind::Established {
            assert!(
                fraction.min >= 0.9,
                "{name}: established frames lost: {fraction:?}"
            );
        }
        let rate = r.delivered_pps.as_ref().expect("rate");
        assert!(rate.min > 0.0 && rate.min <= rate.median && rate.median <= rate.max);
        assert_eq!(rate.runs, plan.runs);
    }

    // The report has a row per family and peer, and the targets are computed per family.
    let md_rates = std::fs::read_to_string(out.0.join("report.md")).unwrap();
    for family in Family::ALL {
        for peer in PeerKind::all() {
            let row = format!("| {} | {} | new flows |", family.name(), peer.name());
            assert!(md_rates.contains(&row), "report row {row}");
        }
        let ratios: Vec<_> = results
            .ratios
            .iter()
            .filter(|r| r.family == family)
            .collect();
        for what in [
            "ferrolb / nftables",
            "ferrolb / bpf-redirect",
            "program cost",
        ] {
            assert!(
                ratios
                    .iter()
                    .any(|r| r.what.contains(what) && r.value.is_some()),
                "{} ratio {what:?} computed",
                family.name()
            );
        }
    }

    // Program cost: every class (IPv4 and IPv6), with both baselines.
    assert_eq!(results.program_cost.len(), plan.service_counts.len());
    for c in &results.program_cost {
        assert!(c.unsupported.is_none());
        assert!(c.pass_repeat_ns.is_some() && c.pass_single_ns.is_some());
        let classes: Vec<PacketClass> = c.classes.iter().map(|x| x.class).collect();
        assert_eq!(classes, PacketClass::ALL.to_vec());
        for x in &c.classes {
            assert!(x.ns_per_packet.median > 0.0, "{:?}", x.class);
            assert_eq!(x.ns_per_packet.runs, plan.runs);
        }
    }

    // Control plane: every tool timed.
    for tool in Tool::ALL {
        let c = results
            .control_plane
            .iter()
            .find(|c| c.tool == tool)
            .expect("tool measured");
        assert!(c.unsupported.is_none(), "{tool:?}: {:?}", c.unsupported);
        assert!(c.seconds.as_ref().is_some_and(|s| s.median > 0.0));
    }

    // TCP: every peer with real endpoints (all but the bpf-redirect ceiling) x load, every
    // run recorded, counts non-zero and consistent, percentiles ordered.
    assert!(plan.layers.tcp, "the tiny plan runs the TCP layer");
    assert_eq!(
        results.tcp.len(),
        plan.service_counts.len() * plan.tcp_peers().len() * TcpLoad::ALL.len()
    );
    assert!(results.tcp.iter().all(|r| r.peer != PeerKind::BpfRedirect));
    for &services in &plan.service_counts {
        for peer in plan.tcp_peers() {
            for load in TcpLoad::ALL {
                let name = format!("tcp {} {} {services} svc", peer.name(), load.name());
                check_tcp_cell(&plan, &plan.tcp, &name, &results.tcp, peer, services, load);
            }
        }
    }

    // East-west (pod → ClusterIP): every peer x load the same way; the socket peer's
    // completions also prove its programs rewrote the connects (the ClusterIP is routed
    // nowhere beyond the client's namespace).
    assert!(
        plan.layers.east_west,
        "the tiny plan runs the east-west layer"
    );
    assert_eq!(
        results.east_west.len(),
        plan.service_counts.len() * EwPeerKind::ALL.len() * TcpLoad::ALL.len()
    );
    for &services in &plan.service_counts {
        for peer in EwPeerKind::ALL {
            for load in TcpLoad::ALL {
                let name = format!("east-west {} {} {services} svc", peer.name(), load.name());
                let ew = &results.east_west;
                check_tcp_cell(&plan, &plan.east_west, &name, ew, peer, services, load);
            }
        }
        for what in ["ferrolb-socket / direct", "ferrolb-socket / iptables-nft"] {
            assert!(
                results.ratios.iter().any(|r| r.services == services
                    && r.what.contains("east-west")
                    && r.what.contains(what)
                    && r.value.is_some()),
                "east-west ratio {what:?} computed at {services} services"
            );
        }
    }

    let md = std::fs::read_to_string(out.0.join("report.md")).unwrap();
    for heading in [
        "## Packet rate",
        "## Program cost",
        "## Control-plane programming time",
        "## TCP: request/response latency and connection rate",
        "## East-west: pod → ClusterIP",
        "## Targets",
    ] {
        assert!(md.contains(heading), "report has {heading}");
    }
    for peer in PeerKind::all() {
        assert!(md.contains(peer.name()), "report names {}", peer.name());
    }
    // The external peer's program was measured by the cost layer, every class, and its
    // rows are in the report.
    for c in &results.program_cost {
        let ext: Vec<_> = c.external.iter().filter(|e| e.peer == EXTERNAL).collect();
        assert_eq!(ext.len(), 1, "{EXTERNAL} in the cost layer");
        let classes: Vec<PacketClass> = ext[0].classes.iter().map(|x| x.class).collect();
        assert_eq!(classes, PacketClass::ALL.to_vec());
    }
    assert!(
        md.contains(&format!("| {EXTERNAL}: flow-table hit (ACK), cold")),
        "report has the external peer's cost rows"
    );
    assert!(
        std::fs::read_to_string(&ext_dir.filled).is_ok_and(|t| t.contains("\"vip\"")),
        "the fill command ran with the service set"
    );
    for peer in EwPeerKind::ALL {
        let row = format!("| {} |", peer.name());
        assert!(md.contains(&row), "report has an east-west row {row}");
    }
    assert!(!results.ratios.is_empty());

    assert_eq!(our_namespaces(), Vec::<String>::new(), "namespaces removed");
    let prefix = format!("{}{}-", lb_perf_lab::netns::PREFIX, std::process::id());
    let pins: Vec<_> = std::fs::read_dir("/sys/fs/bpf")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(pins.is_empty(), "pins removed: {pins:?}");

    // The socket peer's cgroup is gone and this process is back where it was.
    let root = lb_daemon::loader::default_cgroup_root().unwrap();
    let cgroups: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(cgroups.is_empty(), "cgroups removed: {cgroups:?}");
    assert_eq!(
        std::fs::read_to_string("/proc/self/cgroup").unwrap(),
        own_cgroup,
        "back in its own cgroup"
    );
}

/// One TCP-style cell (`peer`, `services`, `load`) of `results`, run with `loads`: there
/// once, measured in every run, counts non-zero and consistent, one latency sample per
/// completion, percentiles ordered.
fn check_tcp_cell<P: PartialEq + Copy>(
    plan: &Plan,
    loads: &TcpPlan,
    name: &str,
    results: &[TcpResult<P>],
    peer: P,
    services: u32,
    load: TcpLoad,
) {
    let cell: Vec<_> = results
        .iter()
        .filter(|r| r.peer == peer && r.load == load && r.services == services)
        .collect();
    assert_eq!(cell.len(), 1, "{name}");
    let r = cell[0];
    assert!(r.unsupported.is_none(), "{name}: {:?}", r.unsupported);
    assert_eq!(r.samples.len(), plan.runs, "{name}: runs");
    let bound = match load {
        TcpLoad::RequestResponse | TcpLoad::RequestResponseSingle => loads.requests,
        TcpLoad::ConnectClose => loads.connects,
    };
    for s in &r.samples {
        assert!(s.completed > 0, "{name}: nothing completed {s:?}");
        assert!(s.completed <= s.attempted, "{name}: {s:?}");
        assert_eq!(s.completed + s.failed, s.attempted, "{name}: {s:?}");
        assert!(s.attempted <= bound, "{name}: over the bound {s:?}");
        if load == TcpLoad::ConnectClose {
            assert!(s.connect_failed <= s.failed, "{name}: {s:?}");
        }
        assert!(s.seconds > 0.0, "{name}: duration");
        let p = s.latency_us.expect("latency percentiles");
        assert_eq!(p.samples as u64, s.completed, "{name}: one latency each");
        assert!(
            0.0 < p.p50 && p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999,
            "{name}: {p:?}"
        );
        match load {
            TcpLoad::RequestResponse | TcpLoad::RequestResponseSingle => {
                assert!(s.transaction_us.is_none())
            }
            TcpLoad::ConnectClose => {
                let t = s.transaction_us.expect("transaction percentiles");
                // A transaction contains its connect.
                assert!(t.p50 >= p.p50 && t.samples == p.samples, "{name}");
            }
        }
    }
    let rate = r.rate.as_ref().expect("rate");
    assert!(rate.min > 0.0 && rate.min <= rate.median && rate.median <= rate.max);
    assert_eq!(rate.runs, plan.runs);
    assert_eq!(r.latency_us.len(), PERCENTILES.len());
    assert!(r
        .latency_us
        .iter()
        .all(|l| l.as_ref().is_some_and(|l| l.runs == plan.runs)));
}
