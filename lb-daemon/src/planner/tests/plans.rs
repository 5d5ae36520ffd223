//! Example plans, whole and incremental.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use lb_common::SERVICE_F_HAS_BACKENDS;

use super::{desired, frontend, spec, FakeKernel};
use crate::planner::{
    build_table, plan, plan_changes, table::PARALLEL_TABLES, KernelState, MapOp, PlanError,
};
use lb_model::{Frontend, ServiceSpec};

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
            MapOp::WriteSlots { base, slots } => Some((*base, slots.to_vec())),
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
    // Room for two tables: the live one and the one replacing it (1021 slots fill 256
    // words of four).
    let (ops, state) = plan(&KernelState::new(2 * 1024), &one).unwrap();
    kernel.apply(&ops);
    let first = kernel.service(&frontend(80)).table_base;
    let two = desired(vec![(frontend(80), spec("a", &[(11, 1), (12, 1)], 1021))]);
    let (ops, state) = plan(&state, &two).unwrap();
    kernel.apply(&ops);
    assert!(matches!(ops.last(), Some(MapOp::RetireBackend { .. })));
    let second = kernel.service(&frontend(80)).table_base;
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
    assert_eq!(kernel.service(&frontend(80)).table_base, first);
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
