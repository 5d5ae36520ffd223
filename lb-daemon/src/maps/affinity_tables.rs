//! The session-affinity tables (`LB_AFFINITY` for the XDP balancer's clients, `LB_SOCK_AFF`
//! for the socket programs'), as `ferrolb list` and `ferrolb stats` show them: capacity
//! (`--affinity-entries`), kernel memory and live entries. Both are preallocated LRUs, so
//! their memory is what their capacity costs, used or not.

use std::path::Path;

use lb_model::Scope;
use serde::Serialize;

use super::{
    access,
    balancer::{affinity_index, affinity_map_name},
    map_memory, open_raw, BalancerMaps, MapsError,
};

/// One scope's session-affinity table as the kernel holds it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AffinityTableView {
    /// `external` or `internal`.
    pub scope: &'static str,
    pub map: &'static str,
    /// Entries it can hold (`--affinity-entries`).
    pub capacity: u32,
    /// Kernel memory charged for it.
    pub memory_bytes: u64,
    /// Entries it holds now.
    pub live: u64,
}

impl BalancerMaps {
    /// The affinity tables pinned in `pin_dir` (a build without them pins none).
    pub fn affinity_tables(&self, pin_dir: &Path) -> Result<Vec<AffinityTableView>, MapsError> {
        let mut out = Vec::new();
        for (scope, label) in [(Scope::External, "external"), (Scope::Internal, "internal")] {
            let Some(map) = &self.affinity[affinity_index(scope)] else {
                continue;
            };
            let name = affinity_map_name(scope);
            let data = open_raw(pin_dir, name)?;
            let info = data.info().map_err(access(name))?;
            out.push(AffinityTableView {
                scope: label,
                map: name,
                capacity: info.max_entries(),
                memory_bytes: map_memory(&data)?,
                live: map.keys().take_while(Result::is_ok).count() as u64,
            });
        }
        Ok(out)
    }
}
