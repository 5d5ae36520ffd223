//! ferrolb's socket programs as a peer: attached to a cgroup of perf-lab's own (under the
//! machine's cgroup2 mount, never its root), reading balancer maps that the daemon's sync
//! engine fills with the service set as internal (socket-scope) frontends, and the target
//! port of every endpoint written through `SocketMaps`, as `ferrolb kube` writes them.
//!
//! A socket belongs to the cgroup of the process that opens it, and the threads of a
//! process share one cgroup (cgroup v2 moves whole processes), so for this peer's runs
//! perf-lab moves itself into the cgroup and back to where it was after each run
//! ([`Inside`]). The other peers' clients open their sockets outside it, where nothing
//! rewrites their connects to the same ClusterIPs.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use lb_daemon::{
    loader,
    maps::{BalancerMaps, MapsError, SocketMaps},
    sync::{DatapathParams, SyncEngine, SyncError},
};
use lb_lab::{cgroup::LabCgroup, LabError};
use lb_model::{DesiredState, Frontend, Protocol, Scope, SocketTarget};

use crate::{
    measured::NotMeasured,
    netns::PinDir,
    services::{ServiceSet, SERVICE_PORT},
};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("loading: {0}")]
    Loader(#[from] loader::LoaderError),
    #[error("maps: {0}")]
    Maps(#[from] MapsError),
    #[error("sync: {0}")]
    Sync(#[from] SyncError),
    #[error("perf-lab's cgroup: {0}")]
    Cgroup(#[from] LabError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no cgroup v2 line in /proc/self/cgroup")]
    NoOwnCgroup,
}

/// The engine writes a datapath config whatever runs; only the flow-hash seed in it
/// matters to the socket programs (no XDP balancer encapsulates anything here).
const PARAMS: DatapathParams = DatapathParams {
    encap_source: Ipv4Addr::new(198, 18, 2, 1),
    encap_source6: None,
    nexthop_ttl: Duration::from_secs(1),
    icmp_limit: lb_daemon::sync::IcmpLimit::DEFAULT,
    new_flow_budget: lb_daemon::sync::NewFlowBudget::DEFAULT,
};

/// The socket programs on perf-lab's cgroup. Fields drop in order: the map handles, then
/// the pins (the links with them, which detaches the programs), then the cgroup.
pub struct SocketBalancer {
    engine: SyncEngine,
    targets: SocketMaps,
    _pin: PinDir,
    /// Always `Some` until dropped; `None` once `Drop` decided to leave it in place.
    cgroup: Option<LabCgroup>,
}

impl SocketBalancer {
    /// The balancer's maps sized for `largest` (its XDP program is loaded for them but
    /// attached nowhere), the sync engine on them, and the socket programs attached to a
    /// new cgroup `flbperf<pid>-<role>`.
    pub fn install(role: &str, largest: &ServiceSet) -> Result<Self, SocketError> {
        let pin = PinDir::new(role);
        drop(loader::load_balancer_sized(
            &pin.path,
            &largest.ferrolb_map_sizes(),
        )?);
        let engine = SyncEngine::adopt(BalancerMaps::open(&pin.path)?, &PARAMS)?;
        let targets = SocketMaps::open(&pin.path)?;
        let cgroup = LabCgroup::create("perf", role)?;
        loader::install_socket(&cgroup.path, &pin.path)?;
        Ok(Self {
            engine,
            targets,
            _pin: pin,
            cgroup: Some(cgroup),
        })
    }

    fn cgroup(&self) -> &Path {
        &self.cgroup.as_ref().expect("cgroup until dropped").path
    }

    /// Programs `set` as internal frontends through the sync engine, with every endpoint's
    /// target port written before and the stale ones pruned after (make-before-break, as
    /// kube mode syncs); `Ok(Some(why))` when ferrolb cannot hold it. The endpoints listen
    /// on the service port, so each target names that port: the programs would keep it
    /// without one, but kube mode writes one for every endpoint, so the lookup hits here
    /// as it does there.
    pub fn program(&mut self, set: &ServiceSet) -> Result<Option<NotMeasured>, SocketError> {
        let desired = internal(set);
        self.targets.set_targets(&targets(&desired))?;
        match self.engine.apply(&desired) {
            Ok(_) => {}
            Err(SyncError::Plan(e)) => return Ok(Some(NotMeasured::cannot_hold(e))),
            Err(e) => return Err(e.into()),
        }
        self.targets.prune_targets()?;
        Ok(None)
    }

    /// Connects the programs balanced to the target service of `set` so far (its
    /// per-service counter), for the log.
    pub fn selections(&self, set: &ServiceSet) -> Option<u64> {
        let frontend = Frontend {
            vip: set.vip(set.target()).into(),
            port: SERVICE_PORT,
            protocol: Protocol::Tcp,
            scope: Scope::Internal,
        };
        let id = self.engine.state().services.get(&frontend)?.service_id;
        let counter = self.engine.maps().service_counter(id).ok()?;
        Some(counter.packets)
    }

    /// This process in the programs' cgroup until the guard drops: every socket it opens
    /// meanwhile is served by them.
    pub fn enter(&self) -> Result<Inside, SocketError> {
        let home = own_cgroup()?;
        move_to(self.cgroup())?;
        Ok(Inside { home })
    }
}

impl Drop for SocketBalancer {
    fn drop(&mut self) {
        // Removing a lab cgroup kills whatever still runs in it: if this process could not
        // get out (see `Inside`), the directory stays for the next run's stale removal.
        if own_cgroup().is_ok_and(|own| own == self.cgroup()) {
            tracing::warn!(cgroup = %self.cgroup().display(), "perf-lab is still in its socket cgroup: left in place");
            std::mem::forget(self.cgroup.take());
        }
    }
}

/// Every endpoint of every frontend of `desired` at the service port.
fn targets(desired: &DesiredState) -> Vec<SocketTarget> {
    desired
        .services
        .iter()
        .flat_map(|(frontend, spec)| {
            spec.backends.iter().map(|b| SocketTarget {
                frontend: *frontend,
                endpoint: b.address,
                target_port: SERVICE_PORT,
            })
        })
        .collect()
}

/// `set` as the socket programs serve it: every service an internal frontend.
fn internal(set: &ServiceSet) -> DesiredState {
    let external = set.desired_state();
    DesiredState {
        rejecting: Default::default(),
        services: external
            .services
            .into_iter()
            .map(|(frontend, spec)| (frontend.in_scope(Scope::Internal), spec))
            .collect(),
        settings: external.settings,
    }
}

/// perf-lab inside a cgroup; moved back to `home` on drop.
pub struct Inside {
    home: PathBuf,
}

impl Drop for Inside {
    fn drop(&mut self) {
        // The mount's root takes any process: out of the programs' cgroup at least.
        let fallback = loader::default_cgroup_root();
        if let Err(e) = move_to(&self.home) {
            match fallback.map(|root| move_to(&root)) {
                Ok(Ok(())) => tracing::warn!(error = %e, "perf-lab moved to the cgroup2 root"),
                _ => tracing::warn!(error = %e, "perf-lab stays in its socket cgroup"),
            }
        }
    }
}

/// The cgroup v2 directory this process is in.
fn own_cgroup() -> Result<PathBuf, SocketError> {
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|source| SocketError::Io {
        path: "/proc/self/cgroup".into(),
        source,
    })?;
    let relative = cgroup2_path(&own).ok_or(SocketError::NoOwnCgroup)?;
    Ok(loader::default_cgroup_root()?.join(relative))
}

/// The v2 line of a /proc/<pid>/cgroup text (`0::/path`), as a path relative to the mount.
fn cgroup2_path(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim_start_matches('/'))
}

/// Moves this whole process (every thread) into the cgroup directory `dir`.
fn move_to(dir: &Path) -> Result<(), SocketError> {
    let procs = dir.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string()).map_err(|source| SocketError::Io {
        path: procs,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v2_line_of_a_hybrid_host() {
        let text = "9:name=systemd:/\n4:memory:/a/b\n0::/\n";
        assert_eq!(cgroup2_path(text), Some(""));
        assert_eq!(
            cgroup2_path("0::/user.slice/x.scope\n"),
            Some("user.slice/x.scope")
        );
        assert_eq!(cgroup2_path("4:memory:/a\n"), None);
    }

    #[test]
    fn every_service_becomes_an_internal_frontend() {
        let set = ServiceSet {
            services: 5,
            backends: 3,
        };
        let state = internal(&set);
        assert_eq!(state.services.len(), 5);
        assert!(state.services.keys().all(|f| f.scope == Scope::Internal));
        let external = set.desired_state();
        for (f, spec) in &external.services {
            assert_eq!(state.services[&f.in_scope(Scope::Internal)], *spec);
        }
        let targets = targets(&state);
        assert_eq!(targets.len(), 15);
        assert!(targets
            .iter()
            .all(|t| t.target_port == SERVICE_PORT && t.frontend.scope == Scope::Internal));
    }
}
