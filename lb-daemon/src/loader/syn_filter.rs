//! The TCP table's SYN filter (`LB_FLOW_FILTER`, see `lb_common::SynFilter`) for a table
//! that was pinned before the filter was: a datapath upgraded in place keeps its flow
//! table, and a filter created empty beside it would send every SYN of a reused tuple to
//! Maglev instead of its entry's backend. So the loader fills a new filter from the ways
//! the pinned table holds.

use aya::{
    maps::{Array, MapData},
    Ebpf,
};
use lb_common::{map_names, FlowSet, SynFilter};

use super::LoaderError;

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> LoaderError {
    move |source| LoaderError::Map { name, source }
}

/// The object declares no map `name`.
fn missing(name: &'static str) -> LoaderError {
    map_err(name)(aya::maps::MapError::InvalidName {
        name: name.to_string(),
    })
}

/// Writes the filter word of every set of the TCP table that holds a flow; returns how
/// many. `skew` is where the table's sets start their lines (as the map writer sets
/// `LbConfig::flow_cache_skew`).
pub(super) fn rebuild(ebpf: &mut Ebpf, skew: u32) -> Result<usize, LoaderError> {
    let words: Vec<(u32, u64)> = {
        let map = ebpf
            .map(map_names::FLOWS)
            .ok_or_else(|| missing(map_names::FLOWS))?;
        let table: Array<&MapData, FlowSet> =
            Array::try_from(map).map_err(map_err(map_names::FLOWS))?;
        let mut words = Vec::new();
        for (index, set) in table.iter().enumerate() {
            let set = set.map_err(map_err(map_names::FLOWS))?;
            let word = SynFilter::word((0..FlowSet::WAYS).map(|way| set.tag(skew, way)));
            if word != 0 {
                words.push((index as u32, word));
            }
        }
        words
    };
    let map = ebpf
        .map_mut(map_names::FLOW_FILTER)
        .ok_or_else(|| missing(map_names::FLOW_FILTER))?;
    let mut filter: Array<&mut MapData, u64> =
        Array::try_from(map).map_err(map_err(map_names::FLOW_FILTER))?;
    for &(index, word) in &words {
        filter
            .set(index, word, 0)
            .map_err(map_err(map_names::FLOW_FILTER))?;
    }
    Ok(words.len())
}
