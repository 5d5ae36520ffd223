//! The Kubernetes source's metrics, registered in a shared [`Registry`] (from
//! `lb-telemetry`, which holds the naming rule and renders the text format).

use std::collections::BTreeMap;

use lb_telemetry::metrics::{Counter, Gauge, Histogram, MetricsError, Registry, LATENCY_BUCKETS};

pub const SYNC_LATENCY: &str = "lb_kube_sync_latency_seconds";
pub const SERVICES: &str = "lb_kube_services_objects";
pub const ENDPOINTS: &str = "lb_kube_endpoints_objects";
pub const FRONTENDS_PROGRAMMED: &str = "lb_kube_frontends_entries";
pub const SKIPPED_OBJECTS: &str = "lb_kube_skipped_objects";
pub const SKIPPED_FRONTENDS: &str = "lb_kube_skipped_frontends_entries";
pub const WATCH_EVENTS: &str = "lb_kube_watch_events_total";
pub const WATCH_ERRORS: &str = "lb_kube_watch_errors_total";
pub const UPDATES: &str = "lb_kube_updates_total";

/// The Kubernetes source's metrics.
#[derive(Clone, Debug)]
pub struct KubeMetrics {
    pub registry: Registry,
    /// From the first event of a batch to its snapshot being published.
    pub sync_latency: Histogram,
    pub services: Gauge,
    pub endpoints: Gauge,
    pub frontends_programmed: Gauge,
    pub updates: Counter,
}

impl KubeMetrics {
    pub fn new(registry: &Registry) -> Result<Self, MetricsError> {
        Ok(Self {
            registry: registry.clone(),
            sync_latency: registry.histogram(
                SYNC_LATENCY,
                "Time from the first API event of a batch to its desired state being published.",
                &[],
                LATENCY_BUCKETS,
            )?,
            services: registry.gauge(SERVICES, "Services in the desired state.", &[])?,
            endpoints: registry.gauge(
                ENDPOINTS,
                "Endpoints in the Cluster sets of the desired state.",
                &[],
            )?,
            frontends_programmed: registry.gauge(
                FRONTENDS_PROGRAMMED,
                "Frontends the datapath projection programs.",
                &[],
            )?,
            updates: registry.counter(UPDATES, "Desired-state snapshots published.", &[])?,
        })
    }

    pub fn watch_event(&self, resource: &str) {
        if let Ok(c) = self.registry.counter(
            WATCH_EVENTS,
            "Watch events received, by resource.",
            &[("resource", resource)],
        ) {
            c.inc();
        }
    }

    pub fn watch_error(&self, resource: &str) {
        if let Ok(c) = self.registry.counter(
            WATCH_ERRORS,
            "Watch and list errors (each followed by a retry), by resource.",
            &[("resource", resource)],
        ) {
            c.inc();
        }
    }

    /// Replaces the by-reason gauges with the current counts.
    pub fn set_skipped(
        &self,
        objects: &BTreeMap<&'static str, usize>,
        frontends: &BTreeMap<&'static str, usize>,
    ) {
        for (name, help, counts) in [
            (
                SKIPPED_OBJECTS,
                "Objects or fields skipped as invalid in the current state, by reason.",
                objects,
            ),
            (
                SKIPPED_FRONTENDS,
                "Frontends the datapath cannot program in the current state, by reason.",
                frontends,
            ),
        ] {
            self.registry.clear(name);
            for (reason, n) in counts {
                if let Ok(g) = self.registry.gauge(name, help, &[("reason", reason)]) {
                    g.set(*n as f64);
                }
            }
        }
    }
}
