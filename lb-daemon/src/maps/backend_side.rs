//! The backend side's maps (the TC programs): the VIPs it decapsulates for, the
//! translations to local endpoints, and its counters.

use std::{collections::HashMap as StdHashMap, net::IpAddr, path::Path};

use aya::maps::{HashMap, MapData, MapError, PerCpuArray};
use lb_common::{limits, map_names, BackendNatKey, BackendNatValue, Counter, ServiceKey, VipKey};
use lb_model::{addr_bytes, addr_from_bytes, Frontend, LocalTranslation};

use super::{access, open_typed, sum_counters, MapsError};

/// The backend side's maps.
pub struct BackendSideMaps {
    local_vips: HashMap<MapData, VipKey, u32>,
    backend_nat: HashMap<MapData, BackendNatKey, BackendNatValue>,
    tc_stats: PerCpuArray<MapData, Counter>,
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

impl BackendSideMaps {
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
                let (addr, family) = addr_bytes(*vip);
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
            return Err(MapsError::DoesNotFit {
                map: map_names::BACKEND_NAT,
                wanted: wanted.len(),
                capacity: limits::BACKEND_NATS,
            });
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
