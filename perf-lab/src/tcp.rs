//! TCP through each peer with real sockets: request/response latency over persistent
//! connections, and connect/close rate with connect latency.
//!
//! The client runs on a thread that has entered the client namespace (so every socket it
//! opens belongs there), the server's listening socket is opened in the backend namespace
//! and served from a thread of its own; both are one tokio event loop each, so thousands
//! of short connections cost no thread per connection. Every run is bounded in count and
//! time, and every socket operation has a timeout: a peer that loses packets shows up as
//! failures and long tails, never as a hang.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    netns::{Netns, NetnsError},
    peers::{Datapath, PeerError, PeerKind, Programmed},
    services::{Family, ServiceSet, SERVICE_PORT},
    stats::Summary,
    tcp_topology::{TcpTopology, TcpTopologyError},
    topology::DUT_IN,
};

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

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> TcpError {
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcpResult {
    pub peer: PeerKind,
    pub services: u32,
    pub backends: u32,
    pub load: TcpLoad,
    pub unsupported: Option<String>,
    /// Completed per second (`TcpLoad::rate_unit`).
    pub rate: Option<Summary>,
    /// Medians over runs of each run's p50 / p90 / p99 / p99.9, microseconds.
    pub latency_us: Vec<Option<Summary>>,
    pub samples: Vec<TcpSample>,
}

impl TcpResult {
    pub fn new(
        peer: PeerKind,
        set: &ServiceSet,
        load: TcpLoad,
        unsupported: Option<String>,
    ) -> Self {
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
/// rewrites MACs only and so has no service to answer.
pub fn applies_to(kind: PeerKind) -> bool {
    kind != PeerKind::BpfRedirect
}

/// The server in the backend namespace: answers every `request_bytes` read with
/// `response_bytes`, until the peer closes. Stopped on drop.
struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(backend: &Netns, cpu: Option<usize>, plan: &TcpPlan) -> Result<Self, TcpError> {
        // The socket belongs to the namespace of the thread that opens it; connections
        // it accepts belong there too, whatever thread serves them afterwards.
        let listener = backend.run_inside(None, || {
            std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT))
        })?;
        let listener = listener.map_err(io("binding the TCP server"))?;
        // std listens with a backlog of 128; concurrent connects need more.
        // SAFETY: listen on a socket we own; a second listen only resizes the backlog.
        if unsafe { libc::listen(listener.as_raw_fd(), 4096) } != 0 {
            return Err(io("listen backlog")(std::io::Error::last_os_error()));
        }
        listener
            .set_nonblocking(true)
            .map_err(io("non-blocking listener"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let request = plan.request_bytes;
        let response: Arc<[u8]> = vec![b'r'; plan.response_bytes].into();
        let thread = std::thread::Builder::new()
            .name("tcp-server".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if let Err(e) = crate::netns::pin_thread(cpu) {
                        tracing::warn!(error = %e, "server runs unpinned");
                    }
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "no runtime for the TCP server");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "TCP server cannot listen");
                            return;
                        }
                    };
                    tokio::pin!(stopped);
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => match accepted {
                                Ok((stream, _)) => {
                                    tokio::spawn(serve(stream, request, response.clone()));
                                }
                                Err(e) => tracing::debug!(error = %e, "accept"),
                            },
                        }
                    }
                });
            })
            .map_err(io("starting the server thread"))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn stop(&mut self) -> Result<(), TcpError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| TcpError::ServerPanicked),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

async fn serve(mut stream: tokio::net::TcpStream, request: usize, response: Arc<[u8]>) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; request];
    while stream.read_exact(&mut buf).await.is_ok() {
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// One peer on its own TCP topology. Fields drop in order: server, datapath, namespaces.
pub struct TcpPeer {
    pub kind: PeerKind,
    server: Server,
    pub datapath: Datapath,
    pub topo: TcpTopology,
    /// Where the client connects: the target VIP, or its endpoints for plain forwarding.
    dsts: Vec<SocketAddrV4>,
}

impl TcpPeer {
    pub fn create(
        kind: PeerKind,
        server_cpu: Option<usize>,
        plan: &TcpPlan,
    ) -> Result<Self, TcpError> {
        let topo = TcpTopology::create(kind)?;
        let datapath = Datapath::install(
            kind,
            &topo.dut,
            DUT_IN,
            None,
            &format!("t{}", kind.tag()),
            None,
            1,
        )?;
        let server = Server::start(&topo.backend, server_cpu, plan)?;
        Ok(Self {
            kind,
            server,
            datapath,
            topo,
            dsts: Vec::new(),
        })
    }

    /// Programs the peer for `set` and makes the backend answer for its target service.
    pub fn program(
        &mut self,
        set: &ServiceSet,
        load_timeout: Duration,
    ) -> Result<Programmed, TcpError> {
        let programmed =
            self.datapath
                .program(&self.topo.dut, set, &[Family::Ipv4], load_timeout)?;
        self.topo.serve(set)?;
        self.dsts = match self.kind {
            PeerKind::Forward => set
                .endpoints(set.target())
                .into_iter()
                .map(|a| SocketAddrV4::new(a, SERVICE_PORT))
                .collect(),
            _ => vec![SocketAddrV4::new(set.vip(set.target()), SERVICE_PORT)],
        };
        Ok(programmed)
    }

    /// One run of `load`, from a thread in the client namespace pinned to `cpu`.
    pub fn run_once(
        &self,
        load: TcpLoad,
        plan: &TcpPlan,
        cpu: Option<usize>,
    ) -> Result<TcpSample, TcpError> {
        self.datapath.flush_state(&self.topo.dut);
        let dsts = self.dsts.clone();
        let plan = *plan;
        let sample = self.topo.client.run_inside(cpu, move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io("client runtime"))?;
            Ok::<_, TcpError>(runtime.block_on(async move {
                match load {
                    TcpLoad::RequestResponse => {
                        request_response(&dsts, &plan, plan.connections).await
                    }
                    TcpLoad::RequestResponseSingle => request_response(&dsts, &plan, 1).await,
                    TcpLoad::ConnectClose => connect_close(&dsts, &plan).await,
                }
            }))
        })??;
        tracing::debug!(
            peer = self.kind.name(),
            load = load.name(),
            ?sample,
            reasons = ?self.datapath.reasons(),
            "after TCP run"
        );
        Ok(sample)
    }

    /// A few requests before measuring: resolves neighbours and proves the path works
    /// (a broken path is logged here and then shows as failures in every run).
    pub fn warm_up(&self, plan: &TcpPlan) -> Result<(), TcpError> {
        let small = TcpPlan {
            connections: 2,
            requests: 20,
            seconds: plan.seconds.min(1.0),
            ..*plan
        };
        let sample = self.run_once(TcpLoad::RequestResponse, &small, None)?;
        if sample.completed == 0 {
            tracing::warn!(
                peer = self.kind.name(),
                ?sample,
                reasons = ?self.datapath.reasons(),
                "no TCP request got through in the warm-up"
            );
        }
        Ok(())
    }

    pub fn stop_server(&mut self) -> Result<(), TcpError> {
        self.server.stop()
    }
}

async fn timed<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Option<T> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Some(v),
        _ => None,
    }
}

#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    transactions: Vec<u64>,
    completed: u64,
    failed: u64,
    connect_failed: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.transactions.extend(other.transactions);
        self.completed += other.completed;
        self.failed += other.failed;
        self.connect_failed += other.connect_failed;
    }
}

async fn exchange(
    stream: &mut tokio::net::TcpStream,
    request: &[u8],
    response: &mut [u8],
) -> std::io::Result<()> {
    stream.write_all(request).await?;
    stream.read_exact(response).await.map(drop)
}

/// Closed loop on `connections` persistent connections until `plan.requests` have been
/// issued or `plan.seconds` have passed.
async fn request_response(dsts: &[SocketAddrV4], plan: &TcpPlan, connections: usize) -> TcpSample {
    let timeout = Duration::from_millis(plan.op_timeout_ms);
    let mut streams = Vec::with_capacity(connections);
    let mut connect_failed = 0;
    for i in 0..connections {
        match timed(
            timeout,
            tokio::net::TcpStream::connect(dsts[i % dsts.len()]),
        )
        .await
        {
            Some(s) => {
                let _ = s.set_nodelay(true);
                streams.push(s);
            }
            None => connect_failed += 1,
        }
    }
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(plan.seconds);
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let issued = issued.clone();
            let plan = *plan;
            tokio::spawn(async move {
                let request = vec![b'q'; plan.request_bytes];
                let mut response = vec![0u8; plan.response_bytes];
                let mut tally = Tally::default();
                while Instant::now() < deadline
                    && issued.fetch_add(1, Ordering::Relaxed) < plan.requests
                {
                    let t0 = Instant::now();
                    match timed(timeout, exchange(&mut stream, &request, &mut response)).await {
                        Some(()) => {
                            tally.latencies.push(t0.elapsed().as_nanos() as u64);
                            tally.completed += 1;
                        }
                        None => {
                            // The stream's state is unknown after a timeout: stop using it.
                            tally.failed += 1;
                            break;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally {
        connect_failed,
        ..Tally::default()
    };
    for task in tasks {
        if let Ok(t) = task.await {
            tally.merge(t);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // fetch_add also counted each task's final, refused attempt; count only those issued.
    let attempted = tally.completed + tally.failed;
    TcpSample {
        attempted,
        completed: tally.completed,
        failed: tally.failed,
        connect_failed: tally.connect_failed,
        seconds,
        latency_us: Percentiles::of(&mut tally.latencies),
        transaction_us: None,
    }
}

/// `plan.concurrency` loops of connect, one request and response, close, until
/// `plan.connects` have been attempted or `plan.seconds` have passed.
async fn connect_close(dsts: &[SocketAddrV4], plan: &TcpPlan) -> TcpSample {
    let timeout = Duration::from_millis(plan.op_timeout_ms);
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(plan.seconds);
    let tasks: Vec<_> = (0..plan.concurrency)
        .map(|_| {
            let issued = issued.clone();
            let dsts = dsts.to_vec();
            let plan = *plan;
            tokio::spawn(async move {
                let request = vec![b'q'; plan.request_bytes];
                let mut response = vec![0u8; plan.response_bytes];
                let mut tally = Tally::default();
                loop {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if n >= plan.connects {
                        break;
                    }
                    let dst = dsts[n as usize % dsts.len()];
                    let t0 = Instant::now();
                    let Some(mut stream) =
                        timed(timeout, tokio::net::TcpStream::connect(dst)).await
                    else {
                        tally.connect_failed += 1;
                        tally.failed += 1;
                        continue;
                    };
                    let connected = t0.elapsed();
                    let _ = stream.set_nodelay(true);
                    let ok = timed(timeout, exchange(&mut stream, &request, &mut response))
                        .await
                        .is_some();
                    drop(stream);
                    if ok {
                        tally.latencies.push(connected.as_nanos() as u64);
                        tally.transactions.push(t0.elapsed().as_nanos() as u64);
                        tally.completed += 1;
                    } else {
                        tally.failed += 1;
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        if let Ok(t) = task.await {
            tally.merge(t);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    TcpSample {
        attempted: tally.completed + tally.failed,
        completed: tally.completed,
        failed: tally.failed,
        connect_failed: tally.connect_failed,
        seconds,
        latency_us: Percentiles::of(&mut tally.latencies),
        transaction_us: Percentiles::of(&mut tally.transactions),
    }
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
