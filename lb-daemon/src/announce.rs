//! VIP announcement for scale-out over BGP through an existing routing daemon: a VIP is
//! announced (its host route is in the announcement table, `host::announce`) exactly while
//! this node can serve it: the datapath is attached to an interface that is up, and at
//! least one service on the VIP has a backend in its Maglev table (health checks drain
//! failing ones). It is withdrawn when the last backend goes, when the datapath goes, and
//! when the daemon stops. See docs/bgp.md for the routing daemon's side.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
};

use lb_model::DesiredState;
use tracing::{info, warn};

use crate::{host, loader::XDP_LINK_PIN};

/// The VIPs a node serving `effective` (the desired state after health checks) announces
/// while its datapath is attached.
pub fn servable_vips(effective: &DesiredState) -> BTreeSet<IpAddr> {
    effective
        .services
        .iter()
        .filter(|(_, spec)| spec.active_backends() > 0)
        .map(|(frontend, _)| frontend.vip)
        .collect()
}

/// Whether the balancer still forwards: its link is pinned and its interface is up.
pub fn datapath_attached(iface: &str, pin_dir: &Path) -> bool {
    pin_dir.join(XDP_LINK_PIN).exists() && host::interface_up(iface)
}

/// Keeps the announcement table equal to what this node can serve.
pub struct Announcer {
    table: u32,
    iface: String,
    pin_dir: PathBuf,
    /// What the last successful update left announced.
    announced: BTreeSet<IpAddr>,
}

impl Announcer {
    pub fn new(table: u32, iface: &str, pin_dir: &Path) -> Self {
        Self {
            table,
            iface: iface.to_owned(),
            pin_dir: pin_dir.to_owned(),
            announced: BTreeSet::new(),
        }
    }

    /// Announces what `effective` lets this node serve and withdraws the rest, also
    /// routes of ours a previous daemon left behind.
    pub fn update(&mut self, effective: &DesiredState) {
        let attached = datapath_attached(&self.iface, &self.pin_dir);
        let wanted = if attached {
            servable_vips(effective)
        } else {
            BTreeSet::new()
        };
        if !attached && !self.announced.is_empty() {
            warn!(iface = %self.iface, "datapath gone: withdrawing every VIP");
        }
        self.reconcile(&wanted);
    }

    /// Withdraws every VIP (the daemon stops).
    pub fn withdraw_all(&mut self) {
        self.reconcile(&BTreeSet::new());
    }

    fn reconcile(&mut self, wanted: &BTreeSet<IpAddr>) {
        let present: BTreeSet<IpAddr> = match host::announced(self.table) {
            Ok(list) => list.into_iter().collect(),
            Err(e) => {
                warn!(table = self.table, error = %e, "cannot read the announcement table");
                self.announced.clone()
            }
        };
        let mut now = present.clone();
        for vip in wanted.difference(&present) {
            match host::announce(self.table, *vip) {
                Ok(()) => {
                    info!(%vip, table = self.table, "VIP announced");
                    now.insert(*vip);
                }
                Err(e) => warn!(%vip, error = %e, "cannot announce VIP"),
            }
        }
        for vip in present.difference(wanted) {
            match host::withdraw(self.table, *vip) {
                Ok(()) => {
                    info!(%vip, table = self.table, "VIP withdrawn");
                    now.remove(vip);
                }
                Err(e) => warn!(%vip, error = %e, "cannot withdraw VIP"),
            }
        }
        self.announced = now;
    }

    /// The VIPs announced now.
    pub fn announced(&self) -> &BTreeSet<IpAddr> {
        &self.announced
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use lb_model::{BackendSpec, Frontend, Protocol, Scope, ServiceSpec};

    use super::*;

    fn service(vip: &str, port: u16, weights: &[u32]) -> (Frontend, Arc<ServiceSpec>) {
        let frontend = Frontend {
            vip: vip.parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
            scope: Scope::External,
        };
        let backends = weights
            .iter()
            .enumerate()
            .map(|(i, w)| BackendSpec {
                address: format!("198.18.0.{}", 11 + i).parse().unwrap(),
                weight: *w,
            })
            .collect();
        let spec = ServiceSpec {
            name: format!("s{port}"),
            backends,
            table_size: 251,
            reject: false,
            source_ranges: Vec::new(),
            affinity_timeout_s: None,
        };
        (frontend, Arc::new(spec))
    }

    #[test]
    fn a_vip_is_servable_while_one_of_its_services_has_a_backend() {
        let state = DesiredState {
            services: BTreeMap::from([
                service("198.18.100.1", 80, &[1, 0]),
                service("198.18.100.1", 443, &[0, 0]),
                service("198.18.100.2", 80, &[0, 0]),
                service("198.18.100.3", 80, &[]),
            ])
            .into(),
            rejecting: Default::default(),
            settings: Default::default(),
        };
        let vips: Vec<String> = servable_vips(&state)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(vips, ["198.18.100.1"]);
    }
}
