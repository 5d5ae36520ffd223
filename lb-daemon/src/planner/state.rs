//! What the kernel's maps hold, as the planner keeps track of it, and how that record is
//! rebuilt from pinned maps when the daemon restarts (adoption).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::IpAddr,
    sync::Arc,
};

use lb_common::{limits, ServiceValue};

use super::ops::MapOp;
use crate::slots::SlotAllocator;
use lb_model::{Frontend, IpNetwork, ServiceSpec};

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
    pub(super) fn of(spec: &ServiceSpec, seed: u32) -> Self {
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
    /// The source ranges `LB_SRC_RANGES` holds under `service_id` (external scope only).
    pub source_ranges: Vec<IpNetwork>,
}

impl InstalledService {
    /// Whether the kernel already holds exactly what `spec` and `seed` ask for.
    pub(super) fn is_programmed_from(&self, spec: &ServiceSpec, seed: u32) -> bool {
        self.spec.as_deref() == Some(spec) && self.maglev_seed == seed
    }
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
    pub(super) table_index: BTreeMap<TableKey, u64>,
    pub(super) next_table_id: u64,
    pub backends: BTreeMap<IpAddr, InstalledBackend>,
    /// Last generation handed out per backend id, for ids not in use too.
    pub generations: HashMap<u32, u32>,
    pub(super) free_backend_ids: VecDeque<u32>,
    pub(super) next_backend_id: u32,
    pub(super) free_service_ids: BTreeSet<u32>,
    pub(super) next_service_id: u32,
    pub slots: SlotAllocator,
    /// How many installed services list each backend (drained ones included): lets an
    /// incremental plan tell which backends a change adds or retires without looking at
    /// the other services. Kept by both planners.
    pub(super) backend_users: HashMap<IpAddr, u32>,
    /// Whether every service's spec (and so `backend_users`) is known: false after
    /// adopting pinned maps, until a whole plan.
    pub(super) specs_known: bool,
    /// Source-range entries adoption found under no external service's id, as (service
    /// id, range); the next plan deletes them.
    pub(super) stray_source_ranges: Vec<(u32, IpNetwork)>,
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
            stray_source_ranges: Vec::new(),
        }
    }

    /// Whether [`plan_changes`](super::plan_changes) can plan from this state (else
    /// [`plan`](super::plan) must, once).
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
            } else {
                Some(state.adopt_table(&mut by_base, regions, frontend, &value)?)
            };
            state.services.insert(
                frontend,
                InstalledService {
                    service_id: value.service_id,
                    table,
                    backend_count: value.backend_count,
                    spec: None,
                    maglev_seed: 0,
                    source_ranges: Vec::new(),
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

    /// Puts an adopted service on the table of the live region its record names: the
    /// table already adopted for that base, or a new one holding the region's slots.
    fn adopt_table(
        &mut self,
        by_base: &mut BTreeMap<u32, u64>,
        regions: &HashMap<u32, Vec<u32>>,
        frontend: Frontend,
        value: &ServiceValue,
    ) -> Result<u64, String> {
        if let Some(&id) = by_base.get(&value.table_base) {
            let table = self.tables.get_mut(&id).expect("indexed");
            if table.size != value.table_size {
                return Err(format!(
                    "service {frontend} shares table region {} but disagrees on its size",
                    value.table_base
                ));
            }
            table.users.insert(frontend);
            return Ok(id);
        }
        if !self.slots.reserve(value.table_base, value.table_size) {
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
        let id = self.next_table_id;
        self.next_table_id += 1;
        self.tables.insert(
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
        Ok(id)
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

    pub(super) fn allocate_backend_id(&mut self) -> u32 {
        // Oldest-freed first, so a just-retired id (which stale flow entries may still
        // name) is the last to be handed out again.
        if let Some(id) = self.free_backend_ids.pop_front() {
            return id;
        }
        let id = self.next_backend_id;
        self.next_backend_id += 1;
        id
    }

    pub(super) fn allocate_service_id(&mut self) -> u32 {
        if let Some(id) = self.free_service_ids.pop_first() {
            return id;
        }
        let id = self.next_service_id;
        self.next_service_id += 1;
        id
    }
}

/// Every backend address a spec lists (drained ones too), once.
pub(super) fn distinct_backends(spec: &ServiceSpec) -> BTreeSet<IpAddr> {
    spec.backends.iter().map(|b| b.address).collect()
}
