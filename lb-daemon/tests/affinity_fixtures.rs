//! Kernel fixtures of `sessionAffinity: ClientIP` in the XDP balancer: packets through the
//! real program with BPF_PROG_TEST_RUN, maps filled by the daemon's sync engine. Each case
//! runs for both families: a client keeps one backend over many source ports (where
//! Maglev alone would spread them), keeps it across a backend-set change that keeps the
//! backend, loses it when the backend leaves the service, and after the timeout.

mod support;

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use etherparse::PacketBuilder;
use lb_common::NextHop;
use lb_daemon::{
    config, inspect, loader,
    maps::BalancerMaps,
    sync::{DatapathParams, SyncEngine},
};
use lb_model::Protocol;
use support::{require_root, PinDir};

const XDP_TX: u32 = 3;
/// The timeout of the cases that must not expire: an hour, far beyond any slow machine.
const LONG: u32 = 3_600;
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const PARAMS: DatapathParams = DatapathParams {
    encap_source: std::net::Ipv4Addr::new(198, 18, 0, 2),
    encap_source6: Some(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
    nexthop_ttl: Duration::from_secs(1),
    icmp_limit: lb_daemon::sync::IcmpLimit::DEFAULT,
    new_flow_budget: lb_daemon::sync::NewFlowBudget::DEFAULT,
};

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn vip(self) -> IpAddr {
        match self {
            Self::V4 => "198.18.100.1".parse().unwrap(),
            Self::V6 => "2001:db8:100::1".parse().unwrap(),
        }
    }

    fn client(self, n: u8) -> IpAddr {
        match self {
            Self::V4 => IpAddr::from([198, 18, 1, n]),
            Self::V6 => IpAddr::from([0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(n)]),
        }
    }

    fn backend(self, n: u8) -> IpAddr {
        match self {
            Self::V4 => IpAddr::from([198, 18, 0, 10 + n]),
            Self::V6 => IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + u16::from(n)]),
        }
    }

    /// A config with `sticky` (port 80, affinity `timeout_s`) over `sticky_backends` and
    /// `plain` (port 81, no affinity) over backends 1..=8.
    fn config(self, timeout_s: u32, sticky_backends: &[u8]) -> String {
        let list = |ns: &mut dyn Iterator<Item = u8>| {
            ns.map(|n| format!("{{address: \"{}\"}}", self.backend(n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "services:
  - {{name: sticky, vip: \"{vip}\", port: 80, protocol: tcp,
     session_affinity: {{timeout_seconds: {timeout_s}}}, backends: [{sticky}]}}
  - {{name: plain, vip: \"{vip}\", port: 81, protocol: tcp, backends: [{plain}]}}
",
            vip = self.vip(),
            sticky = list(&mut sticky_backends.iter().copied()),
            plain = list(&mut (1..=8)),
        )
    }
}

struct Fixture {
    ebpf: aya::Ebpf,
    engine: SyncEngine,
    family: Family,
    _pin: PinDir,
}

impl Fixture {
    fn new(tag: &str, family: Family, yaml: &str) -> Self {
        let pin = PinDir::new(tag);
        let ebpf = loader::load_balancer(&pin.path).expect("load balancer");
        let maps = BalancerMaps::open(&pin.path).expect("open maps");
        let engine = SyncEngine::adopt(maps, &PARAMS).unwrap();
        let mut fixture = Self {
            ebpf,
            engine,
            family,
            _pin: pin,
        };
        fixture.apply(yaml);
        fixture
    }

    /// Plans and writes `yaml` through the sync engine; pins every backend's next hop
    /// (test_run has no route to the lab addresses).
    fn apply(&mut self, yaml: &str) {
        self.engine.apply(&config::parse(yaml).unwrap()).unwrap();
        let backends: Vec<_> = self.engine.state().backends.values().copied().collect();
        for backend in backends {
            let hop = NextHop {
                dst_mac: [0x02, 0xbe, 0, 0, 0, backend.id as u8],
                src_mac: LB_MAC,
                ifindex: 1,
                mtu: 1500,
                flags: 0,
                backend_generation: backend.generation,
                expires_jiffies: u64::MAX,
            };
            self.engine.set_static_nexthop(backend.id, hop).unwrap();
        }
    }

    /// Sends a TCP ACK with data (a packet that records flow and affinity) from
    /// `client:sport` to the VIP's `dport`, and returns the backend the flow table pinned
    /// it to.
    fn connect(&mut self, client: IpAddr, sport: u16, dport: u16) -> IpAddr {
        let eth = PacketBuilder::ethernet2([0x02, 0, 0, 0, 0, 0x10], LB_MAC);
        let ip = match (client, self.family.vip()) {
            (IpAddr::V4(c), IpAddr::V4(v)) => eth.ipv4(c.octets(), v.octets(), 64),
            (IpAddr::V6(c), IpAddr::V6(v)) => eth.ipv6(c.octets(), v.octets(), 64),
            _ => unreachable!("one family per fixture"),
        };
        let builder = ip.tcp(sport, dport, 1001, 64240).ack(1);
        let mut packet = Vec::new();
        builder.write(&mut packet, b"hello").unwrap();
        let (action, _) = support::xdp::run_balancer(&mut self.ebpf, &packet);
        assert_eq!(action, XDP_TX, "{client}:{sport} → :{dport} forwarded");
        let entry = self.explain(client, sport, dport).flow_entry;
        entry
            .and_then(|e| e.backend)
            .expect("the ACK recorded its flow")
    }

    fn explain(&self, client: IpAddr, sport: u16, dport: u16) -> inspect::Explanation {
        let tuple = inspect::Tuple {
            protocol: Protocol::Tcp,
            src: client,
            sport,
            dst: self.family.vip(),
            dport,
        };
        inspect::explain(self.engine.maps(), tuple).unwrap()
    }
}

/// Runs `case` for both families, each in a pin directory of its own.
fn both_families(tag: &str, case: impl Fn(&str, Family)) {
    if !require_root("affinity fixture") {
        return;
    }
    case(&format!("aff-{tag}-v4"), Family::V4);
    case(&format!("aff-{tag}-v6"), Family::V6);
}

#[test]
fn one_client_keeps_one_backend_over_many_source_ports_where_maglev_spreads_them() {
    both_families("hit", |tag, family| {
        let mut fx = Fixture::new(tag, family, &family.config(LONG, &[1, 2, 3, 4, 5, 6, 7, 8]));
        let client = family.client(1);
        let sticky: BTreeSet<IpAddr> = (0..32)
            .map(|i| fx.connect(client, 40_000 + i, 80))
            .collect();
        let plain: BTreeSet<IpAddr> = (0..32)
            .map(|i| fx.connect(client, 40_000 + i, 81))
            .collect();
        assert_eq!(sticky.len(), 1, "affinity: one backend, got {sticky:?}");
        assert!(
            plain.len() >= 3,
            "no affinity: Maglev spreads ports, got {plain:?}"
        );
        let explained = fx.explain(client, 50_000, 80);
        let entry = explained.affinity_entry.expect("the client's entry");
        assert!(entry.usable && entry.timeout_s == LONG);
        assert_eq!(explained.backend, sticky.first().copied());
        assert!(
            explained.why.contains("session affinity"),
            "{}",
            explained.why
        );
    });
}

/// Clients 1..=24 each connect once; returns their backends.
fn connect_clients(fx: &mut Fixture, family: Family, sport: u16) -> Vec<(IpAddr, IpAddr)> {
    (1..=24)
        .map(|n| {
            let client = family.client(n);
            (client, fx.connect(client, sport, 80))
        })
        .collect()
}

#[test]
fn a_backend_set_change_that_keeps_the_backend_keeps_the_client() {
    both_families("keep", |tag, family| {
        let mut fx = Fixture::new(tag, family, &family.config(LONG, &[1, 2, 3]));
        let before = connect_clients(&mut fx, family, 40_000);
        fx.apply(&family.config(LONG, &[1, 2, 3, 4, 5, 6, 7, 8]));
        let mut moved_by_maglev = 0;
        for (client, kept) in before {
            let explained = fx.explain(client, 41_000, 80);
            if explained.maglev_backend != Some(kept) {
                moved_by_maglev += 1;
            }
            let entry = explained.affinity_entry;
            assert_eq!(
                fx.connect(client, 41_000, 80),
                kept,
                "{client} keeps {kept}; its entry: {entry:?}"
            );
        }
        assert!(
            moved_by_maglev > 0,
            "the new table moves some clients, or this proves nothing"
        );
    });
}

#[test]
fn a_backend_leaving_the_service_ends_its_clients_affinity() {
    both_families("leave", |tag, family| {
        let mut fx = Fixture::new(tag, family, &family.config(LONG, &[1, 2, 3]));
        let before = connect_clients(&mut fx, family, 40_000);
        let (client, gone) = before[0];
        let remaining: Vec<u8> = (1..=3).filter(|&n| family.backend(n) != gone).collect();
        // `gone` still serves `plain`: only the purge, not its generation, ends the entry.
        fx.apply(&family.config(LONG, &remaining));
        assert!(
            fx.explain(client, 41_000, 80).affinity_entry.is_none(),
            "the daemon purged the entry naming {gone}"
        );
        let now = fx.connect(client, 41_000, 80);
        assert_ne!(now, gone);
        for (other, kept) in &before[1..] {
            if *kept != gone {
                assert_eq!(
                    fx.connect(*other, 41_000, 80),
                    *kept,
                    "{other} keeps {kept}"
                );
            }
        }
    });
}

#[test]
fn affinity_expires_after_the_timeout_without_traffic() {
    both_families("expire", |tag, family| {
        let mut fx = Fixture::new(tag, family, &family.config(LONG, &[1, 2, 3]));
        let before = connect_clients(&mut fx, family, 40_000);
        fx.apply(&family.config(LONG, &[1, 2, 3, 4, 5, 6, 7, 8]));
        let (client, kept) = before
            .iter()
            .copied()
            .find(|(c, kept)| fx.explain(*c, 41_000, 80).maglev_backend != Some(*kept))
            .expect("the new table moves some client");
        let maglev = fx.explain(client, 41_000, 80).maglev_backend.unwrap();
        assert_eq!(fx.connect(client, 41_000, 80), kept, "within the timeout");
        // The timeout shortened to 1 s (the entries stay: the service keeps its
        // affinity and its backends). It ends at most an eighth later (the refresh
        // interval), so 1.3 s without traffic is past it however old the entry was.
        fx.apply(&family.config(1, &[1, 2, 3, 4, 5, 6, 7, 8]));
        std::thread::sleep(Duration::from_millis(1_300));
        let explained = fx.explain(client, 42_000, 80);
        let entry = explained.affinity_entry.expect("still in the map");
        assert!(!entry.usable && entry.age_ms > 1_000, "expired: {entry:?}");
        assert_eq!(
            fx.connect(client, 42_000, 80),
            maglev,
            "expired: Maglev decides"
        );
        // Re-recorded (whether still within 1 s by now depends on the machine's speed).
        let renewed = fx.explain(client, 43_000, 80).affinity_entry.unwrap();
        assert_eq!(renewed.backend, Some(maglev), "re-recorded: {renewed:?}");
    });
}
