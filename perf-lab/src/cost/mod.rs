//! Program cost: ns per packet of ferrolb's XDP program in BPF_PROG_RUN, minus an XDP_PASS
//! program measured the same way in the same process, per packet class, with the maps
//! filled by the daemon's own sync engine.
//!
//! Two methods, each with its own baseline:
//! - classes that leave the packet untouched (not a service, ICMP, IPv6) run with a large
//!   `repeat` in one call;
//! - classes that rewrite the packet (IPIP encapsulation) cannot: the second iteration
//!   would see the rewritten frame. They run with repeat 1 in a loop over distinct
//!   packets, and the baseline is the pass program in the same loop (repeat 1 carries the
//!   timer's own overhead, which the subtraction removes).
//!
//! The flow table holds `limits::DEFAULT_FLOWS` entries in sets of eight, written by a
//! flow's first packet that is not a TCP SYN (a SYN is balanced without an insert). Before
//! the new-flow classes are measured it is filled with as many other flows' ACKs and then
//! turned over, so nearly every set is full, a new flow's lookup misses in a full table
//! and every first ACK pays for an eviction: the steady
//! state of a busy LB, and the pessimistic one (an empty table is cheaper). "New flow" is
//! a SYN to a never-seen tuple (lookup miss + Maglev, no insert); "first ACK" is the first
//! ACK of a never-seen tuple (lookup miss + Maglev + insert, evicting), the packet that
//! records a real connection. Flow-table hits are ACKs cycling through 10,000 established
//! flows (recorded by ACKs), not one hot entry.
//!
//! Steady state: the fill evicts most established flows, and their re-insert puts them at
//! the head of their hash buckets, where a lookup finds them first: cheaper than a table
//! that has turned over since. So after the fill the table is turned over (a quarter of it
//! replaced by fresh ACKs, the established flows touched again) until the cold hit figure
//! stops moving; every round's figure is kept (`CostResult::turnover_hit_ns`).
//!
//! Hot and cold: the hit and new-flow classes are measured twice, cold (10,000 flows
//! cycling, or never-seen tuples) and hot (one flow, the same frame every call, so its
//! bucket, service and slot stay in cache). The difference is cache misses, the hot figure
//! is instruction cost. A first ACK has no hot form: it inserts, so its tuple is new by
//! definition.
//!
//! IPv6 (IP6IP6 encapsulation): the maps hold the same services in IPv6 too (dual stack,
//! as the rate layer programs them), the new-flow, first-ACK and hit classes are measured
//! the same way against the IPv6 target service, in the same flow table (full, so IPv6
//! inserts evict too) with 10,000 IPv6 established flows of their own.

mod packets;
mod rounds;
mod test_run;

use lb_daemon::loader;
use serde::{Deserialize, Serialize};

use crate::{
    measured::NotMeasured,
    netns::{NetnsError, PinDir},
    programs::ProgramsError,
    services::{Family, ServiceSet},
    stats::Summary,
};

use rounds::Rounds;
use test_run::{Programs, XDP_PASS, XDP_TX};

#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error("ferrolb loader: {0}")]
    Loader(#[from] loader::LoaderError),
    #[error("ferrolb maps: {0}")]
    Maps(#[from] lb_daemon::maps::MapsError),
    #[error("ferrolb sync: {0}")]
    Sync(#[from] lb_daemon::sync::SyncError),
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
    #[error(transparent)]
    External(Box<crate::external::ExternalError>),
    #[error("class {class}: verdict {got}, expected {want}")]
    Verdict {
        class: &'static str,
        got: u32,
        want: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PacketClass {
    /// A SYN to a never-seen tuple: lookup miss, Maglev, no insert.
    NewFlow,
    /// The first ACK of a never-seen tuple: lookup miss, Maglev, insert (evicting).
    FirstAck,
    /// An ACK of an established flow, 10,000 flows cycling.
    FlowHit,
    NotAService,
    Icmp,
    NewFlowV6,
    FirstAckV6,
    FlowHitV6,
    Ipv6,
    /// The same SYN (never inserted) every call: miss + Maglev with warm caches.
    NewFlowHot,
    /// One established flow's ACK every call.
    FlowHitHot,
    NewFlowHotV6,
    FlowHitHotV6,
}

impl PacketClass {
    pub const ALL: [PacketClass; 13] = [
        PacketClass::NewFlow,
        PacketClass::NewFlowHot,
        PacketClass::FirstAck,
        PacketClass::FlowHit,
        PacketClass::FlowHitHot,
        PacketClass::NotAService,
        PacketClass::Icmp,
        PacketClass::NewFlowV6,
        PacketClass::NewFlowHotV6,
        PacketClass::FirstAckV6,
        PacketClass::FlowHitV6,
        PacketClass::FlowHitHotV6,
        PacketClass::Ipv6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::NewFlow => "new flow (SYN, table full: miss + Maglev, no insert), cold",
            Self::NewFlowHot => "new flow (SYN), hot: the same SYN every call",
            Self::FirstAck => "first ACK of a new flow (inserts; table full: evicts)",
            Self::FlowHit => "flow-table hit (ACK), cold: 10,000 flows cycling",
            Self::FlowHitHot => "flow-table hit (ACK), hot: one flow",
            Self::NotAService => "not a service (TCP to VIP:8080)",
            Self::Icmp => "ICMP echo to VIP",
            Self::NewFlowV6 => "IPv6 new flow (SYN, table full: miss + Maglev, no insert), cold",
            Self::NewFlowHotV6 => "IPv6 new flow (SYN), hot: the same SYN every call",
            Self::FirstAckV6 => "IPv6 first ACK of a new flow (inserts; table full: evicts)",
            Self::FlowHitV6 => "IPv6 flow-table hit (ACK), cold: 10,000 flows cycling",
            Self::FlowHitHotV6 => "IPv6 flow-table hit (ACK), hot: one flow",
            Self::Ipv6 => "IPv6 TCP to no service (passed)",
        }
    }

    pub fn family(self) -> Family {
        match self {
            Self::NewFlowV6
            | Self::NewFlowHotV6
            | Self::FirstAckV6
            | Self::FlowHitV6
            | Self::FlowHitHotV6
            | Self::Ipv6 => Family::Ipv6,
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
        !matches!(self, Self::NotAService | Self::Icmp | Self::Ipv6)
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
    /// The cold IPv4 (else IPv6) hit figure, ns over XDP_PASS, after the fill and then after
    /// each round of turning the table over, until it stopped moving; empty when the table
    /// was not filled.
    #[serde(default)]
    pub turnover_hit_ns: Vec<f64>,
    pub classes: Vec<ClassCost>,
    /// External peers' XDP programs, measured with the same packets in the same rounds.
    #[serde(default)]
    pub external: Vec<ExternalCost>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExternalCost {
    pub peer: String,
    pub classes: Vec<ClassCost>,
}

impl From<crate::external::ExternalError> for CostError {
    fn from(e: crate::external::ExternalError) -> Self {
        Self::External(Box::new(e))
    }
}

impl From<ProgramsError> for CostError {
    fn from(e: ProgramsError) -> Self {
        Self::Park(Box::new(e))
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
    let programs = match Programs::load(&pin, set, families)? {
        Ok(programs) => programs,
        Err(why) => {
            return Ok(CostResult {
                services: set.services,
                backends: set.backends,
                unsupported: Some(why),
                pass_repeat_ns: None,
                pass_single_ns: None,
                turnover_hit_ns: Vec::new(),
                classes: Vec::new(),
                external: Vec::new(),
            })
        }
    };
    let mut rounds = Rounds::prepare(&programs, set, families, plan)?;
    for round in 0..runs {
        rounds.run()?;
        progress(round + 1);
    }
    Ok(rounds.result())
}
