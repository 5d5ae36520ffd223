//! The healthCheckNodePort servers of this node (rule 15 of `docs/kube-proxy-semantics.md`):
//! one listener per port, each answering for the Service that owns the port.

use std::{
    collections::BTreeMap,
    marker::PhantomData,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use arc_swap::ArcSwap;
use hyper::StatusCode;
use serde::Serialize;
use tracing::warn;

use super::{json, respond, serve, Handler, HttpError, ProxyHealth, Server};

/// One healthCheckNodePort to serve, as the source that knows the Services describes it
/// (the Kubernetes rules' `HealthCheckSpec`).
pub trait HealthCheck {
    fn port(&self) -> u16;
    fn namespace(&self) -> &str;
    fn name(&self) -> &str;
    /// Ready endpoints of the Service on this node.
    fn local_ready_endpoints(&self) -> usize;
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceHealthBody {
    pub service: ServiceRef,
    pub local_endpoints: usize,
    pub service_proxy_healthy: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug)]
struct Entry {
    service: ServiceRef,
    local_ready_endpoints: usize,
}

/// What every port answers, replaced as a whole on each sync.
type Entries = BTreeMap<u16, Entry>;

/// Kept in step with the source's health checks by [`ServiceHealthServers::sync`]. Each
/// server answers any path with 200 while its Service has a local *ready* endpoint and the
/// proxy is live, 503 otherwise.
pub struct ServiceHealthServers<C> {
    bind: IpAddr,
    proxy: ProxyHealth,
    entries: Arc<ArcSwap<Entries>>,
    servers: BTreeMap<u16, Server>,
    checks: PhantomData<fn(&C)>,
}

impl<C: HealthCheck> ServiceHealthServers<C> {
    pub fn new(bind: IpAddr, proxy: ProxyHealth) -> Self {
        Self {
            bind,
            proxy,
            entries: Arc::default(),
            servers: BTreeMap::new(),
            checks: PhantomData,
        }
    }

    /// Starts servers for new ports, stops those of removed ones and updates the counts.
    /// A port that cannot be bound is reported and retried on the next sync; the other
    /// ports are unaffected.
    pub async fn sync(&mut self, checks: &[C]) -> Vec<(u16, HttpError)> {
        let entries: Entries = checks
            .iter()
            .map(|check| {
                let service = ServiceRef {
                    namespace: check.namespace().to_owned(),
                    name: check.name().to_owned(),
                };
                let local_ready_endpoints = check.local_ready_endpoints();
                (
                    check.port(),
                    Entry {
                        service,
                        local_ready_endpoints,
                    },
                )
            })
            .collect();
        self.entries.store(Arc::new(entries));
        let wanted: Vec<u16> = checks.iter().map(HealthCheck::port).collect();
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
            match serve(SocketAddr::new(self.bind, port), self.handler(port)).await {
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

    fn handler(&self, port: u16) -> Handler {
        let entries = self.entries.clone();
        let proxy = self.proxy.clone();
        Arc::new(move |_method, _path| {
            let entries = entries.load();
            let Some(entry) = entries.get(&port) else {
                return respond(StatusCode::NOT_FOUND, "text/plain", "");
            };
            let healthy = proxy.live();
            let body = ServiceHealthBody {
                service: entry.service.clone(),
                local_endpoints: entry.local_ready_endpoints,
                service_proxy_healthy: healthy,
            };
            let status = if entry.local_ready_endpoints > 0 && healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &body)
        })
    }

    pub fn ports(&self) -> Vec<u16> {
        self.servers.keys().copied().collect()
    }
}
