//! Emptying an LB node's flow state (both flow tables and the flow caches), as a node that never saw the flows has it (another
//! LB node taking over, or a restart without pins).

use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData};
use lb_common::{map_names, FlowKey, FlowValue, LbConfig};

/// Empties the node's flow tables (TCP and UDP) and retires its per-CPU flow caches (by bumping the
/// config's flow epoch, which cached entries must match, before and after the flush so no
/// cached entry outlives it); returns how many table entries it held.
pub fn flush(pin_dir: &Path) -> usize {
    bump_flow_epoch(pin_dir);
    let mut flushed = 0;
    for table in [map_names::FLOWS, map_names::UDP_FLOWS] {
        let data = MapData::from_pin(pin_dir.join(table)).expect("pinned flow table");
        let map = Map::from_map_data(data).expect("flow table");
        let mut flows: HashMap<MapData, FlowKey, FlowValue> = map.try_into().expect("flow table");
        let keys: Vec<FlowKey> = flows.keys().filter_map(Result::ok).collect();
        for key in &keys {
            // An entry the LRU evicted meanwhile is gone anyway.
            let _ = flows.remove(key);
        }
        flushed += keys.len();
    }
    bump_flow_epoch(pin_dir);
    flushed
}

/// Retires every flow-cache entry of a node (the datapath follows one only while its
/// epoch is the config's).
fn bump_flow_epoch(pin_dir: &Path) {
    let data = MapData::from_pin(pin_dir.join(map_names::CONFIG)).expect("pinned config");
    let map = Map::from_map_data(data).expect("config map");
    let mut config: Array<MapData, LbConfig> = map.try_into().expect("config array");
    let mut value = config.get(&0, 0).expect("config");
    value.flow_epoch = value.flow_epoch.wrapping_add(1);
    config.set(0, value, 0).expect("config written");
}
