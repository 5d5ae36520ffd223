//! Packet rate on veth: the live-frame generator offers frames as fast as it can for a
//! bounded time; the counting sink behind the DUT gives the delivered count.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    generator::{Flows, Generator},
    measured::NotMeasured,
    peers::{Peer, PeerError, PeerKind},
    programs::ProgramsError,
    services::Family,
    stats::Summary,
};

#[derive(Debug, thiserror::Error)]
pub enum RateError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error(transparent)]
    Programs(#[from] ProgramsError),
    #[error("{peer} has no {family} frame: it was not programmed for {family}")]
    NoFrame {
        peer: &'static str,
        family: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowKind {
    New,
    Established,
}

impl FlowKind {
    pub const ALL: [FlowKind; 2] = [FlowKind::New, FlowKind::Established];

    pub fn name(self) -> &'static str {
        match self {
            Self::New => "new flows",
            Self::Established => "established",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RatePlan {
    /// Generator time per run.
    pub seconds: f64,
    /// Upper bound on frames per run.
    pub max_frames: u64,
    /// Size of the replayed set for established flows.
    pub established_flows: u32,
}

/// One run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RateSample {
    pub offered: u64,
    pub delivered: u64,
    pub seconds: f64,
    /// CPU seconds charged to the generator thread (see `Burst::thread_cpu`).
    pub cpu_seconds: f64,
    /// Only ferrolb counts what it forwarded itself; it must match `delivered`.
    pub datapath_forwarded: Option<u64>,
}

impl RateSample {
    pub fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }

    /// Delivered frames per CPU-second of the generator's CPU: less sensitive to other
    /// tenants than the wall-clock rate, as long as softirq work is charged to the thread.
    pub fn delivered_per_cpu_second(&self) -> f64 {
        if self.cpu_seconds > 0.0 {
            self.delivered as f64 / self.cpu_seconds
        } else {
            0.0
        }
    }

    pub fn offered_pps(&self) -> f64 {
        self.offered as f64 / self.seconds
    }

    pub fn fraction(&self) -> f64 {
        if self.offered == 0 {
            0.0
        } else {
            self.delivered as f64 / self.offered as f64
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateResult {
    pub peer: PeerKind,
    pub family: Family,
    pub services: u32,
    pub backends: u32,
    pub flows: FlowKind,
    pub unsupported: Option<NotMeasured>,
    pub delivered_pps: Option<Summary>,
    pub delivered_per_cpu_second: Option<Summary>,
    pub offered_pps: Option<Summary>,
    pub delivered_fraction: Option<Summary>,
    pub samples: Vec<RateSample>,
}

impl RateResult {
    /// A cell with no runs yet; `unsupported` says why it will get none.
    pub fn new(
        peer: PeerKind,
        family: Family,
        set: &crate::services::ServiceSet,
        flows: FlowKind,
        unsupported: Option<NotMeasured>,
    ) -> Self {
        Self {
            peer,
            family,
            services: set.services,
            backends: set.backends,
            flows,
            unsupported,
            delivered_pps: None,
            delivered_per_cpu_second: None,
            offered_pps: None,
            delivered_fraction: None,
            samples: Vec::new(),
        }
    }

    pub fn finish(&mut self) {
        let of = |f: fn(&RateSample) -> f64| {
            Summary::of(&self.samples.iter().map(f).collect::<Vec<_>>())
        };
        self.delivered_pps = of(RateSample::delivered_pps);
        self.delivered_per_cpu_second = of(RateSample::delivered_per_cpu_second);
        self.offered_pps = of(RateSample::offered_pps);
        self.delivered_fraction = of(RateSample::fraction);
    }
}

/// Frames still in veth rings when the generator stops are counted if they arrive within
/// this time; the rate uses the generator's time only.
const DRAIN: Duration = Duration::from_millis(30);

/// One run of one peer in one family.
pub fn run_once(
    generator: &mut Generator,
    peer: &Peer,
    family: Family,
    flows: FlowKind,
    plan: &RatePlan,
) -> Result<RateSample, RateError> {
    let topo = &peer.topo;
    // New flows: SYNs; established: ACKs (a SYN would not be recorded by ferrolb, so its
    // replays would measure the SYN path, not flow-table hits).
    let frame = peer
        .frames
        .get(&(family, flows))
        .ok_or(RateError::NoFrame {
            peer: peer.kind.name(),
            family: family.name(),
        })?;
    let budget = Duration::from_secs_f64(plan.seconds);
    peer.flush_state()?;
    let kind = match flows {
        FlowKind::New => Flows::New,
        FlowKind::Established => {
            let set = Flows::Established {
                flows: plan.established_flows,
            };
            // Teach the peer the set first (conntrack entries, flow-table entries: the
            // first ACK of each tuple creates them).
            generator.burst(
                &topo.src,
                topo.gen_ifindex,
                frame,
                set,
                budget,
                u64::from(plan.established_flows) * 2,
            )?;
            std::thread::sleep(DRAIN);
            set
        }
    };
    let delivered_before = peer.sink.frames()?;
    let forwarded_before = peer.datapath_forwarded();
    let burst = generator.burst(
        &topo.src,
        topo.gen_ifindex,
        frame,
        kind,
        budget,
        plan.max_frames,
    )?;
    std::thread::sleep(DRAIN);
    let delivered = peer.sink.frames()? - delivered_before;
    let datapath_forwarded = match (forwarded_before, peer.datapath_forwarded()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    tracing::debug!(
        peer = peer.kind.name(),
        family = family.name(),
        reasons = ?peer.datapath_reasons(),
        ipv6_control_frames_at_sink = peer.sink.ignored().unwrap_or(0),
        "after run"
    );
    Ok(RateSample {
        offered: burst.sent,
        delivered,
        seconds: burst.elapsed.as_secs_f64(),
        cpu_seconds: burst.thread_cpu.as_secs_f64(),
        datapath_forwarded,
    })
}
