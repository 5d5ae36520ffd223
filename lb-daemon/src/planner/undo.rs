//! The undo log of a plan made in place. Copying a state of 10,000 services for every
//! EndpointSlice change would cost more than planning the change, so an incremental plan
//! edits the state itself and records here each entry before it overwrites it;
//! [`KernelState::revert`] puts them back when the plan fails or its map writes do.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::IpAddr,
};

use super::state::{InstalledBackend, InstalledService, InstalledTable, KernelState, TableKey};
use lb_model::Frontend;

use crate::slots::SlotAllocator;

/// The entries and counters a plan overwrote, oldest first per map.
#[derive(Debug, Default)]
#[must_use = "keep it to revert the state if the plan's map writes fail"]
pub struct Undo {
    /// Off for a plan that works on a copy it can drop: it records nothing.
    on: bool,
    services: Vec<(Frontend, Option<InstalledService>)>,
    tables: Vec<(u64, Option<InstalledTable>)>,
    table_index: Vec<(TableKey, Option<u64>)>,
    backends: Vec<(IpAddr, Option<InstalledBackend>)>,
    generations: Vec<(u32, Option<u32>)>,
    backend_users: Vec<(IpAddr, Option<u32>)>,
    counters: Option<Box<Counters>>,
}

/// The state's small parts, saved whole: they change on most plans and are cheap to copy
/// (free lists and the region allocator's free runs).
#[derive(Debug)]
struct Counters {
    next_table_id: u64,
    free_backend_ids: VecDeque<u32>,
    next_backend_id: u32,
    free_service_ids: BTreeSet<u32>,
    next_service_id: u32,
    slots: SlotAllocator,
    specs_known: bool,
}

impl Undo {
    pub(super) fn off() -> Self {
        Self::default()
    }

    pub(super) fn recording(state: &KernelState) -> Self {
        Self {
            on: true,
            counters: Some(Box::new(Counters {
                next_table_id: state.next_table_id,
                free_backend_ids: state.free_backend_ids.clone(),
                next_backend_id: state.next_backend_id,
                free_service_ids: state.free_service_ids.clone(),
                next_service_id: state.next_service_id,
                slots: state.slots.clone(),
                specs_known: state.specs_known,
            })),
            ..Self::default()
        }
    }

    pub(super) fn service(&mut self, state: &KernelState, frontend: &Frontend) {
        if self.on {
            let old = state.services.get(frontend).cloned();
            self.services.push((*frontend, old));
        }
    }

    pub(super) fn table(&mut self, state: &KernelState, id: u64) {
        if self.on {
            self.tables.push((id, state.tables.get(&id).cloned()));
        }
    }

    pub(super) fn index(&mut self, state: &KernelState, key: &TableKey) {
        if self.on {
            let old = state.table_index.get(key).copied();
            self.table_index.push((key.clone(), old));
        }
    }

    pub(super) fn backend(&mut self, state: &KernelState, addr: IpAddr) {
        if self.on {
            self.backends
                .push((addr, state.backends.get(&addr).copied()));
        }
    }

    pub(super) fn generation(&mut self, state: &KernelState, id: u32) {
        if self.on {
            self.generations
                .push((id, state.generations.get(&id).copied()));
        }
    }

    pub(super) fn users(&mut self, state: &KernelState, addr: IpAddr) {
        if self.on {
            self.backend_users
                .push((addr, state.backend_users.get(&addr).copied()));
        }
    }
}

/// Puts back recorded entries, newest first, so each key ends at its oldest value.
fn restore_btree<K: Ord, V>(map: &mut BTreeMap<K, V>, log: Vec<(K, Option<V>)>) {
    for (key, old) in log.into_iter().rev() {
        match old {
            Some(value) => map.insert(key, value),
            None => map.remove(&key),
        };
    }
}

fn restore_hash<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, log: Vec<(K, Option<V>)>) {
    for (key, old) in log.into_iter().rev() {
        match old {
            Some(value) => map.insert(key, value),
            None => map.remove(&key),
        };
    }
}

impl KernelState {
    /// Undoes a [`plan_changes`](super::plan_changes): the state is again what it was
    /// before that plan.
    pub fn revert(&mut self, undo: Undo) {
        restore_btree(&mut self.services, undo.services);
        restore_btree(&mut self.tables, undo.tables);
        restore_btree(&mut self.table_index, undo.table_index);
        restore_btree(&mut self.backends, undo.backends);
        restore_hash(&mut self.generations, undo.generations);
        restore_hash(&mut self.backend_users, undo.backend_users);
        if let Some(c) = undo.counters {
            self.next_table_id = c.next_table_id;
            self.free_backend_ids = c.free_backend_ids;
            self.next_backend_id = c.next_backend_id;
            self.free_service_ids = c.free_service_ids;
            self.next_service_id = c.next_service_id;
            self.slots = c.slots;
            self.specs_known = c.specs_known;
        }
    }
}
