//! The client loads: closed loops of requests over persistent connections, and loops of
//! connect, one request, close. Every socket operation is bounded by the plan's timeout.

use std::{
    net::SocketAddrV4,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Percentiles, TcpPlan, TcpSample};

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
pub(super) async fn request_response(
    dsts: &[SocketAddrV4],
    plan: &TcpPlan,
    connections: usize,
) -> TcpSample {
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
pub(super) async fn connect_close(dsts: &[SocketAddrV4], plan: &TcpPlan) -> TcpSample {
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
