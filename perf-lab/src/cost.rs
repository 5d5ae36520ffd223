//! Program cost: ns per packet of ferrolb's XDP program in BPF_PROG_RUN, minus an XDP_PASS
//! program measured the same way in the same process, per packet class, with the maps
//! filled by the daemon's own planner and writer.
//!
//! Two methods, each with its own baseline:
//! - classes that leave the packet untouched (not a service, ICMP, IPv6) run with a large
//!   `repeat` in one call;
//! - classes that rewrite the packet (IPIP encapsulation) cannot: the second iteration
//!   would see the rewritten frame. They run with repeat 1 in a loop over distinct
//!   packets, and the baseline is the pass program in the same loop (repeat 1 carries the
//!   timer's own overhead, which the subtraction removes).
//!
//! The flow table is an LRU of `limits::DEFAULT_FLOWS` entries, written by a flow's first
//! packet that is not a TCP SYN (a SYN is balanced without an insert). Before the new-flow
//! classes are measured it is filled to capacity with other flows' ACKs, so a new flow's
//! lookup misses in a full table and every first ACK pays for an eviction: the steady
//! state of a busy LB, and the pessimistic one (an empty table is cheaper). "New flow" is
//! a SYN to a never-seen tuple (lookup miss + Maglev, no insert); "first ACK" is the first
//! ACK of a never-seen tuple (lookup miss + Maglev + insert, evicting), the packet that
//! records a real connection. Flow-table hits are ACKs cycling through 10,000 established
//! flows (recorded by ACKs), not one hot entry.
//!
//! IPv6 (IP6IP6 encapsulation): the maps hold the same services in IPv6 too (dual stack,
//! as the rate layer programs them), the new-flow, first-ACK and hit classes are measured
//! the same way against the IPv6 target service, in the same flow table (full, so IPv6
//! inserts evict too) with 10,000 IPv6 established flows of their own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use etherparse::PacketBuilder;
use lb_common::{limits, program_names, LbConfig, NextHop, CONFIG_F_READY, CONFIG_F_V6_READY};
use lb_daemon::{loader, maps::LbMaps, planner};
use serde::{Deserialize, Serialize};

use crate::{
    measured::NotMeasured,
    netns::{Netns, NetnsError, PinDir},
    programs::{self, ProgramsError},
    services::{v6_plus, Family, ServiceSet, SERVICE_PORT, SOURCE_BASE, SOURCE_BASE6, UNUSED_PORT},
    stats::Summary,
};

#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error("ferrolb loader: {0}")]
    Loader(#[from] loader::LoaderError),
    #[error("ferrolb maps: {0}")]
    Maps(#[from] lb_daemon::maps::MapsError),
    #[error("loading the pass program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("parking the programs: {0}")]
    Park(Box<ProgramsError>),
    #[error("building a packet: {0}")]
    Packet(String),
    #[error("class {class}: verdict {got}, expected {want}")]
    Verdict {
        class: &'static str,
        got: u32,
        want: u32,
    },
}

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const LB_ADDR: [u8; 4] = [198, 18, 1, 2];
/// The balancer's IP6IP6 source (2001:db8:1::2).
const LB_ADDR6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const ESTABLISHED_FLOWS: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PacketClass {
    /// A SYN to a never-seen tuple: lookup miss, Maglev, no insert.
    NewFlow,
    /// The first ACK of a never-seen tuple: lookup miss, Maglev, insert (evicting).
    FirstAck,
    /// An ACK of an established flow.
    FlowHit,
    NotAService,
    Icmp,
    NewFlowV6,
    FirstAckV6,
    FlowHitV6,
    Ipv6,
}

impl PacketClass {
    pub const ALL: [PacketClass; 9] = [
        PacketClass::NewFlow,
        PacketClass::FirstAck,
        PacketClass::FlowHit,
        PacketClass::NotAService,
        PacketClass::Icmp,
        PacketClass::NewFlowV6,
        PacketClass::FirstAckV6,
        PacketClass::FlowHitV6,
        PacketClass::Ipv6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::NewFlow => "new flow (SYN, table full: miss + Maglev, no insert)",
            Self::FirstAck => "first ACK of a new flow (inserts; table full: evicts)",
            Self::FlowHit => "flow-table hit (ACK)",
            Self::NotAService => "not a service (TCP to VIP:8080)",
            Self::Icmp => "ICMP echo to VIP",
            Self::NewFlowV6 => "IPv6 new flow (SYN, table full: miss + Maglev, no insert)",
            Self::FirstAckV6 => "IPv6 first ACK of a new flow (inserts; table full: evicts)",
            Self::FlowHitV6 => "IPv6 flow-table hit (ACK)",
            Self::Ipv6 => "IPv6 TCP to no service (passed)",
        }
    }

    pub fn family(self) -> Family {
        match self {
            Self::NewFlowV6 | Self::FirstAckV6 | Self::FlowHitV6 | Self::Ipv6 => Family::Ipv6,
            _ => Family::Ipv4,
        }
    }

    /// The classes measured when `families` are.
    pub fn of(families: &[Family]) -> Vec<PacketClass> {
        Self::ALL
            .into_iter()
            .filter(|c| families.contains(&c.family()))
            .collect()
    }

    fn rewrites(self) -> bool {
        matches!(
            self,
            Self::NewFlow
                | Self::FirstAck
                | Self::FlowHit
                | Self::NewFlowV6
                | Self::FirstAckV6
                | Self::FlowHitV6
        )
    }

    fn verdict(self) -> u32 {
        if self.rewrites() {
            XDP_TX
        } else {
            XDP_PASS
        }
    }
}

/// How many packets each measurement runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CostPlan {
    /// `repeat` for classes that leave the packet untouched.
    pub repeat: u32,
    /// Loop length (repeat 1 each) for classes that rewrite it.
    pub single_runs: u32,
    /// Fill the flow table to capacity before measuring new flows.
    pub fill_flow_table: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassCost {
    pub class: PacketClass,
    pub description: String,
    pub method: String,
    /// ns per packet of the balancer.
    pub ns_per_packet: Summary,
    /// ns per packet over XDP_PASS measured the same way (per-run differences).
    pub over_pass_ns: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CostResult {
    pub services: u32,
    pub backends: u32,
    /// Set when ferrolb cannot hold this service set; then `classes` is empty.
    pub unsupported: Option<NotMeasured>,
    pub pass_repeat_ns: Option<Summary>,
    pub pass_single_ns: Option<Summary>,
    pub classes: Vec<ClassCost>,
}

impl From<ProgramsError> for CostError {
    fn from(e: ProgramsError) -> Self {
        Self::Park(Box::new(e))
    }
}

/// Which TCP segment a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    /// SYN without ACK: opens a connection, balanced without a flow-table insert.
    Syn,
    /// ACK without SYN: a segment of a connection, which the flow table records.
    Ack,
}

fn tcp_syn(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Result<Vec<u8>, CostError> {
    tcp_segment(Segment::Syn, src, sport, dst, dport)
}

fn tcp_segment(
    segment: Segment,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
) -> Result<Vec<u8>, CostError> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => {
            return Err(CostError::Packet(format!(
                "{src} and {dst} differ in family"
            )))
        }
    };
    let b = match segment {
        Segment::Syn => ip.tcp(sport, dport, 1, 64_240).syn(),
        Segment::Ack => ip.tcp(sport, dport, 2, 64_240).ack(1),
    };
    let mut v = Vec::with_capacity(b.size(0));
    b.write(&mut v, &[])
        .map_err(|e| CostError::Packet(e.to_string()))?;
    Ok(v)
}

fn icmp_echo(dst: [u8; 4]) -> Result<Vec<u8>, CostError> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(SOURCE_BASE.octets(), dst, 64)
        .icmpv4_echo_request(1, 1);
    let mut v = Vec::new();
    b.write(&mut v, &[0; 16])
        .map_err(|e| CostError::Packet(e.to_string()))?;
    Ok(v)
}

/// TCP to an IPv6 address no service has (2001:db8::100, outside the VIP prefix).
fn ipv6_syn() -> Result<Vec<u8>, CostError> {
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
    let dst = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
    tcp_syn(src.into(), 40_000, dst.into(), SERVICE_PORT)
}

/// The i-th distinct client tuple of `family`: sources from 198.18.128.0/17 or
/// 2001:db8:128::/64 (the same offset), ports 1024..61024.
fn client(family: Family, i: u32) -> (IpAddr, u16) {
    let offset = (i / 60_000) % (1 << 15);
    let addr = match family {
        Family::Ipv4 => Ipv4Addr::from(u32::from(SOURCE_BASE) + offset).into(),
        Family::Ipv6 => v6_plus(SOURCE_BASE6, offset).into(),
    };
    (addr, 1024 + (i % 60_000) as u16)
}

/// A `segment` of the i-th client tuple of `family` to `vip`'s service port.
fn flow_packet(segment: Segment, family: Family, i: u32, vip: IpAddr) -> Option<Vec<u8>> {
    let (src, sport) = client(family, i);
    tcp_segment(segment, src, sport, vip, SERVICE_PORT).ok()
}

struct Programs {
    balancer: Ebpf,
    pass: Ebpf,
}

fn prog<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Xdp, CostError> {
    ebpf.program(name)
        .ok_or(CostError::Program {
            name,
            source: aya::programs::ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(|source| CostError::Program { name, source })
}

fn run(xdp: &Xdp, name: &'static str, packet: &[u8], repeat: u32) -> Result<(u32, f64), CostError> {
    let out = xdp
        .test_run(TestRunOptions {
            data_in: Some(packet),
            repeat,
            ..Default::default()
        })
        .map_err(|source| CostError::Program { name, source })?;
    Ok((out.return_value, out.duration.as_nanos() as f64))
}

impl Programs {
    /// Mean ns per packet over `packets`, repeat 1 each, checking every verdict.
    fn single_loop(
        &self,
        balancer: bool,
        class: &'static str,
        packets: impl Iterator<Item = Vec<u8>>,
        want: Option<u32>,
    ) -> Result<f64, CostError> {
        let (ebpf, name) = if balancer {
            (&self.balancer, program_names::XDP_BALANCER)
        } else {
            (&self.pass, program_names::XDP_PASS)
        };
        let xdp = prog(ebpf, name)?;
        let (mut total, mut n) = (0.0, 0u32);
        for packet in packets {
            let (verdict, ns) = run(xdp, name, &packet, 1)?;
            if let Some(want) = want {
                if verdict != want {
                    return Err(CostError::Verdict {
                        class,
                        got: verdict,
                        want,
                    });
                }
            }
            total += ns;
            n += 1;
        }
        Ok(total / f64::from(n.max(1)))
    }

    fn repeated(
        &self,
        balancer: bool,
        class: &'static str,
        packet: &[u8],
        repeat: u32,
        want: u32,
    ) -> Result<f64, CostError> {
        let (ebpf, name) = if balancer {
            (&self.balancer, program_names::XDP_BALANCER)
        } else {
            (&self.pass, program_names::XDP_PASS)
        };
        let (verdict, ns) = run(prog(ebpf, name)?, name, packet, repeat)?;
        if verdict != want {
            return Err(CostError::Verdict {
                class,
                got: verdict,
                want,
            });
        }
        Ok(ns)
    }
}

/// Measures every class of `families` for one service set (the maps hold the set in each
/// of them), `runs` interleaved rounds. `progress` is called once per round.
pub fn measure(
    set: &ServiceSet,
    families: &[Family],
    plan: &CostPlan,
    runs: usize,
    mut progress: impl FnMut(usize),
) -> Result<CostResult, CostError> {
    let pin = PinDir::new("cost");
    let balancer =
        loader::load_balancer_sized(&pin.path, &set.ferrolb_map_sizes_for(families.len()))?;
    let mut pass = EbpfLoader::new().load(lb_daemon::objects::XDP_PASS)?;
    {
        let xdp: &mut Xdp = pass
            .program_mut(program_names::XDP_PASS)
            .ok_or(CostError::Program {
                name: program_names::XDP_PASS,
                source: aya::programs::ProgramError::NotLoaded,
            })?
            .try_into()
            .map_err(|source| CostError::Program {
                name: program_names::XDP_PASS,
                source,
            })?;
        xdp.load().map_err(|source| CostError::Program {
            name: program_names::XDP_PASS,
            source,
        })?;
    }
    let mut maps = LbMaps::open(&pin.path)?;
    let desired = set.desired_state_for(families);
    maps.write_config(&LbConfig {
        encap_src_v4: LB_ADDR,
        flow_hash_seed: desired.settings.flow_hash_seed,
        nexthop_ttl_ns: 1_000_000_000,
        flags: CONFIG_F_READY | CONFIG_F_V6_READY,
        _pad: 0,
        encap_src_v6: LB_ADDR6,
    })?;
    let state = maps.read_state()?;
    let (ops, state) = match planner::plan(&state, &desired) {
        Ok(planned) => planned,
        Err(e) => {
            return Ok(CostResult {
                services: set.services,
                backends: set.backends,
                unsupported: Some(NotMeasured::cannot_hold(e)),
                pass_repeat_ns: None,
                pass_single_ns: None,
                classes: Vec::new(),
            })
        }
    };
    maps.apply(&ops)?;
    // A cached next hop, as the datapath holds it between refreshes; test_run delivers on
    // the loopback (ifindex 1), so XDP_TX is the verdict.
    for backend in state.backends.values() {
        maps.set_static_nexthop(
            backend.id,
            NextHop {
                dst_mac: [0x02, 0xbe, 0, 0, 0, 1],
                src_mac: LB_MAC,
                ifindex: 1,
                mtu: 1500,
                flags: 0,
                backend_generation: backend.generation,
                expires_ns: u64::MAX,
            },
        )?;
    }
    // Parked attachments keep BPF_PROG_RUN from changing the XDP dispatcher on every
    // call (see programs::create_parking); they do not change the measured time.
    let park = Netns::create("cost-park")?;
    programs::create_parking(&park)?;
    let mut balancer = balancer;
    programs::attach_loaded(
        &park,
        &mut balancer,
        program_names::XDP_BALANCER,
        programs::PARK_IFS[0],
    )?;
    programs::attach_loaded(
        &park,
        &mut pass,
        program_names::XDP_PASS,
        programs::PARK_IFS[1],
    )?;
    let programs = Programs { balancer, pass };
    let classes = PacketClass::of(families);
    let vip = |family| set.vip_in(family, set.target());

    // Client tuples per family: [0, ESTABLISHED) established, then (IPv4) the fill, then
    // fresh tuples for the new-flow and first-ACK classes. Established flows and the fill
    // are sent as ACKs: a SYN records nothing.
    let established = |family: Family, i: u32| {
        flow_packet(Segment::Ack, family, i % ESTABLISHED_FLOWS, vip(family))
    };
    let warm = |what: &'static str, family: Family| {
        programs.single_loop(
            true,
            what,
            (0..ESTABLISHED_FLOWS).filter_map(|i| established(family, i)),
            Some(XDP_TX),
        )
    };
    let first = families.first().copied().unwrap_or(Family::Ipv4);
    let syn = flow_packet(Segment::Syn, first, 0, vip(first))
        .ok_or_else(|| CostError::Packet("template SYN".into()))?;
    for &family in families {
        warm("warm established", family)?;
    }
    // The next fresh tuple per family.
    let mut next_new: std::collections::BTreeMap<Family, u32> =
        families.iter().map(|&f| (f, ESTABLISHED_FLOWS)).collect();
    if plan.fill_flow_table {
        // One table for both families, filled with the first family's flows: the other
        // family's inserts evict too.
        let fill = limits::DEFAULT_FLOWS;
        let start = ESTABLISHED_FLOWS;
        programs.single_loop(
            true,
            "fill flow table",
            (start..start + fill).filter_map(|i| flow_packet(Segment::Ack, first, i, vip(first))),
            Some(XDP_TX),
        )?;
        next_new.insert(first, start + fill);
        // The fill evicted part of the established sets: warm them again.
        for &family in families {
            warm("rewarm established", family)?;
        }
    }

    let not_service = tcp_syn(SOURCE_BASE.into(), 40_000, vip(Family::Ipv4), UNUSED_PORT)?;
    let icmp = icmp_echo(set.vip(set.target()).octets())?;
    let ipv6 = ipv6_syn()?;
    let n = plan.single_runs;
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); classes.len()];
    let (mut pass_repeat, mut pass_single) = (Vec::new(), Vec::new());
    let mut hit_cursor = 0u32;
    for round in 0..runs {
        let base_single =
            programs.single_loop(false, "pass", (0..n).map(|_| syn.clone()), Some(XDP_PASS))?;
        let base_repeat = programs.repeated(false, "pass", &syn, plan.repeat, XDP_PASS)?;
        pass_single.push(base_single);
        pass_repeat.push(base_repeat);
        // Both families' hit classes walk the same stretch of their established sets.
        let hits = hit_cursor;
        hit_cursor = hit_cursor.wrapping_add(n);
        for (k, class) in classes.iter().enumerate() {
            let family = class.family();
            let ns = match class {
                PacketClass::NewFlow
                | PacketClass::NewFlowV6
                | PacketClass::FirstAck
                | PacketClass::FirstAckV6 => {
                    // Never-seen tuples either way: a SYN leaves no entry behind, but the
                    // first-ACK class does not reuse the SYNs' tuples, so both miss alike.
                    let (segment, what) = match class {
                        PacketClass::NewFlow | PacketClass::NewFlowV6 => (Segment::Syn, "new flow"),
                        _ => (Segment::Ack, "first ack"),
                    };
                    let next = next_new.entry(family).or_insert(ESTABLISHED_FLOWS);
                    let start = *next;
                    *next += n;
                    programs.single_loop(
                        true,
                        what,
                        (start..start + n)
                            .filter_map(|i| flow_packet(segment, family, i, vip(family))),
                        Some(class.verdict()),
                    )?
                }
                PacketClass::FlowHit | PacketClass::FlowHitV6 => programs.single_loop(
                    true,
                    "flow hit",
                    (hits..hits + n).filter_map(|i| established(family, i)),
                    Some(class.verdict()),
                )?,
                PacketClass::NotAService => {
                    programs.repeated(true, "not a service", &not_service, plan.repeat, XDP_PASS)?
                }
                PacketClass::Icmp => {
                    programs.repeated(true, "icmp", &icmp, plan.repeat, XDP_PASS)?
                }
                PacketClass::Ipv6 => {
                    programs.repeated(true, "ipv6", &ipv6, plan.repeat, XDP_PASS)?
                }
            };
            let base = if class.rewrites() {
                base_single
            } else {
                base_repeat
            };
            samples[k].0.push(ns);
            samples[k].1.push(ns - base);
        }
        progress(round + 1);
    }
    let classes = classes
        .iter()
        .zip(samples)
        .filter_map(|(class, (ns, over))| {
            Some(ClassCost {
                class: *class,
                description: class.name().to_string(),
                method: if class.rewrites() {
                    format!("repeat 1 x {n} distinct packets")
                } else {
                    format!("repeat {}", plan.repeat)
                },
                ns_per_packet: Summary::of(&ns)?,
                over_pass_ns: Summary::of(&over)?,
            })
        })
        .collect();
    Ok(CostResult {
        services: set.services,
        backends: set.backends,
        unsupported: None,
        pass_repeat_ns: Summary::of(&pass_repeat),
        pass_single_ns: Summary::of(&pass_single),
        classes,
    })
}
