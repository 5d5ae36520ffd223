//! kube-proxy's proxier health (rule 21 of `docs/kube-proxy-semantics.md`) and the server
//! answering `/healthz` and `/livez` from it.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use hyper::{Method, StatusCode};
use jiff::Timestamp;
use serde::Serialize;

use super::{json, not_found, respond, serve, HttpError, Server};

/// What the sync loop last reported. Small and `Copy`: the loop publishes a new value for
/// every change and the HTTP side reads whichever is current, never waiting on a lock.
#[derive(Clone, Copy, Debug)]
struct HealthState {
    /// Oldest desired-state change not yet applied to the datapath.
    oldest_pending: Option<Instant>,
    last_synced: Option<(Instant, Timestamp)>,
    node_eligible: bool,
}

impl HealthState {
    fn live(&self, timeout: Duration) -> bool {
        self.last_synced.is_some()
            && self
                .oldest_pending
                .is_none_or(|since| since.elapsed() < timeout)
    }
}

/// Healthy once the datapath has been synced and no change has waited longer than the
/// timeout; `/healthz` additionally fails while the node is being deleted or tainted for
/// deletion, so external load balancers drain it while `/livez` keeps the pod alive.
#[derive(Clone, Debug)]
pub struct ProxyHealth {
    state: Arc<ArcSwap<HealthState>>,
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
            state: Arc::new(ArcSwap::from_pointee(HealthState {
                oldest_pending: None,
                last_synced: None,
                node_eligible: true,
            })),
            timeout,
        }
    }

    fn update(&self, change: impl Fn(&mut HealthState)) {
        self.state.rcu(|current| {
            let mut next = **current;
            change(&mut next);
            next
        });
    }

    /// A new desired state exists that the datapath does not hold yet.
    pub fn queued(&self) {
        let now = Instant::now();
        self.update(|s| {
            s.oldest_pending.get_or_insert(now);
        });
    }

    /// The datapath now holds the latest desired state.
    pub fn synced(&self) {
        let synced = (Instant::now(), Timestamp::now());
        self.update(|s| {
            s.oldest_pending = None;
            s.last_synced = Some(synced);
        });
    }

    pub fn set_node_eligible(&self, eligible: bool) {
        self.update(|s| s.node_eligible = eligible);
    }

    /// `/livez`: the proxy itself works.
    pub fn live(&self) -> bool {
        self.state.load().live(self.timeout)
    }

    /// `/healthz`: live, and the node should receive traffic.
    pub fn healthy(&self) -> bool {
        let s = self.state.load();
        s.live(self.timeout) && s.node_eligible
    }

    pub fn body(&self) -> HealthBody {
        let s = self.state.load();
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
                _ => return not_found(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_synced_is_neither_live_nor_healthy() {
        let health = ProxyHealth::new(Duration::from_secs(60));
        assert!(!health.live());
        assert!(!health.healthy());
        assert_eq!(health.body().last_updated, "");
        assert!(health.body().node_eligible);
    }

    #[test]
    fn pending_past_the_timeout_is_not_live_until_synced() {
        let health = ProxyHealth::new(Duration::from_millis(20));
        health.synced();
        assert!(health.live() && health.healthy());
        health.queued();
        let first = health.state.load().oldest_pending;
        health.queued();
        assert_eq!(
            health.state.load().oldest_pending,
            first,
            "the oldest change counts"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(!health.live());
        health.synced();
        assert!(health.live());
        assert!(health.body().last_updated.ends_with('Z'));
    }

    #[test]
    fn an_ineligible_node_is_live_but_not_healthy() {
        let health = ProxyHealth::new(Duration::from_secs(60));
        health.synced();
        health.set_node_eligible(false);
        assert!(health.live());
        assert!(!health.healthy());
        assert!(!health.body().node_eligible);
        health.set_node_eligible(true);
        assert!(health.healthy());
    }
}
