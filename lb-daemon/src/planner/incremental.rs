//! The incremental plan: only the frontends a snapshot changed are planned, against the
//! current state, which is edited in place with an [`Undo`] log (see `undo`) rather than
//! copied. It runs the whole plan's steps in the whole plan's order (`order`); what
//! differs is how the backends a change adds or retires are found: from per-backend user
//! counts instead of from every desired service, which keeps a change's cost independent
//! of the number of services. The planner's tests hold both plans to the same operations
//! and the same resulting state on random change sequences.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::{
    ops::{MapOp, PlanError},
    order::Change,
    state::{distinct_backends, KernelState},
    undo::Undo,
};
use lb_model::{DesiredState, Frontend};

/// Plans the frontends in `changed` (frontends whose spec may differ between what `state`
/// was planned from and `desired`; listing unchanged ones too is harmless) and moves
/// `state` to what the kernel will hold once the operations ran. Every other frontend of
/// `desired` must be as `state` has it programmed.
///
/// Returns the operations, in the same order [`plan`](super::plan) would give them, and
/// what to revert if writing them fails. On error `state` is as it was and nothing is
/// planned.
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
    let users = users_after(state, desired, changed);
    let change = Change {
        desired,
        removed: changed
            .iter()
            .filter(|f| state.services.contains_key(f) && !desired.services.contains_key(f))
            .copied()
            .collect(),
        added: users
            .iter()
            .filter(|u| u.before == 0)
            .map(|u| u.addr)
            .collect(),
        services: changed
            .iter()
            .filter_map(|f| desired.services.get_key_value(f)),
        retired: users
            .iter()
            .filter(|u| u.before > 0 && u.after == 0)
            .map(|u| u.addr)
            .collect(),
    };
    let ops = change.run(state, undo)?;
    for u in users {
        undo.users(state, u.addr);
        if u.after == 0 {
            state.backend_users.remove(&u.addr);
        } else {
            state.backend_users.insert(u.addr, u.after);
        }
    }
    Ok(ops)
}

/// How many services list a backend before and after a change.
struct Users {
    addr: IpAddr,
    before: u32,
    after: u32,
}

/// The backends whose number of users the change moves, in address order.
fn users_after(
    state: &KernelState,
    desired: &DesiredState,
    changed: &BTreeSet<Frontend>,
) -> Vec<Users> {
    let mut delta: BTreeMap<IpAddr, i64> = BTreeMap::new();
    for frontend in changed {
        let before = state.services.get(frontend).and_then(|s| s.spec.as_deref());
        for addr in before.map(distinct_backends).unwrap_or_default() {
            *delta.entry(addr).or_default() -= 1;
        }
        let after = desired.services.get(frontend).map(|s| distinct_backends(s));
        for addr in after.unwrap_or_default() {
            *delta.entry(addr).or_default() += 1;
        }
    }
    delta
        .into_iter()
        .filter(|&(_, d)| d != 0)
        .map(|(addr, d)| {
            let before = state.backend_users.get(&addr).copied().unwrap_or(0);
            let after =
                u32::try_from(i64::from(before) + d).expect("a backend loses only users it had");
            Users {
                addr,
                before,
                after,
            }
        })
        .collect()
}
