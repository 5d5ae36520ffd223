//! TCP through each peer with real sockets: request/response latency over persistent
//! connections, and connect/close rate with connect latency.
//!
//! The client runs on a thread that has entered the client namespace (so every socket it
//! opens belongs there), the server's listening socket is opened in the backend namespace
//! and served from a thread of its own; both are one tokio event loop each, so thousands
//! of short connections cost no thread per connection. Every run is bounded in count and
//! time, and every socket operation has a timeout: a peer that loses packets shows up as
//! failures and long tails, never as a hang.

mod client;
mod peer;
mod server;
pub mod topology;

use serde::{Deserialize, Serialize};

use crate::{
    measured::NotMeasured,
    netns::NetnsError,
    peers::{PeerError, PeerKind},
    services::ServiceSet,
    stats::Summary,
};

pub use peer::TcpPeer;
pub(crate) use peer::{destinations, run_client, warm_up};
pub(crate) use server::Server;

use topology::TcpTopologyError;

#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Topology(#[from] TcpTopologyError),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the TCP server thread panicked")]
    ServerPanicked,
}

pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> TcpError {
    move |source| TcpError::Io { what, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpLoad {
    /// Persistent connections, one small request and response at a time on each.
    RequestResponse,
    /// The same on one connection: the round trip without queueing behind other
    /// connections (with many, latency ≈ connections / rate by Little's law).
    RequestResponseSingle,
    /// A new connection per request: connect, one request and response, close.
    ConnectClose,
}

impl TcpLoad {
    pub const ALL: [TcpLoad; 3] = [
        TcpLoad::RequestResponse,
        TcpLoad::RequestResponseSingle,
        TcpLoad::ConnectClose,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::RequestResponse => "request/response",
            Self::RequestResponseSingle => "request/response, 1 connection",
            Self::ConnectClose => "connect/close",
        }
    }

    /// What the latency percentiles of this load time.
    pub fn latency_name(self) -> &'static str {
        match self {
            Self::RequestResponse | Self::RequestResponseSingle => "request latency",
            Self::ConnectClose => "connect latency",
        }
    }

    pub fn rate_unit(self) -> &'static str {
        match self {
            Self::RequestResponse | Self::RequestResponseSingle => "requests/s",
            Self::ConnectClose => "connections/s",
        }
    }

    pub fn file_stem(self) -> &'static str {
        match self {
            Self::RequestResponse => "tcp-rr-latency",
            Self::RequestResponseSingle => "tcp-rr1-latency",
            Self::ConnectClose => "tcp-connect-latency",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TcpPlan {
    /// Persistent connections for request/response.
    pub connections: usize,
    /// Upper bound on requests per request/response run.
    pub requests: u64,
    /// Connections opened at the same time in connect/close.
    pub concurrency: usize,
    /// Upper bound on connections per connect/close run.
    pub connects: u64,
    /// Time bound per run (operations already started may finish within `op_timeout_ms`).
    pub seconds: f64,
    pub request_bytes: usize,
    pub response_bytes: usize,
    /// Timeout of every connect, write+read and setup step. Longer than the first SYN
    /// retransmission (1 s), so a lost SYN shows as a 1 s connect, not as a failure.
    pub op_timeout_ms: u64,
}

/// Latency percentiles of one run, microseconds (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub samples: usize,
}

pub const PERCENTILES: [(f64, &str); 4] =
    [(50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p99.9")];

impl Percentiles {
    /// None without samples.
    pub fn of(nanos: &mut [u64]) -> Option<Self> {
        if nanos.is_empty() {
            return None;
        }
        nanos.sort_unstable();
        let at = |p: f64| {
            // The epsilon keeps 99.9 % of 1000 at rank 999 despite 0.999 not being exact.
            let rank = (p * nanos.len() as f64 / 100.0 - 1e-9).ceil() as usize;
            nanos[rank.clamp(1, nanos.len()) - 1] as f64 / 1e3
        };
        Some(Self {
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            p999: at(99.9),
            samples: nanos.len(),
        })
    }

    pub fn get(&self, index: usize) -> f64 {
        [self.p50, self.p90, self.p99, self.p999][index]
    }
}

/// One run of one load through one peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcpSample {
    /// Requests issued (request/response) or connections attempted (connect/close).
    pub attempted: u64,
    /// Responses fully received (for connect/close: connect, request, response all done).
    pub completed: u64,
    /// Attempts that failed or timed out.
    pub failed: u64,
    /// Connects that failed or timed out (setup connects for request/response).
    pub connect_failed: u64,
    pub seconds: f64,
    /// Request latency (request/response) or connect latency (connect/close).
    pub latency_us: Option<Percentiles>,
    /// connect/close only: connect + request + response + close.
    pub transaction_us: Option<Percentiles>,
}

impl TcpSample {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.completed as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The figures of one peer, load and service count. `P` names the peer: a datapath of
/// the TCP layer, or a peer of the east-west layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcpResult<P = PeerKind> {
    pub peer: P,
    pub services: u32,
    pub backends: u32,
    pub load: TcpLoad,
    pub unsupported: Option<NotMeasured>,
    /// Completed per second (`TcpLoad::rate_unit`).
    pub rate: Option<Summary>,
    /// Medians over runs of each run's p50 / p90 / p99 / p99.9, microseconds.
    pub latency_us: Vec<Option<Summary>>,
    pub samples: Vec<TcpSample>,
}

impl<P> TcpResult<P> {
    pub fn new(peer: P, set: &ServiceSet, load: TcpLoad, unsupported: Option<NotMeasured>) -> Self {
        Self {
            peer,
            services: set.services,
            backends: set.backends,
            load,
            unsupported,
            rate: None,
            latency_us: Vec::new(),
            samples: Vec::new(),
        }
    }

    pub fn finish(&mut self) {
        self.rate = Summary::of(&self.samples.iter().map(TcpSample::rate).collect::<Vec<_>>());
        self.latency_us = (0..PERCENTILES.len())
            .map(|i| {
                Summary::of(
                    &self
                        .samples
                        .iter()
                        .filter_map(|s| Some(s.latency_us?.get(i)))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
    }
}

/// Peers that make sense with real endpoints: all but the bpf-redirect ceiling, which
/// rewrites MACs only and so has no service to answer, and external peers (their commands
/// are written for the rate topology's addresses; see the README's known limits).
pub fn applies_to(kind: PeerKind) -> bool {
    kind != PeerKind::BpfRedirect && !matches!(kind, PeerKind::External(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let p = Percentiles::of(&mut v).unwrap();
        assert_eq!((p.p50, p.p90, p.p99, p.p999), (500.0, 900.0, 990.0, 999.0));
        assert_eq!(p.samples, 1000);
        let mut one = vec![7_000];
        let p = Percentiles::of(&mut one).unwrap();
        assert_eq!((p.p50, p.p999), (7.0, 7.0));
        assert!(Percentiles::of(&mut []).is_none());
    }

    #[test]
    fn results_summarise_each_percentile_over_runs() {
        let set = ServiceSet {
            services: 1,
            backends: 1,
        };
        let mut r = TcpResult::new(PeerKind::Forward, &set, TcpLoad::RequestResponse, None);
        for (i, p50) in [30.0, 10.0, 20.0].into_iter().enumerate() {
            r.samples.push(TcpSample {
                attempted: 10,
                completed: 10,
                failed: 0,
                connect_failed: 0,
                seconds: (i + 1) as f64,
                latency_us: Some(Percentiles {
                    p50,
                    p90: p50 * 2.0,
                    p99: p50 * 3.0,
                    p999: p50 * 4.0,
                    samples: 10,
                }),
                transaction_us: None,
            });
        }
        r.finish();
        assert_eq!(r.latency_us.len(), 4);
        let p50 = r.latency_us[0].as_ref().unwrap();
        assert_eq!((p50.median, p50.min, p50.max), (20.0, 10.0, 30.0));
        assert_eq!(r.rate.as_ref().unwrap().median, 5.0);
        assert!(!applies_to(PeerKind::BpfRedirect));
    }
}
