//! `ferrolb kube`: the cluster mode. Services and EndpointSlices come from the API server
//! through `lb-kube`; every published snapshot is whole, so applying it never leaves a
//! half-updated service, and a burst of events collapses into the newest snapshot.
//!
//! Every node plays three parts: balancer for traffic from the network (the XDP program),
//! home of endpoints (the backend side's TC programs) and, unless turned off, balancer for
//! its own pods and processes (the socket programs, attached to a cgroup v2 directory).

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use lb_kube::{
    backend_side::local_translations,
    metrics::KubeMetrics,
    projection::SkippedFrontend,
    rules::{HealthCheckSpec, NodeConfig, Skipped},
    socket_side::socket_targets,
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
    maps::{BackendSideMaps, MapsError, SocketMaps},
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
    #[error("socket programs: {0} (--no-socket-lb runs without them)")]
    Socket(LoaderError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// East-west balancing: the socket programs, which balance this node's pods' and
/// processes' `connect()`s and datagrams to Services at the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketLb {
    /// Attached to this cgroup v2 directory (every process in it or below is served);
    /// `None`: the machine's cgroup2 mount.
    On { cgroup: Option<PathBuf> },
    /// Not installed (one a previous run attached is detached), and no internal-scope
    /// frontend programmed: something else serves in-cluster traffic to Services.
    Off,
}

pub struct KubeOptions {
    pub datapath: DatapathOptions,
    pub kubeconfig: Option<PathBuf>,
    pub node: NodeConfig,
    pub health_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Address the per-service healthCheckNodePort servers bind to.
    pub health_check_ip: IpAddr,
    pub socket_lb: SocketLb,
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
    socket_targets: Gauge,
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
            socket_targets: occupancy("sock_targets")?,
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
fn log_skipped(skipped: &[SkippedFrontend]) {
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

/// Invalid objects and fields the rules skipped (an unparsable source range, a bad port,
/// ...), each warned about once, when it first appears, as kube-proxy logs them.
fn log_invalid(skipped: &[Skipped], reported: &[Skipped]) {
    const SHOWN: usize = 20;
    let new: Vec<&Skipped> = skipped.iter().filter(|s| !reported.contains(s)).collect();
    for s in new.iter().take(SHOWN) {
        warn!(object = %s.object, reason = s.problem.reason(), "skipped as invalid: {}", s.problem);
    }
    if new.len() > SHOWN {
        warn!(
            more = new.len() - SHOWN,
            "further objects skipped as invalid"
        );
    }
}

/// This node's datapath: the balancer (through its sync engine), the backend side, and the
/// socket programs' target ports when east-west balancing is on.
struct NodeDatapath {
    engine: SyncEngine,
    backend_side: BackendSideMaps,
    socket: Option<SocketMaps>,
}

impl NodeDatapath {
    /// Installs or adopts every program, the balancer first: the others load against its
    /// pinned maps, and the engine adopts what all of them hold.
    fn start(opts: &KubeOptions) -> Result<Self, KubeModeError> {
        let pin_dir = &opts.datapath.pin_dir;
        let params = datapath::install(&opts.datapath)?;
        // Every node is also the home of endpoints: it decapsulates what balancers (its own
        // included) send to its endpoints and translates it to their address and port.
        let attachment = loader::install_backend_side(&opts.datapath.iface, pin_dir)?;
        info!(iface = %opts.datapath.iface, new = attachment == Attachment::New, "backend side attached (tc ingress + egress)");
        let socket = match &opts.socket_lb {
            SocketLb::On { cgroup } => Some(install_socket(cgroup.as_deref(), pin_dir)?),
            SocketLb::Off => {
                detach_socket(pin_dir)?;
                None
            }
        };
        Ok(Self {
            engine: datapath::adopt(&opts.datapath, &params)?,
            backend_side: BackendSideMaps::open(pin_dir)?,
            socket,
        })
    }

    /// Writes one snapshot, make-before-break across the maps: what a table needs before it
    /// may name an endpoint (the backend side's translations, the socket programs' target
    /// ports) first, then the balancer's maps, then the target ports no table names any
    /// more. Returns the map writes.
    fn apply(
        &mut self,
        update: &DesiredStateUpdate,
        applied: u64,
        metrics: &DaemonMetrics,
    ) -> Result<usize, KubeModeError> {
        let translations = local_translations(&update.kube);
        let mut writes = self.backend_side.set_translations(&translations)?;
        writes += self.backend_side.set_local_endpoints(&translations)?;
        metrics.translations.set(translations.len() as f64);
        if let Some(socket) = &mut self.socket {
            let targets = socket_targets(&update.kube);
            writes += socket.set_targets(&targets)?;
            metrics.socket_targets.set(targets.len() as f64);
        }
        let changed = update.changed_since(applied);
        writes += self
            .engine
            .apply_changes(&update.datapath, changed.as_ref())?
            .ops;
        if let Some(socket) = &mut self.socket {
            writes += socket.prune_targets()?;
        }
        Ok(writes)
    }
}

fn install_socket(cgroup: Option<&Path>, pin_dir: &Path) -> Result<SocketMaps, KubeModeError> {
    let cgroup = match cgroup {
        Some(dir) => dir.to_path_buf(),
        None => loader::default_cgroup_root().map_err(KubeModeError::Socket)?,
    };
    let attachment = loader::install_socket(&cgroup, pin_dir).map_err(KubeModeError::Socket)?;
    info!(cgroup = %cgroup.display(), new = attachment == Attachment::New, "socket programs attached (east-west balancing at connect)");
    Ok(SocketMaps::open(pin_dir)?)
}

/// Socket programs a previous run left attached would go on serving the internal frontends
/// the maps still hold until the first sync removes them: their pinned links go at once.
fn detach_socket(pin_dir: &Path) -> Result<(), KubeModeError> {
    for link in loader::uninstall_socket(pin_dir)? {
        info!(link, "socket program detached");
    }
    info!("east-west balancing off: connections of this node's pods and processes to Services are left to the network");
    Ok(())
}

/// The loop's state between snapshots: the datapath, what it last applied, and what the
/// daemon reports about it.
struct Daemon {
    node: NodeDatapath,
    metrics: DaemonMetrics,
    health: ProxyHealth,
    service_health: ServiceHealthServers<HealthCheckSpec>,
    applied_generation: u64,
    reported_skips: Vec<SkippedFrontend>,
    reported_invalid: Vec<Skipped>,
}

impl Daemon {
    /// Applies `update` unless it is applied already; a failure is counted, logged and
    /// left for the next retry tick.
    async fn sync(&mut self, update: &DesiredStateUpdate) {
        if update.generation == self.applied_generation {
            return;
        }
        if self.applied_generation == 0 {
            warm_neighbours(&update.datapath);
        }
        match self
            .node
            .apply(update, self.applied_generation, &self.metrics)
        {
            Ok(ops) => self.applied(update, ops).await,
            Err(e) => {
                self.metrics.sync_errors.inc();
                error!(generation = update.generation, error = %e, "snapshot not applied; will retry");
            }
        }
    }

    async fn applied(&mut self, update: &DesiredStateUpdate, ops: usize) {
        self.applied_generation = update.generation;
        let metrics = &self.metrics;
        metrics
            .sync_latency
            .observe_duration(update.first_event_at.elapsed());
        metrics.record_state(&self.node.engine);
        metrics
            .skipped_frontends
            .set(update.report.skipped.len() as f64);
        self.health.synced();
        self.health.set_node_eligible(update.kube.node.eligible);
        for (port, e) in self.service_health.sync(&update.kube.health_checks()).await {
            warn!(port, error = %e, "healthCheckNodePort server not serving");
        }
        if update.kube.skipped != self.reported_invalid {
            log_invalid(&update.kube.skipped, &self.reported_invalid);
            self.reported_invalid = update.kube.skipped.clone();
        }
        if update.report.skipped != self.reported_skips {
            log_skipped(&update.report.skipped);
            self.reported_skips = update.report.skipped.clone();
        }
        info!(
            generation = update.generation,
            services = update.datapath.services.len(),
            skipped = update.report.skipped.len(),
            ops,
            "snapshot applied"
        );
    }
}

/// The proxy's health and metrics servers; they serve until the returned value drops.
async fn serve(
    opts: &KubeOptions,
    registry: &Registry,
    health: &ProxyHealth,
) -> Result<impl Sized, KubeModeError> {
    let health_server = http::serve_proxy_health(opts.health_addr, health.clone())
        .await
        .map_err(KubeModeError::Http)?;
    let metrics_server = http::serve_metrics(opts.metrics_addr, registry.clone())
        .await
        .map_err(KubeModeError::Http)?;
    info!(health = %opts.health_addr, metrics = %opts.metrics_addr, "serving health and metrics");
    Ok((health_server, metrics_server))
}

pub async fn run(opts: KubeOptions) -> Result<(), KubeModeError> {
    let registry = Registry::new();
    let kube_metrics = KubeMetrics::new(&registry).map_err(KubeModeError::Metrics)?;
    let metrics = DaemonMetrics::new(&registry).map_err(KubeModeError::Metrics)?;
    let health = ProxyHealth::new(http::DEFAULT_HEALTH_TIMEOUT);
    let _servers = serve(&opts, &registry, &health).await?;
    let service_health = ServiceHealthServers::new(opts.health_check_ip, health.clone());
    let client = watch::client(opts.kubeconfig.as_deref())
        .await
        .map_err(KubeModeError::Kube)?;
    let _lock = datapath::lock(&opts.datapath)?;
    let new_pins = crate::pin_guard::NewPins::note(&opts.datapath.pin_dir);
    let node = NodeDatapath::start(&opts)?;
    new_pins.keep();
    let mut source = SourceOptions::new(opts.node.clone());
    source.internal_scope = node.socket.is_some();
    let (mut updates, _source_task) = watch::spawn(client, source, Some(kube_metrics));
    let mut daemon = Daemon {
        node,
        metrics,
        health,
        service_health,
        applied_generation: 0,
        reported_skips: Vec::new(),
        reported_invalid: Vec::new(),
    };

    let mut ticks = Ticks::new()?;
    let mut retry = tokio::time::interval(RETRY);
    let mut latest: Option<Arc<DesiredStateUpdate>> = None;
    loop {
        tokio::select! {
            signal = ticks.stop.requested() => {
                info!("{signal} received");
                break;
            }
            _ = ticks.hangup.recv() => info!("SIGHUP received; kube mode follows the API server, nothing to reload"),
            _ = ticks.neigh.tick() => daemon.node.engine.resolve_neighbour_misses(),
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
                daemon.health.queued();
            }
            _ = retry.tick() => {}
        }
        if let Some(update) = &latest {
            daemon.sync(update).await;
        }
    }
    info!("exiting; the datapath stays attached and keeps forwarding (ferrolb cleanup removes it)");
    Ok(())
}
