//! The planner: (what the kernel holds, what it should hold) → the ordered list of map
//! operations that gets from one to the other, make-before-break. Pure: it never touches
//! the kernel; `maps::MapWriter` executes the plan.
//!
//! Order of a plan: new backends are written first, then each changed service's new table
//! is written where no packet reads it (the spare region) and only then the service record
//! flips to it in one map update; removed services go next; backends no service uses any
//! more are retired last, so no packet ever meets a half-written table or a dangling id.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::IpAddr,
};

use lb_common::{
    limits, BackendValue, ServiceKey, ServiceValue, BACKEND_F_ACTIVE, SERVICE_F_HAS_BACKENDS,
};
use lb_hashing::maglev;

use crate::{
    model::{addr_bytes, DesiredState, Frontend, ServiceSpec},
    slots::SlotAllocator,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{wanted} services exceed the service map's {max} entries")]
    TooManyServices { wanted: usize, max: u32 },
    #[error("{wanted} distinct backends exceed the backend map's {max} entries")]
    TooManyBackends { wanted: usize, max: u32 },
    #[error(
        "service {frontend}: no room for two {size}-slot tables ({free} of {capacity} slots free)"
    )]
    NoTableRoom {
        frontend: Frontend,
        size: u32,
        free: u64,
        capacity: u32,
    },
    #[error("service {frontend}: {source}")]
    Maglev {
        frontend: Frontend,
        source: maglev::MaglevError,
    },
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledService {
    pub service_id: u32,
    pub table_base: u32,
    pub spare_base: u32,
    pub table_size: u32,
    /// Backend id per slot of the live table (empty when the service has no backends).
    pub table: Vec<u32>,
    /// What the spare region holds, when known; lets the next change write only the slots
    /// that differ.
    pub spare: Option<Vec<u32>>,
    /// The spec the table was built from; `None` after adopting pinned maps.
    pub spec: Option<ServiceSpec>,
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
    pub backends: BTreeMap<IpAddr, InstalledBackend>,
    /// Last generation handed out per backend id, for ids not in use too.
    pub generations: HashMap<u32, u32>,
    free_backend_ids: VecDeque<u32>,
    next_backend_id: u32,
    free_service_ids: BTreeSet<u32>,
    next_service_id: u32,
    pub slots: SlotAllocator,
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
            backends: BTreeMap::new(),
            generations: HashMap::new(),
            free_backend_ids: VecDeque::new(),
            next_backend_id: 0,
            free_service_ids: BTreeSet::new(),
            next_service_id: 0,
            slots: SlotAllocator::new(slot_capacity),
        }
    }

    /// Rebuilds the bookkeeping from entries read out of pinned maps. Entries that overlap
    /// or point outside the table map are reported, not trusted.
    pub fn adopt(
        slot_capacity: u32,
        services: Vec<(Frontend, InstalledService)>,
        backends: Vec<(IpAddr, InstalledBackend)>,
        generations: HashMap<u32, u32>,
    ) -> Result<Self, String> {
        let mut state = Self::new(slot_capacity);
        state.generations = generations;
        for (addr, backend) in backends {
            state.backends.insert(addr, backend);
        }
        let used_ids: BTreeSet<u32> = state.backends.values().map(|b| b.id).collect();
        state.next_backend_id = used_ids.iter().next_back().map_or(0, |&id| id + 1);
        state.free_backend_ids = (0..state.next_backend_id)
            .filter(|id| !used_ids.contains(id))
            .collect();
        for (frontend, svc) in services {
            if svc.table_size > 0
                && !(state.slots.reserve(svc.table_base, svc.table_size)
                    && state.slots.reserve(svc.spare_base, svc.table_size))
            {
                return Err(format!(
                    "service {frontend}: table regions {}+{} / {}+{} overlap another service or leave the table map",
                    svc.table_base, svc.table_size, svc.spare_base, svc.table_size
                ));
            }
            state.services.insert(frontend, svc);
        }
        let used: BTreeSet<u32> = state.services.values().map(|s| s.service_id).collect();
        state.next_service_id = used.iter().next_back().map_or(0, |&id| id + 1);
        state.free_service_ids = (0..state.next_service_id)
            .filter(|id| !used.contains(id))
            .collect();
        Ok(state)
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

    fn allocate_service_id(&mut self) -> u32 {
        if let Some(id) = self.free_service_ids.pop_first() {
            return id;
        }
        let id = self.next_service_id;
        self.next_service_id += 1;
        id
    }

    pub fn backend_address(&self, id: u32) -> Option<IpAddr> {
        self.backends
            .iter()
            .find(|(_, b)| b.id == id)
            .map(|(addr, _)| *addr)
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
    Ok(table
        .into_iter()
        .map(|index| backends[&spec.backends[index as usize].address].id)
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
    next.slots.release_quarantine();
    let mut ops = Vec::new();

    for addr in &wanted_backends {
        if next.backends.contains_key(addr) {
            continue;
        }
        let id = next.allocate_backend_id();
        let generation = next
            .generations
            .get(&id)
            .copied()
            .unwrap_or(0)
            .wrapping_add(1);
        next.generations.insert(id, generation);
        next.backends
            .insert(*addr, InstalledBackend { id, generation });
        let (bytes, family) = addr_bytes(*addr);
        ops.push(MapOp::ResetBackendStats { backend_id: id });
        ops.push(MapOp::PutBackend {
            id,
            value: BackendValue {
                addr: bytes,
                family,
                flags: BACKEND_F_ACTIVE,
                generation,
                ..Default::default()
            },
        });
    }

    for (frontend, spec) in &desired.services {
        plan_service(
            &mut next,
            &mut ops,
            frontend,
            spec,
            desired.settings.maglev_seed,
        )?;
    }

    let removed: Vec<Frontend> = next
        .services
        .keys()
        .filter(|f| !desired.services.contains_key(f))
        .copied()
        .collect();
    for frontend in removed {
        let svc = next.services.remove(&frontend).expect("listed above");
        ops.push(MapOp::DeleteService {
            key: frontend.key(),
        });
        next.slots.release_later(svc.table_base, svc.table_size);
        next.slots.release_later(svc.spare_base, svc.table_size);
        next.free_service_ids.insert(svc.service_id);
    }

    let retired: Vec<IpAddr> = next
        .backends
        .keys()
        .filter(|a| !wanted_backends.contains(a))
        .copied()
        .collect();
    for addr in retired {
        let backend = next.backends.remove(&addr).expect("listed above");
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
    Ok((ops, next))
}

fn plan_service(
    next: &mut KernelState,
    ops: &mut Vec<MapOp>,
    frontend: &Frontend,
    spec: &ServiceSpec,
    seed: u32,
) -> Result<(), PlanError> {
    if let Some(installed) = next.services.get(frontend) {
        if installed.spec.as_ref() == Some(spec) && installed.maglev_seed == seed {
            return Ok(());
        }
    }
    let table = build_table(frontend, spec, &next.backends, seed)?;
    let size = if table.is_empty() { 0 } else { spec.table_size };
    let backend_count = spec.active_backends() as u32;

    let existing = next.services.get(frontend).cloned();
    let service_id = match &existing {
        Some(svc) => svc.service_id,
        None => {
            let id = next.allocate_service_id();
            ops.push(MapOp::ResetServiceStats { service_id: id });
            id
        }
    };

    let installed = match existing {
        // Same table: nothing for the datapath to do, remember the spec.
        Some(svc) if svc.table == table => InstalledService {
            spec: Some(spec.clone()),
            maglev_seed: seed,
            ..svc
        },
        // Same size: write the differences into the spare region, then flip.
        Some(svc) if svc.table_size == size && size > 0 => {
            let slots: Vec<(u32, u32)> = match &svc.spare {
                Some(spare) => maglev::changed_slots(spare, &table)
                    .into_iter()
                    .map(|i| (i, table[i as usize]))
                    .collect(),
                None => full_slots(&table),
            };
            if !slots.is_empty() {
                ops.push(MapOp::WriteSlots {
                    base: svc.spare_base,
                    slots,
                });
            }
            InstalledService {
                service_id,
                table_base: svc.spare_base,
                spare_base: svc.table_base,
                table_size: size,
                spare: Some(svc.table),
                table,
                spec: Some(spec.clone()),
                maglev_seed: seed,
            }
        }
        // New service, or the table size changed: two fresh regions, the old ones are
        // released once this plan has flipped away from them.
        existing => {
            if let Some(svc) = &existing {
                next.slots.release_later(svc.table_base, svc.table_size);
                next.slots.release_later(svc.spare_base, svc.table_size);
            }
            let (table_base, spare_base) = if size == 0 {
                (0, 0)
            } else {
                let room = |next: &KernelState| PlanError::NoTableRoom {
                    frontend: *frontend,
                    size,
                    free: next.slots.free_slots(),
                    capacity: next.slots.capacity(),
                };
                let a = next.slots.allocate(size).ok_or_else(|| room(next))?;
                let b = next.slots.allocate(size).ok_or_else(|| room(next))?;
                ops.push(MapOp::WriteSlots {
                    base: a,
                    slots: full_slots(&table),
                });
                (a, b)
            };
            InstalledService {
                service_id,
                table_base,
                spare_base,
                table_size: size,
                table,
                spare: None,
                spec: Some(spec.clone()),
                maglev_seed: seed,
            }
        }
    };
    ops.push(MapOp::PutService {
        key: frontend.key(),
        value: service_value(&installed, backend_count),
    });
    next.services.insert(*frontend, installed);
    Ok(())
}

pub fn service_value(svc: &InstalledService, backend_count: u32) -> ServiceValue {
    ServiceValue {
        service_id: svc.service_id,
        table_base: svc.table_base,
        table_size: svc.table_size,
        spare_base: svc.spare_base,
        flags: if svc.table_size > 0 {
            SERVICE_F_HAS_BACKENDS
        } else {
            0
        },
        backend_count,
    }
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
