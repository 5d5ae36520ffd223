//! Incremental planning: only the frontends a snapshot changed are planned, against the
//! current state, which is updated in place. Copying a state of 10,000 services for every
//! EndpointSlice change would cost more than planning the change; so what the plan
//! overwrites is recorded in an [`Undo`] instead, which puts the state back when the plan
//! fails or its map writes do.
//!
//! The per-service steps are the full planner's (`plan_service`, `place_table`, ...); what
//! differs is how the backends a change adds or retires are found: from per-backend user
//! counts instead of from every desired service. `tests.rs` holds both planners to the same
//! operations and the same resulting state on random change sequences.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::*;

/// The entries and counters a plan overwrote, oldest first per map.
#[derive(Debug, Default)]
#[must_use = "keep it to revert the state if the plan's map writes fail"]
pub struct Undo {
    /// `plan` works on a copy it can drop, so it records nothing.
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

    fn recording(state: &KernelState) -> Self {
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

    fn users(&mut self, state: &KernelState, addr: IpAddr) {
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
    /// Undoes a [`plan_changes`]: the state is again what it was before that plan.
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

/// Plans the frontends in `changed` (frontends whose spec may differ between what `state`
/// was planned from and `desired`; listing unchanged ones too is harmless) and moves
/// `state` to what the kernel will hold once the operations ran. Every other frontend of
/// `desired` must be as `state` has it programmed.
///
/// Returns the operations, in the same order [`plan`] would give them, and what to revert
/// if writing them fails. On error `state` is as it was and nothing is planned.
pub fn plan_changes(
    state: &mut KernelState,
    desired: &DesiredState,
    changed: &BTreeSet<Frontend>,
) -> Result<(Vec<MapOp>, Undo), PlanError> {
    if !state.specs_known {
        return Err(PlanError::SpecsUnknown);
    }
    let mut undo = Undo::recording(state);
    match plan_changes_into(state, &mut undo, desired, changed) {
        Ok(ops) => Ok((ops, undo)),
        Err(e) => {
            state.revert(undo);
            Err(e)
        }
    }
}

fn plan_changes_into(
    state: &mut KernelState,
    undo: &mut Undo,
    desired: &DesiredState,
    changed: &BTreeSet<Frontend>,
) -> Result<Vec<MapOp>, PlanError> {
    if desired.services.len() > limits::MAX_SERVICES as usize {
        return Err(PlanError::TooManyServices {
            wanted: desired.services.len(),
            max: limits::MAX_SERVICES,
        });
    }
    // How many more (or fewer) services list each backend after the change.
    let mut delta: BTreeMap<IpAddr, i64> = BTreeMap::new();
    for frontend in changed {
        let before = state.services.get(frontend).and_then(|s| s.spec.as_deref());
        for addr in before.map(distinct_backends).unwrap_or_default() {
            *delta.entry(addr).or_default() -= 1;
        }
        for addr in desired
            .services
            .get(frontend)
            .map(|s| distinct_backends(s))
            .unwrap_or_default()
        {
            *delta.entry(addr).or_default() += 1;
        }
    }
    let mut added = Vec::new();
    let mut retired = Vec::new();
    let mut users_after = Vec::new();
    for (&addr, &d) in &delta {
        if d == 0 {
            continue;
        }
        let before = i64::from(state.backend_users.get(&addr).copied().unwrap_or(0));
        let after = u32::try_from(before + d).expect("a backend loses only users it had");
        if before == 0 {
            added.push(addr);
        } else if after == 0 {
            retired.push(addr);
        }
        users_after.push((addr, after));
    }
    let wanted_backends = state.backends.len() + added.len() - retired.len();
    if wanted_backends > limits::MAX_BACKENDS as usize {
        return Err(PlanError::TooManyBackends {
            wanted: wanted_backends,
            max: limits::MAX_BACKENDS,
        });
    }

    state.slots.release_quarantine();
    let mut ops = Vec::new();
    // The full plan's order, restricted to the changed frontends: removed services first,
    // then new backends, the services, retired backends, flow purges.
    for frontend in changed {
        if state.services.contains_key(frontend) && !desired.services.contains_key(frontend) {
            remove_service(state, undo, &mut ops, frontend);
        }
    }
    for addr in added {
        add_backend(state, undo, &mut ops, addr)?;
    }
    let seed = desired.settings.maglev_seed;
    let mut prebuilt = prebuild_tables(
        state,
        changed
            .iter()
            .filter_map(|f| desired.services.get_key_value(f)),
        seed,
    );
    let mut left_service = Vec::new();
    for frontend in changed {
        if let Some(spec) = desired.services.get(frontend) {
            plan_service(
                state,
                undo,
                &mut ops,
                &mut left_service,
                &mut prebuilt,
                frontend,
                spec,
                desired.settings.maglev_seed,
            )?;
        }
    }
    for addr in retired {
        retire_backend(state, undo, &mut ops, addr);
    }
    purge_flows(state, &mut ops, left_service);
    for (addr, after) in users_after {
        undo.users(state, addr);
        if after == 0 {
            state.backend_users.remove(&addr);
        } else {
            state.backend_users.insert(addr, after);
        }
    }
    Ok(ops)
}
