//! Node-local HTTP endpoints, as pieces the daemon mounts:
//! - the proxy health server (`/healthz`, `/livez`; rule 21), default `0.0.0.0:10256`;
//! - one healthCheckNodePort server per eTP=Local LoadBalancer Service (rule 15);
//! - the Prometheus metrics server, default `127.0.0.1:10249`.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tracing::{debug, warn};

use crate::{
    metrics::Registry,
    model::{HealthCheckSpec, ServiceName},
};

pub const DEFAULT_HEALTH_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 10256);
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10249);
/// kube-proxy's default: a queued update not applied within this is unhealthy.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running server; dropping it (or [`Server::shutdown`]) stops accepting connections.
#[derive(Debug)]
pub struct Server {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

type Handler = Arc<dyn Fn(&Method, &str) -> Response<Full<Bytes>> + Send + Sync>;

async fn serve(addr: SocketAddr, handler: Handler) -> Result<Server, HttpError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stopped.changed() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, _) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(%local_addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let response = handler(req.method(), req.uri().path());
                    async move { Ok::<_, Infallible>(response) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(error = %e, "http connection ended with an error");
                }
            });
        }
    });
    Ok(Server {
        local_addr,
        stop,
        task: Some(task),
    })
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(v) = content_type.parse() {
        headers.insert(hyper::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = "nosniff".parse() {
        headers.insert("x-content-type-options", v);
    }
    response
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let text = serde_json::to_vec(body).unwrap_or_default();
    respond(status, "application/json", text)
}

#[derive(Debug)]
struct HealthState {
    /// Oldest desired-state change not yet applied to the datapath.
    oldest_pending: Option<Instant>,
    last_synced: Option<(Instant, Timestamp)>,
    node_eligible: bool,
}

/// kube-proxy's proxier health (rule 21): healthy once the datapath has been synced and no
/// change has waited longer than the timeout; `/healthz` additionally fails while the node
/// is being deleted or tainted for deletion, so external load balancers drain it while
/// `/livez` keeps the pod alive.
#[derive(Clone, Debug)]
pub struct ProxyHealth {
    state: Arc<Mutex<HealthState>>,
    timeout: Duration,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HealthBody {
    pub last_updated: String,
    pub current_time: String,
    pub node_eligible: bool,
}

impl ProxyHealth {
    pub fn new(timeout: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(HealthState {
                oldest_pending: None,
                last_synced: None,
                node_eligible: true,
            })),
            timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new desired state exists that the datapath does not hold yet.
    pub fn queued(&self) {
        self.lock().oldest_pending.get_or_insert_with(Instant::now);
    }

    /// The datapath now holds the latest desired state.
    pub fn synced(&self) {
        let mut s = self.lock();
        s.oldest_pending = None;
        s.last_synced = Some((Instant::now(), Timestamp::now()));
    }

    pub fn set_node_eligible(&self, eligible: bool) {
        self.lock().node_eligible = eligible;
    }

    /// `/livez`: the proxy itself works.
    pub fn live(&self) -> bool {
        let s = self.lock();
        s.last_synced.is_some()
            && s.oldest_pending
                .is_none_or(|since| since.elapsed() < self.timeout)
    }

    /// `/healthz`: live, and the node should receive traffic.
    pub fn healthy(&self) -> bool {
        self.live() && self.lock().node_eligible
    }

    pub fn body(&self) -> HealthBody {
        let s = self.lock();
        HealthBody {
            last_updated: s
                .last_synced
                .map(|(_, t)| t.to_string())
                .unwrap_or_default(),
            current_time: Timestamp::now().to_string(),
            node_eligible: s.node_eligible,
        }
    }
}

/// Serves `/healthz` and `/livez`.
pub async fn serve_proxy_health(
    addr: SocketAddr,
    health: ProxyHealth,
) -> Result<Server, HttpError> {
    serve(
        addr,
        Arc::new(move |method, path| {
            if method != Method::GET && method != Method::HEAD {
                return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "");
            }
            let ok = match path {
                "/healthz" => health.healthy(),
                "/livez" => health.live(),
                _ => return respond(StatusCode::NOT_FOUND, "text/plain", "404 page not found\n"),
            };
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &health.body())
        }),
    )
    .await
}

/// Serves the registry's text format on `/metrics`.
pub async fn serve_metrics(addr: SocketAddr, registry: Registry) -> Result<Server, HttpError> {
    serve(
        addr,
        Arc::new(move |method, path| match (method, path) {
            (&Method::GET, "/metrics") => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                registry.render(),
            ),
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "404 page not found\n"),
        }),
    )
    .await
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceHealthBody {
    pub service: ServiceRef,
    pub local_endpoints: usize,
    pub service_proxy_healthy: bool,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug)]
struct ServiceHealthEntry {
    service: ServiceName,
    local_ready_endpoints: usize,
}

/// The healthCheckNodePort servers of this node (rule 15): one listener per port, kept in
/// step with [`crate::model::KubeDesiredState::health_checks`] by [`ServiceHealthServers::sync`].
/// Answers any path with 200 while the Service has a local *ready* endpoint and the proxy is
/// live, 503 otherwise.
pub struct ServiceHealthServers {
    bind: IpAddr,
    proxy: ProxyHealth,
    entries: Arc<Mutex<BTreeMap<u16, ServiceHealthEntry>>>,
    servers: BTreeMap<u16, Server>,
}

impl ServiceHealthServers {
    pub fn new(bind: IpAddr, proxy: ProxyHealth) -> Self {
        Self {
            bind,
            proxy,
            entries: Arc::default(),
            servers: BTreeMap::new(),
        }
    }

    /// Starts servers for new ports, stops those of removed ones and updates the counts.
    /// A port that cannot be bound is reported and retried on the next sync; the other
    /// ports are unaffected.
    pub async fn sync(&mut self, checks: &[HealthCheckSpec]) -> Vec<(u16, HttpError)> {
        {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.clear();
            for check in checks {
                entries.insert(
                    check.port,
                    ServiceHealthEntry {
                        service: check.service.clone(),
                        local_ready_endpoints: check.local_ready_endpoints,
                    },
                );
            }
        }
        let wanted: Vec<u16> = checks.iter().map(|c| c.port).collect();
        let gone: Vec<u16> = self
            .servers
            .keys()
            .copied()
            .filter(|p| !wanted.contains(p))
            .collect();
        for port in gone {
            if let Some(server) = self.servers.remove(&port) {
                server.shutdown().await;
            }
        }
        let mut errors = Vec::new();
        for port in wanted {
            if self.servers.contains_key(&port) {
                continue;
            }
            let entries = self.entries.clone();
            let proxy = self.proxy.clone();
            let handler: Handler = Arc::new(move |_method, _path| {
                let entries = entries.lock().unwrap_or_else(|e| e.into_inner());
                let Some(entry) = entries.get(&port) else {
                    return respond(StatusCode::NOT_FOUND, "text/plain", "");
                };
                let healthy = proxy.live();
                let body = ServiceHealthBody {
                    service: ServiceRef {
                        namespace: entry.service.namespace.clone(),
                        name: entry.service.name.clone(),
                    },
                    local_endpoints: entry.local_ready_endpoints,
                    service_proxy_healthy: healthy,
                };
                let status = if entry.local_ready_endpoints > 0 && healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json(status, &body)
            });
            match serve(SocketAddr::new(self.bind, port), handler).await {
                Ok(server) => {
                    self.servers.insert(port, server);
                }
                Err(e) => {
                    warn!(port, error = %e, "healthCheckNodePort server not started");
                    errors.push((port, e));
                }
            }
        }
        errors
    }

    pub fn ports(&self) -> Vec<u16> {
        self.servers.keys().copied().collect()
    }
}
