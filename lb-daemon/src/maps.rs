//! The map writer: the only code that writes the balancer's maps. It opens the pinned maps,
//! executes planner operations in order, and reads the maps back for adoption and the CLI.

use std::{
    collections::HashMap as StdHashMap,
    net::IpAddr,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues};
use lb_common::{
    limits, map_names, BackendNatKey, BackendNatValue, BackendValue, Counter, FlowKey, FlowValue,
    LbConfig, NeighMiss, NextHop, ServiceKey, ServiceValue, VipKey, BACKEND_F_ACTIVE,
};

use crate::{
    model::{addr_from_bytes, Frontend, LocalTranslation},
    planner::{InstalledBackend, KernelState, MapOp},
};

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error(
        "cannot open pinned map {path}: {source} (is the datapath installed? see `ferrolb run`)"
    )]
    Open { path: PathBuf, source: MapError },
    #[error("map {map}: {source}")]
    Access { map: &'static str, source: MapError },
    #[error("map {map}: batch update: {source}")]
    Batch {
        map: &'static str,
        source: std::io::Error,
    },
    #[error("cannot count CPUs: {0}")]
    Cpus(String),
    #[error("pinned state is inconsistent: {0}")]
    Inconsistent(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn access(map: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Access { map, source }
}

fn open_map(pin_dir: &Path, name: &str) -> Result<Map, MapsError> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| MapsError::Open {
        path: path.clone(),
        source,
    })?;
    Map::from_map_data(data).map_err(|source| MapsError::Open { path, source })
}

macro_rules! open_typed {
    ($dir:expr, $name:expr) => {
        open_map($dir, $name)?
            .try_into()
            .map_err(|source| MapsError::Open {
                path: $dir.join($name),
                source,
            })?
    };
}

pub fn nr_cpus() -> Result<usize, MapsError> {
    aya::util::nr_cpus().map_err(|(what, e)| MapsError::Cpus(format!("{what}: {e}")))
}

fn sum_counters(values: &PerCpuValues<Counter>) -> Counter {
    values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

/// The balancer's maps, opened from their pins.
pub struct LbMaps {
    pub services: HashMap<MapData, ServiceKey, ServiceValue>,
    pub backends: Array<MapData, BackendValue>,
    pub maglev: Array<MapData, u32>,
    pub flows: HashMap<MapData, FlowKey, FlowValue>,
    pub nexthops: PerCpuArray<MapData, NextHop>,
    pub neigh_misses: HashMap<MapData, u32, NeighMiss>,
    pub config: Array<MapData, LbConfig>,
    pub xdp_stats: PerCpuArray<MapData, Counter>,
    pub service_stats: PerCpuArray<MapData, Counter>,
    pub backend_stats: PerCpuArray<MapData, Counter>,
    /// The maps plans write in bulk, again, for batch writes (aya's typed maps do not lend
    /// their fds).
    raw: RawMaps,
    cpus: usize,
}

struct RawMaps {
    maglev: MapData,
    backends: MapData,
    backend_stats: MapData,
    service_stats: MapData,
    services: MapData,
}

fn open_raw(pin_dir: &Path, name: &str) -> Result<MapData, MapsError> {
    MapData::from_pin(pin_dir.join(name)).map_err(|source| MapsError::Open {
        path: pin_dir.join(name),
        source,
    })
}

/// Operations a plan issues in long runs (a first sync: tens of thousands), which are
/// written a map at a time with batch updates.
fn batchable(op: &MapOp) -> bool {
    matches!(
        op,
        MapOp::ResetBackendStats { .. }
            | MapOp::PutBackend { .. }
            | MapOp::ResetServiceStats { .. }
            | MapOp::WriteSlots { .. }
            | MapOp::PutService { .. }
    )
}

impl LbMaps {
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            services: open_typed!(pin_dir, map_names::SERVICES),
            backends: open_typed!(pin_dir, map_names::BACKENDS),
            maglev: open_typed!(pin_dir, map_names::MAGLEV),
            flows: open_typed!(pin_dir, map_names::FLOWS),
            nexthops: open_typed!(pin_dir, map_names::NEXTHOPS),
            neigh_misses: open_typed!(pin_dir, map_names::NEIGH_MISSES),
            config: open_typed!(pin_dir, map_names::CONFIG),
            xdp_stats: open_typed!(pin_dir, map_names::XDP_STATS),
            service_stats: open_typed!(pin_dir, map_names::SERVICE_STATS),
            backend_stats: open_typed!(pin_dir, map_names::BACKEND_STATS),
            raw: RawMaps {
                maglev: open_raw(pin_dir, map_names::MAGLEV)?,
                backends: open_raw(pin_dir, map_names::BACKENDS)?,
                backend_stats: open_raw(pin_dir, map_names::BACKEND_STATS)?,
                service_stats: open_raw(pin_dir, map_names::SERVICE_STATS)?,
                services: open_raw(pin_dir, map_names::SERVICES)?,
            },
            cpus: nr_cpus()?,
        })
    }

    fn zero_counters(&self) -> PerCpuValues<Counter> {
        PerCpuValues::try_from(vec![Counter::default(); self.cpus])
            .expect("one value per possible CPU")
    }

    /// Executes a plan in order. Stops at the first failure; the caller then re-reads the
    /// maps (`read_state`) rather than trusting its bookkeeping.
    ///
    /// A run of batchable operations is written map by map in the order backend counters,
    /// backends, service counters, slots, service records: the order a plan issues them in
    /// per service, so every backend is live before a table names it and every table is
    /// whole before a record points at it.
    pub fn apply(&mut self, ops: &[MapOp]) -> Result<(), MapsError> {
        let mut rest = ops;
        while let Some(first) = rest.first() {
            let run = rest.iter().take_while(|op| batchable(op)).count();
            if run > 1 {
                self.apply_run(&rest[..run])?;
                rest = &rest[run..];
            } else {
                self.apply_each(std::slice::from_ref(first))?;
                rest = &rest[1..];
            }
        }
        Ok(())
    }

    fn apply_run(&mut self, run: &[MapOp]) -> Result<(), MapsError> {
        let mut backend_stats = Vec::new();
        let mut backends: Vec<(u32, BackendValue)> = Vec::new();
        let mut service_stats = Vec::new();
        let mut slot_keys = Vec::new();
        let mut slot_values = Vec::new();
        let mut services: Vec<(ServiceKey, ServiceValue)> = Vec::new();
        for op in run {
            match op {
                MapOp::ResetBackendStats { backend_id } => backend_stats.push(*backend_id),
                MapOp::PutBackend { id, value } => backends.push((*id, *value)),
                MapOp::ResetServiceStats { service_id } => service_stats.push(*service_id),
                MapOp::WriteSlots { base, slots } => {
                    for &(offset, backend) in slots {
                        slot_keys.push(base + offset);
                        slot_values.push(backend);
                    }
                }
                MapOp::PutService { key, value } => services.push((*key, *value)),
                other => unreachable!("not batchable: {other:?}"),
            }
        }
        let zero = vec![Counter::default(); self.cpus];
        self.reset_counters(map_names::BACKEND_STATS, &backend_stats, &zero)?;
        let (ids, values): (Vec<u32>, Vec<BackendValue>) = backends.iter().copied().unzip();
        if batch_or_fallback(map_names::BACKENDS, &self.raw.backends, &ids, &values, 1)? {
            self.apply_each(&run_of(run, |op| matches!(op, MapOp::PutBackend { .. })))?;
        }
        self.reset_counters(map_names::SERVICE_STATS, &service_stats, &zero)?;
        // Every slot is written (all parts joined) before any service record below.
        let slots_unbatched = !slot_keys.is_empty()
            && match crate::batch::update_array_parallel(
                self.raw.maglev.fd().as_fd(),
                &slot_keys,
                &slot_values,
            ) {
                Ok(()) => false,
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => true,
                Err(source) => {
                    return Err(MapsError::Batch {
                        map: map_names::MAGLEV,
                        source,
                    })
                }
            };
        if slots_unbatched {
            for (key, value) in slot_keys.into_iter().zip(slot_values) {
                self.maglev
                    .set(key, value, 0)
                    .map_err(access(map_names::MAGLEV))?;
            }
        }
        let (keys, values): (Vec<ServiceKey>, Vec<ServiceValue>) = services.iter().copied().unzip();
        if batch_or_fallback(map_names::SERVICES, &self.raw.services, &keys, &values, 1)? {
            self.apply_each(&run_of(run, |op| matches!(op, MapOp::PutService { .. })))?;
        }
        Ok(())
    }

    fn reset_counters(
        &mut self,
        map: &'static str,
        ids: &[u32],
        zero: &[Counter],
    ) -> Result<(), MapsError> {
        let values: Vec<Counter> = ids.iter().flat_map(|_| zero.iter().copied()).collect();
        let raw = if map == map_names::BACKEND_STATS {
            &self.raw.backend_stats
        } else {
            &self.raw.service_stats
        };
        if batch_or_fallback(map, raw, ids, &values, zero.len())? {
            let ops: Vec<MapOp> = ids
                .iter()
                .map(|&id| {
                    if map == map_names::BACKEND_STATS {
                        MapOp::ResetBackendStats { backend_id: id }
                    } else {
                        MapOp::ResetServiceStats { service_id: id }
                    }
                })
                .collect();
            self.apply_each(&ops)?;
        }
        Ok(())
    }

    /// One syscall per operation.
    fn apply_each(&mut self, ops: &[MapOp]) -> Result<(), MapsError> {
        for op in ops {
            match op {
                MapOp::PutBackend { id, value } | MapOp::RetireBackend { id, value } => self
                    .backends
                    .set(*id, value, 0)
                    .map_err(access(map_names::BACKENDS))?,
                MapOp::WriteSlots { base, slots } => self.write_slots(*base, slots)?,
                MapOp::ResetServiceStats { service_id } => {
                    let zero = self.zero_counters();
                    self.service_stats
                        .set(*service_id, zero, 0)
                        .map_err(access(map_names::SERVICE_STATS))?
                }
                MapOp::ResetBackendStats { backend_id } => {
                    let zero = self.zero_counters();
                    self.backend_stats
                        .set(*backend_id, zero, 0)
                        .map_err(access(map_names::BACKEND_STATS))?
                }
                MapOp::PutService { key, value } => self
                    .services
                    .insert(key, value, 0)
                    .map_err(access(map_names::SERVICES))?,
                MapOp::PurgeFlows { key, backend_ids } => self.purge_flows(key, backend_ids)?,
                MapOp::DeleteService { key } => match self.services.remove(key) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(access(map_names::SERVICES)(e)),
                },
            }
        }
        Ok(())
    }

    /// Fixes the next hop of one backend on every CPU until `expires_ns` (on the clock the
    /// datapath reads, CLOCK_MONOTONIC_COARSE), bypassing the kernel's route lookup: for
    /// fixtures and for next hops managed outside the kernel's tables.
    pub fn set_static_nexthop(&mut self, backend_id: u32, hop: NextHop) -> Result<(), MapsError> {
        let values = PerCpuValues::try_from(vec![hop; self.cpus]).expect("one value per CPU");
        self.nexthops
            .set(backend_id, values, 0)
            .map_err(access(map_names::NEXTHOPS))
    }

    /// Deletes the flow entries to `key`'s frontend that name one of `backend_ids`. Walks
    /// the whole flow table: only backend moves between services need it.
    fn purge_flows(&mut self, key: &ServiceKey, backend_ids: &[u32]) -> Result<(), MapsError> {
        let doomed: Vec<FlowKey> = self
            .flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(flow, value)| {
                flow.dst == key.addr
                    && flow.dport_be == key.port_be
                    && flow.proto == key.proto
                    && flow.family == key.family
                    && backend_ids.contains(&value.backend_id)
            })
            .map(|(flow, _)| flow)
            .collect();
        for flow in doomed {
            match self.flows.remove(&flow) {
                // Evicted meanwhile by the LRU: nothing to do.
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(access(map_names::FLOWS)(e)),
            }
        }
        Ok(())
    }

    /// One batch syscall per table where the kernel supports it, else one per slot.
    fn write_slots(&mut self, base: u32, slots: &[(u32, u32)]) -> Result<(), MapsError> {
        let keys: Vec<u32> = slots.iter().map(|&(offset, _)| base + offset).collect();
        let values: Vec<u32> = slots.iter().map(|&(_, backend)| backend).collect();
        match crate::batch::update_u32(self.raw.maglev.fd().as_fd(), &keys, &values) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
            Err(e) => {
                return Err(MapsError::Batch {
                    map: map_names::MAGLEV,
                    source: e,
                })
            }
        }
        for (key, value) in keys.into_iter().zip(values) {
            self.maglev
                .set(key, value, 0)
                .map_err(access(map_names::MAGLEV))?;
        }
        Ok(())
    }

    pub fn write_config(&mut self, config: &LbConfig) -> Result<(), MapsError> {
        self.config
            .set(0, config, 0)
            .map_err(access(map_names::CONFIG))
    }

    pub fn read_config(&self) -> Result<LbConfig, MapsError> {
        self.config.get(&0, 0).map_err(access(map_names::CONFIG))
    }

    pub fn service_entries(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, MapsError> {
        self.services
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(access(map_names::SERVICES))
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

    pub fn read_slots(&self, base: u32, len: u32) -> Result<Vec<u32>, MapsError> {
        let end = base.checked_add(len).ok_or_else(|| {
            MapsError::Inconsistent(format!("table region {base}+{len} overflows"))
        })?;
        (base..end)
            .map(|i| self.maglev.get(&i, 0).map_err(access(map_names::MAGLEV)))
            .collect()
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

    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, MapsError> {
        match self.flows.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(access(map_names::FLOWS)(e)),
        }
    }

    /// Takes the backends whose next hop the datapath found unresolved.
    pub fn drain_neigh_misses(&mut self) -> Result<Vec<(u32, NeighMiss)>, MapsError> {
        let misses: Vec<(u32, NeighMiss)> =
            self.neigh_misses.iter().filter_map(Result::ok).collect();
        for (id, _) in &misses {
            let _ = self.neigh_misses.remove(id);
        }
        Ok(misses)
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
        for (key, value) in self.service_entries()? {
            let frontend = Frontend::from_key(&key).ok_or_else(|| {
                MapsError::Inconsistent(format!("service key {key:?} is not a valid frontend"))
            })?;
            if value.table_size > 0 && value.table_size <= self.maglev.len() {
                for base in [value.table_base, value.spare_base] {
                    if let std::collections::hash_map::Entry::Vacant(e) = regions.entry(base) {
                        e.insert(self.read_slots(base, value.table_size)?);
                    }
                }
            }
            services.push((frontend, value));
        }
        KernelState::adopt(self.maglev.len(), services, &regions, backends, generations)
            .map_err(MapsError::Inconsistent)
    }
}

/// Batch-writes `keys`/`values` into `map`; `Ok(true)` when the kernel cannot batch this
/// map and the caller must write the entries one by one.
fn batch_or_fallback<K: Copy, V: Copy>(
    name: &'static str,
    map: &MapData,
    keys: &[K],
    values: &[V],
    per_key: usize,
) -> Result<bool, MapsError> {
    if keys.is_empty() {
        return Ok(false);
    }
    match crate::batch::update(map.fd().as_fd(), keys, values, per_key) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => Ok(true),
        Err(source) => Err(MapsError::Batch { map: name, source }),
    }
}

/// The operations of `run` that `keep` selects, in order.
fn run_of(run: &[MapOp], keep: impl Fn(&MapOp) -> bool) -> Vec<MapOp> {
    run.iter().filter(|op| keep(op)).cloned().collect()
}

/// The kernel memory (`memlock` in the map's fdinfo: what the kernel charges for it,
/// preallocated elements and per-CPU copies included) of every map pinned in `pin_dir`,
/// by pin name. Pins that are not maps (links) are left out.
pub fn pinned_map_memory(pin_dir: &Path) -> Result<Vec<(String, u64)>, MapsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MapsError::Io { path, source }
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(pin_dir).map_err(io(pin_dir))? {
        let path = entry.map_err(io(pin_dir))?.path();
        let Ok(map) = MapData::from_pin(&path) else {
            continue;
        };
        let fdinfo = PathBuf::from(format!(
            "/proc/self/fdinfo/{}",
            std::os::fd::AsRawFd::as_raw_fd(&map.fd().as_fd())
        ));
        let text = std::fs::read_to_string(&fdinfo).map_err(io(&fdinfo))?;
        let memlock = text
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                MapsError::Inconsistent(format!("{}: no memlock line", fdinfo.display()))
            })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, memlock));
    }
    out.sort();
    Ok(out)
}

/// The backend side's maps.
pub struct DecapMaps {
    pub local_vips: HashMap<MapData, VipKey, u32>,
    pub backend_nat: HashMap<MapData, BackendNatKey, BackendNatValue>,
    pub tc_stats: PerCpuArray<MapData, Counter>,
    /// The translation table as last written, so a sync costs syscalls only for what
    /// changed; `None` until read from the kernel (and again after a failed write).
    written_nat: Option<StdHashMap<BackendNatKey, BackendNatValue>>,
}

/// Makes a hash map hold exactly `wanted`: missing or different entries are written first,
/// then stale ones removed, so an entry that stays is never absent. Returns the writes.
fn sync_hash<K, V>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    wanted: &StdHashMap<K, V>,
    known: Option<&StdHashMap<K, V>>,
) -> Result<usize, MapsError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod + PartialEq,
{
    let read;
    let current = match known {
        Some(known) => known,
        None => {
            read = map
                .iter()
                .collect::<Result<StdHashMap<K, V>, _>>()
                .map_err(access(name))?;
            &read
        }
    };
    let mut writes = 0;
    for (key, value) in wanted {
        if current.get(key) != Some(value) {
            map.insert(key, value, 0).map_err(access(name))?;
            writes += 1;
        }
    }
    for key in current.keys().filter(|k| !wanted.contains_key(k)) {
        match map.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => writes += 1,
            Err(source) => return Err(MapsError::Access { map: name, source }),
        }
    }
    Ok(writes)
}

impl DecapMaps {
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            local_vips: open_typed!(pin_dir, map_names::LOCAL_VIPS),
            backend_nat: open_typed!(pin_dir, map_names::BACKEND_NAT),
            tc_stats: open_typed!(pin_dir, map_names::TC_STATS),
            written_nat: None,
        })
    }

    /// Makes the VIP set equal to `vips`.
    pub fn set_vips(&mut self, vips: &[IpAddr]) -> Result<(), MapsError> {
        let wanted = vips
            .iter()
            .map(|vip| {
                let (addr, family) = crate::model::addr_bytes(*vip);
                let key = VipKey {
                    addr,
                    family,
                    _pad: [0; 3],
                };
                (key, 1)
            })
            .collect();
        sync_hash(&mut self.local_vips, map_names::LOCAL_VIPS, &wanted, None).map(drop)
    }

    /// Makes the translation table equal to `translations`; returns the map writes made.
    pub fn set_translations<'a>(
        &mut self,
        translations: impl IntoIterator<Item = &'a LocalTranslation>,
    ) -> Result<usize, MapsError> {
        let wanted: StdHashMap<BackendNatKey, BackendNatValue> = translations
            .into_iter()
            .map(|t| (t.key(), t.value()))
            .collect();
        if wanted.len() > limits::BACKEND_NATS as usize {
            return Err(MapsError::Inconsistent(format!(
                "{} translations exceed the map's {} entries",
                wanted.len(),
                limits::BACKEND_NATS
            )));
        }
        let known = self.written_nat.take();
        let writes = sync_hash(
            &mut self.backend_nat,
            map_names::BACKEND_NAT,
            &wanted,
            known.as_ref(),
        )?;
        self.written_nat = Some(wanted);
        Ok(writes)
    }

    /// The translation table as the kernel holds it, sorted.
    pub fn translations(&self) -> Result<Vec<LocalTranslation>, MapsError> {
        let mut out = Vec::new();
        for entry in self.backend_nat.iter() {
            let (key, value) = entry.map_err(access(map_names::BACKEND_NAT))?;
            let service = ServiceKey {
                addr: key.frontend,
                port_be: key.port_be,
                proto: key.proto,
                family: key.family,
            };
            let frontend = Frontend::from_key(&service).ok_or_else(|| {
                MapsError::Inconsistent(format!("translation key {key:?} is not a frontend"))
            })?;
            let endpoint = addr_from_bytes(&key.endpoint, key.family).ok_or_else(|| {
                MapsError::Inconsistent(format!("translation key {key:?} has a bad endpoint"))
            })?;
            out.push(LocalTranslation {
                frontend,
                endpoint,
                target_port: u16::from_be(value.target_port_be),
            });
        }
        out.sort();
        Ok(out)
    }

    pub fn counters(&self) -> Result<Vec<Counter>, MapsError> {
        self.tc_stats
            .iter()
            .map(|v| v.map(|v| sum_counters(&v)))
            .collect::<Result<_, _>>()
            .map_err(access(map_names::TC_STATS))
    }
}
