//! Kernel unit tests of the backend side's translation (BPF_PROG_TEST_RUN): an
//! encapsulated packet for a translated frontend comes out decapsulated and addressed to
//! the local endpoint's address and target port with valid checksums, and the endpoint's
//! reply comes out with the frontend restored as its source. Maps are written by the
//! daemon's own `BackendSideMaps`; each case moves exactly one counter.

mod support;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use lb_common::{program_names, TcReason};
use lb_daemon::{config::parse_translation, loader, maps::BackendSideMaps};
use support::{encapsulate, require_root, PinDir};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

const CLIENT: [u8; 4] = [198, 18, 0, 10];
const LB: [u8; 4] = [198, 18, 0, 2];
const VIP: [u8; 4] = [198, 18, 100, 1];
const ENDPOINT: [u8; 4] = [198, 18, 0, 11];
const OTHER_ENDPOINT: [u8; 4] = [198, 18, 0, 12];
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

#[derive(Clone, Copy)]
enum L4 {
    Tcp,
    Udp,
    /// UDP sent without a checksum (zero): it must stay without one.
    UdpNoChecksum,
}

/// An Ethernet frame `src:sport → dst:dport` with correct checksums.
fn frame(l4: L4, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64);
    let payload = b"request";
    let mut out = Vec::new();
    match l4 {
        L4::Tcp => ip
            .tcp(sport, dport, 1000, 64240)
            .ack(77)
            .write(&mut out, payload)
            .unwrap(),
        L4::Udp | L4::UdpNoChecksum => ip.udp(sport, dport).write(&mut out, payload).unwrap(),
    }
    if let L4::UdpNoChecksum = l4 {
        // Ethernet 14 + IPv4 20 + UDP checksum at 6.
        out[14 + 20 + 6] = 0;
        out[14 + 20 + 7] = 0;
    }
    out
}

/// Asserts the IPv4 and TCP/UDP checksums of `frame` are right (a zero UDP checksum is
/// "none" and also accepted).
fn assert_checksums(name: &str, frame: &[u8]) {
    let sliced = SlicedPacket::from_ethernet(frame).expect("parses");
    let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net else {
        panic!("{name}: not IPv4")
    };
    let header = ip.header().to_header();
    assert_eq!(
        header.header_checksum,
        header.calc_header_checksum(),
        "{name}: IPv4 checksum"
    );
    match sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let expected = tcp
                .to_header()
                .calc_checksum_ipv4(&header, tcp.payload())
                .unwrap();
            assert_eq!(tcp.checksum(), expected, "{name}: TCP checksum");
        }
        Some(TransportSlice::Udp(udp)) => {
            if udp.checksum() != 0 {
                let expected = udp
                    .to_header()
                    .calc_checksum_ipv4(&header, udp.payload())
                    .unwrap();
                assert_eq!(udp.checksum(), expected, "{name}: UDP checksum");
            }
        }
        other => panic!("{name}: unexpected transport {other:?}"),
    }
}

struct Tc {
    ebpf: aya::Ebpf,
    maps: BackendSideMaps,
    // Dropped last: removes the pins.
    _pin: PinDir,
}

impl Tc {
    fn new(tag: &str) -> Self {
        let pin = PinDir::new(tag);
        let ebpf = loader::load_backend_side(&pin.path).expect("load the backend side");
        let maps = BackendSideMaps::open(&pin.path).expect("open maps");
        Self {
            ebpf,
            maps,
            _pin: pin,
        }
    }

    /// Runs `program` on `packet`; asserts the verdict and that exactly `reason`'s counter
    /// moved; returns the output frame.
    fn expect(
        &mut self,
        name: &str,
        program: &str,
        packet: &[u8],
        action: u32,
        reason: TcReason,
    ) -> Vec<u8> {
        let before = self.maps.counters().unwrap();
        let prog: &mut SchedClassifier =
            self.ebpf.program_mut(program).unwrap().try_into().unwrap();
        let mut out = vec![0u8; packet.len() + 64];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .unwrap();
        out.truncate(result.data_size_out as usize);
        let after = self.maps.counters().unwrap();
        assert_eq!(result.return_value, action, "{name}: verdict");
        for &r in TcReason::ALL {
            let delta = after[r as usize].packets - before[r as usize].packets;
            assert_eq!(
                delta,
                u64::from(r == reason),
                "{name}: counter {}",
                r.name()
            );
        }
        out
    }
}

#[test]
fn translated_frontends_reach_the_endpoint_and_replies_carry_the_frontend() {
    if !require_root("tc fixture") {
        return;
    }
    let mut tc = Tc::new("xlate");
    let translations = [
        "198.18.100.1:80/tcp=198.18.0.11:8080",
        "198.18.100.1:53/udp=198.18.0.11:5353",
        // A NodePort: whichever node balanced it.
        "0.0.0.0:30080/tcp=198.18.0.11:9090",
    ]
    .map(|t| parse_translation(t).unwrap());
    tc.maps.set_translations(&translations).unwrap();
    assert_eq!(tc.maps.translations().unwrap().len(), 3);

    // (name, l4, client port, frontend, frontend port, target port)
    let flows = [
        ("clusterip tcp", L4::Tcp, 45_000, VIP, 80, 8080),
        ("clusterip udp", L4::Udp, 45_001, VIP, 53, 5353),
        (
            "udp without checksum",
            L4::UdpNoChecksum,
            45_002,
            VIP,
            53,
            5353,
        ),
        ("nodeport", L4::Tcp, 45_003, LB, 30080, 9090),
    ];
    let decap = program_names::TC_DECAP;
    let revnat = program_names::TC_REVNAT;
    for (name, l4, sport, frontend, port, target) in flows {
        let inner = frame(l4, CLIENT, sport, frontend, port);
        let out = tc.expect(
            name,
            decap,
            &encapsulate(&inner, 4, LB, ENDPOINT),
            TC_ACT_OK,
            TcReason::DecapsulatedTranslated,
        );
        let delivered = frame(l4, CLIENT, sport, ENDPOINT, target);
        assert_eq!(out, delivered, "{name}: delivered to the endpoint");
        assert_checksums(name, &out);

        let reply = frame(l4, ENDPOINT, target, CLIENT, sport);
        let out = tc.expect(
            &format!("{name} reply"),
            revnat,
            &reply,
            TC_ACT_OK,
            TcReason::ReplyRestored,
        );
        assert_eq!(
            out,
            frame(l4, frontend, port, CLIENT, sport),
            "{name}: reply from the frontend"
        );
        assert_checksums(&format!("{name} reply"), &out);
    }

    // Not ours: left alone with their own counters.
    let to_other_endpoint = encapsulate(
        &frame(L4::Tcp, CLIENT, 45_010, VIP, 80),
        4,
        LB,
        OTHER_ENDPOINT,
    );
    let out = tc.expect(
        "translated frontend, another endpoint",
        decap,
        &to_other_endpoint,
        TC_ACT_OK,
        TcReason::PassNotLocalVip,
    );
    assert_eq!(out, to_other_endpoint);
    let unknown_port = encapsulate(&frame(L4::Tcp, CLIENT, 45_011, VIP, 81), 4, LB, ENDPOINT);
    let out = tc.expect(
        "frontend port without translation",
        decap,
        &unknown_port,
        TC_ACT_OK,
        TcReason::PassNotLocalVip,
    );
    assert_eq!(out, unknown_port);

    for (name, packet) in [
        (
            "reply of a flow never translated",
            frame(L4::Tcp, ENDPOINT, 8080, CLIENT, 49_999),
        ),
        (
            "the endpoint's own traffic",
            frame(L4::Tcp, ENDPOINT, 40_000, CLIENT, 8080),
        ),
        ("arp", {
            let mut v = frame(L4::Tcp, ENDPOINT, 8080, CLIENT, 45_000);
            v[12] = 0x08;
            v[13] = 0x06;
            v
        }),
        ("ipv4 fragment", {
            let mut v = frame(L4::Tcp, ENDPOINT, 8080, CLIENT, 45_000);
            v[14 + 6] |= 0x20;
            v
        }),
        ("truncated tcp", {
            let mut v = frame(L4::Tcp, ENDPOINT, 8080, CLIENT, 45_000);
            v.truncate(14 + 20 + 2);
            v
        }),
    ] {
        let out = tc.expect(
            name,
            revnat,
            &packet,
            TC_ACT_OK,
            TcReason::PassNotTranslated,
        );
        assert_eq!(out, packet, "{name}: untouched");
    }

    // Removing the translation stops new decapsulation; the flows already translated
    // keep their replies restored (like conntrack entries) until the LRU ages them out.
    tc.maps.set_translations(&[]).unwrap();
    assert!(tc.maps.translations().unwrap().is_empty());
    let again = encapsulate(&frame(L4::Tcp, CLIENT, 45_020, VIP, 80), 4, LB, ENDPOINT);
    tc.expect(
        "translation removed",
        decap,
        &again,
        TC_ACT_OK,
        TcReason::PassNotLocalVip,
    );
    tc.expect(
        "reply of a flow translated before the removal",
        revnat,
        &frame(L4::Tcp, ENDPOINT, 8080, CLIENT, 45_000),
        TC_ACT_OK,
        TcReason::ReplyRestored,
    );
}

/// `inner` (an IPv6 Ethernet frame) inside an outer IPv6 header with next header `next`.
fn encapsulate_v6(inner: &[u8], next: u8, src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let mut v = inner[..14].to_vec();
    v.extend_from_slice(&[0x60, 0, 0, 0]);
    v.extend_from_slice(&((inner.len() - 14) as u16).to_be_bytes());
    v.extend_from_slice(&[next, 64]);
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(&inner[14..]);
    v
}

#[test]
fn ip6ip6_is_stripped_for_local_ipv6_vips_only() {
    if !require_root("tc fixture") {
        return;
    }
    let mut tc = Tc::new("ip6ip6");
    let vip: std::net::Ipv6Addr = "2001:db8::100".parse().unwrap();
    tc.maps.set_vips(&[vip.into()]).unwrap();
    let client: std::net::Ipv6Addr = "2001:db8::10".parse().unwrap();
    let lb: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
    let backend: std::net::Ipv6Addr = "2001:db8::11".parse().unwrap();
    let inner_to = |dst: std::net::Ipv6Addr| {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(client.octets(), dst.octets(), 64)
            .tcp(45_100, 80, 1, 64240)
            .syn()
            .write(&mut out, b"")
            .unwrap();
        out
    };
    let inner = inner_to(vip);
    let decap = program_names::TC_DECAP;
    let out = tc.expect(
        "ip6ip6 to a local vip",
        decap,
        &encapsulate_v6(&inner, 41, lb.octets(), backend.octets()),
        TC_ACT_OK,
        TcReason::Decapsulated,
    );
    assert_eq!(out, inner, "inner packet restored");
    let other = encapsulate_v6(
        &inner_to("2001:db8::999".parse().unwrap()),
        41,
        lb.octets(),
        backend.octets(),
    );
    let out = tc.expect(
        "ip6ip6 to another vip",
        decap,
        &other,
        TC_ACT_OK,
        TcReason::PassNotLocalVip,
    );
    assert_eq!(out, other);
    let not_tunnel = encapsulate_v6(&inner, 17, lb.octets(), backend.octets());
    tc.expect(
        "ipv6 that is not ip6ip6",
        decap,
        &not_tunnel,
        TC_ACT_OK,
        TcReason::PassNotIpip,
    );
    let mut truncated = encapsulate_v6(&inner, 41, lb.octets(), backend.octets());
    truncated.truncate(14 + 40 + 20);
    tc.expect(
        "inner header cut short",
        decap,
        &truncated,
        TC_ACT_SHOT,
        TcReason::DropMalformed,
    );
}

/// An IPv6 frame `src:sport → dst:dport` with a correct TCP/UDP checksum.
fn frame6(udp: bool, src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    let src: std::net::Ipv6Addr = src.parse().unwrap();
    let dst: std::net::Ipv6Addr = dst.parse().unwrap();
    let ip = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(src.octets(), dst.octets(), 64);
    let mut out = Vec::new();
    if udp {
        ip.udp(sport, dport).write(&mut out, b"request").unwrap();
    } else {
        ip.tcp(sport, dport, 1000, 64240)
            .ack(77)
            .write(&mut out, b"request")
            .unwrap();
    }
    out
}

fn assert_checksums6(name: &str, frame: &[u8]) {
    let sliced = SlicedPacket::from_ethernet(frame).expect("parses");
    let Some(etherparse::NetSlice::Ipv6(ip)) = sliced.net else {
        panic!("{name}: not IPv6")
    };
    let header = ip.header().to_header();
    match sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => assert_eq!(
            tcp.checksum(),
            tcp.to_header()
                .calc_checksum_ipv6(&header, tcp.payload())
                .unwrap(),
            "{name}: TCP checksum"
        ),
        Some(TransportSlice::Udp(udp)) => assert_eq!(
            udp.checksum(),
            udp.to_header()
                .calc_checksum_ipv6(&header, udp.payload())
                .unwrap(),
            "{name}: UDP checksum"
        ),
        other => panic!("{name}: unexpected transport {other:?}"),
    }
}

#[test]
fn ipv6_frontends_are_translated_both_ways_too() {
    if !require_root("tc fixture") {
        return;
    }
    let mut tc = Tc::new("xlate6");
    let translations = [
        "[2001:db8:100::1]:80/tcp=[2001:db8::11]:8080",
        "[2001:db8:100::1]:53/udp=[2001:db8::11]:5353",
        "[::]:30080/tcp=[2001:db8::11]:9090",
    ]
    .map(|t| parse_translation(t).unwrap());
    tc.maps.set_translations(&translations).unwrap();
    let (client, lb, vip, endpoint) = (
        "2001:db8::10",
        "2001:db8::2",
        "2001:db8:100::1",
        "2001:db8::11",
    );
    let octets = |a: &str| a.parse::<std::net::Ipv6Addr>().unwrap().octets();
    for (name, udp, sport, frontend, port, target) in [
        ("clusterip tcp", false, 46_000, vip, 80, 8080),
        ("clusterip udp", true, 46_001, vip, 53, 5353),
        ("nodeport", false, 46_002, lb, 30080, 9090),
    ] {
        let inner = frame6(udp, client, sport, frontend, port);
        let mut outer = inner[..14].to_vec();
        outer.extend_from_slice(&[0x60, 0, 0, 0]);
        outer.extend_from_slice(&((inner.len() - 14) as u16).to_be_bytes());
        outer.extend_from_slice(&[41, 64]);
        outer.extend_from_slice(&octets(lb));
        outer.extend_from_slice(&octets(endpoint));
        outer.extend_from_slice(&inner[14..]);
        let out = tc.expect(
            name,
            program_names::TC_DECAP,
            &outer,
            TC_ACT_OK,
            TcReason::DecapsulatedTranslated,
        );
        assert_eq!(
            out,
            frame6(udp, client, sport, endpoint, target),
            "{name}: delivered"
        );
        assert_checksums6(name, &out);
        let out = tc.expect(
            &format!("{name} reply"),
            program_names::TC_REVNAT,
            &frame6(udp, endpoint, target, client, sport),
            TC_ACT_OK,
            TcReason::ReplyRestored,
        );
        assert_eq!(
            out,
            frame6(udp, frontend, port, client, sport),
            "{name}: reply"
        );
        assert_checksums6(&format!("{name} reply"), &out);
    }
}

#[test]
fn ipip_is_stripped_for_local_vips_only() {
    if !require_root("tc fixture") {
        return;
    }
    let mut tc = Tc::new("decap");
    tc.maps.set_vips(&[std::net::IpAddr::from(VIP)]).unwrap();
    let inner = frame(L4::Tcp, CLIENT, 45_000, VIP, 80);
    let to_backend = |inner: &[u8], proto: u8| encapsulate(inner, proto, LB, ENDPOINT);
    let other_vip = frame(L4::Tcp, CLIENT, 45_001, [198, 18, 100, 99], 80);
    let mut truncated = to_backend(&inner, 4);
    truncated.truncate(14 + 20 + 8);
    // An outer fragment (more-fragments set): reassembly is the stack's job.
    let mut outer_fragment = to_backend(&inner, 4);
    outer_fragment[14 + 6] |= 0x20;
    // (name, packet, verdict, counter, expected output when it differs from the input)
    type Case = (&'static str, Vec<u8>, u32, TcReason, Option<Vec<u8>>);
    let cases: Vec<Case> = vec![
        (
            "ipip to local vip",
            to_backend(&inner, 4),
            TC_ACT_OK,
            TcReason::Decapsulated,
            Some(inner.clone()),
        ),
        (
            "ipip to another vip",
            to_backend(&other_vip, 4),
            TC_ACT_OK,
            TcReason::PassNotLocalVip,
            None,
        ),
        (
            "plain tcp",
            inner.clone(),
            TC_ACT_OK,
            TcReason::PassNotIpip,
            None,
        ),
        (
            "not ipip",
            to_backend(&inner, 17),
            TC_ACT_OK,
            TcReason::PassNotIpip,
            None,
        ),
        (
            "outer fragment",
            outer_fragment,
            TC_ACT_OK,
            TcReason::PassNotIpip,
            None,
        ),
        (
            "truncated inner header",
            truncated,
            TC_ACT_SHOT,
            TcReason::DropMalformed,
            None,
        ),
    ];
    for (name, packet, action, reason, expected) in cases {
        let out = tc.expect(name, program_names::TC_DECAP, &packet, action, reason);
        match expected {
            Some(expected) => assert_eq!(out, expected, "{name}: inner packet restored"),
            None if action == TC_ACT_OK => assert_eq!(out, packet, "{name}: untouched"),
            None => {}
        }
    }
}
