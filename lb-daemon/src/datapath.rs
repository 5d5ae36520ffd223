//! Starting the balancer on an interface, shared by both daemon modes: host set-up
//! (forwarding, encapsulation sources), installing or adopting the programs and maps, and
//! handing them to the sync engine; plus the timers and signals both modes' loops share.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::programs::XdpMode;
use lb_model::DesiredState;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::{
    host::{self, ForwardingError, HostError},
    loader::{self, Attachment, DatapathLock, LoaderError, LockError},
    maps::{BalancerMaps, MapsError},
    sync::{DatapathParams, SyncEngine, SyncError},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Forwarding(#[from] ForwardingError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Lock(#[from] LockError),
}

/// How often every backend's next hop is asked to be revalidated.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(10);

/// Where the balancer runs and how it forwards; shared by every source.
pub struct DatapathOptions {
    pub iface: String,
    pub pin_dir: PathBuf,
    pub xdp_mode: XdpMode,
    /// Whether the balancer reads VLAN tags from the packet's metadata too.
    pub vlan_metadata: loader::VlanMetadata,
    pub encap_source: Option<Ipv4Addr>,
    /// IP6IP6 source; `None` takes the interface's first global IPv6 address, and without
    /// one IPv6 services are passed (`pass_not_ready`).
    pub encap_source6: Option<Ipv6Addr>,
    pub nexthop_ttl: Duration,
    pub icmp_limit: crate::sync::IcmpLimit,
    pub new_flow_budget: crate::sync::NewFlowBudget,
    pub map_sizes: loader::MapSizes,
    /// Where the pin directory's and the interface's lock files live.
    pub lock_dir: PathBuf,
}

/// Takes the datapath's locks (its pin directory and its interface) for as long as the
/// returned guard lives; a second daemon is refused with the holder's PID.
pub fn lock(opts: &DatapathOptions) -> Result<DatapathLock, StartError> {
    let ifindex = loader::ifindex(&opts.iface)?;
    Ok(DatapathLock::acquire(
        &opts.lock_dir,
        &opts.pin_dir,
        ifindex,
    )?)
}

/// Installs (or adopts) the balancer on the interface and hands its maps to a sync engine
/// that knows what they hold, so the first plan only writes differences.
pub fn start(opts: &DatapathOptions) -> Result<SyncEngine, StartError> {
    let params = install(opts)?;
    adopt(opts, &params)
}

/// Host set-up and the balancer's programs and maps, installed or adopted; returns how
/// the datapath forwards. Programs that share the balancer's maps (the socket programs)
/// load after this, before [`adopt`].
pub fn install(opts: &DatapathOptions) -> Result<DatapathParams, StartError> {
    let encap_source = match opts.encap_source {
        Some(addr) => addr,
        None => host::interface_ipv4(&opts.iface)?,
    };
    host::ensure_forwarding(&opts.iface, "ipv4")?;
    let pin_dir = opts.pin_dir.display();
    let (attachment, vlan_tags) = loader::install_balancer(
        &opts.iface,
        &opts.pin_dir,
        opts.xdp_mode,
        &opts.map_sizes,
        opts.vlan_metadata,
    )?;
    let vlan_tags = vlan_tags.as_str();
    match attachment {
        Attachment::New => info!(iface = %opts.iface, %pin_dir, vlan_tags, "attached XDP balancer"),
        Attachment::Replaced => {
            info!(iface = %opts.iface, %pin_dir, vlan_tags, "adopted pinned datapath; program replaced in place")
        }
    }
    let encap_source6 = match opts.encap_source6 {
        Some(addr) => Some(addr),
        None => host::interface_ipv6(&opts.iface)?,
    };
    if encap_source6.is_some() {
        host::ensure_forwarding(&opts.iface, "ipv6")?;
    }
    Ok(DatapathParams {
        encap_source,
        encap_source6,
        nexthop_ttl: opts.nexthop_ttl,
        icmp_limit: opts.icmp_limit,
        new_flow_budget: opts.new_flow_budget,
    })
}

/// Opens the pinned maps (the socket programs' service map too, when installed) and hands
/// them to a sync engine that has read what they hold.
pub fn adopt(opts: &DatapathOptions, params: &DatapathParams) -> Result<SyncEngine, StartError> {
    let engine = SyncEngine::adopt(BalancerMaps::open(&opts.pin_dir)?, params)?;
    let state = engine.state();
    if !state.services.is_empty() {
        info!(
            services = state.services.len(),
            backends = state.backends.len(),
            "adopted pinned state"
        );
    }
    let encap_source = params.encap_source;
    match params.encap_source6 {
        Some(v6) => info!(%encap_source, encap_source6 = %v6, "datapath ready"),
        None => {
            info!(%encap_source, "datapath ready; no IPv6 source address, IPv6 services are passed")
        }
    }
    Ok(engine)
}

/// What of the installed balancer is gone, if anything: its interface (or the interface
/// was re-created under another index), its pinned link or one of the maps the programs
/// need (`ferrolb cleanup --force`, a removed pin, a deleted interface).
pub fn vanished(opts: &DatapathOptions, ifindex: u32) -> Option<String> {
    match loader::ifindex(&opts.iface) {
        Err(_) => return Some(format!("interface {} is gone", opts.iface)),
        Ok(now) if now != ifindex => {
            return Some(format!(
                "interface {} was re-created (index {ifindex} is now {now})",
                opts.iface
            ))
        }
        Ok(_) => {}
    }
    [
        loader::XDP_LINK_PIN,
        lb_common::map_names::SERVICES,
        lb_common::map_names::BACKENDS,
        lb_common::map_names::MAGLEV,
        lb_common::map_names::FLOWS,
        lb_common::map_names::CONFIG,
    ]
    .iter()
    .map(|name| opts.pin_dir.join(name))
    .find(|path| !pinned(path))
    .map(|path| format!("pin {} is gone", path.display()))
}

fn pinned(path: &Path) -> bool {
    // Anything but "not found" (a permission problem, say) is not evidence of removal.
    path.try_exists().unwrap_or(true)
}

/// The timers and signals every source's loop shares.
pub(crate) struct Ticks {
    pub(crate) stop: StopSignals,
    pub(crate) hangup: tokio::signal::unix::Signal,
    /// The datapath's neighbour requests are served within this period.
    pub(crate) neigh: tokio::time::Interval,
    /// XDP-forwarded packets never confirm a neighbour entry, so the kernel would let it go
    /// stale and keep a changed MAC unnoticed. Asking again (NTF_USE) makes it re-probe.
    pub(crate) refresh: tokio::time::Interval,
}

impl Ticks {
    pub(crate) fn new() -> Result<Self, StartError> {
        Ok(Self {
            stop: StopSignals {
                terminate: signal(SignalKind::terminate()).map_err(StartError::Signal)?,
                interrupt: signal(SignalKind::interrupt()).map_err(StartError::Signal)?,
            },
            hangup: signal(SignalKind::hangup()).map_err(StartError::Signal)?,
            neigh: tokio::time::interval(Duration::from_millis(50)),
            refresh: tokio::time::interval(NEIGHBOUR_REFRESH),
        })
    }
}

/// SIGTERM and SIGINT: both stop the daemon cleanly, leaving the datapath forwarding.
pub(crate) struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Resolves when either arrives, with the signal's name.
    pub(crate) async fn requested(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

fn backend_addresses(desired: &DesiredState) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = desired
        .services
        .values()
        .flat_map(|s| s.backends.iter().map(|b| b.address))
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// Asks the kernel to resolve (or re-probe) every backend's next hop.
pub(crate) fn warm_neighbours(desired: &DesiredState) {
    for (addr, e) in host::warm(&backend_addresses(desired)) {
        warn!(backend = %addr, error = %e, "cannot request neighbour resolution");
    }
}
