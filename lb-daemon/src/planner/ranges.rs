//! Source ranges (`loadBalancerSourceRanges`) in the planner: which entries of the one LPM
//! trie (`LB_SRC_RANGES`, keyed by service id and source) each external service needs, and
//! the order that changes them without a packet seeing a wrong list.
//!
//! Make-before-break, around the single write of the service record:
//! - entries the new list adds are written before the record, entries it drops are
//!   deleted after it. Between the two, the kernel holds the union of both lists, so a
//!   client allowed before and after is never dropped, and nobody outside both lists is
//!   let in;
//! - the record's `SERVICE_F_SOURCE_RANGES` flag follows the list: a first list is in
//!   place before the flag turns on, the flag turns off before the last entries go, so a
//!   service is never open to every source while a list is meant to hold, nor closed to
//!   its allowed clients while one is being written;
//! - a removed service's entries are deleted after its record, before its id can be handed
//!   to a service of the same plan.
//!
//! The socket programs cannot see a `connect()`'s source (it is chosen after them), so
//! internal-scope frontends carry no ranges; the projection leaves those frontends out of
//! the internal scope (see `docs/architecture.md`).

use std::collections::{BTreeMap, BTreeSet};

use lb_model::{Frontend, IpNetwork, Scope, ServiceSpec};

use super::{ops::MapOp, state::KernelState};

/// The ranges the kernel should hold for `frontend` as `spec` asks: the spec's ranges of
/// the frontend's family, canonical; none in the internal scope.
pub(super) fn wanted(frontend: &Frontend, spec: &ServiceSpec) -> Vec<IpNetwork> {
    if frontend.scope != Scope::External {
        return Vec::new();
    }
    let family = frontend.vip.is_ipv4();
    lb_model::source_ranges(
        spec.source_ranges
            .iter()
            .copied()
            .filter(|r| r.is_ipv4() == family),
    )
}

/// How one service's list changes: what to write before its record and what to delete
/// after it.
pub(super) struct RangeChange {
    service_id: u32,
    added: Vec<IpNetwork>,
    dropped: Vec<IpNetwork>,
}

impl RangeChange {
    pub(super) fn new(service_id: u32, old: &[IpNetwork], new: &[IpNetwork]) -> Self {
        let old_set: BTreeSet<&IpNetwork> = old.iter().collect();
        let new_set: BTreeSet<&IpNetwork> = new.iter().collect();
        Self {
            service_id,
            added: new
                .iter()
                .filter(|r| !old_set.contains(r))
                .copied()
                .collect(),
            dropped: old
                .iter()
                .filter(|r| !new_set.contains(r))
                .copied()
                .collect(),
        }
    }

    /// The entries the new list adds; before the service record.
    pub(super) fn make(&self, ops: &mut Vec<MapOp>) {
        if !self.added.is_empty() {
            ops.push(MapOp::PutSourceRanges {
                service_id: self.service_id,
                ranges: self.added.clone(),
            });
        }
    }

    /// The entries only the old list had; after the service record.
    pub(super) fn r#break(self, ops: &mut Vec<MapOp>) {
        if !self.dropped.is_empty() {
            ops.push(MapOp::DeleteSourceRanges {
                service_id: self.service_id,
                ranges: self.dropped,
            });
        }
    }
}

/// Deletes the entries a removed service held; after its record is gone.
pub(super) fn remove(ops: &mut Vec<MapOp>, service_id: u32, installed: &[IpNetwork]) {
    RangeChange::new(service_id, installed, &[]).r#break(ops);
}

/// Deletes entries adoption found under no external service's id: left by a write that
/// failed half-way. They go before any service is programmed, since a new service may be
/// given their id.
pub(super) fn delete_strays(state: &mut KernelState, ops: &mut Vec<MapOp>) {
    let mut by_service: BTreeMap<u32, Vec<IpNetwork>> = BTreeMap::new();
    for (service_id, range) in std::mem::take(&mut state.stray_source_ranges) {
        by_service.entry(service_id).or_default().push(range);
    }
    for (service_id, ranges) in by_service {
        remove(ops, service_id, &ranges);
    }
}

impl KernelState {
    /// Completes an adoption with the source-range entries read from the pinned trie, as
    /// (service id, range): each external service gets its own, the rest are strays that
    /// the next plan (a whole one: strays make the specs unknown) deletes.
    pub fn adopt_source_ranges(&mut self, entries: Vec<(u32, IpNetwork)>) {
        let mut by_id: BTreeMap<u32, Vec<IpNetwork>> = BTreeMap::new();
        for (service_id, range) in entries {
            by_id.entry(service_id).or_default().push(range);
        }
        for (frontend, svc) in self.services.iter_mut() {
            if frontend.scope != Scope::External {
                continue;
            }
            if let Some(ranges) = by_id.remove(&svc.service_id) {
                svc.source_ranges = lb_model::source_ranges(ranges);
            }
        }
        self.stray_source_ranges = by_id
            .into_iter()
            .flat_map(|(id, ranges)| ranges.into_iter().map(move |r| (id, r)))
            .collect();
        if !self.stray_source_ranges.is_empty() {
            self.specs_known = false;
        }
    }
}
