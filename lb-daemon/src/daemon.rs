//! `ferrolb run`: install or adopt the datapath, keep the maps equal to the config file,
//! serve neighbour-resolution requests from the datapath, exit leaving forwarding running.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

use aya::programs::XdpMode;
use lb_common::{LbConfig, CONFIG_F_READY, CONFIG_F_V6_READY};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::{
    config::{self, ConfigError},
    host::{self, ForwardingError, HostError},
    loader::{self, Attachment, LoaderError},
    maps::{LbMaps, MapsError},
    model::{DesiredState, Frontend, Settings},
    planner::{self, KernelState, PlanError},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Neigh(#[from] HostError),
    #[error(transparent)]
    Forwarding(#[from] ForwardingError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("kubernetes: {0}")]
    Kube(lb_kube::watch::SourceError),
    #[error("metrics: {0}")]
    Metrics(lb_kube::metrics::MetricsError),
    #[error("http server: {0}")]
    Http(lb_kube::http::HttpError),
}

/// How often every backend's next hop is asked to be revalidated.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(10);

/// Where the balancer runs and how it forwards; shared by every source.
pub struct DatapathOptions {
    pub iface: String,
    pub pin_dir: PathBuf,
    pub xdp_mode: XdpMode,
    pub encap_source: Option<Ipv4Addr>,
    /// IP6IP6 source; `None` takes the interface's first global IPv6 address, and without
    /// one IPv6 services are passed (`pass_not_ready`).
    pub encap_source6: Option<std::net::Ipv6Addr>,
    pub nexthop_ttl: Duration,
    pub map_sizes: loader::MapSizes,
}

pub struct RunOptions {
    pub datapath: DatapathOptions,
    pub config: PathBuf,
    pub poll_interval: Duration,
}

/// The installed datapath and the daemon's view of its maps.
pub(crate) struct Syncer {
    pub(crate) maps: LbMaps,
    pub(crate) state: KernelState,
    lb_config: LbConfig,
    /// The settings `state` was last planned with; a change plans everything again.
    planned_settings: Option<Settings>,
}

impl Syncer {
    /// Installs (or adopts) the balancer on the interface and reads back what the pinned
    /// maps hold, so the first plan only writes differences.
    pub(crate) fn start(opts: &DatapathOptions, settings: &Settings) -> Result<Self, DaemonError> {
        let encap_source = match opts.encap_source {
            Some(addr) => addr,
            None => host::interface_ipv4(&opts.iface)?,
        };
        host::ensure_forwarding(&opts.iface, "ipv4")?;
        match loader::install_balancer(&opts.iface, &opts.pin_dir, opts.xdp_mode, &opts.map_sizes)?
        {
            Attachment::New => {
                info!(iface = %opts.iface, pin_dir = %opts.pin_dir.display(), "attached XDP balancer")
            }
            Attachment::Replaced => {
                info!(iface = %opts.iface, pin_dir = %opts.pin_dir.display(), "adopted pinned datapath; program replaced in place")
            }
        }
        let mut maps = LbMaps::open(&opts.pin_dir)?;
        let state = maps.read_state()?;
        if !state.services.is_empty() {
            info!(
                services = state.services.len(),
                backends = state.backends.len(),
                "adopted pinned state"
            );
        }
        let encap_source6 = match opts.encap_source6 {
            Some(addr) => Some(addr),
            None => host::interface_ipv6(&opts.iface)?,
        };
        if encap_source6.is_some() {
            host::ensure_forwarding(&opts.iface, "ipv6")?;
        }
        let lb_config = LbConfig {
            encap_src_v4: encap_source.octets(),
            flow_hash_seed: settings.flow_hash_seed,
            nexthop_ttl_ns: opts.nexthop_ttl.as_nanos() as u64,
            flags: if encap_source6.is_some() {
                CONFIG_F_READY | CONFIG_F_V6_READY
            } else {
                CONFIG_F_READY
            },
            _pad: 0,
            encap_src_v6: encap_source6.map_or([0; 16], |a| a.octets()),
        };
        maps.write_config(&lb_config)?;
        match encap_source6 {
            Some(v6) => info!(%encap_source, encap_source6 = %v6, "datapath ready"),
            None => {
                info!(%encap_source, "datapath ready; no IPv6 source address, IPv6 services are passed")
            }
        }
        Ok(Self {
            maps,
            state,
            lb_config,
            planned_settings: None,
        })
    }

    /// Plans and applies `desired`, comparing it whole with the maps' state. On a failed
    /// write the bookkeeping is re-read from the maps, so the next attempt starts from the
    /// truth.
    pub(crate) fn apply(&mut self, desired: &DesiredState) -> Result<usize, DaemonError> {
        self.write_config(desired)?;
        let (ops, next) = planner::plan(&self.state, desired)?;
        if let Err(e) = self.maps.apply(&ops) {
            self.recover(&ops);
            return Err(e.into());
        }
        self.state = next;
        self.planned_settings = Some(desired.settings);
        Ok(ops.len())
    }

    /// Like [`Self::apply`], but plans only `changed` (the frontends whose specs may differ
    /// from what was applied last) when it can: after a whole plan with the same settings.
    /// `None` plans everything.
    pub(crate) fn apply_changes(
        &mut self,
        desired: &DesiredState,
        changed: Option<&BTreeSet<Frontend>>,
    ) -> Result<usize, DaemonError> {
        let incremental =
            self.state.can_plan_changes() && self.planned_settings == Some(desired.settings);
        let Some(changed) = changed.filter(|_| incremental) else {
            return self.apply(desired);
        };
        self.write_config(desired)?;
        let (ops, undo) = planner::plan_changes(&mut self.state, desired, changed)?;
        if let Err(e) = self.maps.apply(&ops) {
            self.state.revert(undo);
            self.recover(&ops);
            return Err(e.into());
        }
        Ok(ops.len())
    }

    fn write_config(&mut self, desired: &DesiredState) -> Result<(), DaemonError> {
        let config = LbConfig {
            flow_hash_seed: desired.settings.flow_hash_seed,
            ..self.lb_config
        };
        if config != self.lb_config {
            self.maps.write_config(&config)?;
            self.lb_config = config;
        }
        Ok(())
    }

    /// After `ops` failed half-way, with `state` as before them: start again from what the
    /// maps hold.
    fn recover(&mut self, ops: &[planner::MapOp]) {
        match self.maps.read_state() {
            Ok(state) => self.state = state,
            // Keep the old bookkeeping, but a service may already have flipped to a region
            // the plan wrote: keep those regions from being handed out again.
            Err(read) => {
                warn!(error = %read, "cannot re-read the maps after a failed write");
                self.state.reserve_written(ops);
            }
        }
    }

    /// Forwards the datapath's neighbour-resolution requests to the kernel.
    pub(crate) fn resolve_neighbour_misses(&mut self) {
        match self.maps.drain_neigh_misses() {
            Ok(misses) => {
                for (backend_id, miss) in misses {
                    let Some(hop) = crate::model::addr_from_bytes(&miss.nexthop, miss.family)
                    else {
                        warn!(
                            backend_id,
                            family = miss.family,
                            "neighbour miss of an unknown family"
                        );
                        continue;
                    };
                    if let Err(e) = host::request_resolution(hop, miss.ifindex) {
                        warn!(backend_id, nexthop = %hop, error = %e, "neighbour resolution request failed");
                    }
                }
            }
            Err(e) => warn!(error = %e, "reading neighbour misses"),
        }
    }
}

/// The timers and signals every source's loop shares.
pub(crate) struct Ticks {
    pub(crate) terminate: tokio::signal::unix::Signal,
    pub(crate) interrupt: tokio::signal::unix::Signal,
    /// The datapath's neighbour requests are served within this period.
    pub(crate) neigh: tokio::time::Interval,
    /// XDP-forwarded packets never confirm a neighbour entry, so the kernel would let it go
    /// stale and keep a changed MAC unnoticed. Asking again (NTF_USE) makes it re-probe.
    pub(crate) refresh: tokio::time::Interval,
}

impl Ticks {
    pub(crate) fn new() -> Result<Self, DaemonError> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).map_err(DaemonError::Signal)?,
            interrupt: signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?,
            neigh: tokio::time::interval(Duration::from_millis(50)),
            refresh: tokio::time::interval(NEIGHBOUR_REFRESH),
        })
    }
}

pub(crate) fn backend_addresses(desired: &DesiredState) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = desired
        .services
        .values()
        .flat_map(|s| s.backends.iter().map(|b| b.address))
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

pub(crate) fn warm_neighbours(desired: &DesiredState) {
    for (addr, e) in host::warm(&backend_addresses(desired)) {
        warn!(backend = %addr, error = %e, "cannot request neighbour resolution");
    }
}

/// `ferrolb run`: the bare-metal mode, services from a YAML file watched for changes.
pub async fn run(opts: RunOptions) -> Result<(), DaemonError> {
    let mut desired = config::load(&opts.config)?;
    let mut syncer = Syncer::start(&opts.datapath, &desired.settings)?;
    warm_neighbours(&desired);
    let ops = syncer.apply(&desired)?;
    info!(services = desired.services.len(), ops, "synced");

    let mut last_text = std::fs::read_to_string(&opts.config).ok();
    let mut dirty = false;
    let mut ticks = Ticks::new()?;
    let mut config_tick = tokio::time::interval(opts.poll_interval);
    loop {
        tokio::select! {
            _ = ticks.terminate.recv() => break,
            _ = ticks.interrupt.recv() => break,
            _ = ticks.refresh.tick() => warm_neighbours(&desired),
            _ = ticks.neigh.tick() => syncer.resolve_neighbour_misses(),
            _ = config_tick.tick() => {
                let text = std::fs::read_to_string(&opts.config).ok();
                if text == last_text && !dirty {
                    continue;
                }
                last_text = text.clone();
                let Some(text) = text else {
                    error!(config = %opts.config.display(), "config file unreadable; keeping the running state");
                    continue;
                };
                match config::parse(&text) {
                    Ok(next) => {
                        if next != desired {
                            warm_neighbours(&next);
                        }
                        match syncer.apply(&next) {
                            Ok(ops) => {
                                info!(services = next.services.len(), ops, "config change applied");
                                desired = next;
                                dirty = false;
                            }
                            Err(e) => {
                                error!(error = %e, "config change not applied; will retry");
                                dirty = true;
                            }
                        }
                    }
                    Err(e) => {
                        error!(config = %opts.config.display(), error = %e, "config rejected; keeping the running state");
                        dirty = false;
                    }
                }
            }
        }
    }
    info!("exiting; the datapath stays attached and keeps forwarding (ferrolb cleanup removes it)");
    Ok(())
}
