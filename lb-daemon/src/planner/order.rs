//! The one order of steps every plan runs, whole or incremental. The two plans differ only
//! in how they find what changed; this order is what keeps packets safe while the map
//! writes run, so it lives here once.

use std::{net::IpAddr, sync::Arc};

use lb_common::limits;

use super::{
    affinity,
    ops::{MapOp, PlanError},
    ranges,
    state::KernelState,
    steps::{add_backend, plan_service, purge_flows, remove_service, retire_backend},
    table::prebuild_tables,
    undo::Undo,
};
use lb_model::{DesiredState, Frontend, ServiceSpec};

/// What one plan changes, as the whole or the incremental plan found it.
pub(super) struct Change<'a, S> {
    pub desired: &'a DesiredState,
    /// Installed services `desired` no longer has.
    pub removed: Vec<Frontend>,
    /// Backends `desired` lists that are not installed, in address order.
    pub added: Vec<IpAddr>,
    /// The services of `desired` to program, in frontend order; a service the kernel
    /// already holds as asked is passed over.
    pub services: S,
    /// Installed backends no service of `desired` lists any more, in address order.
    pub retired: Vec<IpAddr>,
}

impl<'a, S> Change<'a, S>
where
    S: Iterator<Item = (&'a Frontend, &'a Arc<ServiceSpec>)> + Clone,
{
    /// Checks the change fits the maps, then plans it into `state`, recording in `undo`
    /// what it overwrites. On error `state` may be half-planned: the caller drops it or
    /// reverts `undo`.
    pub(super) fn run(
        self,
        state: &mut KernelState,
        undo: &mut Undo,
    ) -> Result<Vec<MapOp>, PlanError> {
        self.check_limits(state)?;
        state.slots.release_quarantine();
        let mut ops = Vec::new();

        // Removed services first: they free service-map entries and ids for the services
        // this plan adds, so a full map can swap one frontend for another.
        let purge_removed = affinity::purge_removed(state, &self.removed);
        for frontend in &self.removed {
            remove_service(state, undo, &mut ops, frontend);
        }
        // With them, entries no service owns, before a new service can take their id.
        ranges::delete_strays(state, &mut ops);
        // Before any new record can take a removed service's id.
        ops.extend(purge_removed);
        // New backends before any table names them.
        for &addr in &self.added {
            add_backend(state, undo, &mut ops, addr)?;
        }
        // After the backends: a table is built from their ids.
        let seed = self.desired.settings.maglev_seed;
        let mut prebuilt = prebuild_tables(state, self.services.clone(), seed);
        // Each service's table is written where no packet reads it, then its record flips.
        let mut left_service = Vec::new();
        let affinity_before = affinity::before(state, self.services.clone());
        for (frontend, spec) in self.services {
            plan_service(
                state,
                undo,
                &mut ops,
                &mut left_service,
                &mut prebuilt,
                frontend,
                spec,
                seed,
            )?;
        }
        // After every flip, so no live table names a retired backend.
        for &addr in &self.retired {
            retire_backend(state, undo, &mut ops, addr);
        }
        // Last: a purged flow's next packet re-selects in the new table.
        purge_flows(state, &mut ops, left_service);
        ops.extend(affinity::purge_stopped(state, affinity_before));
        Ok(ops)
    }

    fn check_limits(&self, state: &KernelState) -> Result<(), PlanError> {
        let services = self.desired.services.len();
        if services > limits::MAX_SERVICES as usize {
            return Err(PlanError::TooManyServices {
                wanted: services,
                max: limits::MAX_SERVICES,
            });
        }
        let backends = state.backends.len() + self.added.len() - self.retired.len();
        if backends > limits::MAX_BACKENDS as usize {
            return Err(PlanError::TooManyBackends {
                wanted: backends,
                max: limits::MAX_BACKENDS,
            });
        }
        Ok(())
    }
}
