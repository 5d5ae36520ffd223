//! ferrolb's telemetry, for every mode of the daemon (the config file's and the cluster's):
//!
//! - [`metrics`]: the metric registry (`metrics` handles, Prometheus text from
//!   `metrics-exporter-prometheus`) and the `lb_<subsystem>_<name>_<unit|total>` naming rule.
//! - [`http`]: node-local HTTP servers: proxy health (`/healthz`, `/livez`), the metrics
//!   endpoint and the per-Service healthCheckNodePort servers.

pub mod http;
pub mod metrics;
