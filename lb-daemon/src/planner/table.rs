//! Maglev tables: building one from a service's backends (on every core when a plan needs
//! many), placing it in the slot array (shared with services of equal backends, or
//! written whole into a fresh region), taking a service off it, and the service record
//! that names it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use lb_common::{
    ServiceValue, SERVICE_F_AFFINITY, SERVICE_F_HAS_BACKENDS, SERVICE_F_REJECT,
    SERVICE_F_SOURCE_RANGES,
};
use lb_hashing::maglev;

use super::{
    ops::{MapOp, PlanError},
    state::{InstalledBackend, InstalledService, InstalledTable, KernelState, TableKey},
    undo::Undo,
};
use lb_model::{Frontend, ServiceSpec};

/// The Maglev table of one service, as backend ids.
pub fn build_table(
    frontend: &Frontend,
    spec: &ServiceSpec,
    backends: &BTreeMap<IpAddr, InstalledBackend>,
    seed: u32,
) -> Result<Vec<u32>, PlanError> {
    if spec.active_backends() == 0 {
        return Ok(Vec::new());
    }
    let identities: Vec<String> = spec
        .backends
        .iter()
        .map(|b| b.address.to_string())
        .collect();
    let inputs: Vec<maglev::MaglevBackend<'_>> = spec
        .backends
        .iter()
        .zip(&identities)
        .map(|(b, identity)| maglev::MaglevBackend {
            identity: identity.as_bytes(),
            weight: b.weight,
        })
        .collect();
    let table =
        maglev::build(&inputs, spec.table_size, seed).map_err(|source| PlanError::Maglev {
            frontend: *frontend,
            source,
        })?;
    // One map lookup per backend, not per slot: a 10k-service plan looked up 6 million
    // slots in a 60,000-entry map.
    let ids: Vec<Option<u32>> = spec
        .backends
        .iter()
        .map(|b| backends.get(&b.address).map(|installed| installed.id))
        .collect();
    Ok(table
        .into_iter()
        .map(|index| ids[index as usize].expect("a table names installed backends only"))
        .collect())
}

/// The service map's record for an installed service.
pub fn service_value(state: &KernelState, svc: &InstalledService) -> ServiceValue {
    let table = svc.table.and_then(|id| state.tables.get(&id));
    let value = ServiceValue {
        service_id: svc.service_id,
        table_base: table.map_or(0, |t| t.base),
        table_size: table.map_or(0, |t| t.size),
        // No spare region: the field keeps its layout and names the live region.
        spare_base: table.map_or(0, |t| t.base),
        flags: if table.is_some() {
            SERVICE_F_HAS_BACKENDS
        } else {
            0
        } | if svc.spec.as_ref().is_some_and(|spec| spec.reject) {
            SERVICE_F_REJECT
        } else {
            0
        } | if svc.source_ranges.is_empty() {
            0
        } else {
            SERVICE_F_SOURCE_RANGES
        },
        backend_count: svc.backend_count,
        ..ServiceValue::default()
    };
    // `sessionAffinity: ClientIP`: the flag and how long the datapath keeps entries.
    match svc.spec.as_ref().and_then(|spec| spec.affinity_timeout_s) {
        Some(timeout_s) if timeout_s > 0 => ServiceValue {
            flags: value.flags | SERVICE_F_AFFINITY,
            affinity_timeout_s: timeout_s,
            ..value
        },
        _ => value,
    }
}

/// Tables built ahead of the per-service steps, by key: each is `build_table`'s result for
/// the first service (in plan order) that needs the key.
pub(super) type Prebuilt = HashMap<TableKey, Result<Vec<u32>, PlanError>>;

/// Below this many tables to build, the per-service steps build them one by one: threads
/// cost more.
pub(super) const PARALLEL_TABLES: usize = 64;

/// Builds, on every core, the tables the services in `services` (in plan order) will ask
/// `place_table` for: those whose spec or seed differs from what is installed, with
/// active backends, and whose key no installed table has. Must run after every backend
/// the services name is in `next.backends` (a table is a pure function of its key and those
/// ids), so a prebuilt table is bit-identical to one built later on its own; a key that
/// turns out not to be needed (a service earlier in the plan built it) is dropped unused.
pub(super) fn prebuild_tables<'a>(
    next: &KernelState,
    services: impl Iterator<Item = (&'a Frontend, &'a Arc<ServiceSpec>)>,
    seed: u32,
) -> Prebuilt {
    let mut wanted: Vec<(TableKey, &Frontend, &ServiceSpec)> = Vec::new();
    let mut seen: HashSet<TableKey> = HashSet::new();
    for (frontend, spec) in services {
        if let Some(svc) = next.services.get(frontend) {
            if svc.is_programmed_from(spec, seed) {
                continue;
            }
        }
        if spec.active_backends() == 0 {
            continue;
        }
        let key = TableKey::of(spec, seed);
        if next.table_index.contains_key(&key) || seen.contains(&key) {
            continue;
        }
        seen.insert(key.clone());
        wanted.push((key, frontend, spec));
    }
    if wanted.len() < PARALLEL_TABLES {
        return Prebuilt::new();
    }
    // Only now: it reads the cgroup's CPU limits, a cost a one-service change should
    // not pay.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 {
        return Prebuilt::new();
    }
    let chunk = wanted.len().div_ceil(threads);
    let backends = &next.backends;
    std::thread::scope(|scope| {
        let workers: Vec<_> = wanted
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(key, frontend, spec)| {
                            (key.clone(), build_table(frontend, spec, backends, key.seed))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a table build panicked"))
            .collect()
    })
}

/// Finds or builds the table for `key` and puts `frontend` on it; returns the table id.
// The plan's accumulators and the state it works on, passed through as the steps have them.
#[allow(clippy::too_many_arguments)]
pub(super) fn place_table(
    next: &mut KernelState,
    undo: &mut Undo,
    ops: &mut Vec<MapOp>,
    prebuilt: &mut Prebuilt,
    frontend: &Frontend,
    spec: &ServiceSpec,
    key: TableKey,
    old_table: Option<u64>,
) -> Result<u64, PlanError> {
    // Shared: another service already has this exact table.
    if let Some(&id) = next.table_index.get(&key) {
        if old_table != Some(id) {
            undo.table(next, id);
            next.tables
                .get_mut(&id)
                .expect("indexed")
                .users
                .insert(*frontend);
            detach(next, undo, frontend, old_table);
        }
        return Ok(id);
    }
    let slots = match prebuilt.remove(&key) {
        Some(built) => built?,
        None => build_table(frontend, spec, &next.backends, key.seed)?,
    };
    let size = key.size;

    if let Some(id) = old_table {
        let t = &next.tables[&id];
        // Adopted from pinned maps: the content may already be right.
        if t.key.is_none() && t.size == size && *t.slots == slots {
            undo.table(next, id);
            undo.index(next, &key);
            next.tables.get_mut(&id).expect("present").key = Some(key.clone());
            next.table_index.insert(key, id);
            return Ok(id);
        }
    }

    // A new table in a fresh region, where no packet reads; the old one is released once
    // nobody uses it (after the next sync).
    let base = next
        .slots
        .allocate(size)
        .ok_or_else(|| PlanError::NoTableRoom {
            frontend: *frontend,
            size,
            free: next.slots.free_slots(),
            capacity: next.slots.capacity(),
        })?;
    let slots = Arc::new(slots);
    ops.push(MapOp::WriteSlots {
        base,
        slots: Arc::clone(&slots),
    });
    let id = next.next_table_id;
    next.next_table_id += 1;
    undo.table(next, id);
    next.tables.insert(
        id,
        InstalledTable {
            base,
            size,
            slots,
            key: Some(key.clone()),
            users: BTreeSet::from([*frontend]),
        },
    );
    undo.index(next, &key);
    next.table_index.insert(key, id);
    detach(next, undo, frontend, old_table);
    Ok(id)
}

/// Takes `frontend` off a table, recorded in `undo`; the last user releases the table's
/// region after the next sync (see `SlotAllocator::release_later`).
pub(super) fn detach(
    next: &mut KernelState,
    undo: &mut Undo,
    frontend: &Frontend,
    table: Option<u64>,
) {
    let Some(id) = table else { return };
    undo.table(next, id);
    let Some(key) = next.tables.get(&id).map(|t| t.key.clone()) else {
        return;
    };
    if let Some(key) = &key {
        undo.index(next, key);
    }
    let t = next.tables.get_mut(&id).expect("present");
    t.users.remove(frontend);
    if t.users.is_empty() {
        let t = next.tables.remove(&id).expect("present");
        if let Some(key) = &key {
            next.table_index.remove(key);
        }
        next.slots.release_later(t.base, t.size);
    }
}
