//! Kernel tests of `loadBalancerSourceRanges` in the XDP balancer (BPF_PROG_TEST_RUN), with
//! the source-range trie and the service records written by the daemon's sync engine from
//! file-mode configs (`source_ranges`).

mod support;

use std::{
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use etherparse::PacketBuilder;
use lb_common::{program_names, NextHop, XdpReason};
use lb_daemon::{
    config, inspect, loader,
    maps::BalancerMaps,
    sync::{DatapathParams, SyncEngine},
};
use support::{require_root, PinDir};

const XDP_DROP: u32 = 1;
const XDP_TX: u32 = 3;
const MAC_IN: [u8; 6] = [0x02, 0, 0, 0, 0x72, 0x01];
const MAC_LB: [u8; 6] = [0x02, 0, 0, 0, 0x72, 0x02];

const PARAMS: DatapathParams = DatapathParams {
    encap_source: std::net::Ipv4Addr::new(198, 18, 0, 2),
    encap_source6: Some(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
    nexthop_ttl: std::time::Duration::from_secs(1),
    icmp_limit: lb_daemon::sync::IcmpLimit::DEFAULT,
    new_flow_budget: lb_daemon::sync::NewFlowBudget::DEFAULT,
};

/// Port 80 filtered (with overlapping prefixes), port 81 filtered by another list on the
/// same VIP, port 82 unfiltered; an IPv6 service filtered by an IPv6 list.
fn config(web_ranges: &str) -> String {
    format!(
        "
services:
  - {{name: web, vip: 198.18.100.1, port: 80, protocol: tcp,
     backends: [{{address: 198.18.0.11}}, {{address: 198.18.0.12}}],
     source_ranges: {web_ranges}}}
  - {{name: admin, vip: 198.18.100.1, port: 81, protocol: tcp,
     backends: [{{address: 198.18.0.11}}], source_ranges: ['198.18.1.128/25']}}
  - {{name: open, vip: 198.18.100.1, port: 82, protocol: tcp,
     backends: [{{address: 198.18.0.12}}]}}
  - {{name: web6, vip: '2001:db8::100', port: 80, protocol: tcp,
     backends: [{{address: '2001:db8::11'}}],
     source_ranges: ['2001:db8:1::/48', '2001:db8:1:2::/64', '2001:db8::10/128']}}
"
    )
}

const WEB_RANGES: &str = "['198.18.0.0/16', '198.18.1.0/24', '198.18.0.10/32']";

struct Fixture {
    ebpf: aya::Ebpf,
    engine: SyncEngine,
    _pin: PinDir,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        let pin = PinDir::new(tag);
        let ebpf = loader::load_balancer(&pin.path).expect("load balancer");
        let maps = BalancerMaps::open(&pin.path).expect("open maps");
        let engine = SyncEngine::adopt(maps, &PARAMS).expect("adopt");
        let mut fixture = Self {
            ebpf,
            engine,
            _pin: pin,
        };
        fixture.apply(&config(WEB_RANGES));
        fixture
    }

    /// Syncs a config, then fixes every backend's next hop (no routes in test_run).
    fn apply(&mut self, yaml: &str) {
        self.engine.apply(&config::parse(yaml).unwrap()).unwrap();
        let backends: Vec<_> = self.engine.state().backends.values().copied().collect();
        for b in backends {
            let hop = NextHop {
                dst_mac: [0x02, 0xbe, 0, 0, 0, b.id as u8],
                src_mac: MAC_LB,
                ifindex: 1,
                mtu: 1500,
                flags: 0,
                backend_generation: b.generation,
                expires_jiffies: u64::MAX,
            };
            self.engine.set_static_nexthop(b.id, hop).unwrap();
        }
    }

    fn program(&self) -> &Xdp {
        self.ebpf
            .program(program_names::XDP_BALANCER)
            .unwrap()
            .try_into()
            .unwrap()
    }

    fn drops(&self) -> u64 {
        self.engine.maps().reason_counters().unwrap()[XdpReason::DropSourceRange as usize].packets
    }

    /// Sends a SYN from `client` to `dport` and checks the verdict; a refused one must move
    /// the source-range counter by one.
    fn expect(&self, client: &str, vip: &str, dport: u16, allowed: bool) {
        let before = self.drops();
        let verdict = run(self.program(), &syn(client, vip, 40_000, dport));
        let (want, moved) = if allowed { (XDP_TX, 0) } else { (XDP_DROP, 1) };
        assert_eq!(verdict, want, "{client} -> {vip}:{dport}");
        assert_eq!(
            self.drops() - before,
            moved,
            "{client} -> {vip}:{dport}: counter"
        );
    }
}

/// A TCP SYN (which records no flow, so every one meets the ranges).
fn syn(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_IN, MAC_LB);
    let builder = match (
        src.parse::<IpAddr>().unwrap(),
        dst.parse::<IpAddr>().unwrap(),
    ) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    }
    .tcp(sport, dport, 1, 64240)
    .syn();
    let mut out = Vec::with_capacity(builder.size(0));
    builder.write(&mut out, &[]).unwrap();
    out
}

fn run(prog: &Xdp, packet: &[u8]) -> u32 {
    let mut out = vec![0u8; packet.len() + 256];
    prog.test_run(TestRunOptions {
        data_in: Some(packet),
        data_out: Some(&mut out),
        ..Default::default()
    })
    .expect("test_run")
    .return_value
}

#[test]
fn sources_inside_the_ranges_are_balanced_and_others_dropped_both_families() {
    if !require_root("source range fixtures") {
        return;
    }
    let fx = Fixture::new("rng-allow");
    // Inside the /16, the /24 and the /32 of web's overlapping list.
    for client in ["198.18.200.1", "198.18.1.7", "198.18.0.10"] {
        fx.expect(client, "198.18.100.1", 80, true);
    }
    for client in ["198.19.0.1", "10.0.0.1", "203.0.113.9"] {
        fx.expect(client, "198.18.100.1", 80, false);
    }
    for client in ["2001:db8:1::7", "2001:db8:1:2::9", "2001:db8::10"] {
        fx.expect(client, "2001:db8::100", 80, true);
    }
    for client in ["2001:db8:2::1", "2001:db8::11", "2001:db9::1"] {
        fx.expect(client, "2001:db8::100", 80, false);
    }
}

#[test]
fn two_services_on_one_trie_keep_their_own_lists_and_unfiltered_ones_are_untouched() {
    if !require_root("source range fixtures") {
        return;
    }
    let fx = Fixture::new("rng-two");
    // web's /16 holds 198.18.1.5, admin's /25 does not: each service its own list.
    fx.expect("198.18.1.5", "198.18.100.1", 80, true);
    fx.expect("198.18.1.5", "198.18.100.1", 81, false);
    fx.expect("198.18.1.200", "198.18.100.1", 81, true);
    // No list: every source, also those both lists refuse.
    for client in ["198.18.1.5", "203.0.113.9", "10.0.0.1"] {
        fx.expect(client, "198.18.100.1", 82, true);
    }
    // `list` shows each service's own list, `explain` says why a source is refused.
    let listed = inspect::list_services(fx.engine.maps()).unwrap();
    let admin = listed.iter().find(|s| s.port == 81).unwrap();
    assert_eq!(admin.source_ranges, ["198.18.1.128/25"]);
    assert!(listed
        .iter()
        .find(|s| s.port == 82)
        .unwrap()
        .source_ranges
        .is_empty());
    let tuple = |src: &str| inspect::Tuple {
        protocol: lb_model::Protocol::Tcp,
        src: src.parse().unwrap(),
        sport: 40_000,
        dst: "198.18.100.1".parse().unwrap(),
        dport: 81,
    };
    let refused = inspect::explain(fx.engine.maps(), tuple("198.18.1.5")).unwrap();
    assert_eq!(refused.verdict, XdpReason::DropSourceRange.name());
    assert!(refused
        .why
        .contains("outside the service's source ranges (198.18.1.128/25)"));
    let allowed = inspect::explain(fx.engine.maps(), tuple("198.18.1.200")).unwrap();
    assert_eq!(
        allowed.verdict,
        XdpReason::Forwarded.name(),
        "{}",
        allowed.why
    );
}

#[test]
fn a_changed_list_never_drops_a_client_both_lists_allow() {
    if !require_root("source range fixtures") {
        return;
    }
    let mut fx = Fixture::new("rng-change");
    // 198.18.1.5 is inside every list; 198.19.0.1 inside none.
    let lists = [
        "['198.18.1.0/24', '198.18.3.0/24']",
        "['198.18.1.5/32', '198.18.2.0/24']",
        "['198.18.0.0/16']",
        "['198.18.1.4/30', '198.18.2.0/24', '198.18.3.0/24']",
    ];
    let stop = AtomicBool::new(false);
    let allowed = syn("198.18.1.5", "198.18.100.1", 40_001, 80);
    let refused = syn("198.19.0.1", "198.18.100.1", 40_002, 80);
    let (engine, ebpf) = (&mut fx.engine, &fx.ebpf);
    let prog: &Xdp = ebpf
        .program(program_names::XDP_BALANCER)
        .unwrap()
        .try_into()
        .unwrap();
    let sent = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(run(prog, &allowed), XDP_TX, "allowed client dropped");
                assert_eq!(run(prog, &refused), XDP_DROP, "refused client let in");
                sent += 1;
            }
            sent
        });
        // Bounded: 200 list changes, each a plan of puts, a record and deletes.
        for i in 0..200 {
            let yaml = config(lists[i % lists.len()]);
            engine.apply(&config::parse(&yaml).unwrap()).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        sender.join().expect("the sender saw a wrong verdict")
    });
    assert!(sent > 0, "no packet ran while the lists changed");
    // The last list is in force: 198.18.3.9 in, 198.18.200.1 (only in the /16) out.
    fx.apply(&config(lists[199 % lists.len()]));
    fx.expect("198.18.3.9", "198.18.100.1", 80, true);
    fx.expect("198.18.200.1", "198.18.100.1", 80, false);
}

#[test]
fn a_list_removed_opens_the_service_and_an_adopted_trie_is_kept() {
    if !require_root("source range fixtures") {
        return;
    }
    let mut fx = Fixture::new("rng-adopt");
    fx.apply(&config("[]"));
    fx.expect("203.0.113.9", "198.18.100.1", 80, true);
    fx.apply(&config("['198.18.1.0/24']"));
    fx.expect("203.0.113.9", "198.18.100.1", 80, false);
    // A restarted daemon reads the trie back: its first plan writes nothing.
    let maps = BalancerMaps::open(&fx._pin.path).unwrap();
    let mut restarted = SyncEngine::adopt(maps, &PARAMS).unwrap();
    let applied = restarted
        .apply(&config::parse(&config("['198.18.1.0/24']")).unwrap())
        .unwrap();
    assert_eq!(
        applied.ops, 0,
        "the adopted trie and records are already right"
    );
    let ranges = restarted.maps().source_range_entries().unwrap();
    assert_eq!(ranges.len(), 1 + 1 + 3, "{ranges:?}");
}
