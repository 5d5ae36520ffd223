//! Kernel unit tests of the datapath (Katran's and Cilium's method): input packet → verdict,
//! output bytes and counters, run through BPF_PROG_TEST_RUN, with the maps filled by the
//! daemon's own planner and map writer.

mod support;

use std::net::IpAddr;

use etherparse::{IpNumber, Ipv4Header, Ipv4HeaderSlice, PacketBuilder, TcpHeader};
use lb_common::{NextHop, XdpReason};
use lb_daemon::{
    config, inspect, loader,
    maps::BalancerMaps,
    planner::KernelState,
    sync::{DatapathParams, SyncEngine},
};
use lb_model::Protocol;
use support::{require_root, PinDir};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const CLIENT: [u8; 4] = [198, 18, 0, 10];
const VIP: [u8; 4] = [198, 18, 100, 1];
const LB: [u8; 4] = [198, 18, 0, 2];
const LB6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// How the fixtures' datapath forwards: both families ready.
const PARAMS: DatapathParams = DatapathParams {
    encap_source: std::net::Ipv4Addr::new(LB[0], LB[1], LB[2], LB[3]),
    encap_source6: Some(std::net::Ipv6Addr::from_octets(LB6)),
    nexthop_ttl: std::time::Duration::from_secs(1),
    icmp_limit: lb_daemon::sync::IcmpLimit::DEFAULT,
    new_flow_budget: lb_daemon::sync::NewFlowBudget::DEFAULT,
};

const CONFIG: &str = "
services:
  - name: web
    vip: 198.18.100.1
    port: 80
    protocol: tcp
    backends: [{address: 198.18.0.11}, {address: 198.18.0.12}, {address: 198.18.0.13}]
  - name: dns
    vip: 198.18.100.1
    port: 53
    protocol: udp
    backends: [{address: 198.18.0.11}, {address: 198.18.0.12}, {address: 198.18.0.13}]
  - name: empty
    vip: 198.18.100.1
    port: 81
    protocol: tcp
    backends: []
";

/// `CONFIG` with `backend` drained (weight 0: live for the flows it has, no slot).
fn drained_config(backend: IpAddr) -> String {
    CONFIG.replacen(
        &format!("{{address: {backend}}}"),
        &format!("{{address: {backend}, weight: 0}}"),
        1,
    )
}

fn backend_mac(addr: IpAddr) -> [u8; 6] {
    let last = match addr {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(v6) => v6.octets()[15],
    };
    [0x02, 0xbe, 0, 0, 0, last]
}

struct Fixture {
    ebpf: aya::Ebpf,
    engine: SyncEngine,
    // Dropped last: removes the pins.
    _pin: PinDir,
}

impl Fixture {
    fn new(tag: &str, yaml: &str) -> Self {
        let pin = PinDir::new(tag);
        let ebpf = loader::load_balancer(&pin.path).expect("load balancer");
        let maps = BalancerMaps::open(&pin.path).expect("open maps");
        let engine = SyncEngine::adopt(maps, &PARAMS).unwrap();
        let mut fixture = Self {
            ebpf,
            engine,
            _pin: pin,
        };
        fixture.apply(yaml);
        fixture
    }

    /// The maps, as the kernel holds them.
    fn maps(&self) -> &BalancerMaps {
        self.engine.maps()
    }

    /// What the planner believes the kernel holds.
    fn state(&self) -> &KernelState {
        self.engine.state()
    }

    /// Plans and writes a config with the daemon's sync engine, then pins every backend's
    /// next hop (test_run has no route to 198.18.0.0/15 in the host namespace).
    fn apply(&mut self, yaml: &str) {
        let desired = config::parse(yaml).unwrap();
        self.engine.apply(&desired).unwrap();
        let backends: Vec<_> = self
            .state()
            .backends
            .iter()
            .map(|(a, b)| (*a, *b))
            .collect();
        for (addr, backend) in &backends {
            self.engine
                .set_static_nexthop(
                    backend.id,
                    NextHop {
                        dst_mac: backend_mac(*addr),
                        src_mac: LB_MAC,
                        ifindex: 1, // test_run delivers on the loopback
                        mtu: 1500,
                        flags: 0,
                        backend_generation: backend.generation,
                        expires_jiffies: u64::MAX,
                    },
                )
                .unwrap();
        }
    }

    fn run(&mut self, packet: &[u8]) -> (u32, Vec<u8>) {
        support::xdp::run_balancer(&mut self.ebpf, packet)
    }

    fn counters(&self) -> Vec<u64> {
        self.maps()
            .reason_counters()
            .unwrap()
            .iter()
            .map(|c| c.packets)
            .collect()
    }

    /// Runs a packet and checks the verdict and that exactly one counter, `reason`, moved.
    fn expect(&mut self, name: &str, packet: &[u8], action: u32, reason: XdpReason) -> Vec<u8> {
        let before = self.counters();
        let (got, out) = self.run(packet);
        let after = self.counters();
        assert_eq!(got, action, "{name}: verdict");
        for &r in XdpReason::ALL {
            let delta = after[r as usize] - before[r as usize];
            let want = u64::from(r == reason);
            assert_eq!(delta, want, "{name}: counter {} moved by {delta}", r.name());
        }
        out
    }

    /// Sends a flow's first packet that records it (an ACK with data: a SYN records
    /// nothing) to port 80, checks the entry, and returns the backend Maglev gave it.
    fn establish(&mut self, sport: u16) -> IpAddr {
        let backend = self
            .explain(Protocol::Tcp, sport, 80)
            .maglev_backend
            .expect("maglev pick");
        self.expect(
            "first packet",
            &tcp_ack(sport, 80, b"hello"),
            XDP_TX,
            XdpReason::Forwarded,
        );
        let entry = self.explain(Protocol::Tcp, sport, 80).flow_entry;
        assert_eq!(
            entry.and_then(|e| e.backend),
            Some(backend),
            "the ACK recorded the flow"
        );
        backend
    }

    fn explain(&self, proto: Protocol, sport: u16, dport: u16) -> inspect::Explanation {
        inspect::explain(
            self.maps(),
            inspect::Tuple {
                protocol: proto,
                src: IpAddr::from(CLIENT),
                sport,
                dst: IpAddr::from(VIP),
                dport,
            },
        )
        .unwrap()
    }
}

fn tcp_syn(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(sport, dport, 1000, 64240)
        .syn();
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out
}

/// A TCP segment of an established connection: ACK set, SYN clear.
fn tcp_ack(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(sport, dport, 1001, 64240)
        .ack(1);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out
}

fn eth(ether_type: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&LB_MAC);
    v.extend_from_slice(&CLIENT_MAC);
    v.extend_from_slice(&ether_type.to_be_bytes());
    v
}

/// A TCP SYN whose IPv4 header carries 4 bytes of options (two NOPs, ... ).
fn tcp_with_ip_options(sport: u16) -> Vec<u8> {
    let mut tcp = TcpHeader::new(sport, 80, 7, 64240);
    tcp.syn = true;
    let mut ip = Ipv4Header::new(tcp.header_len() as u16, 64, IpNumber::TCP, CLIENT, VIP).unwrap();
    ip.options = [1u8, 1, 1, 0][..].try_into().unwrap();
    ip.set_payload_len(tcp.header_len()).unwrap();
    ip.header_checksum = ip.calc_header_checksum();
    tcp.checksum = tcp.calc_checksum_ipv4(&ip, &[]).unwrap();
    let mut v = eth(0x0800);
    ip.write(&mut v).unwrap();
    tcp.write(&mut v).unwrap();
    v
}

/// Rewrites the fragment field (host order) and fixes the header checksum.
fn with_fragment(mut packet: Vec<u8>, frag_field: u16) -> Vec<u8> {
    packet[20..22].copy_from_slice(&frag_field.to_be_bytes());
    let header = Ipv4HeaderSlice::from_slice(&packet[14..])
        .unwrap()
        .to_header();
    let check = header.calc_header_checksum();
    packet[24..26].copy_from_slice(&check.to_be_bytes());
    packet
}

/// The output must be the input's IP packet inside a correct outer header to `backend`.
fn assert_ipip(name: &str, input: &[u8], out: &[u8], backend: IpAddr) {
    assert_eq!(out.len(), input.len() + 20, "{name}: length");
    assert_eq!(&out[0..6], &backend_mac(backend), "{name}: destination MAC");
    assert_eq!(&out[6..12], &LB_MAC, "{name}: source MAC");
    assert_eq!(&out[12..14], &[0x08, 0x00], "{name}: ethertype");
    let outer = Ipv4HeaderSlice::from_slice(&out[14..34]).unwrap();
    assert_eq!(outer.ihl(), 5, "{name}: outer IHL");
    assert_eq!(
        outer.protocol(),
        IpNumber::IPV4,
        "{name}: outer protocol is IPIP"
    );
    assert_eq!(outer.ttl(), 64, "{name}: outer TTL");
    assert_eq!(outer.source(), LB, "{name}: outer source");
    assert_eq!(
        IpAddr::from(outer.destination()),
        backend,
        "{name}: outer destination"
    );
    let inner_len = u16::from_be_bytes([input[16], input[17]]);
    assert_eq!(
        outer.total_len(),
        inner_len + 20,
        "{name}: outer total length"
    );
    assert_eq!(
        outer.dont_fragment(),
        input[20] & 0x40 != 0,
        "{name}: DF copied"
    );
    assert_eq!(
        outer.header_checksum(),
        outer.to_header().calc_header_checksum(),
        "{name}: outer checksum"
    );
    assert_eq!(&out[34..], &input[14..], "{name}: inner packet intact");
}

#[test]
fn forwards_new_flows_with_correct_ipip_and_counts_them() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("fwd", CONFIG);
    // Whether the packet records its flow: a SYN (without ACK) does not.
    for (name, proto, packet, dport, records) in [
        (
            "tcp syn",
            Protocol::Tcp,
            tcp_syn(40_000, 80, b""),
            80,
            false,
        ),
        (
            "tcp ack with data",
            Protocol::Tcp,
            tcp_ack(40_001, 80, &[0xab; 100]),
            80,
            true,
        ),
        ("udp", Protocol::Udp, udp(40_002, 53, b"query"), 53, true),
    ] {
        let sport = u16::from_be_bytes([packet[34], packet[35]]);
        let predicted = f.explain(proto, sport, dport);
        assert!(predicted.flow_entry.is_none(), "{name}: fresh flow");
        let backend = predicted.maglev_backend.expect("maglev pick");
        let service_id = predicted.service_id.unwrap();
        let backend_id = f.state().backends[&backend].id;
        let svc_before = f.maps().service_counter(service_id).unwrap();
        let be_before = f.maps().backend_counter(backend_id).unwrap();
        let out = f.expect(name, &packet, XDP_TX, XdpReason::Forwarded);
        assert_ipip(name, &packet, &out, backend);
        let svc_after = f.maps().service_counter(service_id).unwrap();
        let be_after = f.maps().backend_counter(backend_id).unwrap();
        assert_eq!(
            svc_after.packets - svc_before.packets,
            1,
            "{name}: service packets"
        );
        assert_eq!(
            svc_after.bytes - svc_before.bytes,
            packet.len() as u64,
            "{name}: service bytes"
        );
        assert_eq!(
            be_after.packets - be_before.packets,
            1,
            "{name}: backend packets"
        );
        let after = f.explain(proto, sport, dport);
        if records {
            let entry = after.flow_entry.expect("flow recorded");
            assert_eq!(entry.backend, Some(backend), "{name}: flow entry");
        } else {
            assert!(after.flow_entry.is_none(), "{name}: nothing recorded");
        }
        assert_eq!(after.backend, Some(backend));
    }
}

#[test]
fn a_syn_is_balanced_without_writing_the_flow_table_and_the_ack_records_it() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("synpath", CONFIG);
    let sport = 45_000;
    let fresh = f.explain(Protocol::Tcp, sport, 80);
    assert!(fresh.flow_entry.is_none(), "fresh tuple");
    let backend = fresh.maglev_backend.expect("maglev pick");

    // A SYN to a new tuple, and its retransmission: forwarded to Maglev's pick, no entry.
    let syn = tcp_syn(sport, 80, b"");
    for name in ["syn to a new tuple", "retransmitted syn"] {
        let out = f.expect(name, &syn, XDP_TX, XdpReason::Forwarded);
        assert_ipip(name, &syn, &out, backend);
        let e = f.explain(Protocol::Tcp, sport, 80);
        assert!(
            e.flow_entry.is_none(),
            "{name}: nothing recorded: {}",
            e.why
        );
    }

    // The handshake's ACK takes the same backend and records it.
    let ack = tcp_ack(sport, 80, b"");
    let out = f.expect("handshake ack", &ack, XDP_TX, XdpReason::Forwarded);
    assert_ipip("handshake ack", &ack, &out, backend);
    let e = f.explain(Protocol::Tcp, sport, 80);
    assert!(
        e.flow_entry
            .is_some_and(|entry| entry.usable && entry.backend == Some(backend)),
        "the ACK recorded the SYN's backend: {}",
        e.why
    );

    // A SYN whose tuple has a live entry follows the entry, also where Maglev would now
    // pick another backend (this one drained).
    let drained = drained_config(backend);
    f.apply(&drained);
    let e = f.explain(Protocol::Tcp, sport, 80);
    assert_ne!(
        e.maglev_backend,
        Some(backend),
        "drained backend owns no slot"
    );
    let out = f.expect("syn with a live entry", &syn, XDP_TX, XdpReason::Forwarded);
    assert_ipip("syn with a live entry", &syn, &out, backend);
    let e = f.explain(Protocol::Tcp, sport, 80);
    assert_eq!(e.flow_entry.and_then(|entry| entry.backend), Some(backend));

    // Only SYN-without-ACK skips the insert: a SYN-ACK, a RST and a UDP flow's first packet
    // all record (each to a tuple of its own).
    let mut syn_ack = tcp_syn(sport + 1, 80, b"");
    syn_ack[14 + 20 + 13] |= 0x10;
    let mut rst = tcp_ack(sport + 2, 80, b"");
    rst[14 + 20 + 13] = 0x04;
    for (name, proto, mut packet, sport, dport) in [
        ("syn-ack", Protocol::Tcp, syn_ack, sport + 1, 80),
        ("rst", Protocol::Tcp, rst, sport + 2, 80),
        (
            "udp first packet",
            Protocol::Udp,
            udp(sport + 3, 53, b"q"),
            sport + 3,
            53,
        ),
    ] {
        if proto == Protocol::Tcp {
            fix_tcp_checksum(&mut packet);
        }
        let picked = f.explain(proto, sport, dport).maglev_backend.unwrap();
        let out = f.expect(name, &packet, XDP_TX, XdpReason::Forwarded);
        assert_ipip(name, &packet, &out, picked);
        let e = f.explain(proto, sport, dport);
        assert_eq!(
            e.flow_entry.and_then(|entry| entry.backend),
            Some(picked),
            "{name}: recorded"
        );
    }
}

/// A datapath upgraded in place from a build without the SYN filter keeps its pinned TCP
/// table; the loader fills the filter it creates from that table, so a SYN of a tuple the
/// table holds still follows its entry where Maglev would now pick another backend (with
/// the filter left empty it would go to Maglev's pick).
#[test]
fn a_new_syn_filter_is_filled_from_the_pinned_table() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("synfilter", CONFIG);
    let sport = 45_100;
    let backend = f.establish(sport);

    // The pins as a build without the filter leaves them, then this build's load.
    let filter = f._pin.path.join(lb_common::map_names::FLOW_FILTER);
    std::fs::remove_file(&filter).expect("filter pinned");
    f.ebpf = loader::load_balancer(&f._pin.path).expect("reload balancer");
    let words: aya::maps::Array<_, u64> = aya::maps::Array::try_from(aya::maps::Map::Array(
        aya::maps::MapData::from_pin(&filter).expect("filter re-pinned"),
    ))
    .unwrap();
    let filled = words
        .iter()
        .filter(|w| w.as_ref().is_ok_and(|&w| w != 0))
        .count();
    assert_eq!(filled, 1, "the one recorded flow's set has its word");

    let drained = drained_config(backend);
    f.apply(&drained);
    assert_ne!(
        f.explain(Protocol::Tcp, sport, 80).maglev_backend,
        Some(backend)
    );
    let syn = tcp_syn(sport, 80, b"");
    let out = f.expect("syn after the upgrade", &syn, XDP_TX, XdpReason::Forwarded);
    assert_ipip("syn after the upgrade", &syn, &out, backend);
}

/// Recomputes the TCP checksum of an IPv4 frame without IP options after its header was
/// edited.
fn fix_tcp_checksum(packet: &mut [u8]) {
    let ip = Ipv4HeaderSlice::from_slice(&packet[14..])
        .unwrap()
        .to_header();
    let (mut tcp, payload) = TcpHeader::from_slice(&packet[34..]).unwrap();
    tcp.checksum = tcp.calc_checksum_ipv4(&ip, payload).unwrap();
    let mut header = Vec::new();
    tcp.write(&mut header).unwrap();
    packet[34..34 + header.len()].copy_from_slice(&header);
}

#[test]
fn a_backend_on_this_host_gets_the_packet_encapsulated_up_its_stack() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("local", CONFIG);
    // What the route lookup caches for a backend address of this host.
    for backend in f.state().backends.values().copied().collect::<Vec<_>>() {
        f.engine
            .set_static_nexthop(
                backend.id,
                NextHop {
                    dst_mac: [0; 6],
                    src_mac: [0; 6],
                    ifindex: 1,
                    mtu: u16::MAX,
                    flags: lb_common::NEXTHOP_F_LOCAL,
                    backend_generation: backend.generation,
                    expires_jiffies: u64::MAX,
                },
            )
            .unwrap();
    }
    let packet = tcp_syn(41_000, 80, b"");
    let backend = f
        .explain(Protocol::Tcp, 41_000, 80)
        .maglev_backend
        .expect("maglev pick");
    let out = f.expect(
        "local backend",
        &packet,
        XDP_PASS,
        XdpReason::ForwardedLocal,
    );
    // Still addressed to this host's MAC, so the stack takes it; the backend side's TC
    // program decapsulates it there.
    assert_eq!(&out[0..6], &LB_MAC, "destination MAC kept");
    assert_eq!(&out[6..12], &CLIENT_MAC, "source MAC kept");
    let mut as_sent = out.clone();
    as_sent[0..6].copy_from_slice(&backend_mac(backend));
    as_sent[6..12].copy_from_slice(&LB_MAC);
    assert_ipip("local backend", &packet, &as_sent, backend);
}

#[test]
fn ipv4_options_are_carried_intact() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("opts", CONFIG);
    let packet = tcp_with_ip_options(41_000);
    assert_eq!(packet[14] & 0x0f, 6, "IHL 6");
    let backend = f.explain(Protocol::Tcp, 41_000, 80).maglev_backend.unwrap();
    let out = f.expect("ip options", &packet, XDP_TX, XdpReason::Forwarded);
    assert_ipip("ip options", &packet, &out, backend);
}

#[test]
fn negative_cases_get_their_verdict_and_counter() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("neg", CONFIG);
    let syn = tcp_syn(42_000, 80, b"");
    let mut bad_ihl = syn.clone();
    bad_ihl[14] = 0x44;
    let mut long_tot_len = syn.clone();
    long_tot_len[16..18].copy_from_slice(&200u16.to_be_bytes());
    let mut bad_version = syn.clone();
    bad_version[14] = 0x65;
    let mut icmp = syn.clone();
    icmp[23] = 1;
    let mut ipv6 = eth(0x86dd);
    ipv6.extend_from_slice(&[0x60; 60]);
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[0; 28]);

    let cases: Vec<(&str, Vec<u8>, u32, XdpReason)> = vec![
        // test_run refuses frames shorter than an Ethernet header, so the shortest case is
        // an IPv4 ethertype with nothing behind it.
        (
            "ethernet header only",
            syn[..14].to_vec(),
            XDP_DROP,
            XdpReason::DropMalformedIp,
        ),
        (
            "truncated ipv4 header",
            syn[..14 + 12].to_vec(),
            XDP_DROP,
            XdpReason::DropMalformedIp,
        ),
        ("ihl below 5", bad_ihl, XDP_DROP, XdpReason::DropMalformedIp),
        (
            "ip version 6 in ipv4 frame",
            bad_version,
            XDP_DROP,
            XdpReason::DropMalformedIp,
        ),
        (
            "total length beyond frame",
            long_tot_len,
            XDP_DROP,
            XdpReason::DropMalformedIp,
        ),
        (
            "frame cut inside tcp header",
            syn[..14 + 20 + 10].to_vec(),
            XDP_DROP,
            XdpReason::DropMalformedIp,
        ),
        (
            "non-first fragment",
            with_fragment(udp(42_001, 53, b"x"), 0x0010),
            XDP_PASS,
            XdpReason::PassFragment,
        ),
        (
            "first fragment (balanced like a whole packet)",
            with_fragment(udp(42_002, 53, b"x"), 0x2000),
            XDP_TX,
            XdpReason::Forwarded,
        ),
        (
            "ipv6 claiming more payload than the frame",
            ipv6,
            XDP_DROP,
            XdpReason::DropMalformedIp,
        ),
        ("arp ethertype", arp, XDP_PASS, XdpReason::PassNotIp),
        ("icmp to vip", icmp, XDP_PASS, XdpReason::PassOtherProtocol),
        (
            "unknown vip port",
            tcp_syn(42_003, 8443, b""),
            XDP_PASS,
            XdpReason::PassNotService,
        ),
        (
            "service with zero backends",
            tcp_syn(42_004, 81, b""),
            XDP_DROP,
            XdpReason::DropNoBackend,
        ),
        // Answered with "fragmentation needed" (DF set); the bytes: xdp_icmp_fixtures.rs.
        (
            "too big after encapsulation",
            tcp_syn(42_005, 80, &[0; 1481 - 40]),
            XDP_TX,
            XdpReason::TooBigAnswered,
        ),
    ];
    for (name, packet, action, reason) in cases {
        let out = f.expect(name, &packet, action, reason);
        if action == XDP_PASS {
            assert_eq!(out, packet, "{name}: passed packets are untouched");
        }
    }

    // A truncated L4 header whose IP header is intact and consistent.
    let mut short_l4 = syn[..14 + 20 + 10].to_vec();
    short_l4[16..18].copy_from_slice(&30u16.to_be_bytes());
    f.expect(
        "truncated tcp header",
        &short_l4,
        XDP_DROP,
        XdpReason::DropMalformedL4,
    );
    let largest = tcp_syn(42_006, 80, &[0; 1480 - 40]);
    f.expect(
        "largest packet that fits",
        &largest,
        XDP_TX,
        XdpReason::Forwarded,
    );
}

#[test]
fn unconfigured_datapath_passes_everything() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("ready", CONFIG);
    f.engine.set_params(None).unwrap();
    let packet = tcp_syn(43_000, 80, b"");
    let out = f.expect("not ready", &packet, XDP_PASS, XdpReason::PassNotReady);
    assert_eq!(out, packet);
}

#[test]
fn established_flows_stay_on_a_drained_backend_and_move_off_a_removed_one() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("sticky", CONFIG);
    let sport = 44_000;
    let first = f.establish(sport);

    // Drain: weight 0 keeps the backend live for existing flows but gives it no slot.
    let drained = drained_config(first);
    f.apply(&drained);
    let e = f.explain(Protocol::Tcp, sport, 80);
    assert_ne!(
        e.maglev_backend,
        Some(first),
        "drained backend owns no slot"
    );
    assert_eq!(
        e.backend,
        Some(first),
        "flow table keeps the flow: {}",
        e.why
    );
    let out = f.expect(
        "established on drained",
        &tcp_ack(sport, 80, b"more"),
        XDP_TX,
        XdpReason::Forwarded,
    );
    assert_ipip(
        "established on drained",
        &tcp_ack(sport, 80, b"more"),
        &out,
        first,
    );
    for p in 0..200u16 {
        let e = f.explain(Protocol::Tcp, 50_000 + p, 80);
        assert_ne!(e.backend, Some(first), "new flows avoid a drained backend");
    }

    // Remove it from web: the flow re-selects. Its entry names a retired backend (gone
    // from every service) or was purged (the backend still serves dns): which one
    // depends on which backend Maglev gave the flow, so either is accepted.
    let removed = CONFIG
        .replacen(&format!("{{address: {first}}}, "), "", 1)
        .replacen(&format!(", {{address: {first}}}"), "", 1);
    f.apply(&removed);
    let e = f.explain(Protocol::Tcp, sport, 80);
    assert!(
        e.flow_entry.as_ref().is_none_or(|entry| !entry.usable),
        "{}",
        e.why
    );
    let moved = e.backend.unwrap();
    assert_ne!(moved, first);
    let out = f.expect(
        "after removal",
        &tcp_ack(sport, 80, b""),
        XDP_TX,
        XdpReason::Forwarded,
    );
    assert_ipip("after removal", &tcp_ack(sport, 80, b""), &out, moved);
    let e = f.explain(Protocol::Tcp, sport, 80);
    assert!(
        e.flow_entry
            .is_some_and(|entry| entry.usable && entry.backend == Some(moved)),
        "the re-selected flow is recorded again"
    );
}

/// The fast path finds a cached flow before its frontend: deleting the frontend must still
/// stop the flow (the writer retires the flow caches' entries), not forward it from the
/// cache.
#[test]
fn a_deleted_frontend_stops_its_cached_flows() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("fastdel", CONFIG);
    let sport = 44_100;
    let backend = f.establish(sport);
    // The second packet finds the table entry and fills this CPU's flow cache; the third
    // is served from the cache.
    for name in ["table hit", "cache hit"] {
        let out = f.expect(
            name,
            &tcp_ack(sport, 80, b"more"),
            XDP_TX,
            XdpReason::Forwarded,
        );
        assert_ipip(name, &tcp_ack(sport, 80, b"more"), &out, backend);
    }
    let web_start = CONFIG.find("  - name: web").unwrap();
    let web_end = CONFIG.find("  - name: dns").unwrap();
    let without_web = format!("{}{}", &CONFIG[..web_start], &CONFIG[web_end..]);
    f.apply(&without_web);
    f.expect(
        "frontend deleted",
        &tcp_ack(sport, 80, b"late"),
        XDP_PASS,
        XdpReason::PassNotService,
    );
}

/// The flow cache (an array of small arrays, entries placed by the kernel's array header
/// size) serves a flow from where `explain` finds it: after a table hit the flow is
/// cached; with its table entry gone (as after an eviction from its set) its next packet still
/// goes to its backend without the slow path, which would have written the table again,
/// and `explain` names the cache.
#[test]
fn a_cached_flow_is_served_from_where_explain_finds_it() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("fastcache", CONFIG);
    // The chunks are pinned only through the outer array; their memory is reported.
    let memory = lb_daemon::maps::pinned_map_memory(&f._pin.path).unwrap();
    let (_, cache_bytes) = memory
        .iter()
        .find(|(name, _)| name == lb_common::map_names::FLOW_CACHE)
        .expect("the flow cache is pinned");
    let chunks =
        lb_common::limits::FLOW_CACHE_CHUNKS_PER_CPU as usize * aya::util::nr_cpus().unwrap();
    assert!(
        *cache_bytes as usize >= chunks * lb_common::FlowCacheChunk::BYTES,
        "flow cache reported at {cache_bytes} bytes for {chunks} chunks"
    );
    let sport = 44_200;
    let backend = f.establish(sport);
    let ack = tcp_ack(sport, 80, b"more");
    let out = f.expect("table hit", &ack, XDP_TX, XdpReason::Forwarded);
    assert_ipip("table hit", &ack, &out, backend);

    let key = lb_common::FlowKey {
        src: lb_common::v4_addr(CLIENT),
        dst: lb_common::v4_addr(VIP),
        sport_be: sport.to_be(),
        dport_be: 80u16.to_be(),
        proto: 6,
        family: lb_common::FAMILY_V4,
        _pad: [0; 2],
    };
    assert!(
        support::flows::remove(&f._pin.path, &key),
        "the flow's table entry"
    );

    let e = f.explain(Protocol::Tcp, sport, 80);
    assert!(e.flow_entry.is_none(), "the table no longer holds the flow");
    assert_eq!(e.backend, Some(backend), "{}", e.why);
    assert!(e.why.contains("flow cache"), "{}", e.why);
    let out = f.expect("cache hit", &ack, XDP_TX, XdpReason::Forwarded);
    assert_ipip("cache hit", &ack, &out, backend);
    assert!(
        f.explain(Protocol::Tcp, sport, 80).flow_entry.is_none(),
        "served from the cache: the slow path would have recorded the flow again"
    );
}

#[test]
fn draining_every_backend_keeps_established_flows_and_refuses_new_ones() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("drainall", CONFIG);
    let sport = 46_000;
    let first = f.establish(sport);
    f.apply(&CONFIG.replace("{address: 198.18.0.1", "{weight: 0, address: 198.18.0.1"));
    let e = f.explain(Protocol::Tcp, sport, 80);
    assert_eq!(e.table_size, Some(0), "no table left");
    assert_eq!(e.backend, Some(first), "{}", e.why);
    let out = f.expect(
        "established, all drained",
        &tcp_ack(sport, 80, b"x"),
        XDP_TX,
        XdpReason::Forwarded,
    );
    assert_ipip(
        "established, all drained",
        &tcp_ack(sport, 80, b"x"),
        &out,
        first,
    );
    f.expect(
        "new flow, all drained",
        &tcp_syn(sport + 1, 80, b""),
        XDP_DROP,
        XdpReason::DropNoBackend,
    );
    assert_eq!(
        f.explain(Protocol::Tcp, sport + 1, 80).verdict,
        "drop_no_backend"
    );
}

/// Words of the slot array for slots `[4 * words.start, 4 * words.end)`, each slot's id
/// `id(slot)`, and those ids in slot order.
fn packed(words: std::ops::Range<u32>, id: impl Fn(u32) -> u32) -> (Vec<u32>, Vec<u64>, Vec<u32>) {
    use lb_common::maglev_words::{with_id, SLOTS_PER_WORD};
    let keys: Vec<u32> = words.collect();
    let ids: Vec<u32> = keys
        .iter()
        .flat_map(|&w| (0..SLOTS_PER_WORD).map(move |lane| w * SLOTS_PER_WORD + lane))
        .map(&id)
        .collect();
    let values = ids
        .chunks(SLOTS_PER_WORD as usize)
        .map(|lanes| {
            lanes
                .iter()
                .enumerate()
                .fold(0, |word, (lane, &id)| with_id(word, lane as u32, id))
        })
        .collect();
    (keys, values, ids)
}

#[test]
fn maglev_slots_are_written_in_batches() {
    if !require_root("batch map update") {
        return;
    }
    let f = Fixture::new("batch", CONFIG);
    let map = aya::maps::MapData::from_pin(f._pin.path.join(lb_common::map_names::MAGLEV)).unwrap();
    let (keys, values, ids) = packed(25_000..26_250, |slot| (slot * 3) & 0xffff);
    lb_daemon::maps::batch::update(std::os::fd::AsFd::as_fd(map.fd()), &keys, &values, 1)
        .expect("this kernel supports batch updates of arrays");
    let read = f.maps().read_slots(100_000, 5_000).unwrap();
    assert_eq!(read, ids);
}

#[test]
fn maglev_slots_written_from_several_threads_all_land() {
    if !require_root("parallel batch map update") {
        return;
    }
    let f = Fixture::new("batch-parallel", CONFIG);
    let map = aya::maps::MapData::from_pin(f._pin.path.join(lb_common::map_names::MAGLEV)).unwrap();
    // Enough words for one part per core (64k entries each at least).
    let (keys, values, ids) = packed(50_000..200_000, |slot| (slot ^ 0x5a5a) & 0xffff);
    lb_daemon::maps::batch::update_array_parallel(
        std::os::fd::AsFd::as_fd(map.fd()),
        &keys,
        &values,
    )
    .expect("this kernel supports batch updates of arrays");
    let read = f.maps().read_slots(200_000, 600_000).unwrap();
    assert_eq!(read, ids);
}

#[test]
fn a_backend_leaving_one_service_loses_only_that_services_flows() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("leave", CONFIG);
    // A TCP flow to web and a UDP flow to dns that landed on the same backend.
    let web_sport = 47_000;
    let target = f.establish(web_sport);
    let dns_sport = (47_100..48_000)
        .find(|&p| f.explain(Protocol::Udp, p, 53).maglev_backend == Some(target))
        .expect("some UDP flow picks the same backend");
    f.expect(
        "dns flow",
        &udp(dns_sport, 53, b"q"),
        XDP_TX,
        XdpReason::Forwarded,
    );

    // The backend leaves web only; it keeps serving dns.
    let web_line = "backends: [{address: 198.18.0.11}, {address: 198.18.0.12}, {address: 198.18.0.13}]\n  - name: dns";
    let kept: Vec<String> = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
        .iter()
        .filter(|a| **a != target.to_string())
        .map(|a| format!("{{address: {a}}}"))
        .collect();
    let changed = CONFIG.replacen(
        web_line,
        &format!("backends: [{}]\n  - name: dns", kept.join(", ")),
        1,
    );
    assert_ne!(changed, CONFIG);
    f.apply(&changed);

    let web = f.explain(Protocol::Tcp, web_sport, 80);
    assert!(
        web.flow_entry.is_none(),
        "web's flow entry was purged: {}",
        web.why
    );
    assert_ne!(web.backend, Some(target));
    let out = f.expect(
        "web flow after",
        &tcp_ack(web_sport, 80, b""),
        XDP_TX,
        XdpReason::Forwarded,
    );
    assert_ipip(
        "web flow after",
        &tcp_ack(web_sport, 80, b""),
        &out,
        web.backend.unwrap(),
    );
    let dns = f.explain(Protocol::Udp, dns_sport, 53);
    assert_eq!(dns.backend, Some(target), "dns keeps its flow: {}", dns.why);
    assert!(dns.flow_entry.is_some_and(|e| e.usable));
}

const CONFIG6: &str = "
services:
  - name: web6
    vip: '2001:db8::100'
    port: 80
    protocol: tcp
    backends: [{address: '2001:db8::11'}, {address: '2001:db8::12'}, {address: '2001:db8::13'}]
  - name: dns6
    vip: '2001:db8::100'
    port: 53
    protocol: udp
    backends: [{address: '2001:db8::11'}]
";
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0,
];

fn ipv6_frame(next: &str, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC).ipv6(CLIENT6, VIP6, 64);
    let mut out = Vec::new();
    match next {
        // A SYN (connection opening).
        "tcp" => ip
            .tcp(sport, dport, 1000, 64240)
            .syn()
            .write(&mut out, payload)
            .unwrap(),
        // A segment of an established connection.
        "tcp-ack" => ip
            .tcp(sport, dport, 1001, 64240)
            .ack(1)
            .write(&mut out, payload)
            .unwrap(),
        _ => ip.udp(sport, dport).write(&mut out, payload).unwrap(),
    }
    // A traffic class and flow label the outer header must carry over.
    out[14] = 0x6a;
    out[15] = 0xb1;
    out[16] = 0x23;
    out[17] = 0x45;
    out
}

/// The output must be the input's IPv6 packet inside a correct outer IPv6 header to
/// `backend`.
fn assert_ip6ip6(name: &str, packet: &[u8], out: &[u8], backend: IpAddr) {
    assert_eq!(out.len(), packet.len() + 40, "{name}: length");
    assert_eq!(&out[0..6], &backend_mac(backend), "{name}: destination MAC");
    assert_eq!(&out[6..12], &LB_MAC, "{name}: source MAC");
    assert_eq!(&out[12..14], &[0x86, 0xdd], "{name}: ethertype");
    assert_eq!(
        &out[14..18],
        &packet[14..18],
        "{name}: version, class, flow label"
    );
    let inner_payload = u16::from_be_bytes([packet[18], packet[19]]);
    assert_eq!(
        u16::from_be_bytes([out[18], out[19]]),
        inner_payload + 40,
        "{name}: outer payload length"
    );
    assert_eq!(out[20], 41, "{name}: next header is IPv6");
    assert_eq!(out[21], 64, "{name}: hop limit");
    assert_eq!(&out[22..38], &LB6, "{name}: outer source");
    assert_eq!(
        IpAddr::from(<[u8; 16]>::try_from(&out[38..54]).unwrap()),
        backend,
        "{name}: outer destination"
    );
    assert_eq!(&out[54..], &packet[14..], "{name}: inner packet intact");
}

fn tuple6(protocol: Protocol, sport: u16, dport: u16) -> inspect::Tuple {
    inspect::Tuple {
        protocol,
        src: IpAddr::from(CLIENT6),
        sport,
        dst: IpAddr::from(VIP6),
        dport,
    }
}

#[test]
fn an_ipv6_syn_records_nothing_and_the_ack_that_follows_records_the_same_backend() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("ipv6-syn", CONFIG6);
    let tuple = tuple6(Protocol::Tcp, 43_000, 80);
    let backend = inspect::explain(f.maps(), tuple)
        .unwrap()
        .maglev_backend
        .expect("maglev pick");
    let syn = ipv6_frame("tcp", 43_000, 80, b"");
    let out = f.expect("ipv6 syn", &syn, XDP_TX, XdpReason::Forwarded);
    assert_ip6ip6("ipv6 syn", &syn, &out, backend);
    let e = inspect::explain(f.maps(), tuple).unwrap();
    assert!(e.flow_entry.is_none(), "a SYN records nothing: {}", e.why);

    let ack = ipv6_frame("tcp-ack", 43_000, 80, b"");
    let out = f.expect("ipv6 handshake ack", &ack, XDP_TX, XdpReason::Forwarded);
    assert_ip6ip6("ipv6 handshake ack", &ack, &out, backend);
    let e = inspect::explain(f.maps(), tuple).unwrap();
    assert!(
        e.flow_entry
            .is_some_and(|entry| entry.usable && entry.backend == Some(backend)),
        "the ACK recorded the SYN's backend: {}",
        e.why
    );
}

#[test]
fn ipv6_flows_are_encapsulated_ip6ip6_and_bad_ipv6_gets_its_counter() {
    if !require_root("xdp fixture") {
        return;
    }
    let mut f = Fixture::new("ipv6", CONFIG6);
    for (name, proto, packet, sport, dport) in [
        (
            "tcp ack",
            Protocol::Tcp,
            ipv6_frame("tcp-ack", 42_000, 80, b"data"),
            42_000,
            80,
        ),
        (
            "udp",
            Protocol::Udp,
            ipv6_frame("udp", 42_001, 53, b"query"),
            42_001,
            53,
        ),
    ] {
        let tuple = inspect::Tuple {
            protocol: proto,
            src: IpAddr::from(CLIENT6),
            sport,
            dst: IpAddr::from(VIP6),
            dport,
        };
        let backend = inspect::explain(f.maps(), tuple)
            .unwrap()
            .maglev_backend
            .expect("maglev pick");
        let out = f.expect(name, &packet, XDP_TX, XdpReason::Forwarded);
        assert_ip6ip6(name, &packet, &out, backend);
        let after = inspect::explain(f.maps(), tuple).unwrap();
        assert_eq!(after.flow_entry.and_then(|e| e.backend), Some(backend));
    }

    let with_next_header = |next: u8| {
        let mut v = ipv6_frame("tcp", 42_010, 80, b"");
        v[20] = next;
        v
    };
    let mut truncated_header = ipv6_frame("tcp", 42_011, 80, b"");
    truncated_header.truncate(14 + 30);
    let mut cut_tcp = ipv6_frame("tcp", 42_012, 80, b"");
    cut_tcp.truncate(14 + 40 + 10);
    cut_tcp[18..20].copy_from_slice(&10u16.to_be_bytes());
    let mut version_4 = ipv6_frame("tcp", 42_013, 80, b"");
    version_4[14] = 0x4a;
    // 40 (inner IPv6) + 20 (TCP) + 1400 = 1460, plus the 40-byte outer header = 1500.
    let too_big = ipv6_frame("tcp", 42_014, 80, &[0u8; 1401]);
    let largest = ipv6_frame("tcp", 42_015, 80, &[0u8; 1400]);
    for (name, packet, action, reason) in [
        (
            "fragment header",
            with_next_header(44),
            XDP_PASS,
            XdpReason::PassFragment,
        ),
        (
            "icmpv6",
            with_next_header(58),
            XDP_PASS,
            XdpReason::PassOtherProtocol,
        ),
        (
            "hop-by-hop options",
            with_next_header(0),
            XDP_PASS,
            XdpReason::PassOtherProtocol,
        ),
        (
            "truncated ipv6 header",
            truncated_header,
            XDP_DROP,
            XdpReason::DropMalformedIp,
        ),
        (
            "tcp cut short",
            cut_tcp,
            XDP_DROP,
            XdpReason::DropMalformedL4,
        ),
        (
            "version field not 6",
            version_4,
            XDP_DROP,
            XdpReason::DropMalformedIp,
        ),
        (
            "no service on the port",
            ipv6_frame("tcp", 42_016, 81, b""),
            XDP_PASS,
            XdpReason::PassNotService,
        ),
        // Answered with "packet too big"; the bytes: xdp_icmp_fixtures.rs.
        (
            "too big after encapsulation",
            too_big,
            XDP_TX,
            XdpReason::TooBigAnswered,
        ),
        ("largest that fits", largest, XDP_TX, XdpReason::Forwarded),
    ] {
        f.expect(name, &packet, action, reason);
    }

    // Without an IPv6 source the datapath passes IPv6 services rather than send them from
    // an unspecified address.
    f.engine
        .set_params(Some(&DatapathParams {
            encap_source6: None,
            ..PARAMS
        }))
        .unwrap();
    f.expect(
        "no ipv6 source",
        &ipv6_frame("tcp", 42_020, 80, b""),
        XDP_PASS,
        XdpReason::PassNotReady,
    );
}
