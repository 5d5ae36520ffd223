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
//! The flow table is an LRU of `limits::DEFAULT_FLOWS` entries. Before the new-flow class
//! is measured it is filled to capacity with other flows, so every new flow pays for an
//! eviction: the steady state of a busy LB, and the pessimistic one (an empty table is
//! cheaper). Flow-table hits cycle through 10,000 established flows, not one hot entry.

use std::net::Ipv4Addr;

use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use etherparse::PacketBuilder;
use lb_common::{limits, program_names, LbConfig, NextHop, CONFIG_F_READY};
use lb_daemon::{loader, maps::LbMaps, planner};
use serde::{Deserialize, Serialize};

use crate::{
    netns::{Netns, NetnsError, PinDir},
    programs::{self, ProgramsError},
    services::{ServiceSet, SERVICE_PORT, SOURCE_BASE, UNUSED_PORT},
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
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const ESTABLISHED_FLOWS: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PacketClass {
    NewFlow,
    FlowHit,
    NotAService,
    Icmp,
    Ipv6,
}

impl PacketClass {
    pub const ALL: [PacketClass; 5] = [
        PacketClass::NewFlow,
        PacketClass::FlowHit,
        PacketClass::NotAService,
        PacketClass::Icmp,
        PacketClass::Ipv6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::NewFlow => "new flow (SYN, table full: evicts)",
            Self::FlowHit => "flow-table hit",
            Self::NotAService => "not a service (TCP to VIP:8080)",
            Self::Icmp => "ICMP echo to VIP",
            Self::Ipv6 => "IPv6 TCP to no service (passed)",
        }
    }

    fn rewrites(self) -> bool {
        matches!(self, Self::NewFlow | Self::FlowHit)
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
    pub unsupported: Option<String>,
    pub pass_repeat_ns: Option<Summary>,
    pub pass_single_ns: Option<Summary>,
    pub classes: Vec<ClassCost>,
}

impl From<ProgramsError> for CostError {
    fn from(e: ProgramsError) -> Self {
        Self::Park(Box::new(e))
    }
}

fn tcp_syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Result<Vec<u8>, CostError> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 64_240)
        .syn();
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

fn ipv6_syn() -> Result<Vec<u8>, CostError> {
    let src: [u8; 16] = "2001:db8::10"
        .parse::<std::net::Ipv6Addr>()
        .expect("literal")
        .octets();
    let dst: [u8; 16] = "2001:db8::100"
        .parse::<std::net::Ipv6Addr>()
        .expect("literal")
        .octets();
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(src, dst, 64)
        .tcp(40_000, SERVICE_PORT, 1, 64_240)
        .syn();
    let mut v = Vec::new();
    b.write(&mut v, &[])
        .map_err(|e| CostError::Packet(e.to_string()))?;
    Ok(v)
}

/// The i-th distinct client tuple: sources from 198.18.128.0/17, ports 1024..61024.
fn client(i: u32) -> ([u8; 4], u16) {
    let addr = Ipv4Addr::from(u32::from(SOURCE_BASE) + (i / 60_000) % (1 << 15));
    (addr.octets(), 1024 + (i % 60_000) as u16)
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

/// Measures every class for one service set, `runs` interleaved rounds. `progress` is
/// called once per round.
pub fn measure(
    set: &ServiceSet,
    plan: &CostPlan,
    runs: usize,
    mut progress: impl FnMut(usize),
) -> Result<CostResult, CostError> {
    let pin = PinDir::new("cost");
    let balancer = loader::load_balancer_sized(&pin.path, &set.ferrolb_map_sizes())?;
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
    let desired = set.desired_state();
    maps.write_config(&LbConfig {
        encap_src_v4: LB_ADDR,
        flow_hash_seed: desired.settings.flow_hash_seed,
        nexthop_ttl_ns: 1_000_000_000,
        flags: CONFIG_F_READY,
        _pad: 0,
        encap_src_v6: [0; 16],
    })?;
    let state = maps.read_state()?;
    let (ops, state) = match planner::plan(&state, &desired) {
        Ok(planned) => planned,
        Err(e) => {
            return Ok(CostResult {
                services: set.services,
                backends: set.backends,
                unsupported: Some(e.to_string()),
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
    let vip = set.vip(set.target()).octets();

    // Client tuples: [0, ESTABLISHED) established, then the fill, then fresh new flows.
    let established = |i: u32| {
        let (src, sport) = client(i % ESTABLISHED_FLOWS);
        tcp_syn(src, sport, vip, SERVICE_PORT)
    };
    let syn = established(0)?;
    programs.single_loop(
        true,
        "warm established",
        (0..ESTABLISHED_FLOWS).filter_map(|i| established(i).ok()),
        Some(XDP_TX),
    )?;
    let mut next_new = ESTABLISHED_FLOWS;
    if plan.fill_flow_table {
        let fill = limits::DEFAULT_FLOWS;
        programs.single_loop(
            true,
            "fill flow table",
            (next_new..next_new + fill).filter_map(|i| {
                let (src, sport) = client(i);
                tcp_syn(src, sport, vip, SERVICE_PORT).ok()
            }),
            Some(XDP_TX),
        )?;
        next_new += fill;
        // The fill evicted part of the established set: warm it again.
        programs.single_loop(
            true,
            "rewarm established",
            (0..ESTABLISHED_FLOWS).filter_map(|i| established(i).ok()),
            Some(XDP_TX),
        )?;
    }

    let not_service = tcp_syn(SOURCE_BASE.octets(), 40_000, vip, UNUSED_PORT)?;
    let icmp = icmp_echo(vip)?;
    let ipv6 = ipv6_syn()?;
    let n = plan.single_runs;
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> =
        vec![(Vec::new(), Vec::new()); PacketClass::ALL.len()];
    let (mut pass_repeat, mut pass_single) = (Vec::new(), Vec::new());
    let mut hit_cursor = 0u32;
    for round in 0..runs {
        let base_single =
            programs.single_loop(false, "pass", (0..n).map(|_| syn.clone()), Some(XDP_PASS))?;
        let base_repeat = programs.repeated(false, "pass", &syn, plan.repeat, XDP_PASS)?;
        pass_single.push(base_single);
        pass_repeat.push(base_repeat);
        for (k, class) in PacketClass::ALL.iter().enumerate() {
            let ns = match class {
                PacketClass::NewFlow => {
                    let start = next_new;
                    next_new += n;
                    programs.single_loop(
                        true,
                        "new flow",
                        (start..start + n).filter_map(|i| {
                            let (src, sport) = client(i);
                            tcp_syn(src, sport, vip, SERVICE_PORT).ok()
                        }),
                        Some(class.verdict()),
                    )?
                }
                PacketClass::FlowHit => {
                    let start = hit_cursor;
                    hit_cursor = hit_cursor.wrapping_add(n);
                    programs.single_loop(
                        true,
                        "flow hit",
                        (start..start + n).filter_map(|i| established(i).ok()),
                        Some(class.verdict()),
                    )?
                }
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
    let classes = PacketClass::ALL
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
