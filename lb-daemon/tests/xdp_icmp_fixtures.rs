//! Kernel fixtures of the balancer's ICMP: port unreachable for a refused frontend or an
//! undefined port of a rejecting address, "fragmentation needed" / "packet too big" for a
//! packet that does not fit once encapsulated, the rate limit on both, and ICMP errors
//! about a VIP flow forwarded to the flow's backend. Run through BPF_PROG_TEST_RUN with
//! the maps programmed by the daemon's sync engine. The expected answers are built here
//! byte by byte, and their checksums computed here (RFC 1071), not by the datapath's code.

mod support;

use std::{net::IpAddr, sync::Arc};

use lb_common::XdpReason;
use lb_daemon::{
    config, inspect,
    sync::{DatapathParams, IcmpLimit},
};
use lb_model::{DesiredState, Protocol};
use support::{
    require_root,
    xdp::{backend_mac, pin_to_one_cpu, XdpFixture, LB_MAC, XDP_DROP, XDP_PASS, XDP_TX},
};

const CLIENT: [u8; 4] = [198, 18, 0, 10];
const VIP: [u8; 4] = [198, 18, 100, 1];
const OTHER_VIP: [u8; 4] = [198, 18, 100, 9];
const ROUTER: [u8; 4] = [198, 18, 0, 1];
const LB: [u8; 4] = [198, 18, 0, 2];
const LB6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0,
];
const OTHER_VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 9,
];
const ROUTER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const ETH_IP: u16 = 0x0800;
const ETH_IP6: u16 = 0x86dd;
/// The next hops' MTU: a 1500-byte client packet does not fit once encapsulated.
const MTU: u16 = 1500;

const PARAMS: DatapathParams = DatapathParams {
    encap_source: std::net::Ipv4Addr::new(LB[0], LB[1], LB[2], LB[3]),
    encap_source6: Some(std::net::Ipv6Addr::from_octets(LB6)),
    nexthop_ttl: std::time::Duration::from_secs(1),
    icmp_limit: IcmpLimit::DEFAULT,
    new_flow_budget: lb_daemon::sync::NewFlowBudget::DEFAULT,
};

/// Ports 81 (TCP) and 54 (UDP) have no backends and reject; both VIPs reject ports they
/// have no frontend for.
const CONFIG: &str = "
services:
  - {name: web, vip: 198.18.100.1, port: 80, protocol: tcp,
     backends: [{address: 198.18.0.11}, {address: 198.18.0.12}, {address: 198.18.0.13}]}
  - {name: dns, vip: 198.18.100.1, port: 53, protocol: udp,
     backends: [{address: 198.18.0.11}, {address: 198.18.0.12}, {address: 198.18.0.13}]}
  - {name: closed, vip: 198.18.100.1, port: 81, protocol: tcp, backends: []}
  - {name: closed-udp, vip: 198.18.100.1, port: 54, protocol: udp, backends: []}
  - {name: web6, vip: '2001:db8::100', port: 80, protocol: tcp,
     backends: [{address: '2001:db8::11'}, {address: '2001:db8::12'}, {address: '2001:db8::13'}]}
  - {name: dns6, vip: '2001:db8::100', port: 53, protocol: udp,
     backends: [{address: '2001:db8::11'}, {address: '2001:db8::12'}]}
  - {name: closed6, vip: '2001:db8::100', port: 81, protocol: tcp, backends: []}
  - {name: closed-udp6, vip: '2001:db8::100', port: 54, protocol: udp, backends: []}
";

/// The config with kube-proxy's reject: the empty services refuse, the VIPs reject their
/// undefined ports.
fn desired() -> DesiredState {
    let mut desired = config::parse(CONFIG).unwrap();
    let closed: Vec<_> = desired
        .services
        .iter()
        .filter(|(_, spec)| spec.name.starts_with("closed"))
        .map(|(frontend, _)| *frontend)
        .collect();
    for frontend in closed {
        if let Some(spec) = desired.services.get_mut(&frontend) {
            Arc::make_mut(spec).reject = true;
        }
    }
    desired.rejecting = Arc::new([IpAddr::from(VIP), IpAddr::from(VIP6)].into());
    desired
}

fn fixture(tag: &str) -> Option<XdpFixture> {
    if !require_root("xdp icmp fixtures") {
        return None;
    }
    Some(XdpFixture::new(tag, &PARAMS, &desired(), MTU))
}

// ---- packets ----------------------------------------------------------------------------

/// RFC 1071: the one's-complement sum of 16-bit big-endian words, an odd byte padded.
fn ones_sum(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn checksum(bytes: &[u8]) -> u16 {
    fold(ones_sum(bytes))
}

/// The ICMPv6 checksum: pseudo-header (addresses, upper-layer length, next header 58).
fn checksum6(src: &[u8; 16], dst: &[u8; 16], body: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&(body.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    fold(ones_sum(&pseudo) + ones_sum(body))
}

fn ethernet(dst: [u8; 6], src: [u8; 6], ether_type: u16) -> Vec<u8> {
    let mut v = dst.to_vec();
    v.extend_from_slice(&src);
    v.extend_from_slice(&ether_type.to_be_bytes());
    v
}

/// A 20-byte IPv4 header with its checksum.
fn ipv4_header(tos: u8, total: usize, df: bool, proto: u8, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut h = vec![0x45, tos];
    h.extend_from_slice(&(total as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

fn ipv6_header(payload: usize, next: u8, src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h
}

/// A TCP segment (ACK set, or a SYN) or a UDP datagram with `payload`; the L4 checksum is
/// left zero (the balancer never reads it).
fn l4(proto: Protocol, sport: u16, dport: u16, syn: bool, payload: usize) -> Vec<u8> {
    let mut h = sport.to_be_bytes().to_vec();
    h.extend_from_slice(&dport.to_be_bytes());
    match proto {
        Protocol::Tcp => {
            h.extend_from_slice(&[0, 0, 0x03, 0xe8, 0, 0, 0, 1, 0x50]);
            h.push(if syn { 0x02 } else { 0x10 });
            h.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
        }
        Protocol::Udp => {
            h.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
            h.extend_from_slice(&[0, 0]);
        }
    }
    h.extend((0..payload).map(|i| (i * 7) as u8));
    h
}

fn proto_number(proto: Protocol) -> u8 {
    proto.number()
}

/// The client's IPv4 frame to `dst:dport`.
fn frame4(proto: Protocol, dport: u16, sport: u16, df: bool, payload: usize) -> Vec<u8> {
    let l4 = l4(proto, sport, dport, proto == Protocol::Tcp, payload);
    let mut v = ethernet(LB_MAC, CLIENT_MAC, ETH_IP);
    v.extend(ipv4_header(
        0,
        20 + l4.len(),
        df,
        proto_number(proto),
        CLIENT,
        VIP,
    ));
    v.extend(l4);
    v
}

fn frame6(proto: Protocol, dport: u16, sport: u16, payload: usize) -> Vec<u8> {
    let l4 = l4(proto, sport, dport, proto == Protocol::Tcp, payload);
    let mut v = ethernet(LB_MAC, CLIENT_MAC, ETH_IP6);
    v.extend(ipv6_header(l4.len(), proto_number(proto), CLIENT6, VIP6));
    v.extend(l4);
    v
}

/// The answer the balancer owes `frame` (an IPv4 client frame): ICMP `kind`/`code` with
/// `rest` from the VIP to the client, quoting up to 548 bytes of the packet.
fn expected_icmp4(frame: &[u8], kind: u8, code: u8, rest: [u8; 4]) -> Vec<u8> {
    let packet = &frame[14..];
    let quote = &packet[..packet.len().min(576 - 28)];
    let mut icmp = vec![kind, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(quote);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let src: [u8; 4] = packet[16..20].try_into().unwrap();
    let dst: [u8; 4] = packet[12..16].try_into().unwrap();
    let mut v = ethernet(CLIENT_MAC, LB_MAC, ETH_IP);
    let mut ip = ipv4_header(0xc0, 20 + icmp.len(), false, 1, src, dst);
    // The answer carries identification 0.
    ip[4..6].copy_from_slice(&[0, 0]);
    ip[10..12].copy_from_slice(&[0, 0]);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    v.extend(ip);
    v.extend(icmp);
    v
}

/// The IPv6 twin: ICMPv6 from the VIP to the client, quoting up to 1232 bytes.
fn expected_icmp6(frame: &[u8], kind: u8, code: u8, rest: [u8; 4]) -> Vec<u8> {
    let packet = &frame[14..];
    let quote = &packet[..packet.len().min(1280 - 48)];
    let src: [u8; 16] = packet[24..40].try_into().unwrap();
    let dst: [u8; 16] = packet[8..24].try_into().unwrap();
    let mut icmp = vec![kind, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(quote);
    let sum = checksum6(&src, &dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut v = ethernet(CLIENT_MAC, LB_MAC, ETH_IP6);
    v.extend(ipv6_header(icmp.len(), 58, src, dst));
    v.extend(icmp);
    v
}

/// Checks the answer independently of the expectation: both checksums sum to zero.
fn assert_checksums4(name: &str, out: &[u8]) {
    assert_eq!(checksum(&out[14..34]), 0, "{name}: IPv4 header checksum");
    assert_eq!(checksum(&out[34..]), 0, "{name}: ICMP checksum");
}

fn assert_checksums6(name: &str, out: &[u8]) {
    let src: [u8; 16] = out[22..38].try_into().unwrap();
    let dst: [u8; 16] = out[38..54].try_into().unwrap();
    let mut pseudo = src.to_vec();
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&((out.len() - 54) as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    let total = fold(ones_sum(&pseudo) + ones_sum(&out[54..]));
    assert_eq!(total, 0, "{name}: ICMPv6 checksum");
}

// ---- reject -----------------------------------------------------------------------------

#[test]
fn a_rejecting_frontend_without_backends_answers_port_unreachable_with_exact_bytes() {
    let Some(mut f) = fixture("icmp-reject") else {
        return;
    };
    for (proto, port, payload) in [(Protocol::Tcp, 81, 0), (Protocol::Udp, 54, 33)] {
        let name = format!("ipv4 {proto} to the empty port {port}");
        let frame = frame4(proto, port, 40_000, true, payload);
        let out = f.expect(&name, &frame, XDP_TX, XdpReason::RejectedIcmp);
        assert_eq!(out, expected_icmp4(&frame, 3, 3, [0; 4]), "{name}: bytes");
        assert_checksums4(&name, &out);

        let name = format!("ipv6 {proto} to the empty port {port}");
        let frame = frame6(proto, port, 40_000, payload);
        let out = f.expect(&name, &frame, XDP_TX, XdpReason::RejectedIcmp);
        assert_eq!(out, expected_icmp6(&frame, 1, 4, [0; 4]), "{name}: bytes");
        assert_checksums6(&name, &out);
    }
}

#[test]
fn an_undefined_port_of_a_rejecting_address_is_refused_and_other_addresses_pass() {
    let Some(mut f) = fixture("icmp-undefined") else {
        return;
    };
    // Port 82 is no frontend of the VIP, and 53/TCP only exists for UDP.
    for (proto, port) in [
        (Protocol::Tcp, 82),
        (Protocol::Tcp, 53),
        (Protocol::Udp, 80),
    ] {
        let name = format!("ipv4 {proto} to the undefined port {port}");
        let frame = frame4(proto, port, 40_001, true, 5);
        let out = f.expect(&name, &frame, XDP_TX, XdpReason::RejectedIcmp);
        assert_eq!(out, expected_icmp4(&frame, 3, 3, [0; 4]), "{name}: bytes");

        let name = format!("ipv6 {proto} to the undefined port {port}");
        let frame = frame6(proto, port, 40_001, 5);
        let out = f.expect(&name, &frame, XDP_TX, XdpReason::RejectedIcmp);
        assert_eq!(out, expected_icmp6(&frame, 1, 4, [0; 4]), "{name}: bytes");
    }
    // An address that is no rejecting one: the stack's business.
    let mut frame = frame4(Protocol::Tcp, 82, 40_002, true, 0);
    frame[30..34].copy_from_slice(&OTHER_VIP);
    let sum = {
        frame[24..26].copy_from_slice(&[0, 0]);
        checksum(&frame[14..34])
    };
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
    let out = f.expect("other address", &frame, XDP_PASS, XdpReason::PassNotService);
    assert_eq!(out, frame, "passed untouched");
}

// ---- too big ----------------------------------------------------------------------------

#[test]
fn a_packet_too_big_to_encapsulate_gets_the_mtu_that_fits_with_exact_bytes() {
    let Some(mut f) = fixture("icmp-toobig") else {
        return;
    };
    // 1500-byte packets: 1520 once encapsulated, over the next hop's 1500.
    for (proto, port, payload) in [(Protocol::Tcp, 80, 1460), (Protocol::Udp, 53, 1472)] {
        let name = format!("ipv4 {proto} of 1500 bytes with DF");
        let frame = frame4(proto, port, 40_010, true, payload);
        let out = f.expect(&name, &frame, XDP_TX, XdpReason::TooBigAnswered);
        let mtu = (MTU - 20).to_be_bytes();
        assert_eq!(
            out,
            expected_icmp4(&frame, 3, 4, [0, 0, mtu[0], mtu[1]]),
            "{name}: bytes"
        );
        assert_eq!(out.len(), 14 + 576, "{name}: the answer is 576 bytes");
        assert_checksums4(&name, &out);

        let name = format!("ipv6 {proto} of 1500 bytes");
        let payload6 = payload - 20;
        let frame = frame6(proto, port, 40_010, payload6);
        let out = f.expect(&name, &frame, XDP_TX, XdpReason::TooBigAnswered);
        let mtu = u32::from(MTU - 40).to_be_bytes();
        assert_eq!(out, expected_icmp6(&frame, 2, 0, mtu), "{name}: bytes");
        assert_eq!(out.len(), 14 + 1280, "{name}: the answer is 1280 bytes");
        assert_checksums6(&name, &out);

        // One byte less fits: forwarded as usual.
        let frame = frame4(proto, port, 40_011, true, payload - 20);
        f.expect("fits", &frame, XDP_TX, XdpReason::Forwarded);
        let frame = frame6(proto, port, 40_011, payload6 - 40);
        f.expect("fits, ipv6", &frame, XDP_TX, XdpReason::Forwarded);
    }
    // Without DF the sender asked the path to fragment, which the balancer cannot:
    // dropped and counted, no answer.
    let frame = frame4(Protocol::Udp, 53, 40_012, false, 1472);
    f.expect("no DF", &frame, XDP_DROP, XdpReason::DropTooBig);
}

#[test]
fn packet_too_big_never_reports_less_than_the_ipv6_minimum_mtu() {
    let Some(mut f) = fixture("icmp-min-mtu") else {
        return;
    };
    // A 1280-byte path: 1240 would fit, but IPv6 links carry 1280; the answer says 1280.
    f.apply(&desired(), 1280);
    let frame = frame6(Protocol::Tcp, 80, 40_020, 1300);
    let out = f.expect("1280 path", &frame, XDP_TX, XdpReason::TooBigAnswered);
    assert_eq!(out, expected_icmp6(&frame, 2, 0, 1280u32.to_be_bytes()));
}

// ---- rate limit -------------------------------------------------------------------------

/// Keeps the test on one CPU: the limit is per CPU.
#[test]
fn answers_beyond_the_burst_are_dropped_and_counted() {
    let Some(mut f) = fixture("icmp-rate") else {
        return;
    };
    pin_to_one_cpu();
    // One a second with bursts of three: a burst of six gets three answers.
    let limited = DatapathParams {
        icmp_limit: IcmpLimit {
            per_second: 1,
            burst: 3,
        },
        ..PARAMS
    };
    f.engine.set_params(Some(&limited)).unwrap();
    let mut answered = 0;
    for i in 0..6u16 {
        let (reject, too_big) = if i % 2 == 0 {
            (frame4(Protocol::Tcp, 81, 41_000 + i, true, 0), false)
        } else {
            (frame6(Protocol::Tcp, 80, 41_000 + i, 1440), true)
        };
        let (want, reason) = if i < 3 {
            answered += 1;
            let reason = if too_big {
                XdpReason::TooBigAnswered
            } else {
                XdpReason::RejectedIcmp
            };
            (XDP_TX, reason)
        } else {
            (XDP_DROP, XdpReason::DropIcmpRateLimited)
        };
        f.expect(&format!("answer {i}"), &reject, want, reason);
    }
    assert_eq!(answered, 3);
    // A rate of zero sends none.
    let silent = DatapathParams {
        icmp_limit: IcmpLimit {
            per_second: 0,
            burst: 1,
        },
        ..PARAMS
    };
    f.engine.set_params(Some(&silent)).unwrap();
    let frame = frame4(Protocol::Udp, 54, 41_100, true, 0);
    f.expect("rate 0", &frame, XDP_DROP, XdpReason::DropIcmpRateLimited);
}

// ---- ICMP errors about a VIP flow --------------------------------------------------------

/// A router's ICMP error about a backend's answer `vip:vport → client:cport`, addressed to
/// `to` (normally the VIP the answer came from).
fn icmp_error4(
    quoted_src: [u8; 4],
    to: [u8; 4],
    proto: Protocol,
    vport: u16,
    cport: u16,
) -> Vec<u8> {
    let answer = l4(proto, vport, cport, false, 0);
    let quoted = ipv4_header(
        0,
        20 + answer.len(),
        true,
        proto_number(proto),
        quoted_src,
        CLIENT,
    );
    // Frag needed, next-hop MTU 1400, quoting the header and the first 8 bytes.
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    icmp.extend_from_slice(&quoted);
    icmp.extend_from_slice(&answer[..8]);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut v = ethernet(LB_MAC, CLIENT_MAC, ETH_IP);
    v.extend(ipv4_header(0, 20 + icmp.len(), false, 1, ROUTER, to));
    v.extend(icmp);
    v
}

fn icmp_error6(
    quoted_src: [u8; 16],
    to: [u8; 16],
    proto: Protocol,
    vport: u16,
    cport: u16,
) -> Vec<u8> {
    let answer = l4(proto, vport, cport, false, 0);
    let mut icmp = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend(ipv6_header(
        answer.len(),
        proto_number(proto),
        quoted_src,
        CLIENT6,
    ));
    icmp.extend_from_slice(&answer);
    let sum = checksum6(&ROUTER6, &to, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut v = ethernet(LB_MAC, CLIENT_MAC, ETH_IP6);
    v.extend(ipv6_header(icmp.len(), 58, ROUTER6, to));
    v.extend(icmp);
    v
}

/// The backend a client flow `client:cport → vip:vport` gets, by `explain`.
fn owner(
    f: &XdpFixture,
    proto: Protocol,
    client: IpAddr,
    vip: IpAddr,
    cport: u16,
    vport: u16,
) -> IpAddr {
    let tuple = inspect::Tuple {
        protocol: proto,
        src: client,
        sport: cport,
        dst: vip,
        dport: vport,
    };
    let e = inspect::explain(f.engine.maps(), tuple).unwrap();
    e.flow_entry
        .and_then(|entry| entry.backend)
        .or(e.maglev_backend)
        .expect("a backend owns the flow")
}

/// The frame went out encapsulated, unchanged inside, to `backend`.
fn assert_forwarded_to(name: &str, input: &[u8], out: &[u8], backend: IpAddr, v6: bool) {
    assert_eq!(&out[..6], &backend_mac(backend), "{name}: next hop MAC");
    let outer = if v6 { 40 } else { 20 };
    assert_eq!(
        &out[14 + outer..],
        &input[14..],
        "{name}: inner packet intact"
    );
    match backend {
        IpAddr::V4(b) => {
            assert_eq!(out[14 + 9], 4, "{name}: IPIP");
            assert_eq!(&out[30..34], &b.octets(), "{name}: outer destination");
            assert_eq!(checksum(&out[14..34]), 0, "{name}: outer checksum");
        }
        IpAddr::V6(b) => {
            assert_eq!(out[14 + 6], 41, "{name}: IP6IP6");
            assert_eq!(&out[38..54], &b.octets(), "{name}: outer destination");
        }
    }
}

/// An ACK (which records the flow) to port 80 from `cport`; returns the flow's backend.
fn establish(f: &mut XdpFixture, v6: bool, cport: u16) -> IpAddr {
    let mut frame = if v6 {
        frame6(Protocol::Tcp, 80, cport, 10)
    } else {
        frame4(Protocol::Tcp, 80, cport, true, 10)
    };
    let flags = if v6 { 14 + 40 + 13 } else { 14 + 20 + 13 };
    frame[flags] = 0x10;
    f.expect("establish", &frame, XDP_TX, XdpReason::Forwarded);
    let (client, vip) = if v6 {
        (IpAddr::from(CLIENT6), IpAddr::from(VIP6))
    } else {
        (IpAddr::from(CLIENT), IpAddr::from(VIP))
    };
    let tuple = inspect::Tuple {
        protocol: Protocol::Tcp,
        src: client,
        sport: cport,
        dst: vip,
        dport: 80,
    };
    let e = inspect::explain(f.engine.maps(), tuple).unwrap();
    e.flow_entry
        .and_then(|entry| entry.backend)
        .expect("the ACK recorded the flow")
}

#[test]
fn an_icmp_error_about_a_vip_flow_goes_to_the_backend_that_owns_it() {
    let Some(mut f) = fixture("icmp-forward") else {
        return;
    };
    // A recorded flow (flow table), and flows only Maglev knows, TCP and UDP.
    let recorded = establish(&mut f, false, 42_000);
    let name = "ipv4 error about a recorded flow";
    let frame = icmp_error4(VIP, VIP, Protocol::Tcp, 80, 42_000);
    let out = f.expect(name, &frame, XDP_TX, XdpReason::ForwardedIcmpError);
    assert_forwarded_to(name, &frame, &out, recorded, false);
    for (proto, vport) in [(Protocol::Tcp, 80), (Protocol::Udp, 53)] {
        for cport in 42_001..42_009 {
            let name = format!("ipv4 error about {proto} flow from port {cport}");
            let backend = owner(&f, proto, CLIENT.into(), VIP.into(), cport, vport);
            let frame = icmp_error4(VIP, VIP, proto, vport, cport);
            let out = f.expect(&name, &frame, XDP_TX, XdpReason::ForwardedIcmpError);
            assert_forwarded_to(&name, &frame, &out, backend, false);
        }
    }
    // Errors do not create flow entries.
    let tuple = inspect::Tuple {
        protocol: Protocol::Tcp,
        src: CLIENT.into(),
        sport: 42_001,
        dst: VIP.into(),
        dport: 80,
    };
    assert!(inspect::explain(f.engine.maps(), tuple)
        .unwrap()
        .flow_entry
        .is_none());

    let recorded = establish(&mut f, true, 42_100);
    let name = "ipv6 error about a recorded flow";
    let frame = icmp_error6(VIP6, VIP6, Protocol::Tcp, 80, 42_100);
    let out = f.expect(name, &frame, XDP_TX, XdpReason::ForwardedIcmpError);
    assert_forwarded_to(name, &frame, &out, recorded, true);
    for (proto, vport) in [(Protocol::Tcp, 80), (Protocol::Udp, 53)] {
        for cport in 42_101..42_109 {
            let name = format!("ipv6 error about {proto} flow from port {cport}");
            let backend = owner(&f, proto, CLIENT6.into(), VIP6.into(), cport, vport);
            let frame = icmp_error6(VIP6, VIP6, proto, vport, cport);
            let out = f.expect(&name, &frame, XDP_TX, XdpReason::ForwardedIcmpError);
            assert_forwarded_to(&name, &frame, &out, backend, true);
        }
    }
}

#[test]
fn icmp_that_is_no_error_about_a_served_flow_passes() {
    let Some(mut f) = fixture("icmp-pass") else {
        return;
    };
    // About a flow of an address that is no VIP: not ours.
    let frame = icmp_error4(OTHER_VIP, OTHER_VIP, Protocol::Tcp, 80, 43_000);
    f.expect("other address", &frame, XDP_PASS, XdpReason::PassNotService);
    let frame = icmp_error6(OTHER_VIP6, OTHER_VIP6, Protocol::Tcp, 80, 43_000);
    f.expect(
        "other address, ipv6",
        &frame,
        XDP_PASS,
        XdpReason::PassNotService,
    );
    // About the VIP, on a port no frontend serves: passed (an error is never answered).
    let frame = icmp_error4(VIP, VIP, Protocol::Tcp, 8080, 43_001);
    f.expect("other port", &frame, XDP_PASS, XdpReason::PassNotService);
    let frame = icmp_error6(VIP6, VIP6, Protocol::Udp, 8080, 43_001);
    f.expect(
        "other port, ipv6",
        &frame,
        XDP_PASS,
        XdpReason::PassNotService,
    );
    // About the empty rejecting frontend: nothing to forward to, and no answer.
    let frame = icmp_error4(VIP, VIP, Protocol::Tcp, 81, 43_002);
    f.expect("empty frontend", &frame, XDP_DROP, XdpReason::DropNoBackend);
    // Quoting a packet not sent from the error's destination.
    let frame = icmp_error4(OTHER_VIP, VIP, Protocol::Tcp, 80, 43_003);
    f.expect(
        "foreign quote",
        &frame,
        XDP_PASS,
        XdpReason::PassOtherProtocol,
    );
    // An echo request to the VIP is no error.
    let mut echo = ethernet(LB_MAC, CLIENT_MAC, ETH_IP);
    let mut icmp = vec![8, 0, 0, 0, 0, 1, 0, 1];
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    echo.extend(ipv4_header(0, 28, false, 1, CLIENT, VIP));
    echo.extend(icmp);
    f.expect("echo", &echo, XDP_PASS, XdpReason::PassOtherProtocol);
}
