//! The flow cache's chunks: the object declares `LB_FLOW_CACHE` as an array of maps, and
//! the loader creates one small array per chunk (see `lb_common::FlowCacheChunk` for why
//! small ones) and puts it in its slot.
//!
//! Unlike the other maps the cache is not reused across loads: aya creates a fresh outer
//! array for each load (its entries are only copies of flow-table entries, which are
//! pinned), and the loader pins it in place of the previous one, so `explain` reads the
//! cache of the program loaded last. A slot left empty is a miss, never a wrong answer.

use std::{io, path::Path};

use aya::{
    maps::{Array, ArrayOfMaps, MapData, MapError},
    Ebpf,
};
use lb_common::{limits, map_names, FlowCacheChunk};

use super::{io_err, LoaderError};

/// Outer entries of the flow cache: `FLOW_CACHE_CHUNKS_PER_CPU` for each of `cpus` CPUs.
pub(super) fn outer_entries(cpus: u32) -> u32 {
    limits::FLOW_CACHE_CHUNKS_PER_CPU * cpus
}

/// Fills the loaded object's flow cache with fresh chunks and pins it in `pin_dir`,
/// replacing the cache an earlier load pinned there. Objects without a flow cache are left
/// alone.
pub(super) fn install(ebpf: &mut Ebpf, pin_dir: &Path) -> Result<(), LoaderError> {
    let name = map_names::FLOW_CACHE;
    let Some(map) = ebpf.map_mut(name) else {
        return Ok(());
    };
    let failed = |source: MapError| LoaderError::Map { name, source };
    {
        let mut outer: ArrayOfMaps<&mut MapData, Array<MapData, FlowCacheChunk>> =
            ArrayOfMaps::try_from(&mut *map).map_err(failed)?;
        for index in 0..outer.len() {
            // Dropped (its fd closed) once the outer array holds it.
            let chunk = Array::<MapData, FlowCacheChunk>::create(1, 0).map_err(failed)?;
            outer.set(index, &chunk, 0).map_err(failed)?;
        }
    }
    let path = pin_dir.join(name);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
        _ => {}
    }
    map.pin(&path)
        .map_err(|source| LoaderError::Pin { path, source })
}
