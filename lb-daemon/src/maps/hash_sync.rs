//! Keeping a BPF hash map equal to a wanted set of entries with few syscalls: a writer
//! remembers what it wrote, writes only differences, and removes stale keys after (or, for
//! make-before-break, separately from) writing the new ones. Also reading back the maps
//! laid out as `LB_BACKEND_NAT` (the backend side's translations, the socket targets).

use std::collections::HashMap as StdHashMap;

use aya::maps::{HashMap, MapData, MapError};
use lb_common::{BackendNatKey, BackendNatValue};
use lb_model::{EndpointPort, Scope};

use super::{access, MapsError};

/// Every entry of the map.
pub(super) fn read_all<K, V>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<StdHashMap<K, V>, MapsError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod,
{
    map.iter()
        .collect::<Result<StdHashMap<K, V>, _>>()
        .map_err(access(name))
}

/// Writes the entries of `wanted` that `current` lacks or holds with another value;
/// returns the writes.
pub(super) fn upsert<K, V>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    wanted: &StdHashMap<K, V>,
    current: &StdHashMap<K, V>,
) -> Result<usize, MapsError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod + PartialEq,
{
    let mut writes = 0;
    for (key, value) in wanted {
        if current.get(key) != Some(value) {
            map.insert(key, value, 0).map_err(access(name))?;
            writes += 1;
        }
    }
    Ok(writes)
}

/// Removes `keys` (those already gone count as removed); returns the removals.
pub(super) fn remove<'k, K, V>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    keys: impl IntoIterator<Item = &'k K>,
) -> Result<usize, MapsError>
where
    K: aya::Pod + 'k,
    V: aya::Pod,
{
    let mut removed = 0;
    for key in keys {
        match map.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => removed += 1,
            Err(source) => return Err(MapsError::Access { map: name, source }),
        }
    }
    Ok(removed)
}

/// Makes the map hold exactly `wanted`: missing or different entries are written first,
/// then stale ones removed, so an entry that stays is never absent. `known` is what the
/// map holds, when the caller knows; returns the writes.
pub(super) fn sync<K, V>(
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
            read = read_all(map, name)?;
            &read
        }
    };
    let writes = upsert(map, name, wanted, current)?;
    let stale = current.keys().filter(|k| !wanted.contains_key(k));
    Ok(writes + remove(map, name, stale)?)
}

/// The entries of a map laid out as `LB_BACKEND_NAT`, whose frontends are of `scope`,
/// sorted.
pub(super) fn read_endpoint_ports(
    map: &HashMap<MapData, BackendNatKey, BackendNatValue>,
    name: &'static str,
    scope: Scope,
) -> Result<Vec<EndpointPort>, MapsError> {
    let mut out = Vec::new();
    for entry in map.iter() {
        let (key, value) = entry.map_err(access(name))?;
        out.push(
            EndpointPort::from_entry(&key, &value, scope).ok_or_else(|| {
                MapsError::Inconsistent(format!(
                    "{name}: key {key:?} names no frontend and endpoint"
                ))
            })?,
        );
    }
    out.sort();
    Ok(out)
}
