//! Ending session-affinity entries the datapath cannot end by itself. An entry names a
//! backend id and generation, so a retired or reused backend ends it in the datapath; but
//! a backend that stops serving one service (it left, or was drained) while it still
//! serves others stays live, and a removed service's id may be given to another service.
//! For those the plan purges the affinity map of the frontend's scope: a service's
//! entries for the backends it stopped using after its table flips (as flows are), and
//! every entry of a removed service, or of one whose affinity was turned off, before any
//! new record can take its id.
//!
//! A purge is a walk of the affinity map in the daemon, paid only when a backend leaves
//! an affine service; the datapath pays nothing for it (a membership map checked per new
//! connection, Cilium's choice, would cost every new flow a second lookup). What it
//! leaves: a new connection in the moment between a table flip and the purge may still
//! follow an entry to the leaving backend, the exposure an in-flight packet has anyway.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use super::{
    ops::MapOp,
    state::{InstalledService, KernelState},
    steps::previous_members,
};
use lb_model::{Frontend, Scope, ServiceSpec};

/// An installed service the plan may change, with the backends it served before.
pub(super) struct Before {
    frontend: Frontend,
    service_id: u32,
    serving: BTreeSet<IpAddr>,
    /// Adopted from pinned maps: whether it had affinity is not known.
    adopted: bool,
}

/// Whether the service may have affinity entries: its spec says so, or it was adopted
/// from pinned maps without its spec.
fn may_have_entries(svc: &InstalledService) -> bool {
    svc.spec
        .as_ref()
        .is_none_or(|spec| spec.affinity_timeout_s.is_some())
}

/// The backends an installed service serves new flows with: its spec's with weight above
/// zero, or after adoption the ones its table names.
fn serving(state: &KernelState, svc: &InstalledService) -> BTreeSet<IpAddr> {
    match &svc.spec {
        Some(spec) => spec
            .backends
            .iter()
            .filter(|b| b.weight > 0)
            .map(|b| b.address)
            .collect(),
        // Adopted: only the table's members are known, and they are the serving ones.
        None => previous_members(state, svc),
    }
}

/// What the services about to be planned serve now, for those that may hold entries.
pub(super) fn before<'a>(
    state: &KernelState,
    services: impl Iterator<Item = (&'a Frontend, &'a Arc<ServiceSpec>)>,
) -> Vec<Before> {
    services
        .filter_map(|(frontend, spec)| {
            let svc = state.services.get(frontend)?;
            if !may_have_entries(svc) || svc.is_programmed_from(spec, svc.maglev_seed) {
                return None;
            }
            Some(Before {
                frontend: *frontend,
                service_id: svc.service_id,
                serving: serving(state, svc),
                adopted: svc.spec.is_none(),
            })
        })
        .collect()
}

/// The services whose entries all go, and the (service, backend) pairs that go.
type ScopePurges = (Vec<u32>, Vec<(u32, u32)>);

/// [`ScopePurges`] per scope.
#[derive(Default)]
struct Purges(BTreeMap<Scope, ScopePurges>);

impl Purges {
    fn into_ops(self) -> impl Iterator<Item = MapOp> {
        self.0
            .into_iter()
            .filter(|(_, (services, pairs))| !services.is_empty() || !pairs.is_empty())
            .map(|(scope, (service_ids, pairs))| MapOp::PurgeAffinity {
                scope,
                service_ids,
                pairs,
            })
    }
}

/// The purge of the services `removed` (still in `state`, before their removal steps).
pub(super) fn purge_removed(state: &KernelState, removed: &[Frontend]) -> Vec<MapOp> {
    let mut purges = Purges::default();
    for frontend in removed {
        if let Some(svc) = state.services.get(frontend).filter(|s| may_have_entries(s)) {
            let scope = purges.0.entry(frontend.scope).or_default();
            scope.0.push(svc.service_id);
        }
    }
    purges.into_ops().collect()
}

/// After the flips: the entries of backends the services stopped serving, and all of a
/// service whose affinity was turned off. Backends retired by the plan need nothing.
pub(super) fn purge_stopped(state: &KernelState, before: Vec<Before>) -> Vec<MapOp> {
    let mut purges = Purges::default();
    for was in before {
        let Some(svc) = state.services.get(&was.frontend) else {
            continue;
        };
        let scope = purges.0.entry(was.frontend.scope).or_default();
        if !may_have_entries(svc) {
            // Affinity turned off. After adoption it is not known whether it was ever
            // on, and a restart with the same config must write nothing: entries left
            // there are never read while the flag is off, and expire.
            if !was.adopted {
                scope.0.push(was.service_id);
            }
            continue;
        }
        let now = serving(state, svc);
        for addr in was.serving.difference(&now) {
            if let Some(backend) = state.backends.get(addr) {
                scope.1.push((was.service_id, backend.id));
            }
        }
    }
    purges.into_ops().collect()
}
