//! The whole plan: every desired service compared with everything installed. For the
//! first sync, for adoption after a restart (it is the only plan that can recognise
//! adopted tables) and for config files.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use super::{
    ops::{MapOp, PlanError},
    order::Change,
    state::{distinct_backends, KernelState},
    undo::Undo,
};
use lb_model::DesiredState;

/// Computes the plan and the state the kernel will be in once it has run. On error nothing
/// is planned and `current` is untouched.
pub fn plan(
    current: &KernelState,
    desired: &DesiredState,
) -> Result<(Vec<MapOp>, KernelState), PlanError> {
    let wanted: BTreeSet<IpAddr> = desired
        .services
        .values()
        .flat_map(|spec| spec.backends.iter().map(|b| b.address))
        .collect();
    let change = Change {
        desired,
        removed: current
            .services
            .keys()
            .filter(|f| !desired.services.contains_key(f))
            .copied()
            .collect(),
        added: wanted
            .iter()
            .filter(|addr| !current.backends.contains_key(addr))
            .copied()
            .collect(),
        services: desired.services.iter(),
        retired: current
            .backends
            .keys()
            .filter(|addr| !wanted.contains(addr))
            .copied()
            .collect(),
    };
    let mut next = current.clone();
    // `next` is a copy: on error it is dropped, so nothing needs recording.
    let ops = change.run(&mut next, &mut Undo::off())?;

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
