//! What config-file mode adds for a node at the network's edge: active health checks
//! (`health`), VIP announcement to a routing daemon (`announce`) and, for both, a
//! Prometheus endpoint. The file-mode loop calls in here at a few points: after each
//! accepted file, for each check result, on its announcement tick, and on exit.

use std::{net::SocketAddr, time::Duration};

use lb_model::DesiredState;
use lb_telemetry::{
    http::{serve_metrics, HttpError, Server},
    metrics::Registry,
};
use tracing::info;

use crate::{
    announce::Announcer,
    datapath::DatapathOptions,
    health::{publish::Publisher, HealthChecker, HealthChecks, Outcome},
};

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("metrics server: {0}")]
    Metrics(#[from] HttpError),
}

/// How often the file-mode loop checks the announcement against the datapath and the table.
pub const ANNOUNCE_TICK: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Default)]
pub struct EdgeOptions {
    /// Announce servable VIPs as routes in this table (see `announce`); `None`: no
    /// announcement.
    pub announce_table: Option<u32>,
    /// Serve Prometheus metrics (the `lb_health_*` series) here.
    pub metrics_addr: Option<SocketAddr>,
}

pub struct Edge {
    health: HealthChecker,
    announcer: Option<Announcer>,
    _metrics: Option<Server>,
}

impl Edge {
    pub async fn start(opts: &EdgeOptions, datapath: &DatapathOptions) -> Result<Self, EdgeError> {
        let registry = Registry::new();
        let metrics = match opts.metrics_addr {
            Some(addr) => {
                let server = serve_metrics(addr, registry.clone()).await?;
                info!(%addr, "serving metrics");
                Some(server)
            }
            None => None,
        };
        Ok(Self {
            health: HealthChecker::new(
                Some(Publisher::new(&datapath.pin_dir)),
                metrics.is_some().then_some(registry),
            ),
            announcer: opts
                .announce_table
                .map(|table| Announcer::new(table, &datapath.iface, &datapath.pin_dir)),
            _metrics: metrics,
        })
    }

    /// A new accepted file: check what it asks to be checked.
    pub fn configure(&mut self, desired: &DesiredState, checks: &HealthChecks) {
        self.health.configure(desired, checks);
    }

    /// `desired` as the datapath should serve it: failing backends drained.
    pub fn effective(&self, desired: &DesiredState) -> DesiredState {
        self.health.effective(desired)
    }

    /// The next check result.
    pub async fn next_check(&mut self) -> Outcome {
        self.health.next().await
    }

    /// Takes a check result; `true` when the effective state changed.
    pub fn record(&mut self, outcome: Outcome) -> bool {
        self.health.record(outcome)
    }

    /// The maps now serve `effective` (or the announcement tick came): announce what can
    /// be served, withdraw the rest.
    pub fn announce(&mut self, effective: &DesiredState) {
        if let Some(announcer) = &mut self.announcer {
            announcer.update(effective);
        }
    }

    /// The daemon stops: withdraw every VIP (the datapath keeps forwarding what the
    /// routers still send while the withdrawal spreads).
    pub fn shutdown(&mut self) {
        if let Some(announcer) = &mut self.announcer {
            announcer.withdraw_all();
        }
    }
}
