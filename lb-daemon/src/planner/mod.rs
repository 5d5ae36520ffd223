//! The planner: from what the kernel's maps hold and what they should hold, the ordered
//! list of map writes that gets from one to the other. It is pure: nothing here touches
//! the kernel; `maps::MapWriter` runs the writes.
//!
//! Packets keep flowing while the writes run (make-before-break), because every plan
//! runs its steps in one order (`order`): services that are going away are deleted
//! first, which frees entries and ids for the services being added; new backends are
//! written before any table can name them; each changed service's new table is written
//! into a region no packet reads, and only then does the service record switch to it, in
//! a single map update; backends that no service lists any more are retired after every
//! switch; flows pinned to a backend that left a service but still serves others are
//! purged last, with session-affinity entries that name such a backend (`affinity`). No
//! packet meets a half-written table or a dangling backend id.
//!
//! A region a table has left is not reused by the same plan: it stays in quarantine
//! until the next one (see `slots`), because a packet that read the old record just
//! before the switch may still be reading the old region. So a table holds one region,
//! two only while it is being replaced.
//!
//! Two entry points find what changed: [`plan`] (`whole`) compares the whole desired
//! state with the whole kernel state (the first sync, adoption after a restart, config
//! files) and returns a new state; [`plan_changes`] (`incremental`) looks only at the
//! frontends a snapshot changed and edits the state in place, keeping an [`Undo`] log.
//!
//! Files, each one job: `ops` (what a plan produces), `state` (the kernel state and its
//! adoption from pinned maps), `table` (building and placing Maglev tables), `undo` (the
//! log that reverts an in-place plan), `steps` (each single step), `order` (when each
//! step runs), `whole` and `incremental` (the two entry points).

mod affinity;
mod incremental;
mod ops;
mod order;
mod ranges;
mod state;
mod steps;
mod table;
mod undo;
mod whole;

pub use incremental::plan_changes;
pub use ops::{MapOp, PlanError};
pub use state::{InstalledBackend, InstalledService, InstalledTable, KernelState, TableKey};
pub use table::{build_table, service_value};
pub use undo::Undo;
pub use whole::plan;

#[cfg(test)]
mod tests;
