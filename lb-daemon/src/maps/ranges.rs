//! The source-range trie (`LB_SRC_RANGES`): its entries as (service id, range), read for
//! adoption and the CLI, and written by the map writer's `PutSourceRanges` and
//! `DeleteSourceRanges` operations.

use std::net::IpAddr;

use aya::maps::{lpm_trie::Key, LpmTrie, MapData, MapError};
use lb_common::{
    map_names, SourceRangeKey, FAMILY_V4, FAMILY_V6, SOURCE_RANGE_ALLOWED, SOURCE_RANGE_ID_BITS,
};
use lb_model::{addr_bytes, addr_from_bytes, IpNetwork};

use super::{access, MapsError};

pub(crate) type SourceRangeTrie = LpmTrie<MapData, SourceRangeKey, u32>;

/// The trie key of `range` under `service_id`.
fn key(service_id: u32, range: &IpNetwork) -> Key<SourceRangeKey> {
    let (addr, _) = addr_bytes(range.network());
    Key::new(
        SOURCE_RANGE_ID_BITS + u32::from(range.prefix()),
        SourceRangeKey { service_id, addr },
    )
}

/// The range a trie key holds, read as an address of `family` (the key does not store it).
fn range_of(key: &Key<SourceRangeKey>, family: u8) -> Option<IpNetwork> {
    let data = key.data();
    let prefix = key.prefix_len().checked_sub(SOURCE_RANGE_ID_BITS)?;
    let addr: IpAddr = addr_from_bytes(&data.addr, family)?;
    IpNetwork::new(addr, u8::try_from(prefix).ok()?).ok()
}

/// Every entry, as (service id, range), each read in the family `family_of` gives its
/// service id (`None`: an id no service has).
pub(crate) fn entries(
    trie: &SourceRangeTrie,
    family_of: impl Fn(u32) -> Option<u8>,
) -> Result<Vec<(u32, IpNetwork)>, MapsError> {
    let mut out = Vec::new();
    for key in trie.keys() {
        let key = key.map_err(access(map_names::SOURCE_RANGES))?;
        let data = key.data();
        let family = family_of(data.service_id).unwrap_or_else(|| guess_family(&key));
        let range = range_of(&key, family).ok_or_else(|| {
            MapsError::Inconsistent(format!(
                "{}: entry of service {} with prefix length {} is not a range",
                map_names::SOURCE_RANGES,
                data.service_id,
                key.prefix_len()
            ))
        })?;
        out.push((data.service_id, range));
    }
    Ok(out)
}

/// The family of an entry no service owns: IPv6 when its prefix or its bytes cannot be
/// IPv4. A wrong guess is harmless: such an entry is only deleted, and an IPv6 range that
/// reads as IPv4 has the same key bytes either way.
fn guess_family(key: &Key<SourceRangeKey>) -> u8 {
    let data = key.data();
    if key.prefix_len() > SOURCE_RANGE_ID_BITS + 32 || data.addr[4..].iter().any(|&b| b != 0) {
        FAMILY_V6
    } else {
        FAMILY_V4
    }
}

pub(crate) fn put(
    trie: &mut SourceRangeTrie,
    service_id: u32,
    ranges: &[IpNetwork],
) -> Result<(), MapsError> {
    for range in ranges {
        trie.insert(&key(service_id, range), SOURCE_RANGE_ALLOWED, 0)
            .map_err(access(map_names::SOURCE_RANGES))?;
    }
    Ok(())
}

pub(crate) fn delete(
    trie: &mut SourceRangeTrie,
    service_id: u32,
    ranges: &[IpNetwork],
) -> Result<(), MapsError> {
    for range in ranges {
        match trie.remove(&key(service_id, range)) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(access(map_names::SOURCE_RANGES)(e)),
        }
    }
    Ok(())
}
