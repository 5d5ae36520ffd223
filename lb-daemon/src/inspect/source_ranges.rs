//! What `list` and `explain` show of the source-range trie: each service's ranges, and
//! whether a source may open a flow to a service that has them.

use std::{collections::HashMap, net::IpAddr};

use lb_common::{ServiceValue, SERVICE_F_SOURCE_RANGES};
use lb_model::IpNetwork;

use crate::maps::{BalancerMaps, MapsError};

/// Every external service's ranges, by service id, sorted.
pub(super) fn by_service(maps: &BalancerMaps) -> Result<HashMap<u32, Vec<IpNetwork>>, MapsError> {
    let mut out: HashMap<u32, Vec<IpNetwork>> = HashMap::new();
    for (service_id, range) in maps.source_range_entries()? {
        out.entry(service_id).or_default().push(range);
    }
    for ranges in out.values_mut() {
        ranges.sort();
    }
    Ok(out)
}

/// Why `src` may not open a flow to `service`, or `None` when it may: the service lists
/// no ranges, or one of them (the longest, as the trie finds it) holds `src`.
pub(super) fn refusal(
    maps: &BalancerMaps,
    service: &ServiceValue,
    src: IpAddr,
) -> Result<Option<String>, MapsError> {
    if service.flags & SERVICE_F_SOURCE_RANGES == 0 {
        return Ok(None);
    }
    let ranges = by_service(maps)?
        .remove(&service.service_id)
        .unwrap_or_default();
    if ranges.iter().any(|r| r.contains(src)) {
        return Ok(None);
    }
    let listed: Vec<String> = ranges.iter().map(ToString::to_string).collect();
    Ok(Some(format!(
        "source {src} is outside the service's source ranges ({}): new flows from it are dropped",
        if listed.is_empty() {
            "none in the trie".to_owned()
        } else {
            listed.join(", ")
        }
    )))
}
