//! What a run measures: the service counts, peers, families, layers and how long each
//! measurement runs, as the `quick`, `full` and `tiny` profiles set them.

use serde::{Deserialize, Serialize};

use crate::{
    cost::CostPlan,
    eastwest::EwPeerKind,
    peers::PeerKind,
    rate::{FlowKind, RatePlan},
    services::{Family, ServiceSet},
    tcp::{self, TcpLoad, TcpPlan},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layers {
    pub cost: bool,
    pub rate: bool,
    pub control: bool,
    pub tcp: bool,
    /// Pod → ClusterIP over real sockets (`eastwest`).
    pub east_west: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub profile: String,
    pub service_counts: Vec<u32>,
    pub backends: u32,
    pub runs: usize,
    pub peers: Vec<PeerKind>,
    /// Address families of the rate and cost layers (the TCP layer is IPv4 only).
    pub families: Vec<Family>,
    pub rate: RatePlan,
    pub cost: CostPlan,
    pub tcp: TcpPlan,
    /// The east-west layer's loads: the TCP layer's, with bounds high enough that every
    /// run lasts its time bound (connects pod to pod are several times faster than
    /// through the TCP layer's DUT, and a run of a tenth of a second is mostly noise).
    pub east_west: TcpPlan,
    pub layers: Layers,
    /// A netfilter load still running after this long is stopped and reported as not
    /// measured (kube-proxy's nftables layout loads in time quadratic in the services,
    /// see rules.rs), so one slow peer cannot stall the suite.
    pub load_timeout_s: f64,
    /// A control-plane load slower than this is timed once, not `runs` times.
    pub slow_load_s: f64,
}

impl Plan {
    /// A few minutes: 1 and 1,000 services, every peer, 5 runs.
    pub fn quick() -> Self {
        Self {
            profile: "quick".into(),
            service_counts: vec![1, 1_000],
            backends: 3,
            runs: 5,
            peers: PeerKind::all(),
            families: Family::ALL.to_vec(),
            rate: RatePlan {
                seconds: 0.4,
                max_frames: 4_000_000,
                established_flows: 4_096,
            },
            cost: CostPlan {
                repeat: 1_000_000,
                single_runs: 20_000,
                fill_flow_table: true,
            },
            tcp: TcpPlan {
                connections: 64,
                requests: 20_000,
                concurrency: 16,
                connects: 2_000,
                seconds: 1.0,
                request_bytes: 64,
                response_bytes: 256,
                op_timeout_ms: 3_000,
            },
            east_west: TcpPlan {
                connections: 64,
                requests: 200_000,
                concurrency: 16,
                connects: 30_000,
                seconds: 1.0,
                request_bytes: 64,
                response_bytes: 256,
                op_timeout_ms: 3_000,
            },
            layers: Layers {
                cost: true,
                rate: true,
                control: true,
                tcp: true,
                east_west: true,
            },
            load_timeout_s: 120.0,
            slow_load_s: 30.0,
        }
    }

    /// The full matrix. 8,000 is the largest round count ferrolb's Maglev slot array holds
    /// at the minimum table size (two 251-slot regions per service in 2^22 slots), so the
    /// ratios have a ferrolb point near 10k.
    pub fn full() -> Self {
        Self {
            profile: "full".into(),
            service_counts: vec![1, 1_000, 8_000, 10_000, 30_000],
            runs: 5,
            rate: RatePlan {
                seconds: 1.0,
                max_frames: 20_000_000,
                established_flows: 4_096,
            },
            cost: CostPlan {
                repeat: 2_000_000,
                single_runs: 100_000,
                fill_flow_table: true,
            },
            tcp: TcpPlan {
                connections: 64,
                requests: 200_000,
                concurrency: 32,
                connects: 20_000,
                seconds: 3.0,
                request_bytes: 64,
                response_bytes: 256,
                op_timeout_ms: 3_000,
            },
            east_west: TcpPlan {
                connections: 64,
                requests: 600_000,
                concurrency: 32,
                connects: 90_000,
                seconds: 3.0,
                request_bytes: 64,
                response_bytes: 256,
                op_timeout_ms: 3_000,
            },
            load_timeout_s: 300.0,
            slow_load_s: 60.0,
            ..Self::quick()
        }
    }

    /// The tiny profile's socket loads (TCP and east-west alike).
    const TINY_TCP: TcpPlan = TcpPlan {
        connections: 8,
        requests: 2_000,
        concurrency: 4,
        connects: 200,
        seconds: 0.5,
        request_bytes: 64,
        response_bytes: 256,
        op_timeout_ms: 3_000,
    };

    /// Seconds, for the end-to-end test: one service, two runs, short bursts.
    pub fn tiny() -> Self {
        Self {
            profile: "tiny".into(),
            service_counts: vec![1],
            backends: 2,
            runs: 2,
            rate: RatePlan {
                seconds: 0.1,
                max_frames: 200_000,
                established_flows: 256,
            },
            cost: CostPlan {
                repeat: 10_000,
                single_runs: 500,
                fill_flow_table: false,
            },
            tcp: Self::TINY_TCP,
            east_west: Self::TINY_TCP,
            ..Self::quick()
        }
    }

    pub fn tcp_peers(&self) -> Vec<PeerKind> {
        self.peers
            .iter()
            .copied()
            .filter(|&k| tcp::applies_to(k))
            .collect()
    }

    /// Whether a netfilter tool runs: in the control layer, or as a peer (the east-west
    /// layer always has its netfilter peers).
    pub(super) fn needs_netfilter(&self) -> bool {
        self.layers.control || self.layers.east_west || self.peers.iter().any(|p| p.is_netfilter())
    }

    pub(super) fn service_sets(&self) -> Vec<ServiceSet> {
        self.service_counts
            .iter()
            .map(|&services| ServiceSet {
                services,
                backends: self.backends,
            })
            .collect()
    }

    pub(super) fn load_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.load_timeout_s)
    }

    pub(super) fn steps(&self) -> usize {
        let per_count = usize::from(self.layers.cost) * self.runs
            + usize::from(self.layers.control) * self.runs
            + usize::from(self.layers.rate)
                * self.runs
                * self.peers.len()
                * self.families.len()
                * FlowKind::ALL.len()
            + usize::from(self.layers.tcp)
                * self.runs
                * self.tcp_peers().len()
                * TcpLoad::ALL.len()
            + usize::from(self.layers.east_west)
                * self.runs
                * EwPeerKind::ALL.len()
                * TcpLoad::ALL.len();
        per_count * self.service_counts.len()
    }
}
