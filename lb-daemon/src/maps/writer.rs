//! The map writer: the only code that mutates the balancer's maps. It executes planner
//! operations in order, batching long runs, and only the sync engine holds one.

use std::{
    collections::{BTreeSet, HashMap as StdHashMap},
    net::IpAddr,
    os::fd::AsFd,
    sync::Arc,
};

use aya::maps::{MapData, MapError, PerCpuValues};
use lb_common::{
    limits, maglev_words, map_names, AffinityKey, Counter, LbConfig, NeighMiss, NextHop,
    ServiceKey, ServiceValue, VipKey,
};

use lb_model::Scope;

use super::{
    access,
    balancer::{affinity_index, affinity_map_name, service_map_name},
    batch, hash_sync, ranges, BalancerMaps, MapsError,
};
use crate::planner::MapOp;
use run::{batch_or_each, batch_update, batchable, packed_words, run_of, scope_index, Run};
use slot_window::SlotWindow;

// The writer's own parts: only it writes through them.
mod run;
mod slot_window;

/// Writes the balancer's maps. Owns them: nothing else can write while it exists.
pub struct MapWriter {
    maps: BalancerMaps,
    /// What `LB_REJECT_ADDRS` holds since this writer last wrote it.
    rejecting: Option<Rejecting>,
    /// The slot array mapped for plain stores; `None` where it cannot be (pinned
    /// without `BPF_F_MMAPABLE`): slots are then written with (batch) updates.
    slot_window: Option<SlotWindow>,
}

/// The set of refusing addresses last written, and the entries written for it.
struct Rejecting {
    set: Arc<BTreeSet<IpAddr>>,
    entries: StdHashMap<VipKey, u32>,
}

impl MapWriter {
    pub(crate) fn new(maps: BalancerMaps) -> Self {
        let slot_window = maps
            .raw
            .maglev
            .info()
            .ok()
            .and_then(|info| SlotWindow::map(&maps.raw.maglev, info.max_entries()));
        Self {
            maps,
            rejecting: None,
            slot_window,
        }
    }

    /// Writes one table's slots through the mapped slot array; `false` when there is none
    /// (or the region does not fit it): the caller writes them with updates instead.
    fn write_slots_mapped(&self, base: u32, slots: &[u32]) -> bool {
        let Some(window) = &self.slot_window else {
            return false;
        };
        window.write(
            maglev_words::word_of(base),
            packed_words(base, slots).map(|(_, word)| word),
        )
    }

    /// Makes `LB_REJECT_ADDRS` hold exactly `wanted` (new addresses first, then stale
    /// ones removed); nothing to write when it already does. The set a snapshot left
    /// unchanged is the same `Arc` as before, recognised without comparing its addresses:
    /// a change elsewhere costs nothing here however many addresses there are.
    pub(crate) fn sync_rejecting(
        &mut self,
        wanted: &Arc<BTreeSet<IpAddr>>,
    ) -> Result<(), MapsError> {
        if let Some(written) = &mut self.rejecting {
            if Arc::ptr_eq(&written.set, wanted) || written.set == *wanted {
                written.set = Arc::clone(wanted);
                return Ok(());
            }
        }
        if wanted.len() > limits::REJECT_ADDRS as usize {
            return Err(MapsError::DoesNotFit {
                map: map_names::REJECT_ADDRS,
                wanted: wanted.len(),
                capacity: limits::REJECT_ADDRS,
            });
        }
        let entries: StdHashMap<VipKey, u32> = wanted
            .iter()
            .map(|addr| {
                let (addr, family) = lb_model::addr_bytes(*addr);
                let key = VipKey {
                    addr,
                    family,
                    _pad: [0; 3],
                };
                (key, 0)
            })
            .collect();
        // Forgotten first: after a failure the next call reads the map again.
        let known = self.rejecting.take();
        hash_sync::sync(
            &mut self.maps.reject_addrs,
            map_names::REJECT_ADDRS,
            &entries,
            known.as_ref().map(|k| &k.entries),
        )?;
        self.rejecting = Some(Rejecting {
            set: Arc::clone(wanted),
            entries,
        });
        Ok(())
    }

    fn service_map_mut(
        &mut self,
        scope: Scope,
    ) -> Result<&mut aya::maps::HashMap<MapData, ServiceKey, ServiceValue>, MapsError> {
        match scope {
            Scope::External => Ok(&mut self.maps.services),
            Scope::Internal => self
                .maps
                .sock_services
                .as_mut()
                .ok_or(MapsError::NotInstalled {
                    map: map_names::SOCK_SERVICES,
                }),
        }
    }

    /// The maps, for reading.
    pub fn maps(&self) -> &BalancerMaps {
        &self.maps
    }

    fn zero_counters(&self) -> PerCpuValues<Counter> {
        PerCpuValues::try_from(vec![Counter::default(); self.maps.cpus])
            .expect("one value per possible CPU")
    }

    /// Executes a plan in order. Stops at the first failure; the caller then re-reads the
    /// maps (`read_state`) rather than trusting its bookkeeping.
    ///
    /// A run of batchable operations is written map by map in the order backend counters,
    /// backends, service counters, slots, service records: the order a plan issues them in
    /// per service, so every backend is live before a table names it and every table is
    /// whole before a record points at it.
    pub(crate) fn apply(&mut self, ops: &[MapOp]) -> Result<(), MapsError> {
        let deletes_frontend = ops.iter().any(|op| {
            matches!(
                op,
                MapOp::DeleteService {
                    scope: Scope::External,
                    ..
                }
            )
        });
        let mut rest = ops;
        while let Some(first) = rest.first() {
            let run = rest.iter().take_while(|op| batchable(op)).count();
            if run > 0 {
                self.apply_run(&rest[..run])?;
                rest = &rest[run..];
            } else {
                self.apply_each(std::slice::from_ref(first))?;
                rest = &rest[1..];
            }
        }
        if deletes_frontend {
            // The XDP fast path finds a flow before its frontend: a new epoch retires the
            // flow caches' entries, so a deleted frontend's flows meet the service map.
            let config = self.pinned_config()?;
            self.write_config(&config)?;
        }
        Ok(())
    }

    fn apply_run(&mut self, ops: &[MapOp]) -> Result<(), MapsError> {
        let run = Run::of(ops, self.slot_window.is_none());
        self.reset_counters(map_names::BACKEND_STATS, &run.backend_stats)?;
        let batched = batch_update(&self.maps.raw.backends, &run.backends.0, &run.backends.1, 1);
        batch_or_each(map_names::BACKENDS, batched, || {
            self.apply_each(&run_of(ops, |op| matches!(op, MapOp::PutBackend { .. })))
        })?;
        self.reset_counters(map_names::SERVICE_STATS, &run.service_stats)?;
        // Every slot is written (all parts joined) before any service record below.
        let batched = if !run.pack_slots {
            self.apply_each(&run_of(ops, |op| matches!(op, MapOp::WriteSlots { .. })))?;
            Ok(())
        } else if run.slots.0.is_empty() {
            Ok(())
        } else {
            batch::update_array_parallel(
                self.maps.raw.maglev.fd().as_fd(),
                &run.slots.0,
                &run.slots.1,
            )
        };
        batch_or_each(map_names::MAGLEV, batched, || {
            self.apply_each(&run_of(ops, |op| matches!(op, MapOp::WriteSlots { .. })))
        })?;
        for scope in [Scope::External, Scope::Internal] {
            let (keys, values) = &run.services[scope_index(scope)];
            if keys.is_empty() {
                continue;
            }
            let raw = match scope {
                Scope::External => &self.maps.raw.services,
                Scope::Internal => {
                    self.maps
                        .raw
                        .sock_services
                        .as_ref()
                        .ok_or(MapsError::NotInstalled {
                            map: map_names::SOCK_SERVICES,
                        })?
                }
            };
            let batched = batch_update(raw, keys, values, 1);
            batch_or_each(service_map_name(scope), batched, || {
                self.apply_each(&run_of(
                    ops,
                    |op| matches!(op, MapOp::PutService { scope: s, .. } if *s == scope),
                ))
            })?;
        }
        Ok(())
    }

    /// Zeroes the per-CPU counters of `ids` in `map` (backend or service counters).
    fn reset_counters(&mut self, map: &'static str, ids: &[u32]) -> Result<(), MapsError> {
        let backend = map == map_names::BACKEND_STATS;
        let zero = vec![Counter::default(); self.maps.cpus];
        let values: Vec<Counter> = ids.iter().flat_map(|_| zero.iter().copied()).collect();
        let raw = if backend {
            &self.maps.raw.backend_stats
        } else {
            &self.maps.raw.service_stats
        };
        let batched = batch_update(raw, ids, &values, zero.len());
        batch_or_each(map, batched, || {
            let ops: Vec<MapOp> = ids
                .iter()
                .map(|&id| {
                    if backend {
                        MapOp::ResetBackendStats { backend_id: id }
                    } else {
                        MapOp::ResetServiceStats { service_id: id }
                    }
                })
                .collect();
            self.apply_each(&ops)
        })
    }

    /// One syscall per operation.
    fn apply_each(&mut self, ops: &[MapOp]) -> Result<(), MapsError> {
        for op in ops {
            match op {
                MapOp::PutBackend { id, value } | MapOp::RetireBackend { id, value } => self
                    .maps
                    .backends
                    .set(*id, value, 0)
                    .map_err(access(map_names::BACKENDS))?,
                MapOp::WriteSlots { base, slots } => {
                    if self.write_slots_mapped(*base, slots) {
                        continue;
                    }
                    for (index, word) in packed_words(*base, slots) {
                        self.maps
                            .maglev
                            .set(index, word, 0)
                            .map_err(access(map_names::MAGLEV))?;
                    }
                }
                MapOp::ResetServiceStats { service_id } => {
                    let zero = self.zero_counters();
                    self.maps
                        .service_stats
                        .set(*service_id, zero, 0)
                        .map_err(access(map_names::SERVICE_STATS))?
                }
                MapOp::ResetBackendStats { backend_id } => {
                    let zero = self.zero_counters();
                    self.maps
                        .backend_stats
                        .set(*backend_id, zero, 0)
                        .map_err(access(map_names::BACKEND_STATS))?
                }
                MapOp::PutService { scope, key, value } => self
                    .service_map_mut(*scope)?
                    .insert(key, value, 0)
                    .map_err(access(service_map_name(*scope)))?,
                MapOp::PurgeFlows { key, backend_ids } => self.purge_flows(key, backend_ids)?,
                MapOp::PutSourceRanges { service_id, ranges } => {
                    ranges::put(&mut self.maps.source_ranges, *service_id, ranges)?
                }
                MapOp::DeleteSourceRanges { service_id, ranges } => {
                    ranges::delete(&mut self.maps.source_ranges, *service_id, ranges)?
                }
                MapOp::PurgeAffinity {
                    scope,
                    service_ids,
                    pairs,
                } => self.purge_affinity(*scope, service_ids, pairs)?,
                MapOp::DeleteService { scope, key } => {
                    match self.service_map_mut(*scope)?.remove(key) {
                        Ok(()) | Err(MapError::KeyNotFound) => {}
                        Err(e) => return Err(access(service_map_name(*scope))(e)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Fixes the next hop of one backend on every CPU until `expires_jiffies` (the kernel's
    /// tick count, the clock the datapath reads), bypassing the kernel's route lookup: for
    /// fixtures and for next hops managed outside the kernel's tables.
    pub(crate) fn set_static_nexthop(
        &mut self,
        backend_id: u32,
        hop: NextHop,
    ) -> Result<(), MapsError> {
        let values = PerCpuValues::try_from(vec![hop; self.maps.cpus]).expect("one value per CPU");
        self.maps
            .nexthops
            .set(backend_id, values, 0)
            .map_err(access(map_names::NEXTHOPS))
    }

    /// Deletes the flow entries to `key`'s frontend that name one of `backend_ids`
    /// (`flow_tables`), then retires the flow caches' copies.
    fn purge_flows(&mut self, key: &ServiceKey, backend_ids: &[u32]) -> Result<(), MapsError> {
        self.maps.purge_flows(key, backend_ids)?;
        // The flow caches may still hold the purged flows: a new epoch retires them all.
        // After the deletes, so a cache refilled from a purged entry has the old epoch.
        let config = self.pinned_config()?;
        self.write_config(&config)
    }

    /// Deletes the session-affinity entries of `scope` that belong to one of `service_ids`
    /// or name a (service, backend) pair of `pairs`. Walks the map once; a scope whose map
    /// is not pinned holds no entries.
    fn purge_affinity(
        &mut self,
        scope: Scope,
        service_ids: &[u32],
        pairs: &[(u32, u32)],
    ) -> Result<(), MapsError> {
        let Some(map) = self.maps.affinity[affinity_index(scope)].as_mut() else {
            return Ok(());
        };
        let doomed: Vec<AffinityKey> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, value)| {
                service_ids.contains(&key.service_id)
                    || pairs.contains(&(key.service_id, value.backend_id))
            })
            .map(|(key, _)| key)
            .collect();
        for key in doomed {
            match map.remove(&key) {
                // Evicted meanwhile by the LRU: nothing to do.
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(access(affinity_map_name(scope))(e)),
            }
        }
        Ok(())
    }

    fn pinned_config(&self) -> Result<LbConfig, MapsError> {
        self.maps
            .config
            .get(&0, 0)
            .map_err(access(map_names::CONFIG))
    }

    /// Writes `config` with the flow epoch after the pinned one's (whatever `config`
    /// says): every write retires the flow caches' entries, so one made before a purge,
    /// or by an earlier daemon, is never followed again. The skew of arrays' values is
    /// the running kernel's (see `lb_common::FlowCacheChunk`), the flow tables' sizes
    /// are the pinned tables', and their seed the pinned config's (a fresh random one
    /// the first time).
    pub(crate) fn write_config(&mut self, config: &LbConfig) -> Result<(), MapsError> {
        let pinned = self.pinned_config()?;
        let config = LbConfig {
            flow_epoch: pinned.flow_epoch.wrapping_add(1),
            flow_cache_skew: crate::host::kernel_btf::array_value_skew(),
            flow_table_seed: if pinned.flow_table_seed != 0 {
                pinned.flow_table_seed
            } else {
                fresh_seed()
            },
            tcp_flow_sets: self.maps.flows.len(),
            udp_flow_sets: self.maps.udp_flows.len(),
            ..*config
        };
        self.maps
            .config
            .set(0, config, 0)
            .map_err(access(map_names::CONFIG))
    }

    /// Takes the backends whose next hop the datapath found unresolved.
    pub(crate) fn drain_neigh_misses(&mut self) -> Result<Vec<(u32, NeighMiss)>, MapsError> {
        let misses: Vec<(u32, NeighMiss)> = self
            .maps
            .neigh_misses
            .iter()
            .filter_map(Result::ok)
            .collect();
        for (id, _) in &misses {
            let _ = self.maps.neigh_misses.remove(id);
        }
        Ok(misses)
    }
}

/// A random non-zero seed for the flow tables' hash: a sender who cannot predict where
/// its flows land cannot aim them at one set to evict a victim flow.
fn fresh_seed() -> u32 {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    (random ^ (random >> 32)) as u32 | 1
}
