//! `ferrolb run`: the bare-metal mode. Services come from a YAML file, watched for changes;
//! a rejected file leaves the running state untouched. The daemon owns its datapath (a
//! lock on the pin directory and the interface), reloads on SIGHUP, exits on
//! SIGTERM/SIGINT leaving the datapath forwarding, and re-installs the datapath when its
//! link or maps vanish under it. At the network's edge (`crate::edge`) it also runs the
//! file's health checks, programming the maps with failing backends drained, and
//! announces the VIPs it can serve to a routing daemon.

mod settle;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use lb_model::DesiredState;
use tracing::{error, info, warn};

use crate::{
    capacity::{self, CapacityError},
    config::{self, ConfigError},
    datapath::{self, DatapathOptions, StartError, Ticks},
    edge::{Edge, EdgeError, EdgeOptions, ANNOUNCE_TICK},
    health::{HealthChecks, Outcome},
    loader,
    pin_guard::NewPins,
    sync::{SyncEngine, SyncError},
};
use settle::Settle;

#[derive(Debug, thiserror::Error)]
pub enum FileModeError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("configuration does not fit the maps: {0}")]
    Capacity(#[from] CapacityError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Edge(#[from] EdgeError),
}

pub struct RunOptions {
    pub datapath: DatapathOptions,
    pub config: PathBuf,
    pub poll_interval: Duration,
    /// How long the file must read the same before a change is taken.
    pub settle: Duration,
    /// Health checks' metrics and VIP announcement (`edge`).
    pub edge: EdgeOptions,
}

/// How often the daemon checks that its link and maps are still there.
const WATCHDOG: Duration = Duration::from_millis(250);
/// Back-off of a change the maps refused: from the first to the longest wait, doubling.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_LONGEST: Duration = Duration::from_secs(60);

/// Parses and checks a config against the maps' capacities; with its health checks.
fn validate(
    text: &str,
    opts: &DatapathOptions,
) -> Result<(DesiredState, HealthChecks), FileModeError> {
    let (desired, checks) = config::parse_with_health(text)?;
    capacity::check(&desired, &opts.map_sizes)?;
    Ok((desired, checks))
}

/// Watches the config file and applies every accepted change; see the module docs.
pub async fn run(opts: RunOptions) -> Result<(), FileModeError> {
    let text = std::fs::read_to_string(&opts.config).map_err(|source| ConfigError::Read {
        path: opts.config.display().to_string(),
        source,
    })?;
    let (desired, checks) = validate(&text, &opts.datapath)?;
    let _lock = datapath::lock(&opts.datapath)?;
    let ifindex = loader::ifindex(&opts.datapath.iface).map_err(StartError::from)?;
    let mut edge = Edge::start(&opts.edge, &opts.datapath).await?;
    edge.configure(&desired, &checks);
    let new_pins = NewPins::note(&opts.datapath.pin_dir);
    let engine = program(&opts.datapath, &edge.effective(&desired))?;
    new_pins.keep();
    edge.announce(&edge.effective(&desired));
    let mut settle = Settle::new(opts.settle);
    settle.take(&text);
    let mut daemon = Daemon {
        opts: &opts,
        engine,
        desired,
        checks,
        edge,
        ifindex,
        settle,
        unreadable: None,
        retry: None,
        vanished: None,
    };

    let mut ticks = Ticks::new()?;
    let mut config_tick = tokio::time::interval(opts.poll_interval);
    let mut watchdog = tokio::time::interval(WATCHDOG);
    let mut announce_tick = tokio::time::interval(ANNOUNCE_TICK);
    loop {
        tokio::select! {
            signal = ticks.stop.requested() => {
                info!("{signal} received");
                break;
            }
            _ = ticks.hangup.recv() => {
                info!(config = %opts.config.display(), "SIGHUP received; reloading the config file");
                daemon.reload_now();
            }
            _ = ticks.refresh.tick() => datapath::warm_neighbours(&daemon.desired),
            _ = ticks.neigh.tick() => daemon.engine.resolve_neighbour_misses(),
            _ = config_tick.tick() => daemon.poll(),
            _ = watchdog.tick() => daemon.check_datapath(),
            _ = announce_tick.tick() => daemon.announce(),
            outcome = daemon.edge.next_check() => daemon.health_checked(outcome),
        }
    }
    daemon.edge.shutdown();
    info!("exiting; the datapath stays attached and keeps forwarding (ferrolb cleanup removes it)");
    Ok(())
}

/// Installs (or adopts) the datapath and programs `desired` (as health checks leave it)
/// into it.
fn program(opts: &DatapathOptions, desired: &DesiredState) -> Result<SyncEngine, FileModeError> {
    let mut engine = datapath::start(opts)?;
    datapath::warm_neighbours(desired);
    let applied = engine.apply(desired)?;
    info!(
        services = desired.services.len(),
        ops = applied.ops,
        "synced"
    );
    Ok(engine)
}

/// A change the maps refused, waiting for its next try.
struct Retry {
    desired: DesiredState,
    checks: HealthChecks,
    at: Instant,
    wait: Duration,
}

struct Daemon<'a> {
    opts: &'a RunOptions,
    engine: SyncEngine,
    /// The file's services as last applied (health checks drain from this).
    desired: DesiredState,
    checks: HealthChecks,
    edge: Edge,
    ifindex: u32,
    settle: Settle,
    /// The read error last logged, so an unreadable file is logged once per error.
    unreadable: Option<String>,
    retry: Option<Retry>,
    /// What was found missing, while re-installing has not succeeded yet.
    vanished: Option<String>,
}

impl Daemon<'_> {
    fn read(&mut self) -> Option<String> {
        match std::fs::read_to_string(&self.opts.config) {
            Ok(text) => {
                self.unreadable = None;
                Some(text)
            }
            Err(e) => {
                let message = e.to_string();
                if self.unreadable.as_ref() != Some(&message) {
                    error!(config = %self.opts.config.display(), error = %message, "config file unreadable; keeping the running state");
                    self.unreadable = Some(message);
                }
                None
            }
        }
    }

    fn poll(&mut self) {
        if let Some(text) = self.read() {
            if let Some(text) = self.settle.observe(text, Instant::now()) {
                self.consider(&text);
                return;
            }
        }
        if self.retry.as_ref().is_some_and(|r| Instant::now() >= r.at) {
            let retry = self.retry.take().expect("checked");
            self.apply(retry.desired, retry.checks, retry.wait);
        }
    }

    /// SIGHUP: the file as it is now, at once, applied even if it did not change.
    fn reload_now(&mut self) {
        if let Some(text) = self.read() {
            self.settle.take(&text);
            self.consider(&text);
        }
    }

    fn consider(&mut self, text: &str) {
        match validate(text, &self.opts.datapath) {
            Ok((next, checks)) => self.apply(next, checks, Duration::ZERO),
            Err(e) => {
                error!(config = %self.opts.config.display(), error = %e, "config rejected; keeping the running state");
            }
        }
    }

    /// Applies `next` with its health checks (failing backends drained); after a failure
    /// it is tried again after a wait that doubles from [`RETRY_FIRST`] (`last_wait` is
    /// the wait before this try).
    fn apply(&mut self, next: DesiredState, checks: HealthChecks, last_wait: Duration) {
        self.retry = None;
        if next != self.desired {
            datapath::warm_neighbours(&next);
        }
        self.edge.configure(&next, &checks);
        let effective = self.edge.effective(&next);
        match self.engine.apply(&effective) {
            Ok(applied) => {
                info!(
                    services = next.services.len(),
                    ops = applied.ops,
                    "config change applied"
                );
                self.desired = next;
                self.checks = checks;
                self.edge.announce(&effective);
            }
            Err(e) => {
                let wait = (last_wait * 2).clamp(RETRY_FIRST, RETRY_LONGEST);
                error!(error = %e, retry_in_s = wait.as_secs(), "config change not applied; will retry");
                self.retry = Some(Retry {
                    desired: next,
                    checks,
                    at: Instant::now() + wait,
                    wait,
                });
            }
        }
    }

    /// A health check's result: when a backend changed health, the maps get the running
    /// file's services with the failing backends drained, and the announcement follows.
    fn health_checked(&mut self, outcome: Outcome) {
        if !self.edge.record(outcome) {
            return;
        }
        let effective = self.edge.effective(&self.desired);
        match self.engine.apply(&effective) {
            Ok(applied) => {
                info!(ops = applied.ops, "health change applied");
                self.edge.announce(&effective);
            }
            // A pending retry carries the newer file, applied with the health of its turn.
            Err(e) if self.retry.is_some() => {
                error!(error = %e, "health change not applied; the pending change retries")
            }
            Err(e) => {
                error!(error = %e, retry_in_s = RETRY_FIRST.as_secs(), "health change not applied; will retry");
                self.retry = Some(Retry {
                    desired: self.desired.clone(),
                    checks: self.checks.clone(),
                    at: Instant::now() + RETRY_FIRST,
                    wait: RETRY_FIRST,
                });
            }
        }
    }

    /// The announcement tick: announce what the maps can serve now, withdraw the rest
    /// (also when the datapath went).
    fn announce(&mut self) {
        let effective = self.edge.effective(&self.desired);
        self.edge.announce(&effective);
    }

    /// Re-installs the datapath if its link or maps vanished (or its interface was
    /// re-created): the daemon's job is to keep the maps equal to the file, and a
    /// re-install restores forwarding within a watchdog period without waiting for a
    /// supervisor to restart it.
    fn check_datapath(&mut self) {
        let Some(what) = datapath::vanished(&self.opts.datapath, self.ifindex) else {
            return;
        };
        if self.vanished.as_ref() != Some(&what) {
            warn!(%what, "the datapath vanished under the daemon; re-installing");
        }
        self.vanished = Some(what);
        let reinstalled = loader::ifindex(&self.opts.datapath.iface)
            .map_err(|e| FileModeError::Start(e.into()))
            .and_then(|ifindex| {
                let effective = self.edge.effective(&self.desired);
                Ok((ifindex, program(&self.opts.datapath, &effective)?))
            });
        match reinstalled {
            Ok((ifindex, engine)) => {
                self.engine = engine;
                self.ifindex = ifindex;
                self.vanished = None;
                info!(
                    services = self.desired.services.len(),
                    "datapath re-installed"
                );
            }
            Err(e) => error!(error = %e, "cannot re-install the datapath; trying again"),
        }
    }
}
