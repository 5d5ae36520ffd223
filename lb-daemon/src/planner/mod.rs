//! The planner: (what the kernel holds, what it should hold) → the ordered list of map
//! operations that gets from one to the other, make-before-break. Pure: it never touches
//! the kernel; `maps::MapWriter` executes the plan.
//!
//! Order of a plan: new backends are written first, then each changed service's new table
//! is written where no packet reads it (a region allocated for it) and only then the
//! service record flips to it in one map update; removed services go next; backends no
//! service uses any more are retired last, so no packet ever meets a half-written table or
//! a dangling id. A replaced table's region is freed one sync later (quarantine), so each
//! table holds one region except while it is being replaced.
//!
//! Two entry points share the per-service steps: [`plan`] compares the whole desired state
//! with the whole kernel state (the first sync, adoption after a restart, config files);
//! [`plan_changes`] (in `incremental`) plans only the frontends a snapshot changed and
//! updates the state in place, which keeps a change's cost independent of the number of
//! services.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::IpAddr,
    sync::Arc,
};

use lb_common::{
    limits, BackendValue, ServiceKey, ServiceValue, BACKEND_F_ACTIVE, SERVICE_F_HAS_BACKENDS,
};
use lb_hashing::maglev;

use crate::{
    model::{addr_bytes, DesiredState, Frontend, ServiceSpec},
    slots::SlotAllocator,
};

mod incremental;
pub use incremental::{plan_changes, Undo};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{wanted} services exceed the service map's {max} entries")]
    TooManyServices { wanted: usize, max: u32 },
    #[error("{wanted} distinct backends exceed the backend map's {max} entries")]
    TooManyBackends { wanted: usize, max: u32 },
    #[error(
        "service {frontend}: no room for a {size}-slot table ({free} of {capacity} slots free)"
    )]
    NoTableRoom {
        frontend: Frontend,
        size: u32,
        free: u64,
        capacity: u32,
    },
    #[error(
        "no free backend id below {max}: this change adds backends before it retires others; \
         apply it in two steps"
    )]
    BackendIdsExhausted { max: u32 },
    #[error("service {frontend}: {source}")]
    Maglev {
        frontend: Frontend,
        source: maglev::MaglevError,
    },
    #[error(
        "the state was adopted from pinned maps without the specs it came from: plan it whole first"
    )]
    SpecsUnknown,
}

/// One write to one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    PutBackend {
        id: u32,
        value: BackendValue,
    },
    /// Writes `LB_MAGLEV[base + offset] = backend_id` for each pair.
    WriteSlots {
        base: u32,
        slots: Vec<(u32, u32)>,
    },
    ResetServiceStats {
        service_id: u32,
    },
    ResetBackendStats {
        backend_id: u32,
    },
    PutService {
        key: ServiceKey,
        value: ServiceValue,
    },
    DeleteService {
        key: ServiceKey,
    },
    /// Clears the active flag (keeping the generation), so flow entries re-select.
    RetireBackend {
        id: u32,
        value: BackendValue,
    },
    /// Deletes the flow entries of one service that name these backends: they left the
    /// service but still serve others, so the generation check would keep them alive.
    PurgeFlows {
        key: ServiceKey,
        backend_ids: Vec<u32>,
    },
}

/// What a Maglev table is built from. Equal keys mean equal tables, so services with the
/// same weighted backends (several ports of one Service, several Services selecting the
/// same pods) share one table: memory grows with distinct backend sets, not with ports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableKey {
    pub backends: Vec<(IpAddr, u32)>,
    pub size: u32,
    pub seed: u32,
}

impl TableKey {
    fn of(spec: &ServiceSpec, seed: u32) -> Self {
        Self {
            backends: spec
                .backends
                .iter()
                .filter(|b| b.weight > 0)
                .map(|b| (b.address, b.weight))
                .collect(),
            size: spec.table_size,
            seed,
        }
    }
}

/// One Maglev table in the slot array. A changed table is written into a fresh region, so
/// no spare region is kept between changes (it would double the slot memory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledTable {
    pub base: u32,
    pub size: u32,
    /// Backend id per slot of the live region.
    /// Shared, so planning a change does not copy every table of every service.
    pub slots: Arc<Vec<u32>>,
    /// `None` after adopting pinned maps, until a plan recognises the content.
    pub key: Option<TableKey>,
    pub users: BTreeSet<Frontend>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledService {
    pub service_id: u32,
    /// Id of the table in `KernelState::tables`; `None` when the service has no backends.
    pub table: Option<u64>,
    pub backend_count: u32,
    /// The spec the service was programmed from; `None` after adopting pinned maps.
    pub spec: Option<Arc<ServiceSpec>>,
    pub maglev_seed: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstalledBackend {
    pub id: u32,
    pub generation: u32,
}

/// What the kernel's maps hold, as far as the daemon is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelState {
    pub services: BTreeMap<Frontend, InstalledService>,
    pub tables: BTreeMap<u64, InstalledTable>,
    table_index: BTreeMap<TableKey, u64>,
    next_table_id: u64,
    pub backends: BTreeMap<IpAddr, InstalledBackend>,
    /// Last generation handed out per backend id, for ids not in use too.
    pub generations: HashMap<u32, u32>,
    free_backend_ids: VecDeque<u32>,
    next_backend_id: u32,
    free_service_ids: BTreeSet<u32>,
    next_service_id: u32,
    pub slots: SlotAllocator,
    /// How many installed services list each backend (drained ones included): lets an
    /// incremental plan tell which backends a change adds or retires without looking at
    /// the other services. Kept by both planners.
    backend_users: HashMap<IpAddr, u32>,
    /// Whether every service's spec (and so `backend_users`) is known: false after
    /// adopting pinned maps, until a whole plan.
    specs_known: bool,
}

impl Default for KernelState {
    fn default() -> Self {
        Self::new(limits::MAGLEV_SLOTS)
    }
}

impl KernelState {
    pub fn new(slot_capacity: u32) -> Self {
        Self {
            services: BTreeMap::new(),
            tables: BTreeMap::new(),
            table_index: BTreeMap::new(),
            next_table_id: 0,
            backends: BTreeMap::new(),
            generations: HashMap::new(),
            free_backend_ids: VecDeque::new(),
            next_backend_id: 0,
            free_service_ids: BTreeSet::new(),
            next_service_id: 0,
            slots: SlotAllocator::new(slot_capacity),
            backend_users: HashMap::new(),
            specs_known: true,
        }
    }

    /// Whether [`plan_changes`] can plan from this state (else [`plan`] must, once).
    pub fn can_plan_changes(&self) -> bool {
        self.specs_known
    }

    /// Rebuilds the bookkeeping from entries read out of pinned maps: service records
    /// (frontend, value) and the slot contents of each live region they name (keyed by
    /// region base). Services naming the same live region share that table. Regions that
    /// overlap or leave the table map are reported, not trusted. A spare region named by
    /// maps an older daemon wrote is not reserved: no packet reads it.
    pub fn adopt(
        slot_capacity: u32,
        services: Vec<(Frontend, ServiceValue)>,
        regions: &HashMap<u32, Vec<u32>>,
        backends: Vec<(IpAddr, InstalledBackend)>,
        generations: HashMap<u32, u32>,
    ) -> Result<Self, String> {
        let mut state = Self::new(slot_capacity);
        state.specs_known = services.is_empty() && backends.is_empty();
        state.generations = generations;
        for (addr, backend) in backends {
            state.backends.insert(addr, backend);
        }
        let used_ids: BTreeSet<u32> = state.backends.values().map(|b| b.id).collect();
        state.next_backend_id = used_ids.iter().next_back().map_or(0, |&id| id + 1);
        state.free_backend_ids = (0..state.next_backend_id)
            .filter(|id| !used_ids.contains(id))
            .collect();
        let mut by_base: BTreeMap<u32, u64> = BTreeMap::new();
        for (frontend, value) in services {
            let table = if value.table_size == 0 {
                None
            } else if let Some(&id) = by_base.get(&value.table_base) {
                let table = state.tables.get_mut(&id).expect("indexed");
                if table.size != value.table_size {
                    return Err(format!(
                        "service {frontend} shares table region {} but disagrees on its size",
                        value.table_base
                    ));
                }
                table.users.insert(frontend);
                Some(id)
            } else {
                if !state.slots.reserve(value.table_base, value.table_size) {
                    return Err(format!(
                        "service {frontend}: table region {}+{} overlaps another table or leaves the table map",
                        value.table_base, value.table_size
                    ));
                }
                let slots = regions
                    .get(&value.table_base)
                    .cloned()
                    .map(Arc::new)
                    .ok_or_else(|| {
                        format!(
                            "service {frontend}: region {} was not read",
                            value.table_base
                        )
                    })?;
                let id = state.next_table_id;
                state.next_table_id += 1;
                state.tables.insert(
                    id,
                    InstalledTable {
                        base: value.table_base,
                        size: value.table_size,
                        slots,
                        key: None,
                        users: BTreeSet::from([frontend]),
                    },
                );
                by_base.insert(value.table_base, id);
                Some(id)
            };
            state.services.insert(
                frontend,
                InstalledService {
                    service_id: value.service_id,
                    table,
                    backend_count: value.backend_count,
                    spec: None,
                    maglev_seed: 0,
                },
            );
        }
        let used: BTreeSet<u32> = state.services.values().map(|s| s.service_id).collect();
        state.next_service_id = used.iter().next_back().map_or(0, |&id| id + 1);
        state.free_service_ids = (0..state.next_service_id)
            .filter(|id| !used.contains(id))
            .collect();
        Ok(state)
    }

    /// Takes `frontend` off a table; the last user releases its regions (after the next
    /// sync, see `SlotAllocator::release_later`).
    fn detach(&mut self, frontend: &Frontend, table: Option<u64>) {
        let Some(id) = table else { return };
        let Some(t) = self.tables.get_mut(&id) else {
            return;
        };
        t.users.remove(frontend);
        if t.users.is_empty() {
            let t = self.tables.remove(&id).expect("present");
            if let Some(key) = &t.key {
                self.table_index.remove(key);
            }
            self.slots.release_later(t.base, t.size);
        }
    }

    fn allocate_backend_id(&mut self) -> u32 {
        // Oldest-freed first, so a just-retired id (which stale flow entries may still
        // name) is the last to be handed out again.
        if let Some(id) = self.free_backend_ids.pop_front() {
            return id;
        }
        let id = self.next_backend_id;
        self.next_backend_id += 1;
        id
    }

    /// Marks the regions `ops` write as in use: after their writes failed half-way and the
    /// maps could not be read back, a service may already point at one of them. They are
    /// found free again when the maps are next adopted.
    pub fn reserve_written(&mut self, ops: &[MapOp]) {
        for op in ops {
            if let MapOp::WriteSlots { base, slots } = op {
                // A region still (or already) held is refused, which is what we want.
                let _ = self.slots.reserve(*base, slots.len() as u32);
            }
        }
    }

    fn allocate_service_id(&mut self) -> u32 {
        if let Some(id) = self.free_service_ids.pop_first() {
            return id;
        }
        let id = self.next_service_id;
        self.next_service_id += 1;
        id
    }
}

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

/// Computes the plan and the state the kernel will be in once it has run. On error nothing
/// is planned and `current` is untouched.
pub fn plan(
    current: &KernelState,
    desired: &DesiredState,
) -> Result<(Vec<MapOp>, KernelState), PlanError> {
    if desired.services.len() > limits::MAX_SERVICES as usize {
        return Err(PlanError::TooManyServices {
            wanted: desired.services.len(),
            max: limits::MAX_SERVICES,
        });
    }
    let wanted_backends: BTreeSet<IpAddr> = desired
        .services
        .values()
        .flat_map(|s| s.backends.iter().map(|b| b.address))
        .collect();
    if wanted_backends.len() > limits::MAX_BACKENDS as usize {
        return Err(PlanError::TooManyBackends {
            wanted: wanted_backends.len(),
            max: limits::MAX_BACKENDS,
        });
    }

    let mut next = current.clone();
    // `next` is a copy: on error it is dropped, so nothing needs recording.
    let undo = &mut Undo::off();
    next.slots.release_quarantine();
    let mut ops = Vec::new();

    // Removed services go first: they free service-map entries and ids for the services
    // this plan adds, so a full map can swap one frontend for another.
    let removed: Vec<Frontend> = next
        .services
        .keys()
        .filter(|f| !desired.services.contains_key(f))
        .copied()
        .collect();
    for frontend in removed {
        remove_service(&mut next, undo, &mut ops, &frontend);
    }

    for addr in &wanted_backends {
        if next.backends.contains_key(addr) {
            continue;
        }
        add_backend(&mut next, undo, &mut ops, *addr)?;
    }

    let seed = desired.settings.maglev_seed;
    let mut prebuilt = prebuild_tables(&next, desired.services.iter(), seed);
    let mut left_service: Vec<(Frontend, IpAddr)> = Vec::new();
    for (frontend, spec) in &desired.services {
        plan_service(
            &mut next,
            undo,
            &mut ops,
            &mut left_service,
            &mut prebuilt,
            frontend,
            spec,
            seed,
        )?;
    }

    let retired: Vec<IpAddr> = next
        .backends
        .keys()
        .filter(|a| !wanted_backends.contains(a))
        .copied()
        .collect();
    for addr in retired {
        retire_backend(&mut next, undo, &mut ops, addr);
    }
    purge_flows(&next, &mut ops, left_service);

    let mut users: HashMap<IpAddr, u32> = HashMap::new();
    for spec in desired.services.values() {
        for addr in distinct_backends(spec) {
            *users.entry(addr).or_default() += 1;
        }
    }
    next.backend_users = users;
    next.specs_known = true;
    Ok((ops, next))
}

/// Every backend address a spec lists (drained ones too), once.
fn distinct_backends(spec: &ServiceSpec) -> BTreeSet<IpAddr> {
    spec.backends.iter().map(|b| b.address).collect()
}

fn remove_service(
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
        key: frontend.key(),
    });
    detach(next, undo, frontend, svc.table);
    next.free_service_ids.insert(svc.service_id);
}

/// Gives `addr` a backend id and writes its entry.
fn add_backend(
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
    let (bytes, family) = addr_bytes(addr);
    let value = BackendValue {
        addr: bytes,
        family,
        flags: BACKEND_F_ACTIVE,
        generation,
        ..Default::default()
    };
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

fn retire_backend(next: &mut KernelState, undo: &mut Undo, ops: &mut Vec<MapOp>, addr: IpAddr) {
    undo.backend(next, addr);
    let Some(backend) = next.backends.remove(&addr) else {
        return;
    };
    let (bytes, family) = addr_bytes(addr);
    ops.push(MapOp::RetireBackend {
        id: backend.id,
        value: BackendValue {
            addr: bytes,
            family,
            flags: 0,
            generation: backend.generation,
            ..Default::default()
        },
    });
    next.free_backend_ids.push_back(backend.id);
}

/// Last, after every flip: a purged flow's next packet re-selects in the new table.
fn purge_flows(next: &KernelState, ops: &mut Vec<MapOp>, left_service: Vec<(Frontend, IpAddr)>) {
    let mut purges: BTreeMap<Frontend, Vec<u32>> = BTreeMap::new();
    for (frontend, addr) in left_service {
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

/// `KernelState::detach`, recorded.
fn detach(next: &mut KernelState, undo: &mut Undo, frontend: &Frontend, table: Option<u64>) {
    if let Some(id) = table {
        undo.table(next, id);
        if let Some(key) = next.tables.get(&id).and_then(|t| t.key.clone()) {
            undo.index(next, &key);
        }
    }
    next.detach(frontend, table);
}

// The plan's accumulators and the state it works on, passed through as the loop has them.
#[allow(clippy::too_many_arguments)]
fn plan_service(
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
        if svc.spec.as_deref() == Some(&**spec) && svc.maglev_seed == seed {
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
        let staying: BTreeSet<IpAddr> = spec.backends.iter().map(|b| b.address).collect();
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

    let installed = InstalledService {
        service_id,
        table,
        backend_count,
        spec: Some(Arc::clone(spec)),
        maglev_seed: seed,
    };
    let value = service_value(next, &installed);
    if old_value != Some(value) {
        ops.push(MapOp::PutService {
            key: frontend.key(),
            value,
        });
    }
    undo.service(next, frontend);
    next.services.insert(*frontend, installed);
    Ok(())
}

/// The backends a service had: from its spec, or after adoption from its table's slots
/// (drained backends of an adopted service own no slot and are not known).
fn previous_members(state: &KernelState, svc: &InstalledService) -> BTreeSet<IpAddr> {
    if let Some(spec) = &svc.spec {
        return spec.backends.iter().map(|b| b.address).collect();
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

/// Finds or builds the table for `key` and puts `frontend` on it; returns the table id.
#[allow(clippy::too_many_arguments)]
fn place_table(
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
    ops.push(MapOp::WriteSlots {
        base,
        slots: full_slots(&slots),
    });
    let id = next.next_table_id;
    next.next_table_id += 1;
    undo.table(next, id);
    next.tables.insert(
        id,
        InstalledTable {
            base,
            size,
            slots: Arc::new(slots),
            key: Some(key.clone()),
            users: BTreeSet::from([*frontend]),
        },
    );
    undo.index(next, &key);
    next.table_index.insert(key, id);
    detach(next, undo, frontend, old_table);
    Ok(id)
}

pub fn service_value(state: &KernelState, svc: &InstalledService) -> ServiceValue {
    let table = svc.table.and_then(|id| state.tables.get(&id));
    ServiceValue {
        service_id: svc.service_id,
        table_base: table.map_or(0, |t| t.base),
        table_size: table.map_or(0, |t| t.size),
        // No spare region: the field keeps its layout and names the live region.
        spare_base: table.map_or(0, |t| t.base),
        flags: if table.is_some() {
            SERVICE_F_HAS_BACKENDS
        } else {
            0
        },
        backend_count: svc.backend_count,
    }
}

/// Tables built ahead of the per-service loop, by key: each is `build_table`'s result for
/// the first service (in plan order) that needs the key.
pub(crate) type Prebuilt = HashMap<TableKey, Result<Vec<u32>, PlanError>>;

/// Below this many tables to build, the loop builds them itself: threads cost more.
const PARALLEL_TABLES: usize = 64;

/// Builds, on every core, the tables the services in `services` (in plan order) will ask
/// `place_table` for: those whose spec or seed differs from what is installed, with
/// active backends, and whose key no installed table has. Must run after every backend
/// the services name is in `next.backends` (a table is a pure function of its key and those
/// ids), so a prebuilt table is bit-identical to one the loop would build; a key that
/// turns out not to be needed (a service earlier in the loop built it) is dropped unused.
pub(crate) fn prebuild_tables<'a>(
    next: &KernelState,
    services: impl Iterator<Item = (&'a Frontend, &'a Arc<ServiceSpec>)>,
    seed: u32,
) -> Prebuilt {
    let mut wanted: Vec<(TableKey, &Frontend, &ServiceSpec)> = Vec::new();
    let mut seen: std::collections::HashSet<TableKey> = std::collections::HashSet::new();
    for (frontend, spec) in services {
        if let Some(svc) = next.services.get(frontend) {
            if svc.spec.as_deref() == Some(&**spec) && svc.maglev_seed == seed {
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
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if wanted.len() < PARALLEL_TABLES || threads < 2 {
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

fn full_slots(table: &[u32]) -> Vec<(u32, u32)> {
    table
        .iter()
        .enumerate()
        .map(|(i, &id)| (i as u32, id))
        .collect()
}

#[cfg(test)]
mod tests;
