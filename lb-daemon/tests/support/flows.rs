//! Emptying an LB node's flow state (both flow tables and the flow caches), as a node that
//! never saw the flows has it (another LB node taking over, or a restart without pins),
//! and deleting one flow's entry.

use std::path::Path;

use aya::maps::{Array, Map, MapData};
use lb_common::{map_names, FlowKey, FlowSet, FlowSlot, LbConfig};

fn array<T: aya::Pod>(pin_dir: &Path, name: &str) -> Array<MapData, T> {
    let data = MapData::from_pin(pin_dir.join(name)).expect("pinned map");
    Map::from_map_data(data)
        .expect("map")
        .try_into()
        .expect("an array")
}

fn config(pin_dir: &Path) -> LbConfig {
    array::<LbConfig>(pin_dir, map_names::CONFIG)
        .get(&0, 0)
        .expect("config")
}

/// Empties the node's flow tables (TCP and UDP) and retires its per-CPU flow caches (by bumping the
/// config's flow epoch, which cached entries must match, before and after the flush so no
/// cached entry outlives it); returns how many table entries it held.
pub fn flush(pin_dir: &Path) -> usize {
    bump_flow_epoch(pin_dir);
    let config = config(pin_dir);
    let mut flushed = 0;
    for table in [map_names::FLOWS, map_names::UDP_FLOWS] {
        let mut sets = array::<FlowSet>(pin_dir, table);
        for index in 0..sets.len() {
            let set = sets.get(&index, 0).expect("flow set");
            let held = (0..FlowSet::WAYS)
                .filter(|&way| {
                    set.valid_entry(config.flow_cache_skew, way, config.flow_table_seed)
                        .is_some()
                })
                .count();
            if (0..FlowSet::WAYS).any(|way| set.tag(config.flow_cache_skew, way) != 0) {
                sets.set(index, FlowSet::default(), 0)
                    .expect("flow set written");
            }
            flushed += held;
        }
    }
    bump_flow_epoch(pin_dir);
    flushed
}

/// Deletes flow `key`'s entry from its table (TCP's; the tests' flows are TCP); whether
/// the table held it.
pub fn remove(pin_dir: &Path, key: &FlowKey) -> bool {
    let config = config(pin_dir);
    let mut sets = array::<FlowSet>(pin_dir, map_names::FLOWS);
    let slot = FlowSlot::of(key, config.flow_table_seed, sets.len());
    let mut set = sets.get(&slot.set, 0).expect("flow set");
    let skew = config.flow_cache_skew;
    let Some((way, _)) = set.find(skew, config.flow_table_seed, key) else {
        return false;
    };
    set.clear(skew, way);
    sets.set(slot.set, set, 0).expect("flow set written");
    true
}

/// Retires every flow-cache entry of a node (the datapath follows one only while its
/// epoch is the config's).
fn bump_flow_epoch(pin_dir: &Path) {
    let mut config_map = array::<LbConfig>(pin_dir, map_names::CONFIG);
    let mut value = config_map.get(&0, 0).expect("config");
    value.flow_epoch = value.flow_epoch.wrapping_add(1);
    config_map.set(0, value, 0).expect("config written");
}
