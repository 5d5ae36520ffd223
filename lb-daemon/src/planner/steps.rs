//! The single steps a plan is made of: remove a service, add or retire a backend, program
//! one service, purge flows. Each appends its map writes to `ops` and moves the state
//! to what the kernel holds after them, recording what it overwrites in `undo`. When
//! each step runs is [`super::order`]'s business.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use lb_common::{limits, BackendValue, BACKEND_F_ACTIVE};

use super::{
    ops::{MapOp, PlanError},
    ranges::{self, RangeChange},
    state::{distinct_backends, InstalledBackend, InstalledService, KernelState, TableKey},
    table::{detach, place_table, service_value, Prebuilt},
    undo::Undo,
};
use lb_model::{addr_bytes, Frontend, Scope, ServiceSpec};

pub(super) fn remove_service(
    next: &mut KernelState,
    undo: &mut Undo,
    ops: &mut Vec<MapOp>,
    frontend: &Frontend,
) {
    undo.service(next, frontend);
    let Some(svc) = next.services.remove(frontend) else {
        return;
    };
    ops.push(MapOp::DeleteService {
        scope: frontend.scope,
        key: frontend.key(),
    });
    detach(next, undo, frontend, svc.table);
    ranges::remove(ops, svc.service_id, &svc.source_ranges);
    next.free_service_ids.insert(svc.service_id);
}

/// Gives `addr` a backend id and writes its entry.
pub(super) fn add_backend(
    next: &mut KernelState,
    undo: &mut Undo,
    ops: &mut Vec<MapOp>,
    addr: IpAddr,
) -> Result<(), PlanError> {
    let id = next.allocate_backend_id();
    if id >= limits::MAX_BACKENDS {
        // Ids of backends this plan retires are free only after it: the new ones must
        // be written before any table names them, and the old ones retired after.
        return Err(PlanError::BackendIdsExhausted {
            max: limits::MAX_BACKENDS,
        });
    }
    let generation = next
        .generations
        .get(&id)
        .copied()
        .unwrap_or(0)
        .wrapping_add(1);
    undo.generation(next, id);
    next.generations.insert(id, generation);
    undo.backend(next, addr);
    next.backends
        .insert(addr, InstalledBackend { id, generation });
    let value = backend_value(addr, BACKEND_F_ACTIVE, generation);
    ops.push(MapOp::ResetBackendStats { backend_id: id });
    if generation > 1 {
        // A reused id: a packet with a stale flow entry may read it while it is
        // rewritten. Writing it inactive first means no torn read is ever taken for a
        // live backend.
        ops.push(MapOp::PutBackend {
            id,
            value: BackendValue { flags: 0, ..value },
        });
    }
    ops.push(MapOp::PutBackend { id, value });
    Ok(())
}

pub(super) fn retire_backend(
    next: &mut KernelState,
    undo: &mut Undo,
    ops: &mut Vec<MapOp>,
    addr: IpAddr,
) {
    undo.backend(next, addr);
    let Some(backend) = next.backends.remove(&addr) else {
        return;
    };
    ops.push(MapOp::RetireBackend {
        id: backend.id,
        value: backend_value(addr, 0, backend.generation),
    });
    next.free_backend_ids.push_back(backend.id);
}

fn backend_value(addr: IpAddr, flags: u32, generation: u32) -> BackendValue {
    let (bytes, family) = addr_bytes(addr);
    BackendValue {
        addr: bytes,
        family,
        flags,
        generation,
        ..Default::default()
    }
}

/// Deletes, per service, the flow entries naming backends that left it (`left_service`)
/// but are still installed: retired ones need no purge, their generation moves their flows.
pub(super) fn purge_flows(
    next: &KernelState,
    ops: &mut Vec<MapOp>,
    left_service: Vec<(Frontend, IpAddr)>,
) {
    let mut purges: BTreeMap<Frontend, Vec<u32>> = BTreeMap::new();
    // Only the XDP balancer keeps flows; a socket-level choice lives in the socket.
    for (frontend, addr) in left_service {
        if frontend.scope != Scope::External {
            continue;
        }
        if let Some(backend) = next.backends.get(&addr) {
            purges.entry(frontend).or_default().push(backend.id);
        }
    }
    for (frontend, backend_ids) in purges {
        ops.push(MapOp::PurgeFlows {
            key: frontend.key(),
            backend_ids,
        });
    }
}

/// Programs one service as `spec` and `seed` ask, if the kernel does not hold that
/// already: its table placed (shared or freshly written), then its record written.
/// Backends that left the service are added to `left_service` for the purge.
// The plan's accumulators and the state it works on, passed through as the order has them.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan_service(
    next: &mut KernelState,
    undo: &mut Undo,
    ops: &mut Vec<MapOp>,
    left_service: &mut Vec<(Frontend, IpAddr)>,
    prebuilt: &mut Prebuilt,
    frontend: &Frontend,
    spec: &Arc<ServiceSpec>,
    seed: u32,
) -> Result<(), PlanError> {
    let existing = next.services.get(frontend).cloned();
    if let Some(svc) = &existing {
        if svc.is_programmed_from(spec, seed) {
            return Ok(());
        }
    }
    let service_id = match &existing {
        Some(svc) => svc.service_id,
        None => {
            let id = next.allocate_service_id();
            ops.push(MapOp::ResetServiceStats { service_id: id });
            id
        }
    };
    let old_table = existing.as_ref().and_then(|s| s.table);
    if let Some(svc) = &existing {
        let staying = distinct_backends(spec);
        for addr in previous_members(next, svc) {
            if !staying.contains(&addr) {
                left_service.push((*frontend, addr));
            }
        }
    }
    // What the kernel's record says now, before any table moves.
    let old_value = existing.as_ref().map(|svc| service_value(next, svc));
    let backend_count = spec.active_backends() as u32;
    let key = (backend_count > 0).then(|| TableKey::of(spec, seed));

    let table = match key {
        None => {
            detach(next, undo, frontend, old_table);
            None
        }
        Some(key) => Some(place_table(
            next, undo, ops, prebuilt, frontend, spec, key, old_table,
        )?),
    };

    let source_ranges = ranges::wanted(frontend, spec);
    let old_ranges = existing.as_ref().map_or(&[][..], |s| &s.source_ranges[..]);
    let range_change = RangeChange::new(service_id, old_ranges, &source_ranges);
    let installed = InstalledService {
        service_id,
        table,
        backend_count,
        spec: Some(Arc::clone(spec)),
        maglev_seed: seed,
        source_ranges,
    };
    let value = service_value(next, &installed);
    range_change.make(ops);
    if old_value != Some(value) {
        ops.push(MapOp::PutService {
            scope: frontend.scope,
            key: frontend.key(),
            value,
        });
    }
    range_change.r#break(ops);
    undo.service(next, frontend);
    next.services.insert(*frontend, installed);
    Ok(())
}

/// The backends a service had: from its spec, or after adoption from its table's slots
/// (drained backends of an adopted service own no slot and are not known).
pub(super) fn previous_members(state: &KernelState, svc: &InstalledService) -> BTreeSet<IpAddr> {
    if let Some(spec) = &svc.spec {
        return distinct_backends(spec);
    }
    let Some(table) = svc.table.and_then(|id| state.tables.get(&id)) else {
        return BTreeSet::new();
    };
    let ids: BTreeSet<u32> = table.slots.iter().copied().collect();
    state
        .backends
        .iter()
        .filter(|(_, b)| ids.contains(&b.id))
        .map(|(addr, _)| *addr)
        .collect()
}
