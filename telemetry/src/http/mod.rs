//! Node-local HTTP endpoints, as pieces the daemon mounts:
//! - the proxy health server (`/healthz`, `/livez`; rule 21 of
//!   `docs/kube-proxy-semantics.md`), default `0.0.0.0:10256`: [`serve_proxy_health`];
//! - one healthCheckNodePort server per eTP=Local LoadBalancer Service (rule 15):
//!   [`ServiceHealthServers`];
//! - the Prometheus metrics server, default `127.0.0.1:10249`: [`serve_metrics`].
//!
//! Each server is a small hyper HTTP/1 loop around a handler that sees only the method and
//! the path.

mod health;
mod service_health;

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tracing::{debug, warn};

pub use health::{serve_proxy_health, HealthBody, ProxyHealth};
pub use service_health::{HealthCheck, ServiceHealthBody, ServiceHealthServers, ServiceRef};

use crate::metrics::Registry;

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

fn not_found() -> Response<Full<Bytes>> {
    respond(StatusCode::NOT_FOUND, "text/plain", "404 page not found\n")
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
            _ => not_found(),
        }),
    )
    .await
}
