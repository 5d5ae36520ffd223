//! The differential fuzzer: random and mutated frames through the real XDP balancer
//! (BPF_PROG_TEST_RUN, maps filled by the sync engine) and through the reference model in
//! `fuzz/model.rs`; verdict, output bytes and reason counters must agree.
//!
//! `FERROLB_FUZZ_FRAMES` sets the frame count (default 1,000,000: the CI run; the soak
//! runs 100,000,000), `FERROLB_FUZZ_SEED` the seed (default: from the clock, printed). A
//! mismatch prints the seed, the frame's index and the frame in hex: rerun with that seed,
//! or feed the hex to the model and the program by hand.

mod fuzz;
mod support;

use std::{net::IpAddr, sync::Arc, time::Instant};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use fuzz::{
    frames::{self, Rng, LB_MAC},
    model::{Model, Outcome, Snapshot, XDP_DROP},
};
use lb_common::{program_names, BackendValue, FlowEvent, NextHop, XdpReason, FAMILY_V4, FAMILY_V6};
use lb_daemon::{
    config, loader,
    maps::BalancerMaps,
    sync::{DatapathParams, IcmpLimit, SyncEngine},
};
use lb_model::DesiredState;
use support::{require_root, PinDir};

const LB: [u8; 4] = [198, 18, 0, 2];
const LB6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const PARAMS: DatapathParams = DatapathParams {
    encap_source: std::net::Ipv4Addr::new(LB[0], LB[1], LB[2], LB[3]),
    encap_source6: Some(std::net::Ipv6Addr::from_octets(LB6)),
    nexthop_ttl: std::time::Duration::from_secs(1),
    icmp_limit: UNLIMITED,
    // The default insert budget: it decides only whether a flow's entry is written, never
    // where a frame goes (an unrecorded flow's next frame gets the same Maglev pick).
    new_flow_budget: lb_daemon::sync::NewFlowBudget::DEFAULT,
};
const MTU: u16 = 1500;
/// Counters are compared after every batch of this many frames.
const BATCH: u64 = 4096;
/// The ICMP answer rate alternates every this many frames between unlimited (a rate the
/// fuzzer's answers, well under 65,535 a second, never exhaust) and 0 (every answer
/// suppressed): both are what the model can predict exactly, whichever CPU runs a frame.
const RATE_PHASE: u64 = 32 * BATCH;
const UNLIMITED: IcmpLimit = IcmpLimit {
    per_second: u16::MAX,
    burst: u16::MAX,
};

const CONFIG: &str = "
settings:
  vlans: [20]
services:
  - {name: web, vip: 198.18.100.1, port: 80, protocol: tcp,
     backends: [{address: 198.18.0.11}, {address: 198.18.0.12}, {address: 198.18.0.13}]}
  - {name: dns, vip: 198.18.100.1, port: 53, protocol: udp,
     backends: [{address: 198.18.0.11}, {address: 198.18.0.12}]}
  - {name: empty, vip: 198.18.100.1, port: 81, protocol: tcp, backends: []}
  - {name: ranged, vip: 198.18.100.1, port: 443, protocol: tcp,
     source_ranges: [198.18.0.10/31],
     backends: [{address: 198.18.0.11}, {address: 198.18.0.12}]}
  - {name: sticky, vip: 198.18.100.1, port: 8080, protocol: udp,
     session_affinity: {timeout_seconds: 86400},
     backends: [{address: 198.18.0.11}, {address: 198.18.0.12}, {address: 198.18.0.13}]}
  - {name: web6, vip: '2001:db8:0:100::1', port: 80, protocol: tcp,
     backends: [{address: '2001:db8::11'}, {address: '2001:db8::12'}]}
  - {name: dns6, vip: '2001:db8:0:100::1', port: 53, protocol: udp,
     backends: [{address: '2001:db8::13'}]}
  - {name: empty6, vip: '2001:db8:0:100::1', port: 81, protocol: tcp, backends: []}
  - {name: ranged6, vip: '2001:db8:0:100::1', port: 443, protocol: tcp,
     source_ranges: ['2001:db8::a/127'],
     backends: [{address: '2001:db8::11'}, {address: '2001:db8::12'}]}
  - {name: sticky6, vip: '2001:db8:0:100::1', port: 8080, protocol: tcp,
     session_affinity: {timeout_seconds: 86400},
     backends: [{address: '2001:db8::11'}, {address: '2001:db8::12'}, {address: '2001:db8::13'}]}
";

/// The config as the harness programs it: the empty frontends reject (port unreachable,
/// as a Kubernetes Service without endpoints does), and one address of each family
/// refuses the ports no frontend names; the file format has neither (cluster mode does).
fn desired() -> DesiredState {
    let mut desired = config::parse(CONFIG).unwrap();
    let empty: Vec<_> = desired
        .services
        .iter()
        .filter(|(_, spec)| spec.backends.is_empty())
        .map(|(frontend, _)| *frontend)
        .collect();
    for frontend in empty {
        if let Some(spec) = desired.services.get_mut(&frontend) {
            Arc::make_mut(spec).reject = true;
        }
    }
    let mut rejecting6 = frames::VIP6;
    rejecting6[15] = frames::REJECTING6_LAST;
    desired.rejecting = Arc::new(
        [IpAddr::from(frames::REJECTING), IpAddr::from(rejecting6)]
            .into_iter()
            .collect(),
    );
    desired
}

fn backend_mac(backend: &BackendValue) -> [u8; 6] {
    let last = if backend.family == FAMILY_V4 {
        backend.addr[3]
    } else {
        backend.addr[15]
    };
    [0x02, 0xbe, 0, 0, 0, last]
}

struct Harness {
    ebpf: aya::Ebpf,
    engine: SyncEngine,
    _pin: PinDir,
}

impl Harness {
    fn new(tag: &str) -> Self {
        let pin = PinDir::new(tag);
        let ebpf = loader::load_balancer(&pin.path).expect("load balancer");
        let maps = BalancerMaps::open(&pin.path).expect("open maps");
        let mut engine = SyncEngine::adopt(maps, &PARAMS).unwrap();
        engine.apply(&desired()).unwrap();
        let backends: Vec<(u32, BackendValue)> = engine.maps().backend_entries().unwrap();
        for (id, backend) in backends {
            let hop = NextHop {
                dst_mac: backend_mac(&backend),
                src_mac: LB_MAC,
                ifindex: 1, // test_run delivers on the loopback: XDP_TX
                mtu: MTU,
                flags: 0,
                backend_generation: backend.generation,
                expires_jiffies: u64::MAX,
            };
            engine.set_static_nexthop(id, hop).unwrap();
        }
        Self {
            ebpf,
            engine,
            _pin: pin,
        }
    }

    /// What the model reads: the maps as the sync engine wrote them, and the source
    /// ranges and rejecting addresses as the desired state gives them.
    fn snapshot(&self) -> Snapshot {
        let maps = self.engine.maps();
        let config = maps.read_config().unwrap();
        let desired = desired();
        let state = self.engine.state();
        let source_ranges = desired
            .services
            .iter()
            .filter(|(_, spec)| !spec.source_ranges.is_empty())
            .map(|(frontend, spec)| {
                let id = state.services[frontend].service_id;
                (id, spec.source_ranges.clone())
            })
            .collect();
        let rejecting = desired
            .rejecting
            .iter()
            .map(|addr| match addr {
                IpAddr::V4(v4) => (lb_common::v4_addr(v4.octets()), FAMILY_V4),
                IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
            })
            .collect();
        let services = maps
            .service_entries()
            .unwrap()
            .into_iter()
            .map(|(key, value)| {
                let slots = maps.read_slots(value.table_base, value.table_size).unwrap();
                (key, (value, slots))
            })
            .collect();
        Snapshot {
            services,
            backends: maps.backend_entries().unwrap().into_iter().collect(),
            flow_hash_seed: config.flow_hash_seed,
            allowed_vlans: config
                .allowed_vlans
                .iter()
                .copied()
                .filter(|&v| v != 0)
                .collect(),
            encap_src_v4: LB,
            encap_src_v6: LB6,
            lb_mac: LB_MAC,
            mtu: u32::from(MTU),
            backend_mac,
            source_ranges,
            rejecting,
            icmp_answers: config.icmp_rate_per_s > 0,
        }
    }
}

fn counters(maps: &BalancerMaps) -> Vec<u64> {
    let counters = maps.reason_counters().unwrap();
    counters.iter().map(|c| c.packets).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

#[test]
fn fuzzed_frames_get_the_models_verdict_counters_and_bytes() {
    if !require_root("the differential fuzzer") {
        return;
    }
    let frames = env_u64("FERROLB_FUZZ_FRAMES").unwrap_or(1_000_000);
    let seed = env_u64("FERROLB_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    println!("fuzz: seed {seed}, {frames} frames (FERROLB_FUZZ_SEED={seed} reproduces)");
    let mut harness = Harness::new("fuzz");
    let mut snapshot = harness.snapshot();
    let mut model = Model::default();
    let mut rng = Rng::new(seed);
    let mut expected_counts = vec![0u64; XdpReason::COUNT as usize];
    let Harness { ebpf, engine, .. } = &mut harness;
    let mut before = counters(engine.maps());
    let mut by_reason = vec![0u64; XdpReason::COUNT as usize];
    let started = Instant::now();
    let prog: &mut Xdp = ebpf
        .program_mut(program_names::XDP_BALANCER)
        .unwrap()
        .try_into()
        .unwrap();
    let mut out = vec![0u8; 4096];
    for index in 0..frames {
        let frame = frames::frame(&mut rng);
        let want = model.decide(&snapshot, &frame);
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .unwrap_or_else(|e| {
                panic!(
                    "seed {seed} frame {index}: test_run failed: {e}\nframe {}",
                    hex(&frame)
                )
            });
        let got = Outcome {
            action: result.return_value,
            reason: want.reason,
            output: (result.return_value != XDP_DROP)
                .then(|| out[..result.data_size_out as usize].to_vec()),
        };
        if got.action != want.action || got.output != want.output {
            panic!(
                "seed {seed} frame {index}: mismatch\nframe  {}\nmodel  {:?} {:?}\nkernel action {}\nmodel  out {}\nkernel out {}",
                hex(&frame),
                want.action,
                want.reason,
                got.action,
                want.output.as_deref().map(hex).unwrap_or_default(),
                got.output.as_deref().map(hex).unwrap_or_default(),
            );
        }
        expected_counts[want.reason as usize] += 1;
        by_reason[want.reason as usize] += 1;
        if (index + 1) % BATCH == 0 || index + 1 == frames {
            let after = counters(engine.maps());
            for &reason in XdpReason::ALL {
                let moved = after[reason as usize] - before[reason as usize];
                let want = expected_counts[reason as usize];
                assert_eq!(
                    moved, want,
                    "seed {seed}: counter {} moved by {moved}, the model says {want}, in the batch ending at frame {index}",
                    reason.name()
                );
            }
            expected_counts.fill(0);
            before = after;
            if (index + 1) % RATE_PHASE == 0 {
                let limited = (index + 1) / RATE_PHASE % 2 == 1;
                let limit = if limited {
                    IcmpLimit {
                        per_second: 0,
                        burst: 1,
                    }
                } else {
                    UNLIMITED
                };
                engine
                    .set_params(Some(&DatapathParams {
                        icmp_limit: limit,
                        ..PARAMS
                    }))
                    .unwrap();
                snapshot.icmp_answers = !limited;
            }
            if (index + 1) % (1024 * BATCH) == 0 {
                println!(
                    "fuzz: {} frames agree so far ({:.0} s)",
                    index + 1,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    check_flow_events(engine.maps(), &by_reason, frames);
    let elapsed = started.elapsed();
    println!(
        "fuzz: {frames} frames, 0 mismatches, in {:.1} s ({:.0} frames/s); {} datagrams in fragments remembered",
        elapsed.as_secs_f64(),
        frames as f64 / elapsed.as_secs_f64(),
        model.fragments_held()
    );
    for &reason in XdpReason::ALL {
        println!(
            "fuzz:   {:>24} {}",
            reason.name(),
            by_reason[reason as usize]
        );
    }
    // The generator must reach the interesting verdicts, or the comparison proves little.
    for reason in [
        XdpReason::Forwarded,
        XdpReason::PassVlan,
        XdpReason::PassFragment,
        XdpReason::PassNotService,
        XdpReason::PassOtherProtocol,
        XdpReason::DropMalformedIp,
        XdpReason::DropMalformedL4,
        XdpReason::DropNoBackend,
        XdpReason::DropTooBig,
        XdpReason::RejectedIcmp,
        XdpReason::TooBigAnswered,
        XdpReason::DropIcmpRateLimited,
        XdpReason::ForwardedIcmpError,
        XdpReason::DropSourceRange,
    ] {
        assert!(
            frames < 100_000 || by_reason[reason as usize] > 0,
            "the generator never produced {}",
            reason.name()
        );
    }
}

/// The flow-table events against the model's verdicts: every entry written or skipped
/// comes from a frame the model sent past Maglev (forwarded, or answered or dropped for
/// its size after the pick), at most one each, and the kernel refused none.
fn check_flow_events(maps: &BalancerMaps, by_reason: &[u64], frames: u64) {
    let events: Vec<u64> = maps
        .flow_events()
        .unwrap()
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    let event = |e: FlowEvent| events[e as usize];
    let attempts = event(FlowEvent::TcpRecorded)
        + event(FlowEvent::UdpRecorded)
        + event(FlowEvent::Replaced)
        + event(FlowEvent::OverBudget)
        + event(FlowEvent::RecordFailed);
    let picked: u64 = [
        XdpReason::Forwarded,
        XdpReason::ForwardedRedirect,
        XdpReason::ForwardedLocal,
        XdpReason::ForwardedIcmpError,
        XdpReason::TooBigAnswered,
        XdpReason::DropTooBig,
        XdpReason::DropIcmpRateLimited,
    ]
    .iter()
    .map(|&r| by_reason[r as usize])
    .sum();
    println!("fuzz: flow events {events:?} ({attempts} writes or skips, {picked} frames picked)");
    assert_eq!(
        event(FlowEvent::RecordFailed),
        0,
        "flow-table inserts refused"
    );
    assert!(
        attempts <= picked,
        "more flow-table writes than picked frames"
    );
    assert!(
        frames < 100_000 || event(FlowEvent::TcpRecorded) + event(FlowEvent::UdpRecorded) > 0,
        "the generator never recorded a flow"
    );
}

/// Runs one frame; returns action, output and the reason counters' deltas.
fn run_one(harness: &mut Harness, frame: &[u8]) -> (u32, Vec<u8>, Vec<u64>) {
    let before = counters(harness.engine.maps());
    let prog: &mut Xdp = harness
        .ebpf
        .program_mut(program_names::XDP_BALANCER)
        .unwrap()
        .try_into()
        .unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("test_run");
    out.truncate(result.data_size_out as usize);
    let after = counters(harness.engine.maps());
    let moved = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    (result.return_value, out, moved)
}

fn udp_v4(sport: u16, frag: u16, id: u16, payload: usize) -> Vec<u8> {
    let mut f = LB_MAC.to_vec();
    f.extend_from_slice(&frames::CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let tot = (20 + 8 + payload) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&tot.to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, 17, 0, 0, 198, 18, 0, 10]);
    f.extend_from_slice(&frames::VIP);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&(8 + payload as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend(std::iter::repeat_n(0x5a, payload));
    f
}

fn udp_v6(sport: u16, offset_m: u16, id: u32, payload: usize) -> Vec<u8> {
    let mut f = LB_MAC.to_vec();
    f.extend_from_slice(&frames::CLIENT_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&((8 + 8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[44, 64]);
    let mut src = frames::VIP6;
    src[6] = 0;
    src[15] = 10;
    f.extend_from_slice(&src);
    f.extend_from_slice(&frames::VIP6);
    f.extend_from_slice(&[17, 0]);
    f.extend_from_slice(&offset_m.to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&(8 + payload as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend(std::iter::repeat_n(0x5a, payload));
    f
}

/// The outer destination of an encapsulated frame.
fn outer_dst(out: &[u8]) -> Vec<u8> {
    if out[12..14] == [0x08, 0x00] {
        out[30..34].to_vec()
    } else {
        out[38..54].to_vec()
    }
}

#[test]
fn later_fragments_follow_their_first_fragment_to_the_same_backend() {
    if !require_root("fragment fixtures") {
        return;
    }
    let mut harness = Harness::new("fuzz-frag");
    let forwarded = XdpReason::Forwarded as usize;
    let mut backends = std::collections::BTreeSet::new();
    for i in 0..24u16 {
        let sport = 40_000 + i * 7;
        // IPv4: first fragment (MF, offset 0), then the rest (offset 1480 / 8 = 185).
        let (action, first, moved) = run_one(&mut harness, &udp_v4(sport, 0x2000, 100 + i, 1000));
        assert_eq!(
            (action, moved[forwarded]),
            (3, 1),
            "v4 first fragment {i} forwarded"
        );
        let mut later = udp_v4(sport, 185, 100 + i, 1000);
        later[34..38].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // payload, not ports
        let (action, rest, moved) = run_one(&mut harness, &later);
        assert_eq!(
            (action, moved[forwarded]),
            (3, 1),
            "v4 later fragment {i} forwarded"
        );
        assert_eq!(
            outer_dst(&first),
            outer_dst(&rest),
            "v4 datagram {i}: one backend"
        );
        backends.insert(outer_dst(&first));
        // IPv6: the fragment header's identification names the datagram.
        let id = 7_000 + u32::from(i);
        let (action, first, _) = run_one(&mut harness, &udp_v6(sport, 1, id, 1000));
        assert_eq!(action, 3, "v6 first fragment {i} forwarded");
        let mut later = udp_v6(sport, 185 << 3, id, 1000);
        later[62..66].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let (action, rest, moved) = run_one(&mut harness, &later);
        assert_eq!(
            (action, moved[forwarded]),
            (3, 1),
            "v6 later fragment {i} forwarded"
        );
        assert_eq!(
            outer_dst(&first),
            outer_dst(&rest),
            "v6 datagram {i}: one backend"
        );
    }
    assert!(
        backends.len() > 1,
        "the datagrams spread over several backends"
    );
    // A later fragment whose first was never seen is passed, as before.
    let (action, _, moved) = run_one(&mut harness, &udp_v4(41_000, 185, 9_999, 100));
    assert_eq!((action, moved[XdpReason::PassFragment as usize]), (2, 1));
}

#[test]
fn a_frame_tagged_vlan_10_is_passed_untouched_and_counted() {
    if !require_root("VLAN fixtures") {
        return;
    }
    let mut harness = Harness::new("fuzz-vlan");
    let tagged = |vid: u16| {
        let mut f = udp_v4(40_001, 0, 1, 16);
        f.splice(12..12, [0x81, 0x00, (vid >> 8) as u8, vid as u8]);
        f
    };
    // VLAN 10 is not listed (the harness lists 20): passed as it came, counted.
    let frame = tagged(10);
    let (action, out, moved) = run_one(&mut harness, &frame);
    assert_eq!(action, 2, "passed");
    assert_eq!(out, frame, "untouched, tag included");
    assert_eq!(
        moved[XdpReason::PassVlan as usize],
        1,
        "counted as pass_vlan"
    );
    assert_eq!(moved.iter().sum::<u64>(), 1, "and nothing else");
    // The listed VLAN 20 is balanced, like the untagged frame.
    let (action, out, moved) = run_one(&mut harness, &tagged(20));
    assert_eq!(
        (action, moved[XdpReason::Forwarded as usize]),
        (3, 1),
        "VLAN 20 balanced"
    );
    let (_, untagged, _) = run_one(&mut harness, &udp_v4(40_001, 0, 1, 16));
    assert_eq!(out, untagged, "encapsulated as the untagged frame is");
}
