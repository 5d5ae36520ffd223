//! The backend side's maps (the TC programs): the VIPs it decapsulates for, the
//! translations to local endpoints, and its counters.

use std::{collections::HashMap as StdHashMap, net::IpAddr, path::Path};

use aya::maps::{HashMap, MapData, PerCpuArray};
use lb_common::{limits, map_names, BackendNatKey, BackendNatValue, Counter, VipKey};
use lb_model::{addr_bytes, LocalTranslation, Scope};

use super::{access, hash_sync, open_typed, sum_counters, MapsError};

/// Addresses as the keys of an address-set map.
fn address_set(addrs: impl Iterator<Item = IpAddr>) -> StdHashMap<VipKey, u32> {
    addrs
        .map(|addr| {
            let (addr, family) = addr_bytes(addr);
            let key = VipKey {
                addr,
                family,
                _pad: [0; 3],
            };
            (key, 1)
        })
        .collect()
}

/// The backend side's maps.
pub struct BackendSideMaps {
    local_vips: HashMap<MapData, VipKey, u32>,
    backend_nat: HashMap<MapData, BackendNatKey, BackendNatValue>,
    tc_stats: PerCpuArray<MapData, Counter>,
    /// The endpoints behind this node, read by the balancer (absent without it).
    local_endpoints: Option<HashMap<MapData, VipKey, u32>>,
    /// The translation table as last written, so a sync costs syscalls only for what
    /// changed; `None` until read from the kernel (and again after a failed write).
    written_nat: Option<StdHashMap<BackendNatKey, BackendNatValue>>,
}

impl BackendSideMaps {
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            local_vips: open_typed!(pin_dir, map_names::LOCAL_VIPS),
            backend_nat: open_typed!(pin_dir, map_names::BACKEND_NAT),
            tc_stats: open_typed!(pin_dir, map_names::TC_STATS),
            local_endpoints: if pin_dir.join(map_names::LOCAL_ENDPOINTS).exists() {
                Some(open_typed!(pin_dir, map_names::LOCAL_ENDPOINTS))
            } else {
                None
            },
            written_nat: None,
        })
    }

    /// Makes the VIP set equal to `vips`.
    pub fn set_vips(&mut self, vips: &[IpAddr]) -> Result<(), MapsError> {
        let wanted = address_set(vips.iter().copied());
        hash_sync::sync(&mut self.local_vips, map_names::LOCAL_VIPS, &wanted, None).map(drop)
    }

    /// Makes the set of endpoints behind this node equal to the endpoints of
    /// `translations`, so the balancer hands their packets to this node's own stack;
    /// returns the map writes. Without the balancer installed there is nothing to tell.
    pub fn set_local_endpoints<'a>(
        &mut self,
        translations: impl IntoIterator<Item = &'a LocalTranslation>,
    ) -> Result<usize, MapsError> {
        let Some(map) = &mut self.local_endpoints else {
            return Ok(0);
        };
        let wanted = address_set(translations.into_iter().map(|t| t.endpoint));
        if wanted.len() > limits::LOCAL_ENDPOINTS as usize {
            return Err(MapsError::DoesNotFit {
                map: map_names::LOCAL_ENDPOINTS,
                wanted: wanted.len(),
                capacity: limits::LOCAL_ENDPOINTS,
            });
        }
        hash_sync::sync(map, map_names::LOCAL_ENDPOINTS, &wanted, None)
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
        let writes = hash_sync::sync(
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
        hash_sync::read_endpoint_ports(&self.backend_nat, map_names::BACKEND_NAT, Scope::External)
    }

    pub fn counters(&self) -> Result<Vec<Counter>, MapsError> {
        self.tc_stats
            .iter()
            .map(|v| v.map(|v| sum_counters(&v)))
            .collect::<Result<_, _>>()
            .map_err(access(map_names::TC_STATS))
    }
}
