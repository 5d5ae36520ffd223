//! Plans of services with session affinity: the record carries flag and timeout, and the
//! affinity entries the datapath cannot end by itself are purged.

use std::net::IpAddr;

use lb_common::SERVICE_F_AFFINITY;
use lb_model::{Scope, ServiceSpec};

use super::{desired, frontend, spec};
use crate::planner::{plan, KernelState, MapOp};

fn sticky(name: &str, backends: &[(u8, u32)], timeout_s: u32) -> ServiceSpec {
    ServiceSpec {
        affinity_timeout_s: Some(timeout_s),
        ..spec(name, backends, 251)
    }
}

fn affinity_purges(ops: &[MapOp]) -> Vec<&MapOp> {
    ops.iter()
        .filter(|op| matches!(op, MapOp::PurgeAffinity { .. }))
        .collect()
}

#[test]
fn an_affine_service_record_carries_the_flag_and_the_timeout() {
    let want = desired(vec![(frontend(80), sticky("a", &[(11, 1)], 30))]);
    let (ops, _) = plan(&KernelState::new(10_000), &want).unwrap();
    let value = ops
        .iter()
        .find_map(|op| match op {
            MapOp::PutService { value, .. } => Some(*value),
            _ => None,
        })
        .unwrap();
    assert_ne!(value.flags & SERVICE_F_AFFINITY, 0);
    assert_eq!(value.affinity_timeout_s, 30);
}

#[test]
fn a_backend_that_stops_serving_an_affine_service_has_its_entries_purged_last() {
    let both = desired(vec![
        (frontend(80), sticky("a", &[(11, 1), (12, 1), (13, 1)], 30)),
        (frontend(81), spec("b", &[(13, 1)], 251)),
    ]);
    let (_, state) = plan(&KernelState::new(10_000), &both).unwrap();
    let id = |last: u8| state.backends[&IpAddr::from([198, 18, 0, last])].id;
    let sid = state.services[&frontend(80)].service_id;
    // 13 leaves `a` (still serving `b`), 12 is drained: both stop serving `a`.
    let changed = desired(vec![
        (frontend(80), sticky("a", &[(11, 1), (12, 0)], 30)),
        (frontend(81), spec("b", &[(13, 1)], 251)),
    ]);
    let (ops, _) = plan(&state, &changed).unwrap();
    let mut pairs = vec![(sid, id(12)), (sid, id(13))];
    pairs.sort();
    assert_eq!(
        affinity_purges(&ops),
        vec![&MapOp::PurgeAffinity {
            scope: Scope::External,
            service_ids: vec![],
            pairs,
        }]
    );
    assert!(
        matches!(ops.last(), Some(MapOp::PurgeAffinity { .. })),
        "after every flip"
    );
    // A service without affinity has no entries to purge.
    let plain = desired(vec![(frontend(81), spec("b", &[(11, 1)], 251))]);
    let (_, plain_state) = plan(&KernelState::new(10_000), &plain).unwrap();
    let (ops, _) = plan(
        &plain_state,
        &desired(vec![(frontend(81), spec("b", &[(12, 1)], 251))]),
    )
    .unwrap();
    assert!(affinity_purges(&ops).is_empty(), "{ops:?}");
}

#[test]
fn a_removed_affine_service_is_purged_before_its_id_can_be_reused() {
    let one = desired(vec![(frontend(80), sticky("a", &[(11, 1)], 30))]);
    let (_, state) = plan(&KernelState::new(10_000), &one).unwrap();
    let sid = state.services[&frontend(80)].service_id;
    let other = desired(vec![(frontend(90), spec("c", &[(11, 1)], 251))]);
    let (ops, next) = plan(&state, &other).unwrap();
    let purge = ops
        .iter()
        .position(|op| {
            *op == MapOp::PurgeAffinity {
                scope: Scope::External,
                service_ids: vec![sid],
                pairs: vec![],
            }
        })
        .expect("the removed service's entries are purged");
    let put = ops
        .iter()
        .position(|op| matches!(op, MapOp::PutService { .. }))
        .unwrap();
    assert!(purge < put, "before a record can take id {sid}: {ops:?}");
    assert_eq!(
        next.services[&frontend(90)].service_id,
        sid,
        "the id is reused"
    );

    // Affinity turned off: every entry of the service goes.
    let (ops, _) = plan(
        &state,
        &desired(vec![(frontend(80), spec("a", &[(11, 1)], 251))]),
    )
    .unwrap();
    assert_eq!(
        affinity_purges(&ops),
        vec![&MapOp::PurgeAffinity {
            scope: Scope::External,
            service_ids: vec![sid],
            pairs: vec![],
        }]
    );
}
