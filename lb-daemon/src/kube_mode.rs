//! `ferrolb kube`: the cluster mode. Services and EndpointSlices come from the API server
//! through `lb-kube`; every published snapshot is whole, so applying it never leaves a
//! half-updated service, and a burst of events collapses into the newest snapshot.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use lb_kube::{
    backend_side::local_translations,
    metrics::KubeMetrics,
    rules::NodeConfig,
    watch::{self, DesiredStateUpdate, SourceOptions},
};
use lb_telemetry::{
    http::{self, ProxyHealth, ServiceHealthServers},
    metrics::{Counter, Gauge, Histogram, MetricsError, Registry},
};
use tracing::{error, info, warn};

use crate::{
    datapath::{self, warm_neighbours, DatapathOptions, StartError, Ticks},
    loader::{self, Attachment, LoaderError},
    maps::{BackendSideMaps, MapsError},
    sync::{SyncEngine, SyncError},
};

#[derive(Debug, thiserror::Error)]
pub enum KubeModeError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("kubernetes: {0}")]
    Kube(lb_kube::watch::SourceError),
    #[error("metrics: {0}")]
    Metrics(MetricsError),
    #[error("http server: {0}")]
    Http(http::HttpError),
}

pub struct KubeOptions {
    pub datapath: DatapathOptions,
    pub kubeconfig: Option<PathBuf>,
    pub node: NodeConfig,
    pub health_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Address the per-service healthCheckNodePort servers bind to.
    pub health_check_ip: IpAddr,
}

/// Latency buckets from an API event to the maps holding its result, in seconds.
const SYNC_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];
/// After a failed apply (a full map, say), the same snapshot is tried again this often.
const RETRY: Duration = Duration::from_secs(2);

struct DaemonMetrics {
    sync_latency: Histogram,
    sync_errors: Counter,
    services: Gauge,
    backends: Gauge,
    tables: Gauge,
    slots_used: Gauge,
    skipped_frontends: Gauge,
    translations: Gauge,
}

impl DaemonMetrics {
    fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let occupancy = |map: &str| {
            registry.gauge(
                "lb_maps_occupancy_entries",
                "Entries in use per BPF map (slots for the Maglev table map)",
                &[("map", map)],
            )
        };
        Ok(Self {
            sync_latency: registry.histogram(
                "lb_sync_event_to_map_seconds",
                "Time from an API event to the maps holding its result",
                &[],
                SYNC_BUCKETS,
            )?,
            sync_errors: registry.counter(
                "lb_sync_errors_total",
                "Snapshots that could not be applied to the maps",
                &[],
            )?,
            services: occupancy("services")?,
            backends: occupancy("backends")?,
            tables: registry.gauge(
                "lb_maglev_tables_entries",
                "Distinct Maglev tables (services with equal backends share one)",
                &[],
            )?,
            slots_used: occupancy("maglev_slots")?,
            translations: occupancy("backend_nat")?,
            skipped_frontends: registry.gauge(
                "lb_projection_skipped_objects",
                "Frontends the datapath cannot program yet (see the log for reasons)",
                &[],
            )?,
        })
    }

    fn record_state(&self, engine: &SyncEngine) {
        let state = engine.state();
        self.services.set(state.services.len() as f64);
        self.backends.set(state.backends.len() as f64);
        self.tables.set(state.tables.len() as f64);
        let capacity = f64::from(state.slots.capacity());
        self.slots_used
            .set(capacity - state.slots.free_slots() as f64);
    }
}

/// Most frontends skipped are listed once per change, so an operator sees which Services the
/// datapath cannot serve yet and why, without a line per snapshot.
fn log_skipped(skipped: &[lb_kube::projection::SkippedFrontend]) {
    const SHOWN: usize = 20;
    for s in skipped.iter().take(SHOWN) {
        warn!(
            service = %format!("{}/{}", s.service.namespace, s.service.name),
            port = %s.port_name,
            frontend = %format!("{}:{}/{:?}", s.address, s.port, s.protocol),
            kind = ?s.kind,
            reason = s.reason.reason(),
            "frontend not programmed"
        );
    }
    if skipped.len() > SHOWN {
        warn!(
            more = skipped.len() - SHOWN,
            "further frontends not programmed"
        );
    }
}

pub async fn run(opts: KubeOptions) -> Result<(), KubeModeError> {
    let registry = Registry::new();
    let kube_metrics = KubeMetrics::new(&registry).map_err(KubeModeError::Metrics)?;
    let metrics = DaemonMetrics::new(&registry).map_err(KubeModeError::Metrics)?;
    let health = ProxyHealth::new(http::DEFAULT_HEALTH_TIMEOUT);
    let _health_server = http::serve_proxy_health(opts.health_addr, health.clone())
        .await
        .map_err(KubeModeError::Http)?;
    let _metrics_server = http::serve_metrics(opts.metrics_addr, registry.clone())
        .await
        .map_err(KubeModeError::Http)?;
    let mut service_health = ServiceHealthServers::new(opts.health_check_ip, health.clone());
    info!(health = %opts.health_addr, metrics = %opts.metrics_addr, "serving health and metrics");

    let client = watch::client(opts.kubeconfig.as_deref())
        .await
        .map_err(KubeModeError::Kube)?;
    let source = SourceOptions::new(opts.node.clone());
    let mut engine = datapath::start(&opts.datapath)?;
    // Every node is also the home of endpoints: it decapsulates what balancers (its own
    // included) send to its endpoints and translates it to their address and port.
    let attachment = loader::install_backend_side(&opts.datapath.iface, &opts.datapath.pin_dir)?;
    info!(iface = %opts.datapath.iface, new = attachment == Attachment::New, "backend side attached (tc ingress + egress)");
    let mut decap = BackendSideMaps::open(&opts.datapath.pin_dir)?;
    let (mut updates, _source_task) = watch::spawn(client, source, Some(kube_metrics));

    let mut ticks = Ticks::new()?;
    let mut retry = tokio::time::interval(RETRY);
    let mut applied_generation = 0u64;
    let mut latest: Option<Arc<DesiredStateUpdate>> = None;
    let mut reported_skips = Vec::new();
    loop {
        tokio::select! {
            _ = ticks.terminate.recv() => break,
            _ = ticks.interrupt.recv() => break,
            _ = ticks.neigh.tick() => engine.resolve_neighbour_misses(),
            _ = ticks.refresh.tick() => {
                if let Some(update) = &latest {
                    warm_neighbours(&update.datapath);
                }
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    error!("the Kubernetes source stopped; keeping the programmed state");
                    break;
                }
                latest = updates.borrow_and_update().clone();
                health.queued();
            }
            _ = retry.tick() => {}
        }
        let Some(update) = latest.clone() else {
            continue;
        };
        if update.generation == applied_generation {
            continue;
        }
        if applied_generation == 0 {
            warm_neighbours(&update.datapath);
        }
        // Translations first: a frontend this node starts to balance to its own endpoints
        // finds them in place.
        let translations = local_translations(&update.kube);
        let changed = update.changed_since(applied_generation);
        let applied = decap
            .set_translations(&translations)
            .map_err(KubeModeError::from)
            .and_then(|writes| {
                metrics.translations.set(translations.len() as f64);
                Ok(writes
                    + engine
                        .apply_changes(&update.datapath, changed.as_ref())?
                        .ops)
            });
        match applied {
            Ok(ops) => {
                applied_generation = update.generation;
                metrics
                    .sync_latency
                    .observe_duration(update.first_event_at.elapsed());
                metrics.record_state(&engine);
                metrics
                    .skipped_frontends
                    .set(update.report.skipped.len() as f64);
                health.synced();
                health.set_node_eligible(update.kube.node.eligible);
                for (port, e) in service_health.sync(&update.kube.health_checks()).await {
                    warn!(port, error = %e, "healthCheckNodePort server not serving");
                }
                if update.report.skipped != reported_skips {
                    log_skipped(&update.report.skipped);
                    reported_skips = update.report.skipped.clone();
                }
                info!(
                    generation = update.generation,
                    services = update.datapath.services.len(),
                    skipped = update.report.skipped.len(),
                    ops,
                    "snapshot applied"
                );
            }
            Err(e) => {
                metrics.sync_errors.inc();
                error!(generation = update.generation, error = %e, "snapshot not applied; will retry");
            }
        }
    }
    info!("exiting; the datapath stays attached and keeps forwarding (ferrolb cleanup removes it)");
    Ok(())
}
