//! The balancer's maps, opened from their pins, and what can be read from them: the
//! CLI's views, `explain`, and the state a restarted daemon adopts. Writing is the
//! [`super::MapWriter`]'s alone.

use std::{
    collections::{BTreeSet, HashMap as StdHashMap},
    net::IpAddr,
    path::Path,
};

use aya::maps::{Array, ArrayOfMaps, HashMap, MapData, MapError, PerCpuArray};
use lb_common::{
    maglev_words, map_names, AffinityKey, AffinityValue, BackendValue, Counter, FlowCacheChunk,
    FlowCacheEntry, FlowKey, FlowSet, FlowSlot, FlowValue, LbConfig, NeighMiss, NextHop,
    ServiceKey, ServiceValue, VipKey, BACKEND_F_ACTIVE,
};
use lb_model::{addr_from_bytes, Frontend, Scope};

use super::{
    access, nr_cpus, open_raw, open_typed,
    ranges::{self, SourceRangeTrie},
    sum_counters, MapsError,
};
use crate::planner::{InstalledBackend, KernelState};

/// The balancer's maps, opened from their pins.
pub struct BalancerMaps {
    /// External frontends (the XDP balancer's).
    pub(super) services: HashMap<MapData, ServiceKey, ServiceValue>,
    /// Internal frontends (the socket programs'), when they are installed.
    pub(super) sock_services: Option<HashMap<MapData, ServiceKey, ServiceValue>>,
    pub(super) backends: Array<MapData, BackendValue>,
    /// Four slots per element: see `lb_common::maglev_words`.
    pub(super) maglev: Array<MapData, u64>,
    /// TCP flows (`LB_FLOWS`), one set per element (see `lb_common::FlowSet`).
    pub(super) flows: Array<MapData, FlowSet>,
    /// UDP flows (`LB_UDP_FLOWS`).
    pub(super) udp_flows: Array<MapData, FlowSet>,
    /// Flow-table events by `FlowEvent`.
    pub(super) flow_stats: PerCpuArray<MapData, u64>,
    /// `FLOW_CACHE_CHUNKS_PER_CPU` chunks per CPU, CPU `c`'s from
    /// `c * FLOW_CACHE_CHUNKS_PER_CPU`: the cache of the program loaded last.
    pub(super) flow_cache: ArrayOfMaps<MapData, Array<MapData, FlowCacheChunk>>,
    pub(super) nexthops: PerCpuArray<MapData, NextHop>,
    pub(super) neigh_misses: HashMap<MapData, u32, NeighMiss>,
    pub(super) config: Array<MapData, LbConfig>,
    pub(super) xdp_stats: PerCpuArray<MapData, Counter>,
    pub(super) service_stats: PerCpuArray<MapData, Counter>,
    pub(super) backend_stats: PerCpuArray<MapData, Counter>,
    pub(super) source_ranges: SourceRangeTrie,
    /// Session-affinity entries per scope (external, internal); `None` for pins made by a
    /// build without them.
    pub(super) affinity: [Option<HashMap<MapData, AffinityKey, AffinityValue>>; 2],
    /// Addresses that refuse ports no frontend names.
    pub(super) reject_addrs: HashMap<MapData, VipKey, u32>,
    /// The maps plans write in bulk, again, for batch writes (aya's typed maps do not lend
    /// their fds).
    pub(super) raw: RawMaps,
    pub(super) cpus: usize,
}

pub(super) struct RawMaps {
    pub(super) maglev: MapData,
    pub(super) backends: MapData,
    pub(super) backend_stats: MapData,
    pub(super) service_stats: MapData,
    pub(super) services: MapData,
    pub(super) sock_services: Option<MapData>,
}

/// The service map of a scope: its pin name.
pub(super) fn service_map_name(scope: Scope) -> &'static str {
    match scope {
        Scope::External => map_names::SERVICES,
        Scope::Internal => map_names::SOCK_SERVICES,
    }
}

/// The session-affinity map of a scope: its pin name.
pub(super) fn affinity_map_name(scope: Scope) -> &'static str {
    match scope {
        Scope::External => map_names::AFFINITY,
        Scope::Internal => map_names::SOCK_AFFINITY,
    }
}

pub(super) fn affinity_index(scope: Scope) -> usize {
    match scope {
        Scope::External => 0,
        Scope::Internal => 1,
    }
}

fn open_optional(
    pin_dir: &Path,
    name: &'static str,
) -> Result<Option<HashMap<MapData, AffinityKey, AffinityValue>>, MapsError> {
    if !pin_dir.join(name).exists() {
        return Ok(None);
    }
    Ok(Some(open_typed!(pin_dir, name)))
}

impl BalancerMaps {
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            services: open_typed!(pin_dir, map_names::SERVICES),
            sock_services: if pin_dir.join(map_names::SOCK_SERVICES).exists() {
                Some(open_typed!(pin_dir, map_names::SOCK_SERVICES))
            } else {
                None
            },
            backends: open_typed!(pin_dir, map_names::BACKENDS),
            maglev: open_typed!(pin_dir, map_names::MAGLEV),
            flows: open_typed!(pin_dir, map_names::FLOWS),
            udp_flows: open_typed!(pin_dir, map_names::UDP_FLOWS),
            flow_stats: open_typed!(pin_dir, map_names::FLOW_STATS),
            flow_cache: open_typed!(pin_dir, map_names::FLOW_CACHE),
            nexthops: open_typed!(pin_dir, map_names::NEXTHOPS),
            neigh_misses: open_typed!(pin_dir, map_names::NEIGH_MISSES),
            config: open_typed!(pin_dir, map_names::CONFIG),
            xdp_stats: open_typed!(pin_dir, map_names::XDP_STATS),
            service_stats: open_typed!(pin_dir, map_names::SERVICE_STATS),
            backend_stats: open_typed!(pin_dir, map_names::BACKEND_STATS),
            source_ranges: open_typed!(pin_dir, map_names::SOURCE_RANGES),
            affinity: [
                open_optional(pin_dir, map_names::AFFINITY)?,
                open_optional(pin_dir, map_names::SOCK_AFFINITY)?,
            ],
            reject_addrs: open_typed!(pin_dir, map_names::REJECT_ADDRS),
            raw: RawMaps {
                maglev: open_raw(pin_dir, map_names::MAGLEV)?,
                backends: open_raw(pin_dir, map_names::BACKENDS)?,
                backend_stats: open_raw(pin_dir, map_names::BACKEND_STATS)?,
                service_stats: open_raw(pin_dir, map_names::SERVICE_STATS)?,
                services: open_raw(pin_dir, map_names::SERVICES)?,
                sock_services: if pin_dir.join(map_names::SOCK_SERVICES).exists() {
                    Some(open_raw(pin_dir, map_names::SOCK_SERVICES)?)
                } else {
                    None
                },
            },
            cpus: nr_cpus()?,
        })
    }

    /// The session-affinity map of `scope`, if pinned.
    pub(super) fn affinity_map(
        &self,
        scope: Scope,
    ) -> Option<&HashMap<MapData, AffinityKey, AffinityValue>> {
        self.affinity[affinity_index(scope)].as_ref()
    }

    /// Every session-affinity entry of `scope` (none when the map is not pinned).
    pub fn affinity_entries(
        &self,
        scope: Scope,
    ) -> Result<Vec<(AffinityKey, AffinityValue)>, MapsError> {
        let Some(map) = self.affinity_map(scope) else {
            return Ok(Vec::new());
        };
        map.iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(access(affinity_map_name(scope)))
    }

    /// The session-affinity entry at `key` of `scope`, if any.
    pub fn affinity_entry(
        &self,
        scope: Scope,
        key: &AffinityKey,
    ) -> Result<Option<AffinityValue>, MapsError> {
        let Some(map) = self.affinity_map(scope) else {
            return Ok(None);
        };
        match map.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(access(affinity_map_name(scope))(e)),
        }
    }

    /// The addresses that refuse ports no frontend names, as the kernel holds them.
    pub fn rejecting_addresses(&self) -> Result<BTreeSet<IpAddr>, MapsError> {
        let mut out = BTreeSet::new();
        for entry in self.reject_addrs.keys() {
            let key = entry.map_err(access(map_names::REJECT_ADDRS))?;
            out.insert(addr_from_bytes(&key.addr, key.family).ok_or_else(|| {
                MapsError::Inconsistent(format!(
                    "{}: key of family {}",
                    map_names::REJECT_ADDRS,
                    key.family
                ))
            })?);
        }
        Ok(out)
    }

    pub fn read_config(&self) -> Result<LbConfig, MapsError> {
        self.config.get(&0, 0).map_err(access(map_names::CONFIG))
    }

    /// The service map of `scope`; internal frontends need the socket programs' map.
    pub(super) fn service_map(
        &self,
        scope: Scope,
    ) -> Result<&HashMap<MapData, ServiceKey, ServiceValue>, MapsError> {
        match scope {
            Scope::External => Ok(&self.services),
            Scope::Internal => self.sock_services.as_ref().ok_or(MapsError::NotInstalled {
                map: map_names::SOCK_SERVICES,
            }),
        }
    }

    /// The external service records (the XDP balancer's).
    pub fn service_entries(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, MapsError> {
        self.scoped_service_entries(Scope::External)
    }

    /// The service records of `scope`; none for internal frontends without socket programs.
    pub fn scoped_service_entries(
        &self,
        scope: Scope,
    ) -> Result<Vec<(ServiceKey, ServiceValue)>, MapsError> {
        let Ok(map) = self.service_map(scope) else {
            return Ok(Vec::new());
        };
        map.iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(access(service_map_name(scope)))
    }

    /// Every backend entry ever written (active or retired), by id.
    pub fn backend_entries(&self) -> Result<Vec<(u32, BackendValue)>, MapsError> {
        let mut out = Vec::new();
        for (id, value) in self.backends.iter().enumerate() {
            let value = value.map_err(access(map_names::BACKENDS))?;
            if value.generation != 0 {
                out.push((id as u32, value));
            }
        }
        Ok(out)
    }

    /// Backend ids of slots `[base, base + len)`, each word read once.
    pub fn read_slots(&self, base: u32, len: u32) -> Result<Vec<u32>, MapsError> {
        let end = base.checked_add(len).ok_or_else(|| {
            MapsError::Inconsistent(format!("table region {base}+{len} overflows"))
        })?;
        let mut ids = Vec::with_capacity(len as usize);
        let mut word = None;
        for slot in base..end {
            let index = maglev_words::word_of(slot);
            let value = match word {
                Some((at, value)) if at == index => value,
                _ => {
                    let value = self
                        .maglev
                        .get(&index, 0)
                        .map_err(access(map_names::MAGLEV))?;
                    word = Some((index, value));
                    value
                }
            };
            ids.push(maglev_words::id_in(value, slot));
        }
        Ok(ids)
    }

    /// Slots the slot array holds.
    pub fn slot_capacity(&self) -> u32 {
        self.maglev
            .len()
            .saturating_mul(maglev_words::SLOTS_PER_WORD)
    }

    pub fn reason_counters(&self) -> Result<Vec<Counter>, MapsError> {
        self.xdp_stats
            .iter()
            .map(|v| v.map(|v| sum_counters(&v)))
            .collect::<Result<_, _>>()
            .map_err(access(map_names::XDP_STATS))
    }

    pub fn service_counter(&self, service_id: u32) -> Result<Counter, MapsError> {
        self.service_stats
            .get(&service_id, 0)
            .map(|v| sum_counters(&v))
            .map_err(access(map_names::SERVICE_STATS))
    }

    pub fn backend_counter(&self, backend_id: u32) -> Result<Counter, MapsError> {
        self.backend_stats
            .get(&backend_id, 0)
            .map(|v| sum_counters(&v))
            .map_err(access(map_names::BACKEND_STATS))
    }

    /// The external service record at `key`, if any.
    pub fn service(&self, key: &ServiceKey) -> Result<Option<ServiceValue>, MapsError> {
        self.scoped_service(Scope::External, key)
    }

    /// The service record of `scope` at `key`, if any; none for the internal scope without
    /// socket programs.
    pub fn scoped_service(
        &self,
        scope: Scope,
        key: &ServiceKey,
    ) -> Result<Option<ServiceValue>, MapsError> {
        let Ok(map) = self.service_map(scope) else {
            return Ok(None);
        };
        match map.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(access(service_map_name(scope))(e)),
        }
    }

    /// The backend entry with `id`, if it is inside the map.
    pub fn backend(&self, id: u32) -> Result<Option<BackendValue>, MapsError> {
        match self.backends.get(&id, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::OutOfBounds { .. }) => Ok(None),
            Err(e) => Err(access(map_names::BACKENDS)(e)),
        }
    }

    /// The flow's entry, from its protocol's table, found as the datapath finds it
    /// (the pinned config's table seed and skew).
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, MapsError> {
        let table = super::flow_tables::FlowTable::of(key.proto);
        let config = self.read_config()?;
        let map = self.flow_table(table);
        let slot = FlowSlot::of(key, config.flow_table_seed, map.len());
        let set = map.get(&slot.set, 0).map_err(access(table.map_name()))?;
        Ok(set
            .find(config.flow_cache_skew, config.flow_table_seed, key)
            .map(|(_, entry)| FlowValue {
                backend_id: entry.backend_id,
                backend_generation: entry.backend_generation,
            }))
    }

    /// Every source-range entry as (service id, range), read in the family of the
    /// external service that owns its id.
    pub fn source_range_entries(&self) -> Result<Vec<(u32, lb_model::IpNetwork)>, MapsError> {
        let families: StdHashMap<u32, u8> = self
            .service_entries()?
            .into_iter()
            .map(|(key, value)| (value.service_id, key.family))
            .collect();
        ranges::entries(&self.source_ranges, |id| families.get(&id).copied())
    }

    /// The flow-cache entries for `key` that the datapath would follow under `config`
    /// (its seed, epoch and skew), with the CPU holding each: a flow its table evicted can
    /// still be served from a CPU's cache until its next table touch re-learns it. An
    /// empty chunk slot holds nothing, and a way whose tag differs is not read, as in the
    /// datapath.
    pub fn cached_flow(
        &self,
        key: &FlowKey,
        config: &LbConfig,
    ) -> Result<Vec<(usize, FlowCacheEntry)>, MapsError> {
        let slot = FlowCacheEntry::slot(key.cache_hash(config.flow_hash_seed));
        let mut found = Vec::new();
        for cpu in 0..self.cpus {
            let index = slot.outer_index(cpu as u32);
            let inner = match self.flow_cache.get(&index, 0) {
                Ok(inner) => inner,
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(access(map_names::FLOW_CACHE)(e)),
            };
            let chunk = inner.get(&0, 0).map_err(access(map_names::FLOW_CACHE))?;
            for way in 0..2 {
                let index = slot.first + way;
                let entry = chunk.entry(config.flow_cache_skew, index);
                if chunk.tag(config.flow_cache_skew, index) == slot.tag
                    && entry.epoch == config.flow_epoch
                    && entry.key == *key
                {
                    found.push((cpu, entry));
                }
            }
        }
        Ok(found)
    }

    /// Rebuilds the daemon's bookkeeping from the pinned maps, so a restarted daemon goes on
    /// from exactly what the datapath is using.
    pub fn read_state(&self) -> Result<KernelState, MapsError> {
        let mut backends = Vec::new();
        let mut generations = StdHashMap::new();
        for (id, value) in self.backend_entries()? {
            generations.insert(id, value.generation);
            if value.flags & BACKEND_F_ACTIVE != 0 {
                let addr = addr_from_bytes(&value.addr, value.family).ok_or_else(|| {
                    MapsError::Inconsistent(format!(
                        "backend {id} has address family {}",
                        value.family
                    ))
                })?;
                backends.push((
                    addr,
                    InstalledBackend {
                        id,
                        generation: value.generation,
                    },
                ));
            }
        }
        let mut services = Vec::new();
        let mut regions = StdHashMap::new();
        let scoped = [Scope::External, Scope::Internal]
            .into_iter()
            .map(|scope| Ok((scope, self.scoped_service_entries(scope)?)))
            .collect::<Result<Vec<_>, MapsError>>()?;
        for (key, value, scope) in scoped
            .into_iter()
            .flat_map(|(scope, entries)| entries.into_iter().map(move |(k, v)| (k, v, scope)))
        {
            let frontend = Frontend::from_scoped_key(&key, scope).ok_or_else(|| {
                MapsError::Inconsistent(format!("service key {key:?} is not a valid frontend"))
            })?;
            if value.table_size > 0 && value.table_size <= self.slot_capacity() {
                for base in [value.table_base, value.spare_base] {
                    if let std::collections::hash_map::Entry::Vacant(e) = regions.entry(base) {
                        e.insert(self.read_slots(base, value.table_size)?);
                    }
                }
            }
            services.push((frontend, value));
        }
        let mut state = KernelState::adopt(
            self.slot_capacity(),
            services,
            &regions,
            backends,
            generations,
        )
        .map_err(MapsError::Inconsistent)?;
        state.adopt_source_ranges(self.source_range_entries()?);
        Ok(state)
    }
}
