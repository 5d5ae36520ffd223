//! Source ranges through the planner: after every single operation of a plan, a client
//! allowed by both the old and the new list is allowed, a client allowed by neither is
//! refused, and a service meant to be filtered before and after is never open to all.

use std::{collections::BTreeSet, net::IpAddr, sync::Arc};

use lb_common::SERVICE_F_SOURCE_RANGES;

use super::{desired, frontend, spec, FakeKernel};
use crate::planner::{plan, plan_changes, KernelState, MapOp};
use lb_model::{DesiredState, Frontend, IpNetwork, Scope, ServiceSpec};

fn ranged(ranges: &[&str]) -> ServiceSpec {
    ServiceSpec {
        source_ranges: ranges.iter().map(|r| r.parse().unwrap()).collect(),
        ..spec("web", &[(11, 1), (12, 1)], 251)
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Whether the fake kernel lets `client` open a flow to `frontend`, as the XDP program
/// decides it: no record or no flag lets everybody in, else a range must hold the client.
fn allows(kernel: &FakeKernel, frontend: &Frontend, client: IpAddr) -> bool {
    let Some(svc) = kernel.services.get(&(frontend.scope, frontend.key())) else {
        return true;
    };
    if svc.flags & SERVICE_F_SOURCE_RANGES == 0 {
        return true;
    }
    kernel
        .source_ranges
        .iter()
        .any(|(id, range)| *id == svc.service_id && range.contains(client))
}

fn contains(list: &[&str], client: IpAddr) -> bool {
    list.iter()
        .any(|r| r.parse::<IpNetwork>().unwrap().contains(client))
}

/// Applies `ops` one at a time, checking every probe client after each against the list
/// before (`old`) and after (`new`); `None` is a service without a list.
fn apply_checked(
    kernel: &mut FakeKernel,
    ops: &[MapOp],
    old: Option<&[&str]>,
    new: Option<&[&str]>,
) {
    let probes = [
        "198.18.1.5",
        "198.18.1.200",
        "198.18.2.5",
        "198.18.3.9",
        "198.19.0.1",
        "10.0.0.1",
    ];
    let allowed = |list: Option<&[&str]>, client| list.is_none_or(|l| contains(l, client));
    for op in ops {
        kernel.apply(std::slice::from_ref(op));
        for client in probes.map(ip) {
            let now = allows(kernel, &frontend(80), client);
            if allowed(old, client) && allowed(new, client) {
                assert!(
                    now,
                    "{client} allowed before and after, refused after {op:?}"
                );
            }
            if !allowed(old, client) && !allowed(new, client) {
                assert!(
                    !now,
                    "{client} refused before and after, let in after {op:?}"
                );
            }
        }
    }
}

/// The whole and the incremental plan from `from` to `to`, each run op by op.
fn both_plans(from: Option<&[&str]>, to: Option<&[&str]>) {
    let spec_of = |list: Option<&[&str]>| list.map_or_else(|| ranged(&[]), ranged);
    let before = desired(vec![(frontend(80), spec_of(from))]);
    let after = desired(vec![(frontend(80), spec_of(to))]);
    let (first, state) = plan(&KernelState::new(10_000), &before).unwrap();

    let mut kernel = FakeKernel::default();
    apply_checked(&mut kernel, &first, None, from);
    let (ops, _) = plan(&state, &after).unwrap();
    apply_checked(&mut kernel, &ops, from, to);
    assert_final(&kernel, to);

    let mut kernel = FakeKernel::default();
    kernel.apply(&first);
    let mut state = state;
    let changed = BTreeSet::from([frontend(80)]);
    let (ops, _undo) = plan_changes(&mut state, &after, &changed).unwrap();
    apply_checked(&mut kernel, &ops, from, to);
    assert_final(&kernel, to);
}

/// After the plan the trie holds exactly the new list.
fn assert_final(kernel: &FakeKernel, to: Option<&[&str]>) {
    let held: BTreeSet<String> = kernel
        .source_ranges
        .iter()
        .map(|(_, r)| r.to_string())
        .collect();
    let want: BTreeSet<String> = to.unwrap_or(&[]).iter().map(|r| r.to_string()).collect();
    assert_eq!(held, want);
}

#[test]
fn a_changed_list_keeps_clients_of_both_lists_and_refuses_clients_of_neither() {
    both_plans(
        Some(&["198.18.1.0/24", "198.18.3.0/24"]),
        Some(&["198.18.1.5/32", "198.18.2.0/24"]),
    );
    // Wider and narrower prefixes of the same address are distinct entries.
    both_plans(Some(&["198.18.0.0/16"]), Some(&["198.18.1.0/24"]));
    both_plans(Some(&["198.18.1.0/24"]), Some(&["198.18.0.0/15"]));
}

#[test]
fn a_first_list_is_in_place_before_the_flag_and_the_last_goes_after_it() {
    both_plans(None, Some(&["198.18.1.0/24"]));
    both_plans(Some(&["198.18.1.0/24"]), None);
    let before = desired(vec![(frontend(80), ranged(&[]))]);
    let after = desired(vec![(frontend(80), ranged(&["198.18.1.0/24"]))]);
    let (_, state) = plan(&KernelState::new(10_000), &before).unwrap();
    let (ops, _) = plan(&state, &after).unwrap();
    let put = ops
        .iter()
        .position(|op| matches!(op, MapOp::PutSourceRanges { .. }))
        .unwrap();
    let flag = ops
        .iter()
        .position(|op| matches!(op, MapOp::PutService { value, .. } if value.flags & SERVICE_F_SOURCE_RANGES != 0))
        .unwrap();
    assert!(put < flag, "{ops:?}");
}

#[test]
fn an_unchanged_list_writes_nothing_and_a_removed_service_takes_its_entries() {
    let want = desired(vec![(frontend(80), ranged(&["198.18.1.0/24"]))]);
    let (first, state) = plan(&KernelState::new(10_000), &want).unwrap();
    let mut kernel = FakeKernel::default();
    kernel.apply(&first);
    let (again, state) = plan(&state, &want).unwrap();
    assert!(again.is_empty(), "{again:?}");

    // The removed service's id goes to the new one in the same plan: the old entries must
    // be gone before the new service's are written, or the new one would inherit them.
    let replaced = desired(vec![(frontend(81), ranged(&["198.18.2.0/24"]))]);
    let (ops, _) = plan(&state, &replaced).unwrap();
    kernel.apply(&ops);
    let held: Vec<String> = kernel
        .source_ranges
        .iter()
        .map(|(_, r)| r.to_string())
        .collect();
    assert_eq!(held, ["198.18.2.0/24"]);
    assert!(allows(&kernel, &frontend(81), ip("198.18.2.9")));
    assert!(!allows(&kernel, &frontend(81), ip("198.18.1.9")));
}

#[test]
fn internal_scope_and_other_families_carry_no_entries() {
    let internal = frontend(80).in_scope(Scope::Internal);
    let mut spec = ranged(&["198.18.1.0/24", "2001:db8::/32"]);
    spec.name = "both".into();
    let want = DesiredState {
        services: [
            (frontend(80), Arc::new(spec.clone())),
            (internal, Arc::new(spec)),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let (ops, _) = plan(&KernelState::new(10_000), &want).unwrap();
    let puts: Vec<&MapOp> = ops
        .iter()
        .filter(|op| matches!(op, MapOp::PutSourceRanges { .. }))
        .collect();
    assert_eq!(puts.len(), 1, "{ops:?}");
    let MapOp::PutSourceRanges { ranges, .. } = puts[0] else {
        unreachable!()
    };
    assert_eq!(ranges, &["198.18.1.0/24".parse::<IpNetwork>().unwrap()]);
    let internal_flags = ops.iter().find_map(|op| match op {
        MapOp::PutService {
            scope: Scope::Internal,
            value,
            ..
        } => Some(value.flags),
        _ => None,
    });
    assert_eq!(internal_flags.unwrap() & SERVICE_F_SOURCE_RANGES, 0);
}

#[test]
fn adoption_reads_the_entries_back_and_deletes_strays() {
    let want = desired(vec![(frontend(80), ranged(&["198.18.1.0/24"]))]);
    let (first, _) = plan(&KernelState::new(10_000), &want).unwrap();
    let mut kernel = FakeKernel::default();
    kernel.apply(&first);
    // A write that failed half-way left an entry under an id nobody has.
    let stray: IpNetwork = "198.18.9.0/24".parse().unwrap();
    kernel.source_ranges.insert((77, stray));

    let adopted = kernel.adopt(10_000);
    assert!(!adopted.can_plan_changes(), "strays need a whole plan");
    let (ops, next) = plan(&adopted, &want).unwrap();
    assert_eq!(
        ops,
        [MapOp::DeleteSourceRanges {
            service_id: 77,
            ranges: vec![stray]
        }]
    );
    kernel.apply(&ops);
    assert_eq!(kernel.source_ranges.len(), 1);
    assert!(next.can_plan_changes());
}
