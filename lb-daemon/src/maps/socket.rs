//! The socket programs' map the daemon writes beside the balancer's: the target port of
//! every endpoint of every internal-scope frontend (`LB_SOCK_TGTS`). Their service records
//! and tables are the balancer's (written by the sync engine); their reverse map is the
//! programs' own.

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    path::Path,
};

use aya::maps::{HashMap, MapData};
use lb_common::{limits, map_names, BackendNatKey, BackendNatValue};
use lb_model::{Scope, SocketTarget};

use super::{hash_sync, open_typed, MapsError};

type Targets = StdHashMap<BackendNatKey, BackendNatValue>;

/// The socket programs' target ports, written make-before-break around each sync:
/// [`SocketMaps::set_targets`] before the sync engine applies a snapshot (so a table that
/// starts naming an endpoint finds its port), [`SocketMaps::prune_targets`] after (so a
/// table that still names a leaving endpoint keeps its port until then).
pub struct SocketMaps {
    targets: HashMap<MapData, BackendNatKey, BackendNatValue>,
    /// The targets the last `set_targets` asked for, all written; `None` until read from
    /// the kernel (and again after a failed write), so a sync costs syscalls only for what
    /// changed.
    written: Option<Targets>,
    /// Keys the map still holds that the last `set_targets` did not ask for.
    stale: HashSet<BackendNatKey>,
}

impl SocketMaps {
    /// Opens the map the socket programs' loader pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        if !pin_dir.join(map_names::SOCK_TARGETS).exists() {
            return Err(MapsError::NotInstalled {
                map: map_names::SOCK_TARGETS,
            });
        }
        Ok(Self {
            targets: open_typed!(pin_dir, map_names::SOCK_TARGETS),
            written: None,
            stale: HashSet::new(),
        })
    }

    /// Writes every target of `targets` the map lacks or holds with another port, and
    /// removes nothing (see [`SocketMaps::prune_targets`]) unless the old and the new
    /// targets together would not fit: then the stale ones go first. Returns the writes.
    pub fn set_targets<'a>(
        &mut self,
        targets: impl IntoIterator<Item = &'a SocketTarget>,
    ) -> Result<usize, MapsError> {
        let wanted: Targets = targets.into_iter().map(|t| (t.key(), t.value())).collect();
        if wanted.len() > limits::SOCK_TARGETS as usize {
            return Err(MapsError::DoesNotFit {
                map: map_names::SOCK_TARGETS,
                wanted: wanted.len(),
                capacity: limits::SOCK_TARGETS,
            });
        }
        let known = match self.written.take() {
            Some(known) => known,
            None => {
                // The kernel's whole content: nothing else is pending removal.
                self.stale.clear();
                hash_sync::read_all(&self.targets, map_names::SOCK_TARGETS)?
            }
        };
        // The map holds `known` and the keys still pending removal, which are disjoint.
        let pending = std::mem::take(&mut self.stale);
        let held = known.len() + pending.len();
        let added = wanted
            .keys()
            .filter(|k| !known.contains_key(k) && !pending.contains(k))
            .count();
        self.stale = pending
            .into_iter()
            .chain(known.keys().copied())
            .filter(|k| !wanted.contains_key(k))
            .collect();
        let mut writes = 0;
        if held + added > limits::SOCK_TARGETS as usize {
            writes += self.prune_targets()?;
        }
        writes += hash_sync::upsert(&mut self.targets, map_names::SOCK_TARGETS, &wanted, &known)?;
        self.written = Some(wanted);
        Ok(writes)
    }

    /// Removes the targets the last [`SocketMaps::set_targets`] did not ask for; returns
    /// the removals.
    pub fn prune_targets(&mut self) -> Result<usize, MapsError> {
        let removed = hash_sync::remove(&mut self.targets, map_names::SOCK_TARGETS, &self.stale);
        match removed {
            Ok(n) => {
                self.stale.clear();
                Ok(n)
            }
            Err(e) => {
                // Part of them may be gone: read the map again next time.
                self.written = None;
                Err(e)
            }
        }
    }

    /// The targets as the kernel holds them, sorted.
    pub fn targets(&self) -> Result<Vec<SocketTarget>, MapsError> {
        hash_sync::read_endpoint_ports(&self.targets, map_names::SOCK_TARGETS, Scope::Internal)
    }
}
