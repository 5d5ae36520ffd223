use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::model::{BackendSpec, Protocol, Settings};

/// The maps as a plain in-memory model, checked after every single operation.
#[derive(Default)]
struct FakeKernel {
    services: HashMap<ServiceKey, ServiceValue>,
    backends: HashMap<u32, BackendValue>,
    slots: HashMap<u32, u32>,
}

impl FakeKernel {
    fn apply(&mut self, ops: &[MapOp]) {
        for op in ops {
            match op {
                MapOp::PutBackend { id, value } | MapOp::RetireBackend { id, value } => {
                    self.backends.insert(*id, *value);
                }
                MapOp::WriteSlots { base, slots } => {
                    for (offset, id) in slots {
                        self.slots.insert(base + offset, *id);
                    }
                }
                MapOp::PutService { key, value } => {
                    self.services.insert(*key, *value);
                }
                MapOp::DeleteService { key } => {
                    self.services.remove(key);
                }
                MapOp::ResetServiceStats { .. }
                | MapOp::ResetBackendStats { .. }
                | MapOp::PurgeFlows { .. } => {}
            }
            self.assert_consistent(op);
        }
    }

    /// What a packet could observe right now: every slot of every live table names an
    /// active backend.
    fn assert_consistent(&self, after: &MapOp) {
        for (key, svc) in &self.services {
            for slot in svc.table_base..svc.table_base + svc.table_size {
                // Like a BPF array, an unwritten slot reads as zero.
                let id = self.slots.get(&slot).copied().unwrap_or(0);
                let backend = self.backends.get(&id).unwrap_or_else(|| {
                    panic!("{key:?}: slot {slot} names unwritten backend {id} after {after:?}")
                });
                assert_eq!(
                    backend.flags & BACKEND_F_ACTIVE,
                    BACKEND_F_ACTIVE,
                    "{key:?} slot {slot} names retired backend {id} after {after:?}"
                );
            }
        }
    }

    /// What a restarted daemon reads back.
    fn adopt(&self, capacity: u32) -> KernelState {
        let services: Vec<(Frontend, ServiceValue)> = self
            .services
            .iter()
            .map(|(k, v)| (Frontend::from_key(k).unwrap(), *v))
            .collect();
        let mut regions = HashMap::new();
        for (_, v) in &services {
            for base in [v.table_base, v.spare_base] {
                regions.insert(
                    base,
                    (base..base + v.table_size)
                        .map(|i| self.slots.get(&i).copied().unwrap_or(0))
                        .collect(),
                );
            }
        }
        let mut generations = HashMap::new();
        let mut backends = Vec::new();
        for (id, b) in &self.backends {
            generations.insert(*id, b.generation);
            if b.flags & BACKEND_F_ACTIVE != 0 {
                let addr = IpAddr::from([b.addr[0], b.addr[1], b.addr[2], b.addr[3]]);
                backends.push((
                    addr,
                    InstalledBackend {
                        id: *id,
                        generation: b.generation,
                    },
                ));
            }
        }
        KernelState::adopt(capacity, services, &regions, backends, generations).unwrap()
    }

    fn table(&self, frontend: &Frontend) -> Vec<IpAddr> {
        let svc = self.services[&frontend.key()];
        (svc.table_base..svc.table_base + svc.table_size)
            .map(|slot| {
                let b = self.backends[&self.slots.get(&slot).copied().unwrap_or(0)];
                IpAddr::from([b.addr[0], b.addr[1], b.addr[2], b.addr[3]])
            })
            .collect()
    }
}

fn frontend(port: u16) -> Frontend {
    Frontend {
        vip: "198.18.100.1".parse().unwrap(),
        port,
        protocol: Protocol::Tcp,
    }
}

fn spec(name: &str, backends: &[(u8, u32)], table_size: u32) -> ServiceSpec {
    let mut backends: Vec<BackendSpec> = backends
        .iter()
        .map(|&(last, weight)| BackendSpec {
            address: IpAddr::from([198, 18, 0, last]),
            weight,
        })
        .collect();
    backends.sort_by_key(|b| b.address);
    ServiceSpec {
        name: name.into(),
        backends,
        table_size,
    }
}

fn desired(services: Vec<(Frontend, ServiceSpec)>) -> DesiredState {
    DesiredState {
        services: services
            .into_iter()
            .map(|(f, s)| (f, Arc::new(s)))
            .collect(),
        settings: Settings::default(),
    }
}

#[test]
fn first_plan_writes_backends_then_tables_then_services() {
    let state = KernelState::new(10_000);
    let want = desired(vec![
        (frontend(80), spec("a", &[(11, 1), (12, 1)], 251)),
        (frontend(81), spec("b", &[(12, 1), (13, 1)], 509)),
    ]);
    let (ops, next) = plan(&state, &want).unwrap();
    let first_service = ops
        .iter()
        .position(|op| matches!(op, MapOp::PutService { .. }))
        .unwrap();
    let last_backend = ops
        .iter()
        .rposition(|op| matches!(op, MapOp::PutBackend { .. }))
        .unwrap();
    assert!(last_backend < first_service);
    assert_eq!(next.backends.len(), 3);
    let mut kernel = FakeKernel::default();
    kernel.apply(&ops);
    assert_eq!(kernel.services.len(), 2);
    assert_eq!(kernel.table(&frontend(81)).len(), 509);
}

/// Enough tables for `plan` to build them on several threads: every table it writes is
/// the one `build_table` gives alone, and services with the same backends still share.
#[test]
fn tables_built_in_parallel_equal_tables_built_alone() {
    let services: Vec<(Frontend, ServiceSpec)> = (0..400u16)
        .map(|i| {
            // 200 distinct backend sets, each used by two frontends.
            let set = (i % 200) as u8;
            let backends: Vec<(u8, u32)> = (0..4).map(|j| (set.wrapping_add(j * 50), 1)).collect();
            (frontend(1000 + i), spec(&format!("s{i}"), &backends, 251))
        })
        .collect();
    let want = desired(services);
    assert!(want.services.len() / 2 >= PARALLEL_TABLES);
    let (ops, next) = plan(&KernelState::new(200_000), &want).unwrap();
    let written: HashMap<u32, Vec<u32>> = ops
        .iter()
        .filter_map(|op| match op {
            MapOp::WriteSlots { base, slots } => {
                Some((*base, slots.iter().map(|&(_, id)| id).collect()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(next.tables.len(), 200);
    assert_eq!(written.len(), 200);
    for (frontend, spec) in &want.services {
        let alone = build_table(frontend, spec, &next.backends, want.settings.maglev_seed).unwrap();
        let table = &next.tables[&next.services[frontend].table.unwrap()];
        assert_eq!(*table.slots, alone, "{frontend}");
        assert_eq!(written[&table.base], alone, "{frontend}");
    }
}

#[test]
fn unchanged_config_plans_nothing() {
    let want = desired(vec![(frontend(80), spec("a", &[(11, 1), (12, 1)], 251))]);
    let (_, state) = plan(&KernelState::new(10_000), &want).unwrap();
    let (ops, again) = plan(&state, &want).unwrap();
    assert!(ops.is_empty(), "{ops:?}");
    assert_eq!(again.services, state.services);
}

#[test]
fn a_changed_table_is_written_whole_elsewhere_and_its_region_freed_a_sync_later() {
    let mut kernel = FakeKernel::default();
    let one = desired(vec![(
        frontend(80),
        spec("a", &[(11, 1), (12, 1), (13, 1)], 1021),
    )]);
    // Room for two tables: the live one and the one replacing it.
    let (ops, state) = plan(&KernelState::new(2 * 1021), &one).unwrap();
    kernel.apply(&ops);
    let first = kernel.services[&frontend(80).key()].table_base;
    let two = desired(vec![(frontend(80), spec("a", &[(11, 1), (12, 1)], 1021))]);
    let (ops, state) = plan(&state, &two).unwrap();
    kernel.apply(&ops);
    assert!(matches!(ops.last(), Some(MapOp::RetireBackend { .. })));
    let second = kernel.services[&frontend(80).key()].table_base;
    assert_ne!(second, first, "written where no packet reads");
    let written: Vec<(u32, usize)> = ops
        .iter()
        .filter_map(|op| match op {
            MapOp::WriteSlots { base, slots } => Some((*base, slots.len())),
            _ => None,
        })
        .collect();
    assert_eq!(written, vec![(second, 1021)]);
    // The first region left quarantine when this plan began: the table goes back there.
    let (ops, _) = plan(&state, &one).unwrap();
    kernel.apply(&ops);
    assert_eq!(kernel.services[&frontend(80).key()].table_base, first);
    let owners: std::collections::BTreeSet<IpAddr> =
        kernel.table(&frontend(80)).into_iter().collect();
    assert_eq!(owners.len(), 3);
}

#[test]
fn no_backends_means_empty_table() {
    let want = desired(vec![(frontend(80), spec("a", &[(11, 0)], 251))]);
    let (ops, _) = plan(&KernelState::new(10_000), &want).unwrap();
    let put = ops
        .iter()
        .find_map(|op| match op {
            MapOp::PutService { value, .. } => Some(*value),
            _ => None,
        })
        .unwrap();
    assert_eq!(put.table_size, 0);
    assert_eq!(put.flags & SERVICE_F_HAS_BACKENDS, 0);
}

#[test]
fn out_of_room_fails_without_changing_state() {
    let state = KernelState::new(700);
    let want = desired(vec![
        (frontend(80), spec("a", &[(11, 1)], 251)),
        (frontend(81), spec("b", &[(12, 1)], 509)),
    ]);
    let err = plan(&state, &want).unwrap_err();
    assert!(matches!(err, PlanError::NoTableRoom { .. }), "{err}");
    assert!(err.to_string().contains("198.18.100.1:81/tcp"));
    assert_eq!(state, KernelState::new(700));
}

#[test]
fn a_failed_change_leaves_the_state_as_it_was() {
    let one = desired(vec![(frontend(80), spec("a", &[(11, 1)], 251))]);
    // Room for two 251-slot tables, not three.
    let (_, mut state) = plan(&KernelState::new(600), &one).unwrap();
    let before = state.clone();
    let three = desired(vec![
        (frontend(80), spec("a", &[(11, 1)], 251)),
        (frontend(81), spec("b", &[(12, 1)], 251)),
        (frontend(82), spec("c", &[(13, 1)], 251)),
    ]);
    let changed = BTreeSet::from([frontend(81), frontend(82)]);
    let err = plan_changes(&mut state, &three, &changed).unwrap_err();
    assert!(matches!(err, PlanError::NoTableRoom { .. }), "{err}");
    assert_eq!(state, before);
}

#[test]
fn adopted_state_needs_a_whole_plan_first() {
    let want = desired(vec![(frontend(80), spec("a", &[(11, 1)], 251))]);
    let mut kernel = FakeKernel::default();
    let (ops, _) = plan(&KernelState::new(10_000), &want).unwrap();
    kernel.apply(&ops);
    let mut adopted = kernel.adopt(10_000);
    assert!(!adopted.can_plan_changes());
    let changed = BTreeSet::from([frontend(80)]);
    assert_eq!(
        plan_changes(&mut adopted, &want, &changed).unwrap_err(),
        PlanError::SpecsUnknown
    );
    let (_, planned) = plan(&adopted, &want).unwrap();
    assert!(planned.can_plan_changes());
}

#[test]
fn adopted_state_with_the_same_config_writes_nothing() {
    let want = desired(vec![
        (frontend(80), spec("a", &[(11, 1), (12, 2)], 251)),
        (frontend(81), spec("b", &[(11, 1), (12, 2)], 251)),
        (frontend(82), spec("c", &[(13, 1)], 251)),
    ]);
    let mut kernel = FakeKernel::default();
    let (ops, _) = plan(&KernelState::new(10_000), &want).unwrap();
    kernel.apply(&ops);
    let adopted = kernel.adopt(10_000);
    assert_eq!(adopted.tables.len(), 2, "shared table recognised as one");
    let (ops, _) = plan(&adopted, &want).unwrap();
    assert!(ops.is_empty(), "{ops:?}");
}

#[test]
fn identical_backend_sets_share_one_table() {
    let mut kernel = FakeKernel::default();
    let want = desired(vec![
        (frontend(80), spec("a", &[(11, 1), (12, 1)], 251)),
        (frontend(81), spec("b", &[(12, 1), (11, 1)], 251)),
        (frontend(82), spec("c", &[(11, 1), (12, 1)], 251)),
    ]);
    let (ops, state) = plan(&KernelState::new(10_000), &want).unwrap();
    kernel.apply(&ops);
    let tables = ops
        .iter()
        .filter(|op| matches!(op, MapOp::WriteSlots { .. }))
        .count();
    assert_eq!(tables, 1, "one table written for three services");
    assert_eq!(state.tables.len(), 1);
    let bases: BTreeSet<u32> = kernel.services.values().map(|v| v.table_base).collect();
    assert_eq!(bases.len(), 1);

    // One service changes: it gets its own table, the others keep theirs untouched.
    let changed = desired(vec![
        (frontend(80), spec("a", &[(11, 1), (12, 1)], 251)),
        (frontend(81), spec("b", &[(11, 1), (12, 1), (13, 1)], 251)),
        (frontend(82), spec("c", &[(11, 1), (12, 1)], 251)),
    ]);
    let (ops, state) = plan(&state, &changed).unwrap();
    kernel.apply(&ops);
    assert_eq!(state.tables.len(), 2);
    let puts: Vec<&MapOp> = ops
        .iter()
        .filter(|op| matches!(op, MapOp::PutService { .. }))
        .collect();
    assert_eq!(
        puts.len(),
        1,
        "only the changed service's record is written: {puts:?}"
    );

    // Back to equal sets: the service rejoins the shared table, no slot written.
    let (ops, state) = plan(&state, &want).unwrap();
    kernel.apply(&ops);
    assert!(
        ops.iter().all(|op| !matches!(op, MapOp::WriteSlots { .. })),
        "{ops:?}"
    );
    assert_eq!(state.tables.len(), 1);
}

#[test]
fn a_backend_leaving_one_service_purges_only_that_services_flows() {
    let both = desired(vec![
        (frontend(80), spec("a", &[(11, 1), (12, 1), (13, 1)], 251)),
        (frontend(81), spec("b", &[(13, 1)], 251)),
    ]);
    let (_, state) = plan(&KernelState::new(10_000), &both).unwrap();
    let id13 = state.backends[&IpAddr::from([198, 18, 0, 13])].id;
    let left_a = desired(vec![
        (frontend(80), spec("a", &[(11, 1), (12, 1)], 251)),
        (frontend(81), spec("b", &[(13, 1)], 251)),
    ]);
    let (ops, _) = plan(&state, &left_a).unwrap();
    let purges: Vec<&MapOp> = ops
        .iter()
        .filter(|op| matches!(op, MapOp::PurgeFlows { .. }))
        .collect();
    assert_eq!(
        purges,
        vec![&MapOp::PurgeFlows {
            key: frontend(80).key(),
            backend_ids: vec![id13],
        }]
    );
    assert!(
        matches!(ops.last(), Some(MapOp::PurgeFlows { .. })),
        "after every flip"
    );

    // Gone everywhere: retired (the generation check moves its flows), nothing to purge.
    let gone = desired(vec![(frontend(80), spec("a", &[(11, 1), (12, 1)], 251))]);
    let (ops, _) = plan(&state, &gone).unwrap();
    assert!(
        ops.iter().all(|op| !matches!(op, MapOp::PurgeFlows { .. })),
        "{ops:?}"
    );
}

#[test]
fn retired_ids_come_back_with_a_new_generation() {
    let (_, state) = plan(
        &KernelState::new(10_000),
        &desired(vec![(frontend(80), spec("a", &[(11, 1)], 251))]),
    )
    .unwrap();
    let old = state.backends[&IpAddr::from([198, 18, 0, 11])];
    let (_, state) = plan(
        &state,
        &desired(vec![(frontend(80), spec("a", &[(12, 1)], 251))]),
    )
    .unwrap();
    let (_, state) = plan(
        &state,
        &desired(vec![(frontend(80), spec("a", &[(13, 1)], 251))]),
    )
    .unwrap();
    let reused = state.backends[&IpAddr::from([198, 18, 0, 13])];
    assert_eq!(reused.id, old.id, "oldest freed id is reused");
    assert_ne!(reused.generation, old.generation);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any sequence of configurations keeps every live table whole and pointing at active
    /// backends after every single map write, and ends with exactly the desired services.
    #[test]
    fn every_step_is_make_before_break(
        steps in prop::collection::vec(
            prop::collection::vec(
                (0u16..5, prop::collection::vec((1u8..5, 0u32..3), 0..4), prop::bool::ANY),
                0..5,
            ),
            1..7,
        ),
        restart_after in prop::collection::vec(prop::bool::ANY, 7),
    ) {
        let mut state = KernelState::new(200_000);
        let mut kernel = FakeKernel::default();
        for (i, step) in steps.into_iter().enumerate() {
            let mut services = BTreeMap::new();
            for (port, backends, big) in step {
                let mut seen = BTreeSet::new();
                let backends: Vec<(u8, u32)> =
                    backends.into_iter().filter(|(b, _)| seen.insert(*b)).collect();
                let size = if big { 1021 } else { 251 };
                services.insert(frontend(80 + port), Arc::new(spec(&format!("s{port}"), &backends, size)));
            }
            let want = DesiredState { services, settings: Settings::default() };
            let (ops, next) = plan(&state, &want).unwrap();
            kernel.apply(&ops);
            state = next;
            if restart_after[i] {
                // A restarted daemon goes on from what it reads back.
                state = kernel.adopt(200_000);
            }
            prop_assert_eq!(kernel.services.len(), want.services.len());
            for (f, s) in &want.services {
                let table = kernel.table(f);
                let live: BTreeSet<IpAddr> = s.backends.iter().filter(|b| b.weight > 0).map(|b| b.address).collect();
                prop_assert_eq!(table.is_empty(), live.is_empty());
                prop_assert!(table.iter().all(|a| live.contains(a)));
            }
        }
    }
}

/// Operations with slot writes shortened to (base, count), for readable failures.
fn summary(ops: &[MapOp]) -> Vec<String> {
    ops.iter()
        .map(|op| match op {
            MapOp::WriteSlots { base, slots } => format!("WriteSlots {base}+{}", slots.len()),
            other => format!("{other:?}"),
        })
        .collect()
}

/// One random configuration: up to five services on ports 80-84, backends from a pool of
/// four (shared between services, so tables are shared and backends move between them).
/// (port offset, (backend, weight) pairs, big table) per service.
type Step = Vec<(u16, Vec<(u8, u32)>, bool)>;

fn configuration(step: Step) -> DesiredState {
    let mut services = BTreeMap::new();
    for (port, backends, big) in step {
        let mut seen = BTreeSet::new();
        let backends: Vec<(u8, u32)> = backends
            .into_iter()
            .filter(|(b, _)| seen.insert(*b))
            .collect();
        let size = if big { 1021 } else { 251 };
        services.insert(
            frontend(80 + port),
            Arc::new(spec(&format!("s{port}"), &backends, size)),
        );
    }
    DesiredState {
        services,
        settings: Settings::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// Planning only the frontends that changed gives the whole plan's operations and
    /// state, applied maps included; the undo record restores the state before the plan.
    #[test]
    fn changes_planned_alone_equal_the_whole_plan(
        steps in prop::collection::vec(
            (
                prop::collection::vec(
                    (0u16..5, prop::collection::vec((1u8..5, 0u32..3), 0..4), prop::bool::ANY),
                    0..5,
                ),
                // Frontends listed as changed although they are not: harmless.
                prop::collection::vec(0u16..6, 0..3),
                prop::bool::ANY,
            ),
            1..10,
        ),
    ) {
        let capacity = 200_000;
        let mut whole = KernelState::new(capacity);
        let mut alone = KernelState::new(capacity);
        let mut whole_kernel = FakeKernel::default();
        let mut alone_kernel = FakeKernel::default();
        let mut before = DesiredState::default();
        for (i, (step, extra, restart)) in steps.into_iter().enumerate() {
            let want = configuration(step);
            let (whole_ops, whole_next) = plan(&whole, &want).unwrap();
            let mut changed: BTreeSet<Frontend> = before
                .services
                .keys()
                .chain(want.services.keys())
                .filter(|f| before.services.get(*f) != want.services.get(*f))
                .copied()
                .collect();
            changed.extend(extra.into_iter().map(|p| frontend(80 + p)));
            let ops = if alone.can_plan_changes() {
                let saved = alone.clone();
                let (ops, undo) = plan_changes(&mut alone, &want, &changed).unwrap();
                let mut reverted = alone.clone();
                reverted.revert(undo);
                prop_assert_eq!(&reverted, &saved);
                ops
            } else {
                // Adopted: only the whole plan knows what the maps hold.
                let (ops, next) = plan(&alone, &want).unwrap();
                alone = next;
                ops
            };
            prop_assert_eq!(summary(&ops), summary(&whole_ops), "step {}", i);
            prop_assert_eq!(&ops, &whole_ops);
            prop_assert_eq!(&alone, &whole_next);
            whole_kernel.apply(&whole_ops);
            alone_kernel.apply(&ops);
            prop_assert_eq!(&alone_kernel.services, &whole_kernel.services);
            prop_assert_eq!(&alone_kernel.backends, &whole_kernel.backends);
            prop_assert_eq!(&alone_kernel.slots, &whole_kernel.slots);
            whole = whole_next;
            if restart {
                // One adoption for both: adoption numbers tables in the order it reads the
                // maps, and both planners must start from the same state.
                whole = whole_kernel.adopt(capacity);
                alone = whole.clone();
            }
            before = want;
        }
    }
}
